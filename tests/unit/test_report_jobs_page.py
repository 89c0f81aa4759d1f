"""The jobs page rendered from plain job dicts: escaping, links, the token field."""
from __future__ import annotations

from api.pages import render_jobs_page


def job(job_id: str, **kw) -> dict:
    base = {"id": job_id, "state": "running", "total": 8, "done": 3, "failed": 1, "pending": 4, "cancelled": 0, "model_version": "m-1",
            "report": None, "label_source": None, "source": "folder", "error": None, "created_at": "2026-01-01T10:00:00+00:00",
            "finished_at": None}
    return {**base, **kw}


def render(jobs: list[dict], token_required: bool = False) -> str:
    return render_jobs_page(jobs, token_required=token_required, max_files=100, max_upload_bytes=2 * 2**30)


def test_sources_are_text_and_progress_and_links_are_rendered():
    html = render([job("a1", source="<img src=x onerror=alert(1)>.zip"), job("b2", state="done", done=8, failed=0, report="/r.html")])
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;.zip" in html
    assert '<span class="progress-text">4 / 8</span>' in html and '<progress max="8" value="4">' in html
    assert '<a class="report" href="/jobs/b2/report">' in html and 'href="/jobs/a1/report"' not in html
    assert 'href="/jobs/a1/results?format=csv"' in html
    assert "http://" not in html and "https://" not in html  # no external asset


def test_token_field_is_required_only_when_the_server_has_a_token():
    assert 'id="upload-token" type="password" autocomplete="off" required>' in render([], token_required=True)
    without = render([])
    assert "(not needed on this server)" in without and "required>" not in without
    assert "No jobs yet." in without
