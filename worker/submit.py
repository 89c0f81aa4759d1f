"""Submitting a folder as a job: copy it under the data dir, hash, label, one transaction, then enqueue."""
from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from pathlib import Path

from celery import Celery
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from classifier.audio import is_audio_path
from classifier.labels import find_labels
from db import jobs as repo
from db.schema import Job
from voicegender.settings import Settings
from worker.app import PROCESS_JOB


class SubmissionError(ValueError):
    """The submitted folder cannot become a job (nothing to classify, outside the allowed root...)."""


def list_audio_files(folder: Path, *, max_files: int) -> list[str]:
    """POSIX paths (relative to ``folder``) of its audio files, sorted.

    Symlinks are not followed: a link could point outside the submitted folder.
    """
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if is_audio_path(name) and not path.is_symlink():
                found.append(path.relative_to(folder).as_posix())
                if len(found) > max_files:
                    raise SubmissionError(f"{folder} holds more than {max_files} audio files")
    return found


def submit_folder(
    settings: Settings,
    sessions: sessionmaker[Session],
    app: Celery,
    folder: Path,
    *,
    labels_csv: Path | None = None,
    idempotency_key: str | None = None,
    source: str | None = None,
) -> tuple[Job, bool]:
    """Create a job for ``folder``'s audio files and enqueue it; returns ``(job, created)``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SubmissionError(f"not a folder: {folder}")
    if idempotency_key:
        with sessions() as s:
            existing = s.scalar(select(Job).where(Job.idempotency_key == idempotency_key))
            if existing:
                return existing, False
    rel_paths = list_audio_files(folder, max_files=settings.max_files)
    if not rel_paths:
        raise SubmissionError(f"no audio files (.wav .flac .ogg .mp3) found in {folder}")
    job_id = uuid.uuid4().hex
    input_dir = settings.jobs_dir / job_id / "input"
    clips = [_copy_in(folder, rel, input_dir) for rel in rel_paths]
    label_source, labels = find_labels(folder, rel_paths, labels_csv=labels_csv)
    clips = [repo.NewClip(c.path, c.sha256, c.size_bytes, *(_label_fields(labels.get(c.path)))) for c in clips]
    with sessions() as s:
        job, created = repo.create_job(
            s, job_id=job_id, source=source or str(folder), input_dir=str(input_dir), clips=clips,
            chunk_size=settings.chunk_size, label_source=label_source, idempotency_key=idempotency_key,
        )
    if not created:
        shutil.rmtree(settings.jobs_dir / job_id, ignore_errors=True)
        return job, False
    app.send_task(PROCESS_JOB, args=[job.id])  # after the commit: the worker must find the rows
    return job, True


def _label_fields(label) -> tuple[str | None, str | None]:
    return (label.gender, label.speaker) if label else (None, None)


def _copy_in(folder: Path, rel: str, input_dir: Path) -> repo.NewClip:
    """Copy one file into the job's folder, hashing it on the way.

    A file that vanished or cannot be read since it was listed still becomes
    a clip: the worker then records "file not found" for it alone.
    """
    dest = input_dir / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    try:
        with open(folder / rel, "rb") as src, open(dest, "wb") as out:
            for block in iter(lambda: src.read(1 << 20), b""):
                digest.update(block)
                out.write(block)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        dest.unlink(missing_ok=True)
        return repo.NewClip(path=rel, sha256=None, size_bytes=None)
    return repo.NewClip(path=rel, sha256=digest.hexdigest(), size_bytes=dest.stat().st_size)
