"""Receiving uploads: a multipart body streamed to disk, or one zip archive extracted safely.

Nothing here trusts the client. Names are made relative and checked to stay
inside the upload folder; sizes and counts are enforced while the bytes
arrive, not after; a zip's entries are checked against its central directory
before anything is extracted, and counted again while they are decompressed,
because the sizes a central directory declares can lie.
"""
from __future__ import annotations

import errno
import re
import shutil
import stat
import time
import zipfile
import zlib
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool

from classifier.errors import InvalidAudio, NotAFile, RejectedArchiveEntry
from worker.submit import STORAGE_ERRNOS, StorageError

BLOCK_BYTES = 1 << 20  # files are written and extracted in 1 MiB blocks
MAX_FIELD_BYTES = 64 * 1024  # text fields (folder, idempotency_key) are short
MAX_ZIP_RATIO = 200.0
# Entries smaller than this skip the ratio check: they cannot expand far, and a
# silent or zero-padded clip legitimately compresses beyond 200:1.
RATIO_CHECKED_FROM_BYTES = 1 << 20
MAX_NAME_DEPTH = 32
MAX_NAME_PART_BYTES = 255
FILES_FIELD, LABELS_FIELD = "files", "labels"
TEXT_FIELDS = ("folder", "idempotency_key")
_DRIVE = re.compile(r"^[A-Za-z]:")


class UploadRefused(ValueError):
    """The upload is malformed or tries something unsafe (HTTP 400)."""


class UploadTooLarge(UploadRefused):
    """The upload is over a size, count or compression-ratio limit (HTTP 413)."""


def over_size_limit(max_bytes: int) -> UploadTooLarge:
    return UploadTooLarge(f"upload is larger than {max_bytes} bytes (VOICEGENDER_MAX_UPLOAD_BYTES)")


@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int  # file bytes in one upload, and an archive's expanded size
    max_files: int

    @property
    def max_body_bytes(self) -> int:
        """The raw body may exceed ``max_bytes`` by the multipart framing and the text fields."""
        return self.max_bytes + BLOCK_BYTES


@dataclass
class Upload:
    """What one multipart body left on disk under ``root``."""

    root: Path
    names: list[str] = field(default_factory=list)  # POSIX paths relative to ``folder``
    fields: dict[str, str] = field(default_factory=dict)
    labels_csv: Path | None = None
    archive: str | None = None  # the client's name for the zip, when one was sent
    rejected: list[tuple[str, InvalidAudio]] = field(default_factory=list)  # zip entries left unextracted, and why

    @property
    def folder(self) -> Path:
        return self.root / "files"

    @property
    def archive_path(self) -> Path:
        return self.root / "archive.zip"

    @property
    def source(self) -> str:
        return f"upload: {self.archive}" if self.archive else f"upload: {len(self.names)} file(s)"


def safe_relative_path(name: str) -> PurePosixPath:
    """``name`` as a relative POSIX path that cannot leave the folder it is joined to.

    Backslashes count as separators and empty or ``.`` parts are dropped;
    absolute names, drive letters, ``..`` parts and control characters are
    refused with the offending name.
    """
    raw = name.replace("\\", "/")
    if raw.startswith("/") or _DRIVE.match(raw):
        raise UploadRefused(f"absolute file names are not allowed: {name!r}")
    if any(ord(ch) < 32 or ch == "\x7f" for ch in raw):
        raise UploadRefused(f"control characters in file name: {name!r}")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if not parts:
        raise UploadRefused(f"empty file name: {name!r}")
    if ".." in parts:
        raise UploadRefused(f"file name escapes the upload folder: {name!r}")
    if len(parts) > MAX_NAME_DEPTH or any(len(p.encode()) > MAX_NAME_PART_BYTES for p in parts):
        raise UploadRefused(f"file name too deep or too long: {name[:300]!r}")
    return PurePosixPath(*parts)


def contained(root: Path, rel: PurePosixPath) -> Path:
    """``root / rel``, refused unless it resolves inside ``root`` (a last guard behind the name checks)."""
    target = root / rel
    if not target.resolve().is_relative_to(root.resolve()):
        raise UploadRefused(f"file name escapes the upload folder: {rel.as_posix()!r}")
    return target


def create_file(path: Path, rel: str) -> BinaryIO:
    """A new file at ``path``; a second file of the same name, or a name used as a folder, is refused."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return open(path, "xb", buffering=BLOCK_BYTES)
    except (FileExistsError, NotADirectoryError):
        raise UploadRefused(f"two uploaded files want the same name: {rel!r}") from None


class _MultipartSink:
    """python-multipart callbacks that write each part where it belongs while it arrives.

    Files under ``files`` go to ``upload.folder`` with their relative names, a
    ``.zip`` among them to ``upload.archive_path``, the ``labels`` file to
    ``root/labels.csv``; text fields are kept in memory, bounded.
    """

    def __init__(self, upload: Upload, limits: UploadLimits) -> None:
        self.upload, self.limits = upload, limits
        self.complete = False
        self.file_bytes = self.file_count = 0
        self._header_name = self._header_value = self._disposition = b""
        self._field: str = ""
        self._text: bytearray | None = None
        self._handle: BinaryIO | None = None

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self.on_part_begin, "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value, "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished, "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end, "on_end": self.on_end,
        }

    def on_part_begin(self) -> None:
        self._disposition = b""

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        if self._header_name.strip().lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name = self._header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        self._field = _decode(options.get(b"name", b""), what="field name")
        if b"filename" not in options:
            self._start_text_field()
            return
        # A name that is not UTF-8 keeps its file: the bad bytes become U+FFFD, as in a browser.
        filename = options[b"filename"].decode("utf-8", "replace")
        if filename:  # a browser sends an empty file input as a nameless, empty part: skip it
            dest, rel = self._file_destination(filename)
            self._handle = create_file(dest, rel)

    def _start_text_field(self) -> None:
        if self._field not in TEXT_FIELDS:
            raise UploadRefused(
                f"unexpected form field {self._field!r}; expected files, labels, folder or idempotency_key"
            )
        if self._field in self.upload.fields:
            raise UploadRefused(f"form field {self._field!r} sent twice")
        self._text = bytearray()

    def _file_destination(self, filename: str) -> tuple[Path, str]:
        if self._field == LABELS_FIELD:
            if self.upload.labels_csv is not None:
                raise UploadRefused("more than one labels file")
            self.upload.labels_csv = self.upload.root / "labels.csv"
            return self.upload.labels_csv, filename
        if self._field != FILES_FIELD:
            raise UploadRefused(
                f"unexpected file field {self._field!r}; send recordings as 'files' and labels.csv as 'labels'"
            )
        self.file_count += 1
        if self.file_count > self.limits.max_files:
            raise UploadTooLarge(f"more than {self.limits.max_files} files in one upload (VOICEGENDER_MAX_FILES)")
        rel = safe_relative_path(filename)
        if rel.suffix.lower() == ".zip":
            if self.upload.archive is not None:
                raise UploadRefused("send one .zip archive per upload")
            self.upload.archive = rel.name
            return self.upload.archive_path, rel.as_posix()
        self.upload.names.append(rel.as_posix())
        return contained(self.upload.folder, rel), rel.as_posix()

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._text is not None:
            if len(self._text) + end - start > MAX_FIELD_BYTES:
                raise UploadTooLarge(f"form field {self._field!r} is longer than {MAX_FIELD_BYTES} bytes")
            self._text += data[start:end]
            return
        if self._handle is None:
            if end > start:
                raise UploadRefused(f"a file part of {self._field!r} without a file name")
            return
        self.file_bytes += end - start
        if self.file_bytes > self.limits.max_bytes:
            raise over_size_limit(self.limits.max_bytes)
        self._handle.write(data[start:end])

    def on_part_end(self) -> None:
        if self._text is not None:
            self.upload.fields[self._field] = _decode(bytes(self._text), what=f"field {self._field!r}").strip()
        self._text = None
        self.close()

    def on_end(self) -> None:
        self.complete = True

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def _decode(raw: bytes, *, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UploadRefused(f"{what} is not UTF-8: {raw[:100]!r}") from None


def multipart_boundary(content_type: str) -> bytes:
    _, params = parse_options_header(content_type)
    if not params.get(b"boundary"):
        raise UploadRefused("multipart/form-data without a boundary")
    return params[b"boundary"]


async def receive_multipart(
    chunks: AsyncIterator[bytes], *, content_type: str, root: Path, limits: UploadLimits
) -> Upload:
    """Stream a multipart body into ``root``; a single ``.zip`` among ``files`` is then extracted.

    Raises :class:`UploadTooLarge` as soon as a limit is crossed and
    :class:`UploadRefused` for anything malformed or unsafe; the caller
    removes ``root`` either way.
    """
    upload = Upload(root=root)
    sink = _MultipartSink(upload, limits)
    parser = MultipartParser(multipart_boundary(content_type), sink.callbacks())
    with disk_errors():
        await _receive(chunks, parser, sink, limits)
        if upload.archive is not None:
            if upload.names:
                raise UploadRefused("send either audio files or one .zip archive, not both")
            upload.names, upload.rejected = await run_in_threadpool(extract_zip, upload.archive_path, upload.folder, limits)
    return upload


async def _receive(chunks: AsyncIterator[bytes], parser: MultipartParser, sink: _MultipartSink, limits: UploadLimits) -> None:
    body_bytes = 0
    try:
        async for chunk in chunks:
            body_bytes += len(chunk)
            if body_bytes > limits.max_body_bytes:
                raise over_size_limit(limits.max_bytes)
            # Parsing writes the files: off the event loop.
            await run_in_threadpool(parser.write, chunk)
    except MultipartParseError as exc:
        raise UploadRefused(f"malformed multipart body: {exc}") from None
    finally:
        sink.close()
    if not sink.complete:
        raise UploadRefused("the multipart body ended before its closing boundary (truncated upload?)")


@contextmanager
def disk_errors() -> Iterator[None]:
    """OS errors while writing an upload, said as what they mean: the client's name, or the server's disk."""
    try:
        yield
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            raise UploadRefused(f"a file name is too long to store: {str(exc.filename)[-200:]!r}") from None
        if exc.errno in STORAGE_ERRNOS:
            raise StorageError(f"cannot store the upload under the data directory: {exc.strerror}") from None
        raise


def remove_stale_uploads(uploads_dir: Path, *, older_than_s: float) -> int:
    """Remove upload folders left by a process that died mid-upload; returns how many.

    Only folders older than ``older_than_s``: another API process sharing the
    data directory may be receiving into a younger one right now.
    """
    if not uploads_dir.is_dir():
        return 0
    cutoff = time.time() - older_than_s
    stale = [p for p in uploads_dir.iterdir() if p.is_dir() and not p.is_symlink() and p.stat().st_mtime < cutoff]
    for folder in stale:
        shutil.rmtree(folder, ignore_errors=True)
    return len(stale)


def extract_zip(archive: Path, dest: Path, limits: UploadLimits) -> tuple[list[str], list[tuple[str, InvalidAudio]]]:
    """Extract ``archive`` into ``dest``; returns the relative names written and the entries rejected.

    The whole upload is refused, before anything is written, for what makes
    the archive itself unusable or hostile: an unreadable archive, absolute
    or ``..`` names, more entries than ``max_files``, an expanded size over
    ``max_bytes``. Problems of one entry (a symbolic link, a name given
    twice, a compression ratio over :data:`MAX_ZIP_RATIO`, encrypted or
    corrupt data) leave that entry unextracted and become its clip's error,
    as a bad file in a folder does; the rest of the job runs. Archives
    inside the archive are written as plain files, never opened.
    """
    try:
        with zipfile.ZipFile(archive) as zf:
            if any(not m.filename for m in zf.infolist()):  # a name of only NUL bytes; zipfile's is_dir() fails on it
                raise UploadRefused("archive holds an entry with an empty name")
            members = [m for m in zf.infolist() if not m.is_dir() and not _is_mac_metadata(m.filename)]
            members, rejected = check_zip_members(members, limits)
            dest.mkdir(parents=True, exist_ok=True)  # the job's folder, even when every entry was rejected
            budget = _ByteBudget(limits.max_bytes)
            written = []
            for rel, m in members:
                problem = _extract_member(zf, m, rel, dest, budget)
                if problem is None:
                    written.append(rel.as_posix())
                else:
                    rejected.append((rel.as_posix(), problem))
            return written, rejected
    except zipfile.BadZipFile as exc:
        raise UploadRefused(f"not a readable zip archive: {exc}") from None
    except UnicodeDecodeError as exc:  # an entry flagged UTF-8 whose name is not
        raise UploadRefused(f"an archive entry name is not valid UTF-8: {exc.object[:100]!r}") from None


def _is_mac_metadata(name: str) -> bool:
    """macOS adds ``__MACOSX/._name.wav`` resource forks: they carry audio names but no audio."""
    parts = name.replace("\\", "/").split("/")
    return parts[0] == "__MACOSX" or parts[-1].startswith("._")


def check_zip_members(
    members: list[zipfile.ZipInfo], limits: UploadLimits
) -> tuple[list[tuple[PurePosixPath, zipfile.ZipInfo]], list[tuple[str, InvalidAudio]]]:
    """The checks that need only the central directory, in one pass.

    Returns the entries to extract, each with its checked relative path, and
    the entries rejected with why.
    """
    if len(members) > limits.max_files:
        raise UploadTooLarge(
            f"archive holds {len(members)} files, more than {limits.max_files} (VOICEGENDER_MAX_FILES)"
        )
    by_name: dict[PurePosixPath, list[zipfile.ZipInfo]] = {}
    for m in members:
        by_name.setdefault(safe_relative_path(m.filename), []).append(m)
    keep: list[tuple[PurePosixPath, zipfile.ZipInfo]] = []
    rejected: list[tuple[str, InvalidAudio]] = []
    for path, same in by_name.items():
        rel = path.as_posix()
        m = same[0]
        ratio = m.file_size / max(m.compress_size, 1)
        if len(same) > 1:  # which copy would be the recording? The client must say.
            rejected.append((rel, RejectedArchiveEntry(f"the archive holds {len(same)} entries with this name; none was used")))
        elif stat.S_ISLNK(m.external_attr >> 16):
            rejected.append((rel, NotAFile("archive entry is a symbolic link; links are not extracted")))
        elif m.file_size >= RATIO_CHECKED_FROM_BYTES and ratio > MAX_ZIP_RATIO:
            rejected.append((rel, RejectedArchiveEntry(f"archive entry expands {ratio:.0f}:1, above {MAX_ZIP_RATIO:.0f}:1 (a zip bomb?); not extracted")))
        else:
            keep.append((path, m))
    total = sum(m.file_size for _, m in keep)
    if total > limits.max_bytes:
        raise UploadTooLarge(
            f"archive expands to {total} bytes, over the {limits.max_bytes} byte limit (VOICEGENDER_MAX_UPLOAD_BYTES)"
        )
    return keep, rejected


@dataclass
class _ByteBudget:
    left: int

    def spend(self, n: int, name: str) -> None:
        self.left -= n
        if self.left < 0:
            raise UploadTooLarge(f"archive expands past the upload limit while extracting {name!r}")


def _extract_member(
    zf: zipfile.ZipFile, member: zipfile.ZipInfo, rel: PurePosixPath, dest: Path, budget: _ByteBudget
) -> InvalidAudio | None:
    """Write one entry to ``dest / rel``; None when written, else why it was not (nothing of it is left on disk)."""
    path = contained(dest, rel)
    written = 0
    try:
        with zf.open(member) as src, create_file(path, rel.as_posix()) as out:
            for block in iter(lambda: src.read(BLOCK_BYTES), b""):
                written += len(block)
                if written > member.file_size:
                    raise _EntryProblem("archive entry holds more data than its header says")
                budget.spend(len(block), member.filename)
                out.write(block)
    # zipfile raises RuntimeError for "encrypted, password required"; the
    # others mean its data is corrupt or of an unknown method.
    except (_EntryProblem, RuntimeError, zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        path.unlink(missing_ok=True)
        why = exc if isinstance(exc, _EntryProblem) else f"its data is corrupt, encrypted or of an unsupported method ({exc})"
        return RejectedArchiveEntry(f"archive entry not extracted: {why}")
    return None


class _EntryProblem(Exception):
    pass
