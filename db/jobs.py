"""Repository functions for jobs, clips, chunks and worker heartbeats.

Every write a task makes is idempotent: a clip's result is written only
while the clip is still ``pending``, so a redelivered chunk changes nothing.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.schema import FINAL_JOB_STATES, Chunk, Clip, Job, WorkerHeartbeat, utcnow


@dataclass(frozen=True)
class NewClip:
    path: str  # relative to the job's input dir
    sha256: str | None
    size_bytes: int | None
    label: str | None = None
    speaker: str | None = None
    error: str | None = None  # set when the submission already knows the file cannot be used
    error_reason: str | None = None


def create_job(
    session: Session,
    *,
    job_id: str,
    source: str,
    input_dir: str,
    clips: list[NewClip],
    chunk_size: int,
    label_source: str | None,
    idempotency_key: str | None = None,
) -> tuple[Job, bool]:
    """Insert the job, its clips and chunks in one transaction.

    Returns ``(job, created)``; with an ``idempotency_key`` already used, the
    existing job is returned and nothing is written.
    """
    if idempotency_key:
        existing = session.scalar(select(Job).where(Job.idempotency_key == idempotency_key))
        if existing:
            return existing, False
    job = Job(id=job_id, source=source, input_dir=input_dir, chunk_size=chunk_size, total=len(clips), label_source=label_source, idempotency_key=idempotency_key, state="queued")
    session.add(job)
    try:
        session.flush()  # the job row first: chunks reference it and have no ORM relationship
    except IntegrityError:
        existing = _existing_after_race(session, idempotency_key)
        if existing is None:
            raise
        return existing, False
    for pos, c in enumerate(clips):
        settled = {"state": "failed", "error": c.error, "error_reason": c.error_reason, "finished_at": utcnow()} if c.error else {}
        session.add(Clip(job_id=job_id, position=pos, chunk=pos // chunk_size, path=c.path, sha256=c.sha256, size_bytes=c.size_bytes, label=c.label, speaker=c.speaker, **settled))
    for index in range((len(clips) + chunk_size - 1) // chunk_size):
        session.add(Chunk(job_id=job_id, index=index))
    session.commit()
    return job, True


def _existing_after_race(session: Session, idempotency_key: str | None) -> Job | None:
    """The job another submit with the same key committed first, if that is what happened."""
    session.rollback()
    if not idempotency_key:
        return None
    return session.scalar(select(Job).where(Job.idempotency_key == idempotency_key))


def job_counts(session: Session, job_id: str) -> dict[str, int]:
    """Clips per state: pending, done, failed, cancelled."""
    rows = session.execute(select(Clip.state, func.count()).where(Clip.job_id == job_id).group_by(Clip.state)).all()
    counts = {"pending": 0, "done": 0, "failed": 0, "cancelled": 0}
    counts.update({state: n for state, n in rows})
    return counts


def list_jobs(session: Session, *, offset: int = 0, limit: int = 50) -> list[Job]:
    return list(session.scalars(select(Job).order_by(Job.created_at.desc(), Job.id).offset(offset).limit(limit)))


def chunk_clips(session: Session, job_id: str, index: int) -> list[Clip]:
    return list(session.scalars(select(Clip).where(Clip.job_id == job_id, Clip.chunk == index).order_by(Clip.position)))


def mark_job_running(session: Session, job_id: str, *, model_version: str) -> None:
    session.execute(
        update(Job).where(Job.id == job_id, Job.state == "queued").values(state="running", started_at=utcnow(), model_version=model_version)
    )
    session.commit()


def write_clip_result(session: Session, clip_id: int, values: dict[str, Any]) -> bool:
    """Record one clip's outcome unless it already has one; True when written."""
    result = session.execute(update(Clip).where(Clip.id == clip_id, Clip.state == "pending").values(**values, finished_at=utcnow()))
    return result.rowcount == 1


def finish_chunk(session: Session, job_id: str, index: int, *, state: str = "done") -> bool:
    """Settle a pending chunk; False when it was already settled (a duplicate message)."""
    result = session.execute(
        update(Chunk).where(Chunk.job_id == job_id, Chunk.index == index, Chunk.state == "pending").values(state=state, finished_at=utcnow())
    )
    return result.rowcount == 1


def mark_chunks_enqueued(session: Session, job_id: str, indices: list[int]) -> None:
    session.execute(
        update(Chunk).where(Chunk.job_id == job_id, Chunk.index.in_(indices)).values(enqueued_at=utcnow(), attempts=Chunk.attempts + 1)
    )
    session.commit()


def pending_chunk_indices(session: Session, job_id: str) -> list[int]:
    return list(session.scalars(select(Chunk.index).where(Chunk.job_id == job_id, Chunk.state == "pending").order_by(Chunk.index)))


def stale_chunks(session: Session, *, older_than: datetime) -> list[tuple[str, int]]:
    """Pending chunks of live jobs whose last enqueue is older than ``older_than``.

    A chunk never enqueued counts from its job's creation: its ``process_job``
    message may simply not have come up yet, and enqueueing it at once would
    double every job a sweep sees between its submit and its ``process_job``.
    """
    never_enqueued = Chunk.enqueued_at.is_(None) & (Job.created_at < older_than)
    rows = session.execute(
        select(Chunk.job_id, Chunk.index)
        .join(Job, Job.id == Chunk.job_id)
        .where(Chunk.state == "pending", Job.state.in_(("queued", "running")))
        .where(never_enqueued | (Chunk.enqueued_at < older_than))
        .order_by(Job.created_at, Chunk.index)
    ).all()
    return [(job_id, index) for job_id, index in rows]


def unfinished_jobs_without_pending_chunks(session: Session) -> list[str]:
    """Jobs whose chunks are all settled but that were never finalized (a lost finalize)."""
    pending = select(Chunk.job_id).where(Chunk.state == "pending")
    return list(session.scalars(select(Job.id).where(Job.state.in_(("queued", "running")), Job.id.not_in(pending))))


def finalize_job_row(session: Session, job_id: str, *, report_path: str | None, error: str | None = None) -> Job:
    """Set the job's final state from its clips; a second call changes nothing."""
    job = session.get(Job, job_id, with_for_update=True)
    if job.state in FINAL_JOB_STATES:
        return job
    counts = job_counts(session, job_id)
    if job.cancel_requested:
        job.state = "cancelled"
    elif error:
        job.state, job.error = "failed", error
    else:
        job.state = "done_with_errors" if counts["failed"] else "done"
    job.report_path, job.finished_at = report_path, utcnow()
    session.commit()
    return job


def request_cancel(session: Session, job_id: str) -> Job | None:
    """Flag the job; queued chunks are dropped when they come up, running ones stop at the boundary."""
    job = session.get(Job, job_id)
    if job is None:
        return None
    if job.state not in FINAL_JOB_STATES:
        job.cancel_requested = True
        session.execute(update(Clip).where(Clip.job_id == job_id, Clip.state == "pending").values(state="cancelled"))
        session.execute(update(Chunk).where(Chunk.job_id == job_id, Chunk.state == "pending").values(state="cancelled"))
        session.commit()
    return job


def beat(session: Session, name: str) -> None:
    """Upsert this worker's heartbeat."""
    row = session.get(WorkerHeartbeat, name)
    if row is None:
        session.add(WorkerHeartbeat(name=name, last_seen=utcnow()))
    else:
        row.last_seen = utcnow()
    session.commit()


def live_workers(session: Session, *, within_s: float) -> list[str]:
    cutoff = utcnow() - timedelta(seconds=within_s)
    return list(session.scalars(select(WorkerHeartbeat.name).where(WorkerHeartbeat.last_seen >= cutoff)))


def forget_worker(session: Session, name: str) -> None:
    row = session.get(WorkerHeartbeat, name)
    if row is not None:
        session.delete(row)
        session.commit()


def job_status(session: Session, job_id: str) -> dict[str, Any] | None:
    """A job's state and progress as plain values (CLI ``status --json`` and ``GET /jobs/{id}``)."""
    job = session.get(Job, job_id)
    if job is None:
        return None
    counts = job_counts(session, job_id)
    return {
        "id": job.id, "state": job.state, "total": job.total, "done": counts["done"], "failed": counts["failed"],
        "pending": counts["pending"], "cancelled": counts["cancelled"], "model_version": job.model_version,
        "report": job.report_path, "label_source": job.label_source, "source": job.source, "error": job.error,
        "created_at": job.created_at.isoformat(), "finished_at": None if job.finished_at is None else job.finished_at.isoformat(),
    }


RESULT_COLUMNS = ("path", "prediction", "p_female", "duration_s", "windows", "error", "label")


def job_results(session: Session, job_id: str) -> list[dict[str, Any]] | None:
    """Per-file rows with the ``classify`` columns plus ``label``; None for an unknown job."""
    if session.get(Job, job_id) is None:
        return None
    clips = session.scalars(select(Clip).where(Clip.job_id == job_id).order_by(Clip.position))
    return [
        {"path": c.path, "prediction": c.prediction or "", "p_female": "" if c.p_female is None else round(c.p_female, 4),
         "duration_s": "" if c.duration_s is None else round(c.duration_s, 3), "windows": c.windows or 0,
         "error": c.error or "", "label": c.label or ""}
        for c in clips
    ]


def labelled_clip_scores(session: Session, job_id: str) -> list[dict[str, Any]] | None:
    """A job's classified clips that carry a label: path, label, speaker, raw log-odds and the model
    version that scored them (what ``calibrate --job`` fits on); None for an unknown job."""
    if session.get(Job, job_id) is None:
        return None
    clips = session.scalars(
        select(Clip).where(Clip.job_id == job_id, Clip.label.is_not(None)).order_by(Clip.position)
    )
    return [
        {"path": c.path, "label": c.label, "speaker": c.speaker, "log_odds": c.log_odds, "model_version": c.model_version}
        for c in clips
    ]
