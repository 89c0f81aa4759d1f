"""The HTTP API against the real composition root: SQLite migrated by Alembic, the
filesystem broker, a tiny real checkpoint.

Most tests run the worker's logic in-process (``worker.jobs``) right after a
submit, so a job goes queued -> done in milliseconds; one test runs a real
``voicegender worker`` process and drives it only through HTTP.
"""
from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from classifier.synthetic import write_labelled_folder
from voicegender.processes import stop_process

from .conftest import Api

REPO = Path(__file__).resolve().parents[2]
CSV_HEADER = "path,prediction,p_female,duration_s,windows,error,label"
FINAL_STATES = {"done", "done_with_errors", "failed", "cancelled"}


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``clip_000_female.wav`` ... ``clip_003_male.wav``, 16 kHz."""
    return write_labelled_folder(tmp_path_factory.mktemp("clips"), n_clips=4, sr=16000, seed=7)


@pytest.fixture
def api(make_api: Callable[..., Api]) -> Api:
    return make_api()


def audio_parts(folder: Path, prefix: str = "") -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (f"{prefix}{p.name}", p.read_bytes(), "audio/wav")) for p in sorted(folder.glob("*.wav"))]


def zip_of(entries: dict[str | zipfile.ZipInfo, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def post_zip(api: Api, data: bytes, name: str = "batch.zip", **kwargs) -> httpx.Response:
    return api.client.post("/jobs", files=[("files", (name, data, "application/zip"))], **kwargs)


def files_named(root: Path, name: str) -> list[Path]:
    return [p for p in root.rglob(name)]


# --- uploads -----------------------------------------------------------------------------------


def test_upload_files_creates_a_queued_job_with_filename_labels(api: Api, clips: Path):
    r = api.client.post("/jobs", files=audio_parts(clips, prefix="batch/"))
    assert r.status_code == 201, r.text
    status = r.json()
    assert (status["state"], status["total"], status["label_source"]) == ("queued", 4, "filename")
    assert status["source"] == "upload: 4 file(s)"
    copied = api.settings.jobs_dir / status["id"] / "input" / "batch"
    assert sorted(p.name for p in copied.iterdir()) == sorted(p.name for p in clips.glob("*.wav"))
    assert api.uploads_left() == []  # the temp folder is gone: the job keeps its own copy
    assert api.client.get(f"/jobs/{status['id']}").json() == status


def test_upload_with_labels_file_uses_it(api: Api, clips: Path):
    names = sorted(p.name for p in clips.glob("*.wav"))
    labels = "path,gender\n" + "".join(f"{n},female\n" for n in names)  # deliberately all female
    r = api.client.post("/jobs", files=[*audio_parts(clips), ("labels", ("labels.csv", labels.encode(), "text/csv"))])
    assert r.status_code == 201, r.text
    assert r.json()["label_source"] == "labels.csv"
    api.process(r.json()["id"])
    rows = api.client.get(f"/jobs/{r.json()['id']}/results").json()
    assert [row["label"] for row in rows] == ["female"] * 4


def test_zip_upload_is_extracted_keeping_folders_and_not_nested_archives(api: Api, clips: Path):
    wavs = sorted(clips.glob("*.wav"))
    inner = zip_of({"deep.wav": wavs[0].read_bytes()})
    archive = zip_of({
        f"set/female/{wavs[0].name}": wavs[0].read_bytes(),
        f"set/male/{wavs[1].name}": wavs[1].read_bytes(),
        f"set/{wavs[2].name}": wavs[2].read_bytes(),
        "set/inner.zip": inner,
        f"__MACOSX/set/._{wavs[2].name}": b"\x00\x05\x16\x07 resource fork",
    })
    r = post_zip(api, archive)
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    assert (r.json()["total"], r.json()["source"]) == (4, "upload: batch.zip")
    assert api.process(job_id) == "done_with_errors"
    rows = api.client.get(f"/jobs/{job_id}/results").json()
    # The inner archive was never opened (no deep.wav) but is accounted for as a failed clip;
    # the macOS resource fork is no clip.
    assert sorted(row["path"] for row in rows) == sorted(
        [f"set/female/{wavs[0].name}", f"set/male/{wavs[1].name}", f"set/{wavs[2].name}", "set/inner.zip"]
    )
    inner = next(row for row in rows if row["path"] == "set/inner.zip")
    assert inner["prediction"] == "" and "archive inside the submission, not opened" in inner["error"]
    assert api.uploads_left() == []


def _symlink_entry() -> zipfile.ZipInfo:
    info = zipfile.ZipInfo("link.wav")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


@pytest.mark.parametrize(
    ("entry", "message"),
    [("../evil.wav", "escapes the upload folder"), ("ok/../../evil.wav", "escapes the upload folder"),
     ("/tmp/evil.wav", "absolute"), ("C:\\evil.wav", "absolute")],
    ids=["dotdot", "nested-dotdot", "absolute", "drive"],
)
def test_unsafe_zip_entries_are_refused_and_nothing_is_written(api: Api, clips: Path, tmp_path: Path, entry, message):
    wav = next(clips.glob("*.wav")).read_bytes()
    r = post_zip(api, zip_of({"good.wav": wav, entry: wav}))
    assert r.status_code == 400, r.text
    assert message in r.json()["detail"]
    assert files_named(tmp_path, "evil.wav") == [] and not Path("/tmp/evil.wav").exists()
    assert files_named(tmp_path, "good.wav") == []  # refused before anything was extracted
    assert api.uploads_left() == [] and api.client.get("/jobs").json()["items"] == []


def test_unsafe_upload_file_names_are_refused(api: Api, clips: Path, tmp_path: Path):
    wav = next(clips.glob("*.wav")).read_bytes()
    r = api.client.post("/jobs", files=[("files", ("../../evil.wav", wav, "audio/wav"))])
    assert r.status_code == 400 and "escapes the upload folder" in r.json()["detail"]
    assert files_named(tmp_path, "evil.wav") == [] and api.uploads_left() == []


def test_zip_bomb_and_symlink_entries_are_never_extracted(api: Api, tmp_path: Path):
    bomb = zip_of({"bomb.wav": bytes(20 << 20), _symlink_entry(): b"/etc/passwd"})  # 20 MiB of zeros deflate about 1000:1
    assert len(bomb) < 100_000
    r = post_zip(api, bomb)
    assert r.status_code == 201, r.text  # each entry fails alone (test_bad_input.py runs one beside good files)
    rows = {row["path"]: row for row in api.client.get(f"/jobs/{r.json()['id']}/results").json()}
    assert "zip bomb" in rows["bomb.wav"]["error"] and "symbolic link" in rows["link.wav"]["error"]
    assert files_named(tmp_path, "bomb.wav") == [] and files_named(tmp_path, "link.wav") == []
    assert api.uploads_left() == []


def test_zip_expanding_past_the_upload_limit_is_refused(make_api: Callable[..., Api]):
    api = make_api(max_upload_bytes=2_000_000)
    # Many entries each too small for the ratio check: only the expanded total stops them.
    archive = zip_of({f"part_{k}.wav": bytes(900_000) for k in range(8)})
    assert len(archive) < 100_000
    r = post_zip(api, archive)
    assert r.status_code == 413 and "expands to" in r.json()["detail"]


def test_too_many_files_is_413(make_api: Callable[..., Api], clips: Path):
    api = make_api(max_files=3)
    r = api.client.post("/jobs", files=audio_parts(clips))
    assert r.status_code == 413, r.text
    assert "more than 3 files" in r.json()["detail"]
    assert api.uploads_left() == []
    wavs = {p.name: p.read_bytes() for p in clips.glob("*.wav")}
    r = post_zip(api, zip_of(wavs))
    assert r.status_code == 413 and "more than 3" in r.json()["detail"]


def test_too_large_upload_is_413_by_content_length_and_while_streaming(make_api: Callable[..., Api], clips: Path):
    api = make_api(max_upload_bytes=50_000)
    r = api.client.post("/jobs", files=audio_parts(clips))
    assert r.status_code == 413 and "larger than 50000 bytes" in r.json()["detail"]
    # Without a Content-Length (chunked), the limit is enforced on the bytes as they arrive.
    encoded = httpx.Request("POST", "http://x/jobs", files=audio_parts(clips))
    body = encoded.read()
    chunks = (body[i : i + 8192] for i in range(0, len(body), 8192))
    r = api.client.post("/jobs", content=chunks, headers={"content-type": encoded.headers["content-type"]})
    assert r.status_code == 413 and "larger than 50000 bytes" in r.json()["detail"]
    assert api.uploads_left() == []


def test_bad_requests_get_a_clear_message(api: Api, clips: Path):
    r = api.client.post("/jobs", files=[("file", ("a.wav", b"RIFF", "audio/wav"))])
    assert r.status_code == 400 and "send recordings as 'files'" in r.json()["detail"]
    labels_only = [("labels", ("labels.csv", b"path,gender\n", "text/csv"))]
    r = api.client.post("/jobs", data={"idempotency_key": "k"}, files=labels_only)
    assert r.status_code == 400 and "no files uploaded" in r.json()["detail"]
    r = api.client.post("/jobs", content=b"hello", headers={"content-type": "text/plain"})
    assert r.status_code == 415
    r = api.client.post("/jobs", files=[("files", ("notes.txt", b"not audio", "text/plain"))])
    assert r.status_code == 400 and "no audio files" in r.json()["detail"]
    r = post_zip(api, b"PK\x03\x04 not really a zip")
    assert r.status_code == 400 and "zip" in r.json()["detail"]
    assert api.uploads_left() == []


# --- server-side folders -----------------------------------------------------------------------


def test_server_folder_inside_allowed_root_works_and_outside_is_403(
    make_api: Callable[..., Api], clips: Path, tmp_path: Path
):
    root = tmp_path / "shared"
    (root / "batch").mkdir(parents=True)
    for wav in clips.glob("*.wav"):
        (root / "batch" / wav.name).write_bytes(wav.read_bytes())
    (root / "escape").symlink_to(clips, target_is_directory=True)
    api = make_api(allowed_root=root)

    r = api.client.post("/jobs", json={"folder": str(root / "batch")})
    assert r.status_code == 201, r.text
    assert (r.json()["total"], r.json()["source"]) == (4, str((root / "batch").resolve()))
    r = api.client.post("/jobs", data={"folder": "batch"})  # a form field, relative to the root
    assert r.status_code == 201 and r.json()["total"] == 4, r.text
    r = api.client.post("/jobs", files={"folder": (None, "batch")})  # a multipart text field
    assert r.status_code == 201, r.text
    for outside in (str(clips), "../", "batch/../..", "escape", "/etc"):
        r = api.client.post("/jobs", json={"folder": outside})
        assert r.status_code == 403, (outside, r.text)
        assert "outside the allowed root" in r.json()["detail"]
    r = api.client.post("/jobs", json={"folder": "missing"})
    assert r.status_code == 400 and "not a folder" in r.json()["detail"]
    r = api.client.post("/jobs", json={"folder": "bat\x00ch"})
    assert r.status_code == 400 and "NUL" in r.json()["detail"]
    r = api.client.post("/jobs", json={"folder": "batch", "extra": 1})
    assert r.status_code == 400 and "extra" in r.json()["detail"]


def test_server_folders_are_refused_without_an_allowed_root(api: Api, clips: Path):
    r = api.client.post("/jobs", json={"folder": str(clips)})
    assert r.status_code == 403 and "VOICEGENDER_ALLOWED_ROOT" in r.json()["detail"]


# --- auth, idempotency, lookups ----------------------------------------------------------------


def test_token_is_required_on_post_and_delete_only(make_api: Callable[..., Api], clips: Path):
    api = make_api(api_token="s3cret-token-for-tests")
    good = {"Authorization": "Bearer s3cret-token-for-tests"}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic czNjcmV0"}):
        r = api.client.post("/jobs", files=audio_parts(clips), headers=headers)
        assert r.status_code == 401, r.text
        assert r.headers["www-authenticate"] == "Bearer" and "Authorization: Bearer" in r.json()["detail"]
    assert api.uploads_left() == []
    r = api.client.post("/jobs", files=audio_parts(clips), headers=good)
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    assert api.client.delete(f"/jobs/{job_id}").status_code == 401
    assert api.client.get(f"/jobs/{job_id}").status_code == 200  # reads stay open
    assert api.client.get("/jobs").status_code == 200
    r = api.client.delete(f"/jobs/{job_id}", headers=good)
    assert r.status_code == 200 and r.json()["cancelled"] == 4


def test_same_idempotency_key_returns_the_same_job(api: Api, clips: Path):
    first = api.client.post("/jobs", files=audio_parts(clips), data={"idempotency_key": "batch-42"})
    second = api.client.post("/jobs", files=audio_parts(clips), data={"idempotency_key": "batch-42"})
    assert (first.status_code, second.status_code) == (201, 200), (first.text, second.text)
    assert first.json()["id"] == second.json()["id"]
    assert [j["id"] for j in api.client.get("/jobs").json()["items"]] == [first.json()["id"]]
    assert sorted(p.name for p in api.settings.jobs_dir.iterdir()) == [first.json()["id"]]
    assert api.uploads_left() == []


def test_unknown_job_id_is_404_everywhere(api: Api):
    routes = [("GET", ""), ("GET", "/results"), ("GET", "/report"), ("DELETE", "")]
    for method, suffix in routes:
        path = f"/jobs/nope{suffix}"
        r = api.client.request(method, path)
        assert r.status_code == 404, (method, path)
        assert r.json() == {"detail": "no job with id nope"}


def test_job_list_pages_newest_first(api: Api, clips: Path):
    ids = [api.client.post("/jobs", files=audio_parts(clips)).json()["id"] for _ in range(3)]
    page = api.client.get("/jobs", params={"offset": 1, "limit": 1}).json()
    assert (page["offset"], page["limit"]) == (1, 1)
    assert [j["id"] for j in page["items"]] == [ids[1]]
    assert [j["id"] for j in api.client.get("/jobs").json()["items"]] == ids[::-1]
    assert api.client.get("/jobs", params={"limit": 0}).status_code == 422


# --- a job's life ------------------------------------------------------------------------------


def test_results_and_report_through_a_job(api: Api, clips: Path):
    job_id = api.client.post("/jobs", files=audio_parts(clips)).json()["id"]
    r = api.client.get(f"/jobs/{job_id}/report")
    assert r.status_code == 404 and r.json()["detail"] == f"job {job_id} has no report yet (state queued)"

    assert api.process(job_id) == "done"
    status = api.client.get(f"/jobs/{job_id}").json()
    assert (status["state"], status["done"], status["failed"], status["model_version"]) == ("done", 4, 0, "it-1")
    r = api.client.get(f"/jobs/{job_id}/results", params={"format": "csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    lines = r.text.splitlines()
    assert lines[0] == CSV_HEADER and len(lines) == 5
    rows = api.client.get(f"/jobs/{job_id}/results").json()
    assert [row["path"] for row in rows] == sorted(p.name for p in clips.glob("*.wav"))
    assert all(row["prediction"] in ("female", "male") and row["label"] in ("female", "male") for row in rows)
    r = api.client.get(f"/jobs/{job_id}/report")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert job_id in r.text
    assert api.client.get(f"/jobs/{job_id}/results", params={"format": "xml"}).status_code == 422


def test_delete_cancels_the_job(api: Api, clips: Path):
    job_id = api.client.post("/jobs", files=audio_parts(clips)).json()["id"]
    r = api.client.delete(f"/jobs/{job_id}")
    assert r.status_code == 200, r.text
    assert (r.json()["id"], r.json()["cancelled"], r.json()["pending"]) == (job_id, 4, 0)
    queue = api.settings.broker_folder / "queue"
    finalize_messages = [p for p in queue.iterdir() if b"worker.tasks.finalize_job" in p.read_bytes()]
    assert len(finalize_messages) == 1 and job_id.encode() in finalize_messages[0].read_bytes()
    assert api.process(job_id) == "cancelled"  # what that finalize message does in a worker
    assert api.client.get(f"/jobs/{job_id}").json()["state"] == "cancelled"
    assert api.client.delete(f"/jobs/{job_id}").json()["state"] == "cancelled"  # again: no change


# --- service routes ----------------------------------------------------------------------------


def test_health_models_and_docs(api: Api, tiny_model: Path):
    from classifier.model import file_sha256

    r = api.client.get("/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "database": "ok", "broker": "filesystem", "workers": 0}
    models = api.client.get("/models").json()
    assert len(models) == 1
    model = models[0]
    assert (model["version"], model["status"], model["sha256"]) == ("it-1", "active", file_sha256(tiny_model))
    assert api.client.get("/models").json() == models  # cached, same answer
    assert "swagger-ui" in api.client.get("/docs").text
    spec = api.client.get("/openapi.json").json()
    assert set(spec["paths"]["/jobs"]["post"]["requestBody"]["content"]) == {"multipart/form-data", "application/json"}


def test_models_is_503_when_the_checkpoint_is_missing(make_api: Callable[..., Api], tmp_path: Path):
    api = make_api(model_path=tmp_path / "missing.pt")
    r = api.client.get("/models")
    assert r.status_code == 503 and "model file not found" in r.json()["detail"]


# --- a real worker process ---------------------------------------------------------------------


@pytest.mark.slow
def test_a_real_worker_finishes_an_uploaded_job(make_api: Callable[..., Api], tiny_model: Path, tmp_path: Path):
    folder = write_labelled_folder(tmp_path / "in", n_clips=6, sr=16000, seed=11)
    api = make_api(heartbeat_s=0.5)
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEGENDER_")}
    env.update(
        VOICEGENDER_DATA_DIR=str(api.settings.data_dir), VOICEGENDER_MODEL_PATH=str(tiny_model),
        VOICEGENDER_HEARTBEAT_S="0.5", VOICEGENDER_SWEEP_INTERVAL_S="1", PYTHONPATH=str(REPO), OMP_NUM_THREADS="1",
    )
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "voicegender", "worker", "--pool", "solo", "--concurrency", "1"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            job_id = api.client.post("/jobs", files=audio_parts(folder)).json()["id"]
            status = wait_for_final_state(api, job_id, proc, log_path, timeout_s=120)
            health = api.client.get("/health").json()
        finally:
            stop(proc)
    assert (status["state"], status["done"], status["total"]) == ("done", 6, 6), log_path.read_text()[-3000:]
    assert health["workers"] == 1
    rows = api.client.get(f"/jobs/{job_id}/results").json()
    assert sorted(r["path"] for r in rows) == sorted(p.name for p in folder.glob("*.wav"))  # one row per clip
    assert all(r["prediction"] in ("female", "male") and r["error"] == "" for r in rows)
    r = api.client.get(f"/jobs/{job_id}/report")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")


def wait_for_final_state(api: Api, job_id: str, proc: subprocess.Popen, log_path: Path, *, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        status = api.client.get(f"/jobs/{job_id}").json()
        if status["state"] in FINAL_STATES:
            return status
        if proc.poll() is not None:
            pytest.fail(f"worker exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"job still {json.dumps(status)} after {timeout_s} s:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.25)


def stop(proc: subprocess.Popen) -> None:
    stop_process(proc)
