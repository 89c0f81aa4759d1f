"""The HTTP API: submit uploads or server-side folders as jobs, follow them, fetch results and reports.

:func:`create_api` builds the app from the composition root's services;
nothing is created at import. Routes stay thin: uploads are received by
:mod:`api.uploads`, jobs are created by :func:`worker.submit.submit_folder`
and read through :mod:`db.jobs`. Every error class maps to one HTTP status in
:data:`ERROR_STATUS`, answered by one handler.
"""
from __future__ import annotations

import csv
import hmac
import io
import json
import logging
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs, urlsplit

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import text
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api import pages
from api.uploads import (
    MAX_FIELD_BYTES, UploadLimits, UploadRefused, UploadTooLarge, over_size_limit, receive_multipart,
    remove_stale_uploads,
)
from classifier.errors import InvalidAudio, InvalidCheckpoint
from db import jobs as repo
from db import registry
from db.schema import Job
from voicegender.bootstrap import Services
from voicegender.settings import Settings
from worker.names import FINALIZE_JOB, RETRAIN
from worker.requests import registry_models, request_retrain
from worker.submit import StorageError, SubmissionError, submit_folder

log = logging.getLogger(__name__)
MAX_IDEMPOTENCY_KEY = 200  # the jobs.idempotency_key column


# --- errors ------------------------------------------------------------------------------------


class NotAuthorized(PermissionError):
    """A mutating route without the configured bearer token."""


class FolderForbidden(PermissionError):
    """A server-side folder outside ``allowed_root``, or folders disabled."""


class JobNotFound(LookupError):
    pass


class ReportNotReady(LookupError):
    pass


class UnsupportedBody(ValueError):
    pass


# Looked up along the exception's MRO, so a subclass (UploadTooLarge) wins over its base.
ERROR_STATUS: dict[type[Exception], int] = {
    UploadRefused: 400, SubmissionError: 400, NotAuthorized: 401, FolderForbidden: 403, JobNotFound: 404,
    ReportNotReady: 404, UploadTooLarge: 413, UnsupportedBody: 415, InvalidCheckpoint: 503, StorageError: 507,
    registry.ModelNotFound: 404, registry.RunNotFound: 404, registry.RetrainRunning: 409, registry.RegistryConflict: 409,
}


def error_response(_request: Request, exc: Exception) -> JSONResponse:
    status = next(ERROR_STATUS[cls] for cls in type(exc).__mro__ if cls in ERROR_STATUS)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"detail": str(exc)}, status_code=status, headers=headers)


# --- response models ---------------------------------------------------------------------------


class JobStatus(BaseModel):
    """``db.jobs.job_status``; keys added there pass through."""

    model_config = ConfigDict(extra="allow")
    id: str
    state: str
    total: int
    done: int
    failed: int
    pending: int
    cancelled: int
    model_version: str | None
    report: str | None
    label_source: str | None
    source: str
    error: str | None
    created_at: str
    finished_at: str | None


class JobPage(BaseModel):
    items: list[JobStatus]
    offset: int
    limit: int


class ModelInfo(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=())
    version: str
    sha256: str
    status: str
    metrics: dict[str, Any]


class RunInfo(BaseModel):
    """``db.registry.describe_run``."""

    model_config = ConfigDict(extra="allow")
    id: int
    state: str
    stage: str | None
    decision: str | None
    reason: str | None
    error: str | None
    report: str | None


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    database: str
    broker: str
    workers: int


class FolderSubmission(BaseModel):
    """A JSON ``POST /jobs`` body: a folder on the server, below ``VOICEGENDER_ALLOWED_ROOT``."""

    model_config = ConfigDict(extra="forbid")
    folder: str = Field(min_length=1)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=MAX_IDEMPOTENCY_KEY)


# --- dependencies ------------------------------------------------------------------------------


# Plain lookups are ``async def``: FastAPI runs a sync dependency in the thread
# pool, and each hop costs more CPU than the lookup (scripts/api_cpu.py).
async def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_settings(services: ServicesDep) -> Settings:
    return services.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_session(services: ServicesDep) -> Iterator[Session]:
    with services.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(HTTPBearer(auto_error=False))]


async def require_token(settings: SettingsDep, credentials: BearerDep) -> None:
    """Mutating routes need ``Authorization: Bearer <token>`` when a token is configured."""
    if not settings.api_token:
        return
    given = credentials.credentials.encode() if credentials else b""
    if not hmac.compare_digest(given, settings.api_token.encode()):
        raise NotAuthorized("this route needs the header 'Authorization: Bearer <VOICEGENDER_API_TOKEN>'")


Authorized = Depends(require_token)

# --- submissions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Submission:
    folder: Path
    source: str
    labels_csv: Path | None = None
    idempotency_key: str | None = None
    rejected: tuple[tuple[str, InvalidAudio], ...] = ()  # zip entries not extracted: failed clips of the job


def resolve_server_folder(settings: Settings, folder: str) -> Path:
    """``folder`` (absolute, or relative to the allowed root) resolved, symlinks included, inside the root."""
    if settings.allowed_root is None:
        raise FolderForbidden(
            "server-side folders are disabled: VOICEGENDER_ALLOWED_ROOT is not set; upload files instead"
        )
    if "\x00" in folder:
        raise SubmissionError(f"NUL character in folder name: {folder!r}")
    root = settings.allowed_root.resolve()
    path = (root / folder).resolve()  # an absolute folder replaces root in the join
    if not path.is_relative_to(root):
        raise FolderForbidden(f"folder {folder!r} is outside the allowed root")
    return path


def folder_submission(settings: Settings, fields: dict[str, Any]) -> Submission:
    try:
        # An empty form field means "not given", as browsers send untouched inputs.
        body = FolderSubmission.model_validate({k: v for k, v in fields.items() if v != ""})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
        raise SubmissionError(f"invalid submission: {problems}") from None
    path = resolve_server_folder(settings, body.folder)
    return Submission(folder=path, source=str(path), idempotency_key=body.idempotency_key)


async def read_small_body(request: Request) -> bytes:
    """A JSON or url-encoded body, refused past :data:`MAX_FIELD_BYTES` while it arrives."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FIELD_BYTES:
            raise UploadTooLarge(f"request body over {MAX_FIELD_BYTES} bytes; upload files as multipart/form-data")
    return bytes(body)


def upload_limits(settings: Settings) -> UploadLimits:
    return UploadLimits(max_bytes=settings.max_upload_bytes, max_files=settings.max_files)


async def upload_submission(request: Request, settings: Settings, root: Path) -> Submission:
    limits = upload_limits(settings)
    content_type = request.headers["content-type"]
    upload = await receive_multipart(request.stream(), content_type=content_type, root=root, limits=limits)
    if "folder" in upload.fields:
        if upload.names or upload.archive or upload.labels_csv:
            raise SubmissionError("send either files or a server-side folder, not both")
        return folder_submission(settings, upload.fields)
    if not upload.names and not upload.rejected:
        raise SubmissionError(
            "no files uploaded: send recordings (or one .zip) as 'files', or name a server-side 'folder'"
        )
    key = checked_idempotency_key(upload.fields.get("idempotency_key") or None)
    return Submission(folder=upload.folder, source=upload.source, labels_csv=upload.labels_csv, idempotency_key=key, rejected=tuple(upload.rejected))


def with_header_key(submission: Submission, request: Request) -> Submission:
    """The ``Idempotency-Key`` header, the usual HTTP spelling of the body's ``idempotency_key``."""
    header = request.headers.get("idempotency-key")
    if header is None:
        return submission
    key = checked_idempotency_key(header.strip())
    if submission.idempotency_key not in (None, key):
        raise SubmissionError("the Idempotency-Key header and the idempotency_key field differ")
    return replace(submission, idempotency_key=key)


def checked_idempotency_key(key: str | None) -> str | None:
    if key is not None and not 0 < len(key) <= MAX_IDEMPOTENCY_KEY:
        raise SubmissionError(f"idempotency_key must be 1 to {MAX_IDEMPOTENCY_KEY} characters")
    return key


async def read_submission(request: Request, settings: Settings, root: Path) -> Submission:
    """Dispatch on the body's media type: multipart uploads, or a folder as JSON or a form."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > upload_limits(settings).max_body_bytes:  # before a byte is read
        raise over_size_limit(settings.max_upload_bytes)
    if media_type == "multipart/form-data":
        return await upload_submission(request, settings, root)
    if media_type == "application/json":
        return folder_submission(settings, _json_object(await read_small_body(request)))
    if media_type == "application/x-www-form-urlencoded":
        fields = parse_qs((await read_small_body(request)).decode("utf-8", "replace"), keep_blank_values=True)
        return folder_submission(settings, {k: v[-1] for k, v in fields.items()})
    raise UnsupportedBody(f"unsupported content type {media_type!r}: send multipart/form-data or application/json")


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except ValueError as exc:
        raise SubmissionError(f"body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise SubmissionError('JSON body must be an object like {"folder": "..."}')
    return value


@asynccontextmanager
async def upload_folder(settings: Settings) -> AsyncIterator[Path]:
    """A fresh folder under ``data_dir/uploads``, removed afterwards: the job keeps its own copy."""
    root = settings.data_dir / "uploads" / uuid.uuid4().hex
    root.mkdir(parents=True)
    try:
        yield root
    finally:
        await run_in_threadpool(shutil.rmtree, root, True)


def create_job(services: Services, submission: Submission) -> tuple[dict[str, Any], bool]:
    """Blocking: copies and hashes every file, then commits and enqueues."""
    job, created = submit_folder(
        services.settings, services.sessions, services.app, submission.folder,
        labels_csv=submission.labels_csv, idempotency_key=submission.idempotency_key, source=submission.source,
        rejected=submission.rejected,
    )
    if created:
        log.info("job %s created: %d file(s) from %s", job.id, job.total, submission.source)
    with services.sessions() as session:
        return repo.job_status(session, job.id), created


def status_or_404(session: Session, job_id: str) -> dict[str, Any]:
    status = repo.job_status(session, job_id)
    if status is None:
        raise JobNotFound(f"no job with id {job_id}")
    return status


def results_csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=repo.RESULT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def database_state(services: Services) -> tuple[str, int]:
    """("ok", live workers) or ("unreachable (ErrorClass)", 0); the class only, never a URL."""
    try:
        with services.sessions() as session:
            session.execute(text("SELECT 1"))
            workers = repo.live_workers(session, within_s=3 * services.settings.heartbeat_s)
    except Exception as exc:  # any driver error means the same to a health check
        log.warning("health: database unreachable: %s", exc.__class__.__name__)
        return f"unreachable ({exc.__class__.__name__})", 0
    return "ok", len(workers)


# --- routes ------------------------------------------------------------------------------------

UPLOAD_FIELDS_DOC: dict[str, Any] = {
    "files": {
        "type": "array", "items": {"type": "string", "format": "binary"},
        "description": "audio files (names may hold sub-folders like female/a.wav), or one .zip",
    },
    "labels": {"type": "string", "format": "binary", "description": "optional labels.csv (path,gender)"},
    "idempotency_key": {"type": "string", "maxLength": MAX_IDEMPOTENCY_KEY},
    "folder": {"type": "string", "description": "instead of files: a folder below the allowed root"},
}
SUBMIT_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": {"type": "object", "properties": UPLOAD_FIELDS_DOC}},
            "application/json": {"schema": FolderSubmission.model_json_schema()},
        },
    }
}
ERROR_DOC = {"content": {"application/json": {"example": {"detail": "what was wrong, with the offending value"}}}}
CSV_DOC = {404: ERROR_DOC, 200: {"content": {"text/csv": {}}}}
HTML_DOC = {404: ERROR_DOC, 200: {"content": {"text/html": {}}}}

router = APIRouter()


@router.post(
    "/jobs", status_code=201, response_model=JobStatus, dependencies=[Authorized], openapi_extra=SUBMIT_BODY_DOC,
    responses={200: {"description": "the job this idempotency key created before", "model": JobStatus},
               **{code: ERROR_DOC for code in (400, 401, 403, 413, 415)}},
)
async def submit_job(request: Request, services: ServicesDep, response: Response) -> dict[str, Any]:
    """Upload recordings (files or one .zip) or name a server-side folder; the job is queued at once."""
    async with upload_folder(services.settings) as root:
        submission = with_header_key(await read_submission(request, services.settings, root), request)
        status, created = await run_in_threadpool(create_job, services, submission)
    if not created:
        response.status_code = 200
    return status


@router.get("/jobs", response_model=JobPage)
def list_jobs(
    session: SessionDep, offset: Annotated[int, Query(ge=0)] = 0, limit: Annotated[int, Query(ge=1, le=500)] = 50
) -> dict[str, Any]:
    """Jobs, newest first."""
    ids = [job.id for job in repo.list_jobs(session, offset=offset, limit=limit)]
    return {"items": [repo.job_status(session, job_id) for job_id in ids], "offset": offset, "limit": limit}


def read_job_status(services: Services, job_id: str) -> dict[str, Any]:
    with services.sessions() as session:
        return status_or_404(session, job_id)


@router.get("/jobs/{job_id}", response_model=JobStatus, responses={404: ERROR_DOC})
async def get_job(job_id: str, services: ServicesDep) -> dict[str, Any]:
    """State, progress counts and the model version that classified the job."""
    # Clients poll this route: one thread hop for the whole read instead of
    # three (session dependency in, endpoint, session dependency out).
    return await run_in_threadpool(read_job_status, services, job_id)


@router.get("/jobs/{job_id}/results", response_model=None, responses=CSV_DOC)
def get_results(
    job_id: str, session: SessionDep, format_: Annotated[Literal["json", "csv"], Query(alias="format")] = "json"
) -> list[dict[str, Any]] | Response:
    """One row per file: path, prediction, p_female, duration_s, windows, error, label."""
    rows = repo.job_results(session, job_id)
    if rows is None:
        raise JobNotFound(f"no job with id {job_id}")
    if format_ == "json":
        return rows
    headers = {"Content-Disposition": f'attachment; filename="job-{job_id}.csv"'}
    return Response(results_csv(rows), media_type="text/csv; charset=utf-8", headers=headers)


@router.get("/jobs/{job_id}/report", response_class=FileResponse, responses=HTML_DOC)
def get_report(job_id: str, session: SessionDep) -> FileResponse:
    """The job's HTML report, written when the job finishes."""
    job = session.get(Job, job_id)
    if job is None:
        raise JobNotFound(f"no job with id {job_id}")
    if not job.report_path or not Path(job.report_path).is_file():
        raise ReportNotReady(f"job {job_id} has no report yet (state {job.state})")
    return FileResponse(job.report_path, media_type="text/html")


@router.delete(
    "/jobs/{job_id}", response_model=JobStatus, dependencies=[Authorized], responses={401: ERROR_DOC, 404: ERROR_DOC}
)
def cancel_job(job_id: str, services: ServicesDep, session: SessionDep) -> dict[str, Any]:
    """Cancel: pending clips are dropped, a running chunk stops at its boundary."""
    if repo.request_cancel(session, job_id) is None:
        raise JobNotFound(f"no job with id {job_id}")
    # A queued job has no chunk left to send its finalize; this one settles it.
    services.app.send_task(FINALIZE_JOB, args=[job_id])
    return status_or_404(session, job_id)


@router.get("/models", response_model=list[ModelInfo], responses={503: ERROR_DOC})
def list_models(services: ServicesDep) -> list[dict[str, Any]]:
    """The registry, newest first: version, status (one ``active``), sha256, parent, held-out metrics."""
    return registry_models(services.sessions, services.settings)


@router.post("/models/{version}/promote", response_model=ModelInfo, dependencies=[Authorized], responses={401: ERROR_DOC, 404: ERROR_DOC, 409: ERROR_DOC})
def promote_model(version: str, session: SessionDep) -> dict[str, Any]:
    """Make a registered version the active model; workers use it from their next chunk."""
    registry.promote(session, version)
    return registry.describe_model(registry.active_model(session))


@router.post("/retrain", status_code=202, response_model=RunInfo, dependencies=[Authorized], responses={401: ERROR_DOC, 409: ERROR_DOC})
def retrain(services: ServicesDep) -> dict[str, Any]:
    """Start a retrain; 409 names the run already holding the lock (only one runs at a time)."""
    run = request_retrain(services.sessions, services.settings, trigger="manual")
    services.app.send_task(RETRAIN, kwargs={"run_id": run.id, "overrides": {}})
    with services.sessions() as session:
        return registry.describe_run(registry.get_run(session, run.id))


@router.get("/retrain/{run_id}", response_model=RunInfo, responses={404: ERROR_DOC})
def get_retrain(run_id: int, session: SessionDep) -> dict[str, Any]:
    """A retrain run: stage while running; decision, reason and report path when done."""
    return registry.describe_run(registry.get_run(session, run_id))


@router.get("/health", response_model=Health, responses={503: {"model": Health}})
def health(services: ServicesDep, response: Response) -> dict[str, Any]:
    """Database reachable, broker kind, live workers (by heartbeat); 503 when the database is not."""
    database, workers = database_state(services)
    if database != "ok":
        response.status_code = 503
    broker = urlsplit(services.settings.broker).scheme  # the scheme only: a URL may carry a password
    status = "ok" if database == "ok" else "degraded"
    return {"status": status, "database": database, "broker": broker, "workers": workers}


def create_api(services: Services) -> FastAPI:
    """The FastAPI app for ``services`` (OpenAPI docs at ``/docs``)."""
    app = FastAPI(
        title="voicegender",
        summary="Batch speaker-gender classification with attention over frequency, and HTML reports.",
        description="Submit recordings as a job, follow its progress, fetch per-file results and the report. "
        "POST and DELETE need `Authorization: Bearer <token>` when the server sets VOICEGENDER_API_TOKEN.",
    )
    app.state.services = services
    # Folders of uploads cut off by a crash; a day leaves any live upload alone.
    remove_stale_uploads(services.settings.data_dir / "uploads", older_than_s=24 * 3600)
    for error in ERROR_STATUS:
        app.add_exception_handler(error, error_response)
    app.include_router(router)
    app.include_router(pages.router)  # GET /: the jobs page
    return app
