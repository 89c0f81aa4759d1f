"""Hostile and odd input through the real service: each bad file fails alone with a
clear reason, valid-but-odd formats classify, and the rest of the job completes.

One folder holds over thirty kinds of input (see :func:`write_bad_inputs`). It is
submitted through the CLI to a real worker on Redis, and the same files as a zip
through the HTTP API, and both must give each file the same outcome. Limits that
refuse a whole submission (100,000 files, an archive expanding past the size
limit, unsafe entry names) are checked on their own, with the message the client
sees; problems of single zip entries (a zip bomb, a name given twice, a symbolic
link, corrupt or encrypted data) fail that entry's clip and the job runs.
"""
from __future__ import annotations

import io
import json
import os
import random
import struct
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

from classifier.synthetic import make_speakers, synthesize_digit, write_labelled_folder

from .conftest import REPO, wait_until

pytestmark = pytest.mark.slow
SR = 16_000
TWO_HOURS_S = 2 * 3600


@dataclass(frozen=True)
class Expect:
    state: str  # "done" or "failed"
    reason: str | None = None  # the clip's error_reason
    says: str = ""  # a phrase the error message must hold
    via_zip: bool = True  # False: a zip cannot carry it (links, FIFOs, empty folders, names the OS refuses)


def _voice(seconds: float = 1.2, sr: int = SR, seed: int = 0) -> np.ndarray:
    speaker = make_speakers(n_female=1, n_male=1, seed=seed)[seed % 2]
    y = np.concatenate([synthesize_digit(speaker=speaker, digit=d, repetition=0, sr=sr, seed=seed) for d in range(3)])
    return y[: int(seconds * sr)].astype(np.float32)


def _riff_header(*, sr: int, n_frames: int, channels: int = 1, bits: int = 16) -> bytes:
    block_align = channels * bits // 8
    data_bytes = n_frames * block_align
    fmt = struct.pack("<HHIIHH", 1, channels, sr, sr * block_align, block_align, bits)
    return (b"RIFF" + struct.pack("<I", (36 + data_bytes) & 0xFFFFFFFF) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
            + b"data" + struct.pack("<I", data_bytes))


def _wav(y: np.ndarray, sr: int = SR, **kw) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, y, sr, format="WAV", **kw)
    return buf.getvalue()


def _corrupt_mp3() -> bytes | None:
    """A real MP3 (with its Xing frame count) whose middle frames are overwritten with noise."""
    if "MP3" not in sf.available_formats():
        return None
    buf = io.BytesIO()
    try:
        sf.write(buf, _voice(1.5), SR, format="MP3", subtype="MPEG_LAYER_III")
    except (sf.LibsndfileError, ValueError, TypeError):
        return None
    data = bytearray(buf.getvalue())
    mid = len(data) // 2
    data[mid : mid + 800] = random.Random(1).randbytes(800)
    return bytes(data)


def write_bad_inputs(folder: Path, outside: Path) -> dict[str, Expect]:
    """Fill ``folder`` with every kind of input; returns the expected outcome per clip path.

    ``outside`` is a folder next to it that symbolic links point into.
    """
    folder.mkdir(parents=True)
    outside.mkdir(parents=True)
    y = _voice()
    write_labelled_folder(folder, n_clips=4, sr=SR, seed=2)
    expect = {p.name: Expect("done") for p in folder.glob("clip_*.wav")}
    files: dict[str, tuple[bytes, Expect]] = {
        # --- broken files: each fails with its own reason
        "empty.wav": (b"", Expect("failed", "empty_file", "0 bytes")),
        "truncated_header.wav": (_wav(y)[:20], Expect("failed", "unreadable_audio", "not a readable audio file")),
        "truncated_data.wav": (_wav(y)[: len(_wav(y)) // 2], Expect("failed", "unreadable_audio", "truncated")),
        "random_bytes.wav": (random.Random(0).randbytes(8192), Expect("failed", "unreadable_audio", "not a readable")),
        "text.flac": (b"these are my notes, not a recording\n" * 40, Expect("failed", "unreadable_audio", "not a readable")),
        "zero_samples.wav": (_wav(np.zeros(0, np.float32)), Expect("failed", "no_samples", "zero samples")),
        "all_zero.wav": (_wav(np.zeros(SR, np.float32)), Expect("failed", "silent_audio", "-inf dBFS")),
        "nan_inf.wav": (_wav(np.where(np.arange(len(y)) % 97 == 0, np.nan, y).astype(np.float32), subtype="FLOAT"),
                        Expect("failed", "non_finite_samples", "NaN or infinite")),
        "inf_only.wav": (_wav(np.full(SR // 4, np.inf, np.float32), subtype="FLOAT"),
                         Expect("failed", "non_finite_samples", "NaN or infinite")),
        "one_sample.wav": (_wav(np.array([0.5], np.float32)), Expect("failed", "too_short", "1 samples")),
        "rate_2mhz.wav": (_riff_header(sr=2_000_000, n_frames=SR) + bytes(2 * SR),
                          Expect("failed", "unsupported_sample_rate", "2000000 Hz")),
        "rate_1hz.wav": (_riff_header(sr=1, n_frames=64) + (y[:64] * 32767).astype("<i2").tobytes(),
                         Expect("failed", "unsupported_sample_rate", "1 Hz")),
        "header_lies_4gb.wav": (_riff_header(sr=SR, n_frames=2_000_000_000) + (y * 32767).astype("<i2").tobytes(),
                                Expect("failed", "unreadable_audio", "truncated: header declares 2000000000 frames")),
        "header_lies_short.wav": (_riff_header(sr=SR, n_frames=3 * SR) + (y * 32767).astype("<i2").tobytes(),
                                  Expect("failed", "unreadable_audio", "truncated: header declares 48000 frames")),
        "nested.zip": (b"PK\x05\x06" + bytes(18), Expect("failed", "unsupported_format", "archive inside the submission")),
        "notes.txt": (b"a note that travelled with the recordings\n", Expect("failed", "unsupported_format", "not an audio file")),
        # --- valid but odd: each classifies
        "pcm_u8.wav": (_wav(y, subtype="PCM_U8"), Expect("done")),
        "pcm_24.wav": (_wav(y, subtype="PCM_24"), Expect("done")),
        "float32.wav": (_wav(y, subtype="FLOAT"), Expect("done")),
        "six_channels.wav": (_wav(np.stack([y * g for g in (1, 0, 0.5, 0.25, 0.75, 0.1)], axis=1), subtype="FLOAT"),
                             Expect("done")),
        "rate_8k.wav": (_wav(_voice(sr=8000), sr=8000), Expect("done")),
        "rate_48k.flac": (_encoded(_voice(sr=48_000), 48_000, "FLAC", "PCM_16"), Expect("done")),
        "clipped_square.wav": (_wav(np.sign(y + 1e-9).astype(np.float32)), Expect("done")),
        "LOUD.WAV": (_wav(y), Expect("done")),
        "album.flac/inner.wav": (_wav(y), Expect("done")),  # a folder named like a file, with a file inside
        "n" * 251 + ".wav": (_wav(y), Expect("done")),  # 255 bytes, the longest name the file system takes
    }
    mp3 = _corrupt_mp3()
    if mp3 is not None:
        files["corrupt_frame.mp3"] = (mp3, Expect("failed", "unreadable_audio", "corrupt or truncated: decoded"))
    if "OGG" in sf.available_formats():
        files["vorbis.ogg"] = (_encoded(y, SR, "OGG", "VORBIS"), Expect("done"))
    for name, (data, outcome) in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
        expect[name] = outcome
    expect["album.flac"] = Expect("failed", "not_a_file", "directory named like an audio file")

    # A two-hour recording: refused by its header before a sample is decoded. Sparse, so it costs no disk.
    two_hours = TWO_HOURS_S * 8000
    with open(folder / "two_hours.wav", "wb") as f:
        f.write(_riff_header(sr=8000, n_frames=two_hours, bits=8))
        f.truncate(44 + two_hours)
    # (Not zipped: its zeros compress 1000:1 and the upload would be refused as a zip bomb.)
    expect["two_hours.wav"] = Expect("failed", "too_long", "7200.0 s is longer than the limit", via_zip=False)

    # Sidecars travel with recordings and are no clips.
    (folder / "README.md").write_text("recorded on a Tuesday\n")
    (folder / "._clip_000.wav").write_bytes(b"\x00\x05\x16\x07 AppleDouble")

    # What a zip cannot carry: links out of the folder, a FIFO, an empty folder named like a file.
    (outside / "secret.wav").write_bytes(_wav(y))
    os.symlink(outside / "secret.wav", folder / "link_out.wav")
    os.symlink(outside, folder / "linked_folder")
    os.symlink(folder / "gone_target.wav", folder / "dangling.wav")
    os.mkfifo(folder / "pipe.wav")
    (folder / "empty_dir.wav").mkdir()
    for name in ("link_out.wav", "linked_folder", "dangling.wav"):
        expect[name] = Expect("failed", "not_a_file", "symbolic link", via_zip=False)
    expect["pipe.wav"] = Expect("failed", "not_a_file", "not a regular file", via_zip=False)
    expect["empty_dir.wav"] = Expect("failed", "not_a_file", "directory named like an audio file", via_zip=False)

    # A name that is not UTF-8 keeps its file; the job shows the bad byte escaped.
    with open(os.fsencode(folder) + b"/caf\xe9_\xff.wav", "wb") as f:
        f.write(_wav(y))
    expect["caf\\xe9_\\xff.wav"] = Expect("done", via_zip=False)
    return expect


def _encoded(y: np.ndarray, sr: int, fmt: str, subtype: str) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, y, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


def add_path_too_long_for_the_job(folder: Path, jobs_input_prefix_len: int) -> str:
    """A file whose path fits the file system here but not once copied under the job's folder."""
    budget = 4090 - len(os.fsencode(folder)) - 1  # PATH_MAX is 4096 with its NUL
    assert jobs_input_prefix_len + budget > 4096, "the data dir path is too short for this case"
    parts = []
    while budget > 250:  # NAME_MAX is 255 per component
        parts.append("d" * 200)
        budget -= 201
    name = "f" * (budget - 4) + ".wav"
    rel = "/".join([*parts, name])
    (folder / rel).parent.mkdir(parents=True)
    (folder / rel).write_bytes(_wav(_voice()))
    return rel


def assert_outcomes(rows: dict[str, dict], expect: dict[str, Expect], *, how: str) -> None:
    """Every expected clip once, each with its state, reason and a message naming it."""
    assert sorted(rows) == sorted(expect), f"{how}: clips differ from the files submitted"
    wrong = {}
    for path, outcome in expect.items():
        row = rows[path]
        got = (row["state"], row["error_reason"])
        if got != (outcome.state, outcome.reason) or outcome.says not in (row["error"] or ""):
            wrong[path[:60]] = (got, row["error"])
    assert not wrong, f"{how}: {json.dumps(wrong, indent=1)}"
    for path, row in rows.items():
        if row["state"] == "done":
            assert row["prediction"] in ("female", "male") and row["error"] is None, (how, path, row)
        else:
            assert row["prediction"] is None and row["error"].startswith(f"{path}: "), (how, path, row["error"])


# --- one job with every kind, through the CLI and a real worker -------------------------------


def test_every_bad_file_fails_alone_and_the_job_completes(service_env, redis_url, worker, voicegender, job_table, tmp_path):
    folder = tmp_path / "in"
    expect = write_bad_inputs(folder, tmp_path / "outside")
    data_dir = tmp_path / "data"
    prefix_len = len(os.fsencode(data_dir / "jobs" / ("0" * 32) / "input")) + 1
    deep = add_path_too_long_for_the_job(folder, prefix_len)
    expect[deep] = Expect("failed", "unreadable_audio", "cannot be stored in the job's folder (File name too long)")
    (folder / "vanishes.wav").write_bytes(_wav(_voice()))
    expect["vanishes.wav"] = Expect("failed", "unreadable_audio", "file not found")
    assert len(expect) >= 40  # 4 good clips and at least 36 kinds of odd or bad input

    env = service_env(broker_url=redis_url, chunk_size=8)
    started = time.monotonic()
    status = json.loads(voicegender(env, "submit", str(folder), "--json").stdout)
    submit_s = time.monotonic() - started
    assert status["total"] == len(expect) and status["state"] == "queued"
    # The file disappears between submit and processing: gone from the job's own copy.
    (data_dir / "jobs" / status["id"] / "input" / "vanishes.wav").unlink()
    table = job_table(data_dir)
    with worker(env) as w:
        job = wait_until(lambda: (j := table.job(status["id"]))["finished_at"] and j, timeout_s=300, interval_s=0.2,
                         what="the job to finish")
    assert job["state"] == "done_with_errors", w.log_tail()
    rows = {c["path"]: c for c in table.clips(status["id"])}
    assert len(rows) == len(table.clips(status["id"]))  # no path twice
    assert_outcomes(rows, expect, how="CLI + worker")
    assert submit_s < 60  # the sparse two-hour file and the rest are taken at disk speed
    assert Path(job["report_path"]).is_file()
    # The secret behind the link was never copied into the job.
    assert not list((data_dir / "jobs" / status["id"]).rglob("secret.wav"))
    results = json.loads(voicegender(env, "results", status["id"], "--format", "json").stdout)
    assert sorted(r["path"] for r in results) == sorted(expect)
    assert all(r["error"] for r in results if expect[r["path"]].state == "failed")


# --- the same files through the HTTP API, as one zip ------------------------------------------


@pytest.fixture
def api_services(tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch):
    from voicegender.bootstrap import build_services
    from voicegender.settings import Settings

    for name in [n for n in os.environ if n.startswith("VOICEGENDER_")]:
        monkeypatch.delenv(name)

    def build(**overrides):
        settings = Settings(**{"data_dir": tmp_path / "api-data", "model_path": tiny_model, "chunk_size": 8, **overrides})
        return build_services(settings)

    return build


def _process_in_process(settings, job_id: str) -> str:
    """What the worker's tasks do, run here: start, every chunk, finalize."""
    from worker import jobs as worker_jobs
    from worker.runtime import Runtime

    rt = Runtime.create(settings)
    for index in worker_jobs.start_job(rt, job_id):
        worker_jobs.run_chunk(rt, job_id, index)
    return worker_jobs.finalize(rt, job_id)


def _clip_rows(services, job_id: str) -> dict[str, dict]:
    from sqlalchemy import select

    from db.schema import Clip

    with services.sessions() as s:
        clips = s.scalars(select(Clip).where(Clip.job_id == job_id))
        return {c.path: {k: getattr(c, k) for k in ("state", "error", "error_reason", "prediction")} for c in clips}


def test_the_same_files_uploaded_as_a_zip_get_the_same_outcomes(api_services, tmp_path):
    from api.app import create_api

    folder = tmp_path / "in"
    expect = write_bad_inputs(folder, tmp_path / "outside")
    zipped = {p: e for p, e in expect.items() if e.via_zip}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in zipped:
            if (folder / path).is_file():
                zf.write(folder / path, f"batch/{path}")
        zf.writestr("batch/README.md", "a sidecar: no clip")
    services = api_services()
    with TestClient(create_api(services)) as client:
        r = client.post("/jobs", files=[("files", ("batch.zip", buffer.getvalue(), "application/zip"))])
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]
        assert r.json()["total"] == len(zipped)
        assert _process_in_process(services.settings, job_id) == "done_with_errors"
        rows = {p.removeprefix("batch/"): row for p, row in _clip_rows(services, job_id).items()}
        for row_path, row in rows.items():  # errors name the file as uploaded, inside the zip's folder
            row["error"] = row["error"] and row["error"].replace("batch/", "", 1)
        assert_outcomes(rows, zipped, how="API zip")
        results = client.get(f"/jobs/{job_id}/results").json()
        assert len(results) == len(zipped)


def test_a_multipart_file_name_that_is_not_utf8_keeps_its_file(api_services, tmp_path):
    from api.app import create_api

    services = api_services()
    wav = _wav(_voice())
    boundary = "vgboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"".encode()
            + b"caf\xe9.wav" + b"\"\r\nContent-Type: audio/wav\r\n\r\n" + wav + f"\r\n--{boundary}--\r\n".encode())
    with TestClient(create_api(services)) as client:
        r = client.post("/jobs", content=body, headers={"content-type": f"multipart/form-data; boundary={boundary}"})
        assert r.status_code == 201, r.text
        assert _process_in_process(services.settings, r.json()["id"]) == "done"
        rows = client.get(f"/jobs/{r.json()['id']}/results").json()
    assert [row["path"] for row in rows] == ["caf\ufffd.wav"]
    assert rows[0]["prediction"] in ("female", "male")


# --- limits that refuse a whole submission ----------------------------------------------------


def test_100000_tiny_files_are_refused_by_the_count_limit(service_env, tmp_path):
    """100,001 empty files: refused as soon as the listing passes the limit, before a byte is copied."""
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(100_001):
        os.close(os.open(folder / f"f{i:06d}.wav", os.O_CREAT | os.O_WRONLY, 0o644))
    env = service_env()
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "voicegender", "submit", str(folder)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    elapsed = time.monotonic() - started
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "holds more than 100000 files (VOICEGENDER_MAX_FILES)" in proc.stderr
    assert "Traceback" not in proc.stderr
    jobs_dir = tmp_path / "data" / "jobs"
    assert not jobs_dir.exists() or not any(jobs_dir.iterdir())
    assert elapsed < 120


def test_100000_entry_zip_is_refused_with_413(api_services):
    from api.app import create_api

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as zf:
        for i in range(100_001):
            zf.writestr(f"f{i:06d}.wav", b"")
    services = api_services()
    with TestClient(create_api(services)) as client:
        r = client.post("/jobs", files=[("files", ("many.zip", buffer.getvalue(), "application/zip"))])
    assert r.status_code == 413, r.text[:500]
    assert "archive holds 100001 files, more than 100000" in r.json()["detail"]
    assert not any((services.settings.data_dir / "uploads").iterdir())


def _zip(entries: list[tuple[str | zipfile.ZipInfo, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("entries", "status", "says"),
    [
        ([("a.wav", b"x"), ("sub/../a.wav", b"y")], 400, "escapes the upload folder"),
        ([("many_%d.wav" % k, bytes(900_000)) for k in range(3)], 413, "over the 2000000 byte limit"),
    ],
    ids=["dotdot", "expands-past-the-limit"],
)
def test_archive_problems_are_refused_before_anything_is_written(api_services, entries, status, says):
    from api.app import create_api

    services = api_services(max_upload_bytes=2_000_000)
    with TestClient(create_api(services)) as client:
        r = client.post("/jobs", files=[("files", ("a.zip", _zip(entries), "application/zip"))])
    assert r.status_code == status, r.text
    assert says in r.json()["detail"]
    assert not services.settings.jobs_dir.exists() or not any(services.settings.jobs_dir.iterdir())
    assert not any((services.settings.data_dir / "uploads").iterdir())


def _corrupt_entry_zip(good: bytes) -> bytes:
    """A zip whose 'broken.wav' has its deflated data overwritten (CRC and inflate fail), beside 'good.wav'."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("good.wav", good)
        zf.writestr("broken.wav", os.urandom(4000) * 4)
    data = bytearray(buffer.getvalue())
    header = data.find(b"PK\x03\x04", data.find(b"broken.wav") - 40)
    name_len, extra_len = struct.unpack_from("<HH", data, header + 26)
    start = header + 30 + name_len + extra_len
    data[start : start + 200] = bytes(range(200))
    return bytes(data)


def test_bad_zip_entries_fail_alone_and_the_rest_of_the_job_runs(api_services, tmp_path):
    from api.app import create_api
    from db.jobs import job_results
    from db.schema import Job

    good = next(write_labelled_folder(tmp_path / "src", n_clips=1, seed=5).glob("*.wav")).read_bytes()
    link = zipfile.ZipInfo("link.wav")
    link.external_attr = (0o120777) << 16  # S_IFLNK
    entries = [("good.wav", good), ("bomb.wav", bytes(50 << 20)), ("twice.wav", good), ("./twice.wav", good),
               (link, b"/etc/passwd"), ("README.txt", b"notes")]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name we write on purpose
        archive = _zip(entries)
    corrupt = _corrupt_entry_zip(good)
    services = api_services()
    with TestClient(create_api(services)) as client:
        for body, expect in (
            (archive, {"good.wav": ("", ""), "bomb.wav": ("rejected_archive_entry", "a zip bomb?"),
                       "twice.wav": ("rejected_archive_entry", "2 entries with this name; none was used"),
                       "link.wav": ("not_a_file", "symbolic link")}),
            (corrupt, {"good.wav": ("", ""), "broken.wav": ("rejected_archive_entry", "corrupt")}),
        ):
            r = client.post("/jobs", files=[("files", ("a.zip", body, "application/zip"))])
            assert r.status_code == 201, r.text
            with services.sessions() as s:
                rows = {row["path"]: row for row in job_results(s, r.json()["id"])}
                reasons = {c.path: c.error_reason or "" for c in s.get(Job, r.json()["id"]).clips}
            assert set(rows) == set(expect)  # README.txt is a sidecar, not a clip
            for path, (reason, says) in expect.items():
                assert reasons[path] == reason, (path, rows[path])
                assert says in rows[path]["error"] and (not says or rows[path]["error"].startswith(path)), rows[path]
            assert r.json()["total"] == len(expect) and r.json()["failed"] == len(expect) - 1
    stored = sorted(p.name for p in services.settings.jobs_dir.rglob("*") if p.is_file())
    assert stored == ["good.wav", "good.wav"]  # nothing of a rejected entry reached the job folders
    assert not any((services.settings.data_dir / "uploads").iterdir())


def test_nested_archive_is_a_failed_clip_never_opened(api_services):
    from api.app import create_api
    from db.jobs import job_results

    services = api_services()
    archive = _zip([("outer/inner.zip", b"PK\x05\x06" + bytes(18)), ("outer/x.wav", b"")])
    with TestClient(create_api(services)) as client:
        r = client.post("/jobs", files=[("files", ("a.zip", archive, "application/zip"))])
    assert r.status_code == 201, r.text
    with services.sessions() as s:
        rows = {row["path"]: row for row in job_results(s, r.json()["id"])}
    assert "archive inside the submission, not opened" in rows["outer/inner.zip"]["error"]
    # Only x.wav was stored: inner.zip was neither copied nor opened.
    assert [p.name for p in services.settings.jobs_dir.rglob("*") if p.is_file()] == ["x.wav"]


def test_zip_entry_flagged_utf8_with_bad_bytes_is_a_clear_400(api_services):
    from api.app import create_api

    archive = bytearray(_zip([("abc.wav", b"RIFF")]))
    # Set the UTF-8 flag (bit 11) and break the name's bytes in the central directory.
    cd = archive.rfind(b"PK\x01\x02")
    struct.pack_into("<H", archive, cd + 8, struct.unpack_from("<H", archive, cd + 8)[0] | 0x800)
    name_at = cd + 46
    archive[name_at : name_at + 3] = b"\xff\xfe\xfd"
    services = api_services()
    with TestClient(create_api(services)) as client:
        r = client.post("/jobs", files=[("files", ("a.zip", bytes(archive), "application/zip"))])
    assert r.status_code == 400, r.text
    assert "not valid UTF-8" in r.json()["detail"]


def test_idempotency_key_header_matches_the_field(api_services, tmp_path):
    from api.app import create_api

    services = api_services()
    wav = ("files", ("a.wav", _wav(_voice()), "audio/wav"))
    with TestClient(create_api(services)) as client:
        first = client.post("/jobs", files=[wav], headers={"Idempotency-Key": "upload-1"})
        again = client.post("/jobs", files=[wav], headers={"Idempotency-Key": "upload-1"})
        field = client.post("/jobs", files=[wav], data={"idempotency_key": "upload-1"})
        clash = client.post("/jobs", files=[wav], data={"idempotency_key": "other"}, headers={"Idempotency-Key": "upload-1"})
        empty = client.post("/jobs", files=[wav], headers={"Idempotency-Key": " "})
    assert (first.status_code, again.status_code, field.status_code) == (201, 200, 200), first.text
    assert first.json()["id"] == again.json()["id"] == field.json()["id"]
    assert clash.status_code == 400 and "differ" in clash.json()["detail"]
    assert empty.status_code == 400 and "1 to 200 characters" in empty.json()["detail"]
    assert [p.name for p in services.settings.jobs_dir.iterdir()] == [first.json()["id"]]
