"""Repository functions for the model registry and the retrain runs.

Two promises are kept by the database itself, so they hold across processes
and machines: at most one ``active`` model (``uq_models_one_active``) and at
most one ``running`` retrain (``uq_training_runs_one_running``, the retrain
lock). A promotion retires the old model and activates the new one in one
transaction, so readers see either the old or the new active model, never
none and never two.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.schema import Clip, Job, ModelVersion, TrainingRun, utcnow

LABELLED_JOB_STATES = ("done", "done_with_errors")


class ModelNotFound(LookupError):
    pass


class RegistryConflict(RuntimeError):
    """Another process changed the active model at the same moment."""


class RetrainRunning(RuntimeError):
    """A retrain holds the lock; the message says which one."""


class RunNotFound(LookupError):
    pass


# --- models ------------------------------------------------------------------------------------


def active_model(session: Session) -> ModelVersion | None:
    return session.scalar(select(ModelVersion).where(ModelVersion.status == "active"))


def list_models(session: Session) -> list[ModelVersion]:
    return list(session.scalars(select(ModelVersion).order_by(ModelVersion.created_at.desc(), ModelVersion.version)))


def register_model(session: Session, *, version: str, path: str, sha256: str, status: str = "candidate", **fields: Any) -> ModelVersion:
    """Insert one version (``fields``: parent_version, metrics, data_summary, split) and commit.

    ``status="active"`` only succeeds while no other version is active.
    """
    row = ModelVersion(version=version, path=path, sha256=sha256, status=status, created_at=utcnow(), **fields)
    session.add(row)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise RegistryConflict(f"model version {version!r} exists already, or another version is active") from None
    return row


def promote(session: Session, version: str, *, expected_active: str | None = None, settle_run: int | None = None, **run_values: Any) -> tuple[str | None, str]:
    """Make ``version`` the active model and retire the one before; returns ``(old, new)``.

    One transaction: the old row is retired before the new one is activated,
    so the partial unique index sees one active row at every statement, and a
    concurrent promotion fails on that index instead of leaving two. With
    ``expected_active`` the promotion is refused when the active model changed
    meanwhile; with ``settle_run`` that retrain run is marked done
    (``run_values``) in the same transaction, so a crash cannot leave a
    promotion whose run looks failed.
    """
    target = session.get(ModelVersion, version, with_for_update=True)
    if target is None:
        known = ", ".join(m.version for m in list_models(session)) or "none"
        raise ModelNotFound(f"no model version {version!r} in the registry (known: {known})")
    current = active_model(session)
    old = current.version if current else None
    if expected_active is not None and old != expected_active:
        session.rollback()
        raise RegistryConflict(f"the active model changed from {expected_active} to {old} during the retrain")
    try:
        if old != version:
            session.execute(update(ModelVersion).where(ModelVersion.status == "active").values(status="retired"))
            session.execute(update(ModelVersion).where(ModelVersion.version == version).values(status="active"))
        if settle_run is not None and not _settle(session, settle_run, state="done", **run_values):
            session.rollback()
            raise RegistryConflict(f"training run {settle_run} was failed meanwhile (no heartbeat): not promoting {version}")
        session.commit()
    except IntegrityError:
        session.rollback()
        raise RegistryConflict(f"another promotion happened while promoting {version!r}; try again") from None
    return old, version


def describe_model(row: ModelVersion) -> dict[str, Any]:
    """Plain values for ``voicegender models --json`` and ``GET /models``."""
    return {
        "version": row.version, "status": row.status, "path": row.path, "sha256": row.sha256,
        "parent_version": row.parent_version, "created_at": row.created_at.isoformat(),
        "metrics": row.metrics or {}, "data_summary": row.data_summary or {}, "split": row.split or {},
    }


# --- retrain runs ------------------------------------------------------------------------------


def start_run(session: Session, *, trigger: str, stale_after_s: float, unclaimed_after_s: float) -> TrainingRun:
    """Take the retrain lock: insert the one ``running`` run, after failing runs whose worker died.

    Raises :class:`RetrainRunning` naming the run that holds the lock.
    """
    now = utcnow()
    expire_stale_runs(session, older_than=now - timedelta(seconds=stale_after_s), unclaimed_older_than=now - timedelta(seconds=unclaimed_after_s))
    run = TrainingRun(state="running", trigger=trigger, stage="queued", started_at=now, heartbeat_at=now)
    session.add(run)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise RetrainRunning(_lock_holder_message(session)) from None
    return run


def _lock_holder_message(session: Session) -> str:
    holder = session.scalar(select(TrainingRun).where(TrainingRun.state == "running"))
    if holder is None:  # it finished between our insert and this read
        return "a retrain was already running; it has just finished: ask again"
    seen = (utcnow() - _aware(holder.heartbeat_at or holder.started_at)).total_seconds()
    return (
        f"a retrain is already running: run {holder.id} ({holder.trigger}, {holder.stage}), "
        f"started {holder.started_at:%Y-%m-%d %H:%M:%S} UTC, last heartbeat {seen:.0f} s ago; "
        "only one retrain runs at a time"
    )


def _aware(t: datetime) -> datetime:
    # SQLite hands timestamps back without their zone; they were written in UTC.
    return t if t.tzinfo else t.replace(tzinfo=utcnow().tzinfo)


def claim_run(session: Session, run_id: int, *, worker: str) -> bool:
    """The worker that will train takes the run; False when it is no longer running or taken."""
    result = session.execute(
        update(TrainingRun)
        .where(TrainingRun.id == run_id, TrainingRun.state == "running", TrainingRun.worker.is_(None))
        .values(worker=worker, heartbeat_at=utcnow(), stage="starting")
    )
    session.commit()
    return result.rowcount == 1


def heartbeat_run(session: Session, run_id: int, *, stage: str | None = None) -> bool:
    """Say the run is alive (and what it does); False when it was failed meanwhile."""
    values: dict[str, Any] = {"heartbeat_at": utcnow()}
    if stage:
        values["stage"] = stage
    result = session.execute(update(TrainingRun).where(TrainingRun.id == run_id, TrainingRun.state == "running").values(**values))
    session.commit()
    return result.rowcount == 1


def update_run(session: Session, run_id: int, **values: Any) -> None:
    session.execute(update(TrainingRun).where(TrainingRun.id == run_id).values(**values))
    session.commit()


def finish_run(session: Session, run_id: int, *, state: str, **values: Any) -> bool:
    """Settle a running run (``done`` or ``failed``); False when it was settled already."""
    settled = _settle(session, run_id, state=state, **values)
    session.commit()
    return settled


def _settle(session: Session, run_id: int, *, state: str, **values: Any) -> bool:
    result = session.execute(
        update(TrainingRun).where(TrainingRun.id == run_id, TrainingRun.state == "running")
        .values(state=state, stage=state, finished_at=utcnow(), **values)
    )
    return result.rowcount == 1


def expire_stale_runs(session: Session, *, older_than: datetime, unclaimed_older_than: datetime | None = None) -> list[int]:
    """Fail running runs whose worker died, which releases the lock.

    A claimed run is stale without a heartbeat since ``older_than``; a run no
    worker has claimed yet (its message waits behind other tasks) only after
    ``unclaimed_older_than``, which callers set past the longest task.
    """
    unclaimed_older_than = unclaimed_older_than or older_than
    claimed_stale = TrainingRun.worker.is_not(None) & (TrainingRun.heartbeat_at < older_than)
    unclaimed_stale = TrainingRun.worker.is_(None) & (TrainingRun.heartbeat_at < unclaimed_older_than)
    stale = list(session.scalars(select(TrainingRun).where(TrainingRun.state == "running", claimed_stale | unclaimed_stale)))
    for run in stale:
        why = "no heartbeat from its worker: the retrain died (killed or crashed)" if run.worker else "no worker took it up in time (lost message?)"
        finish_run(session, run.id, state="failed", error=f"{why}; the active model was left as it was")
    return [run.id for run in stale]


def get_run(session: Session, run_id: int) -> TrainingRun:
    run = session.get(TrainingRun, run_id)
    if run is None:
        raise RunNotFound(f"no training run with id {run_id}")
    return run


def list_runs(session: Session, *, limit: int = 20) -> list[TrainingRun]:
    return list(session.scalars(select(TrainingRun).order_by(TrainingRun.id.desc()).limit(limit)))


def describe_run(run: TrainingRun) -> dict[str, Any]:
    return {
        "id": run.id, "state": run.state, "trigger": run.trigger, "stage": run.stage, "worker": run.worker,
        "active_version": run.active_version, "candidate_version": run.candidate_version,
        "decision": run.decision, "reason": run.reason, "error": run.error, "report": run.report_path,
        "comparison": run.comparison, "started_at": run.started_at.isoformat(),
        "finished_at": None if run.finished_at is None else run.finished_at.isoformat(),
    }


def fixed_held_out_speakers(session: Session) -> list[str] | None:
    """The held-out speakers of the first run that chose them; every later run reuses them."""
    query = select(TrainingRun.held_out_speakers).where(TrainingRun.held_out_speakers.is_not(None)).order_by(TrainingRun.id).limit(1)
    return session.scalar(query)


# --- training data from jobs -------------------------------------------------------------------


@dataclass(frozen=True)
class LabelledJobClip:
    path: str  # absolute: the job's input dir joined with the clip's path
    gender: str
    speaker: str | None
    job_id: str


def labelled_job_clips(session: Session) -> list[LabelledJobClip]:
    """Clips of finished jobs whose true label came from the user.

    A label exists only where the submission carried one (labels.csv, the
    AudioMNIST layout, gender folders, the file name: ``jobs.label_source``);
    the model's own ``prediction`` is never read here.
    """
    rows = session.execute(
        select(Job.id, Job.input_dir, Clip.path, Clip.label, Clip.speaker)
        .join(Clip, Clip.job_id == Job.id)
        .where(Job.state.in_(LABELLED_JOB_STATES), Job.label_source.is_not(None))
        .where(Clip.state == "done", Clip.label.in_(("female", "male")))
        .order_by(Job.created_at, Job.id, Clip.position)
    ).all()
    return [LabelledJobClip(path=f"{input_dir.rstrip('/')}/{path}", gender=label, speaker=speaker, job_id=job_id) for job_id, input_dir, path, label, speaker in rows]
