"""``GET /``: a small server-rendered page for people who do not use the CLI.

The job list with live progress (inline script polling ``GET /jobs``), links
to each report and results file, and an upload form that creates a job
through the same ``POST /jobs`` as every other client. No build step and no
external assets: one jinja2 template with its CSS and script inline.
"""
from __future__ import annotations

from typing import Any

import jinja2
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from classifier.audio import AUDIO_EXTENSIONS
from db import jobs as repo

PAGE_JOBS = 50
_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("api", "templates"), autoescape=True, undefined=jinja2.StrictUndefined
)

router = APIRouter()


def render_jobs_page(jobs: list[dict[str, Any]], *, token_required: bool, max_files: int, max_upload_bytes: int) -> str:
    """The page as one HTML string; ``jobs`` are ``db.jobs.job_status`` dicts, newest first."""
    return _ENV.get_template("jobs.html").render(
        jobs=jobs, token_required=token_required, max_files=max_files, max_upload_mib=max_upload_bytes // 2**20,
        accept=",".join((*AUDIO_EXTENSIONS, ".zip", ".csv")), page_jobs=PAGE_JOBS,
    )


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def jobs_page(request: Request) -> HTMLResponse:
    """Jobs with their progress, and a form to submit a new one."""
    services = request.app.state.services
    with services.sessions() as session:
        jobs = [repo.job_status(session, job.id) for job in repo.list_jobs(session, limit=PAGE_JOBS)]
    settings = services.settings
    html = render_jobs_page(
        jobs, token_required=bool(settings.api_token), max_files=settings.max_files, max_upload_bytes=settings.max_upload_bytes
    )
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})
