"""SQLAlchemy 2 schema. Changed only through Alembic migrations (``migrations/``)."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, MetaData, String, Text, UniqueConstraint, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Named constraints, so migrations can alter them on SQLite (batch mode) and PostgreSQL alike.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JOB_STATES = ("queued", "running", "done", "done_with_errors", "failed", "cancelled")
FINAL_JOB_STATES = ("done", "done_with_errors", "failed", "cancelled")
CLIP_STATES = ("pending", "done", "failed", "cancelled")
CHUNK_STATES = ("pending", "done", "cancelled")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    state: Mapped[str] = mapped_column(String(20), default="queued", index=True)
    source: Mapped[str] = mapped_column(Text)  # what the client submitted (folder, upload name)
    input_dir: Mapped[str] = mapped_column(Text)  # where the job's files live
    label_source: Mapped[str | None] = mapped_column(String(40))
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    model_version: Mapped[str | None] = mapped_column(String(100))
    chunk_size: Mapped[int] = mapped_column(Integer)
    total: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    report_path: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    clips: Mapped[list[Clip]] = relationship(back_populates="job", order_by="Clip.position")


class Clip(Base):
    """One submitted file; (job_id, position) is unique, so a clip exists exactly once."""

    __tablename__ = "clips"
    __table_args__ = (UniqueConstraint("job_id", "position"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    chunk: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)  # relative to the job's input_dir
    sha256: Mapped[str | None] = mapped_column(String(64))
    size_bytes: Mapped[int | None] = mapped_column(Integer)
    label: Mapped[str | None] = mapped_column(String(10))
    speaker: Mapped[str | None] = mapped_column(String(100))
    state: Mapped[str] = mapped_column(String(12), default="pending")
    prediction: Mapped[str | None] = mapped_column(String(10))
    p_female: Mapped[float | None] = mapped_column(Float)
    log_odds: Mapped[float | None] = mapped_column(Float)
    duration_s: Mapped[float | None] = mapped_column(Float)
    windows: Mapped[int | None] = mapped_column(Integer)
    attention: Mapped[list[float] | None] = mapped_column(JSON)  # per-frequency profile
    error: Mapped[str | None] = mapped_column(Text)
    error_reason: Mapped[str | None] = mapped_column(String(40))
    model_version: Mapped[str | None] = mapped_column(String(100))
    processing_ms: Mapped[float | None] = mapped_column(Float)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    job: Mapped[Job] = relationship(back_populates="clips")


class Chunk(Base):
    """A slice of a job's clips; the unit of work a task processes."""

    __tablename__ = "chunks"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    index: Mapped[int] = mapped_column(Integer, primary_key=True)
    state: Mapped[str] = mapped_column(String(12), default="pending", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


MODEL_STATES = ("candidate", "active", "retired")
RUN_STATES = ("running", "done", "failed")


def _only_one(table: str, column: str, value: str) -> Index:
    """A partial unique index: at most one row of ``table`` has ``column = value``.

    The database, not the application, keeps a second row out, whichever
    process (or machine) tries to write it.
    """
    where = text(f"{column} = '{value}'")
    return Index(f"uq_{table}_one_{value}", column, unique=True, sqlite_where=where, postgresql_where=where)


class ModelVersion(Base):
    """The model registry; exactly one row is ``active`` (a partial unique index keeps a second out)."""

    __tablename__ = "models"
    __table_args__ = (_only_one("models", "status", "active"),)

    version: Mapped[str] = mapped_column(String(100), primary_key=True)
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(12), default="candidate", index=True)  # candidate|active|retired
    parent_version: Mapped[str | None] = mapped_column(String(100))
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    data_summary: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    split: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class TrainingRun(Base):
    """One retrain; the ``running`` row is the retrain lock (a partial unique index allows one)."""

    __tablename__ = "training_runs"
    __table_args__ = (_only_one("training_runs", "state", "running"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    state: Mapped[str] = mapped_column(String(12), default="running")  # running|done|failed
    trigger: Mapped[str | None] = mapped_column(String(20))  # manual|schedule
    stage: Mapped[str | None] = mapped_column(String(40))  # what it is doing now, for status
    worker: Mapped[str | None] = mapped_column(String(200))  # host:pid that claimed it
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # stale -> the worker died
    active_version: Mapped[str | None] = mapped_column(String(100))  # the model it was compared with
    candidate_version: Mapped[str | None] = mapped_column(String(100))
    held_out_speakers: Mapped[list[str] | None] = mapped_column(JSON)  # fixed by the first run that set it
    comparison: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # both models on the held-out speakers
    decision: Mapped[str | None] = mapped_column(String(20))  # promoted|refused
    reason: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    report_path: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class WorkerHeartbeat(Base):
    """Workers say they are alive here, so the CLI can tell without a broadcast."""

    __tablename__ = "worker_heartbeats"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
