"""Submitting a folder as a job: copy it under the data dir, hash, label, one transaction, then enqueue."""
from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from collections.abc import Sequence
from typing import BinaryIO

from celery import Celery
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from classifier.audio import check_submitted_entry, is_audio_path, is_sidecar_path
from classifier.errors import InvalidAudio
from classifier.labels import find_labels
from db import jobs as repo
from db.schema import Job
from voicegender.settings import Settings
from worker.names import PROCESS_JOB


class SubmissionError(ValueError):
    """The submitted folder cannot become a job (nothing to classify, outside the allowed root...)."""


class StorageError(SubmissionError):
    """The data directory cannot hold the job's files (full, read-only): a server problem, not the input's."""


# Errors writing the job's copy that say the data directory is at fault, not the file.
STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EACCES, errno.EPERM}


@dataclass(frozen=True)
class Entry:
    """One entry of a submitted folder; ``error`` when it cannot be a recording."""

    rel: str  # POSIX path relative to the folder, as the file system spells it (may hold surrogate escapes)
    error: InvalidAudio | None = None

    @property
    def name(self) -> str:
        """The path the job records: bytes that are not UTF-8 shown as ``\\xNN``, so any database stores it."""
        return os.fsencode(self.rel).decode("utf-8", "backslashreplace")


def list_submitted_files(folder: Path, *, max_files: int, skip: frozenset[Path] = frozenset()) -> list[Entry]:
    """Every entry of ``folder`` a job accounts for, sorted within each folder.

    Sidecars (``labels.csv``, ``README``...) and the files in ``skip`` are left
    out. Symbolic links are listed but never followed (one could point
    outside the folder); they, directories named like audio files and files
    of other formats carry the error that fails their clip.
    """
    found: list[Entry] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames.sort()
        here = Path(dirpath)
        odd_dirs = [d for d in dirnames if (here / d).is_symlink() or is_audio_path(d)]
        for name in sorted([*filenames, *odd_dirs]):
            path = here / name
            if is_sidecar_path(name) or (skip and path.resolve() in skip):
                continue
            found.append(_entry(path, path.relative_to(folder).as_posix()))
            if len(found) > max_files:
                raise SubmissionError(
                    f"{folder} holds more than {max_files} files (VOICEGENDER_MAX_FILES); submit it as smaller jobs"
                )
    return found


def _entry(path: Path, rel: str) -> Entry:
    try:
        check_submitted_entry(path)
    except InvalidAudio as exc:
        return Entry(rel, exc)
    return Entry(rel)


def submit_folder(
    settings: Settings,
    sessions: sessionmaker[Session],
    app: Celery,
    folder: Path,
    *,
    labels_csv: Path | None = None,
    idempotency_key: str | None = None,
    source: str | None = None,
    rejected: Sequence[tuple[str, InvalidAudio]] = (),
) -> tuple[Job, bool]:
    """Create a job for ``folder``'s audio files and enqueue it; returns ``(job, created)``.

    ``rejected`` are entries of the submission that never reached ``folder``
    (zip entries left unextracted): each becomes a failed clip with its error.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise SubmissionError(f"not a folder: {folder}")
    if idempotency_key:
        with sessions() as s:
            existing = s.scalar(select(Job).where(Job.idempotency_key == idempotency_key))
            if existing:
                return existing, False
    skip = frozenset({labels_csv.resolve()}) if labels_csv else frozenset()
    entries = list_submitted_files(folder, max_files=settings.max_files, skip=skip)
    entries += [Entry(rel, error) for rel, error in rejected if not is_sidecar_path(rel)]
    if not any(is_audio_path(e.rel) for e in entries):
        raise SubmissionError(f"no audio files (.wav .flac .ogg .mp3) found in {folder}")
    job_id = uuid.uuid4().hex
    input_dir = settings.jobs_dir / job_id / "input"
    try:
        clips = [_copy_in(folder, e, input_dir) for e in entries]
    except StorageError:
        shutil.rmtree(settings.jobs_dir / job_id, ignore_errors=True)  # no half-copied job left behind
        raise
    label_source, labels = find_labels(folder, [c.path for c in clips], labels_csv=labels_csv)
    clips = [replace(c, **_label_fields(labels.get(c.path))) for c in clips]
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


def _label_fields(label) -> dict[str, str | None]:
    return {"label": label.gender, "speaker": label.speaker} if label else {}


def _copy_in(folder: Path, entry: Entry, input_dir: Path) -> repo.NewClip:
    """Copy one file into the job's folder, hashing it on the way.

    A file that is refused, vanished or cannot be read since it was listed
    still becomes a clip, failed with its reason; a data directory that
    cannot take the copy raises :class:`StorageError` for the whole job.
    """
    if entry.error is not None:
        return _failed(entry, _without_path(entry.error), entry.error.reason)
    try:
        # O_NOFOLLOW: a file swapped for a link since the listing is not followed;
        # O_NONBLOCK: nor does a FIFO put in its place block the submit.
        fd = os.open(folder / entry.rel, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        return _failed(entry, f"vanished or became unreadable after it was listed ({exc.strerror})", "unreadable_audio")
    with os.fdopen(fd, "rb") as src:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return _failed(entry, "is no longer a regular file", "not_a_file")
        return _write_copy(src, entry, input_dir / entry.name)


def _write_copy(src: BinaryIO, entry: Entry, dest: Path) -> repo.NewClip:
    digest = hashlib.sha256()
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(dest, "xb") as out:
            for block in iter(lambda: _read_block(src), b""):
                digest.update(block)
                out.write(block)
    except _SourceUnreadable as exc:
        _discard(dest)
        return _failed(entry, f"could not be read while copying ({exc})", "unreadable_audio")
    except FileExistsError:
        return _failed(entry, "another file of the submission is stored under the same name", "not_a_file")
    except OSError as exc:
        _discard(dest)
        if exc.errno in STORAGE_ERRNOS:
            raise StorageError(f"cannot store the job's files under the data directory: {exc.strerror}") from None
        return _failed(entry, f"cannot be stored in the job's folder ({exc.strerror})", "unreadable_audio")
    return repo.NewClip(path=entry.name, sha256=digest.hexdigest(), size_bytes=dest.stat().st_size)


def _discard(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:  # a name too long to create is too long to remove: nothing is there
        pass


class _SourceUnreadable(Exception):
    pass


def _read_block(src: BinaryIO) -> bytes:
    try:
        return src.read(1 << 20)
    except OSError as exc:  # told apart from write errors, which may be the data directory's fault
        raise _SourceUnreadable(exc.strerror or str(exc)) from None


def _failed(entry: Entry, message: str, reason: str) -> repo.NewClip:
    return repo.NewClip(path=entry.name, sha256=None, size_bytes=None, error=f"{entry.name}: {message}", error_reason=reason)


def _without_path(error: InvalidAudio) -> str:
    return str(error).removeprefix(f"{error.path}: ") if error.path else str(error)
