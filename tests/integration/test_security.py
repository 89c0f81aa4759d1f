"""Security properties of the API and the settings, against the real app (SQLite migrated
by Alembic, the filesystem broker, a tiny real checkpoint).

Names from clients never write outside the job's folder, server-side folders
stay under the allowed root with links not followed, limits hold while bytes
arrive, secrets stay out of logs and error messages, production refuses default
tokens, and the report escapes whatever a client named.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.uploads import UploadLimits, UploadRefused, contained, extract_zip, safe_relative_path
from classifier.synthetic import write_labelled_folder
from voicegender.settings import Settings

from .conftest import REPO

TOKEN = "tok-7f3a9c1e5b2d4680aa17"  # a test secret: it must never show up in a log or a response


@pytest.fixture(scope="module")
def wav_bytes(tmp_path_factory) -> bytes:
    folder = write_labelled_folder(tmp_path_factory.mktemp("sec-clips"), n_clips=1, sr=8000, seed=12)
    return next(folder.glob("*.wav")).read_bytes()


# --- names never leave the upload folder ----------------------------------------------------


NAME_PARTS = st.sampled_from(["..", ".", "", "a", "b.wav", "/", "\\", "C:", "~", "%2e%2e", "\u2025", "..\\..", " ", "\x00", "\x7f"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.one_of(st.lists(NAME_PARTS, max_size=8).map("/".join), st.text(max_size=80)))
def test_any_upload_name_stays_inside_the_folder_or_is_refused(tmp_path, name):
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    try:
        rel = safe_relative_path(name)
        target = contained(root, rel)
    except UploadRefused as exc:
        assert str(exc)
        return
    assert isinstance(rel, PurePosixPath) and not rel.is_absolute() and ".." not in rel.parts
    assert target.resolve().is_relative_to(root.resolve())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=st.lists(st.one_of(st.lists(NAME_PARTS, min_size=1, max_size=6).map("/".join), st.text(min_size=1, max_size=40)),
                      min_size=1, max_size=6))
def test_any_zip_entry_names_extract_inside_the_folder_or_are_refused(tmp_path_factory, names):
    base = tmp_path_factory.mktemp("zip")
    dest = base / "upload" / "files"
    dest.mkdir(parents=True)
    archive = base / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name in names:
            zf.writestr(zipfile.ZipInfo(name), b"RIFF")
    try:
        written, rejected = extract_zip(archive, dest, UploadLimits(max_bytes=1 << 20, max_files=100))
    except UploadRefused:
        written, rejected = [], []
    outside = [p for p in base.rglob("*") if p.is_file() and p != archive and not p.resolve().is_relative_to(dest.resolve())]
    assert outside == []
    assert all((dest / w).is_file() for w in written)
    assert all(not (dest / r).is_file() for r, _ in rejected)  # a rejected entry leaves nothing behind


def test_hostile_multipart_names_write_nothing_outside(make_api, wav_bytes, tmp_path):
    api = make_api()
    for name in ("../../escape.wav", "/etc/escape.wav", "..\\..\\escape.wav", "a/../../escape.wav", "C:/escape.wav",
                 "a/" * 40 + "deep.wav", "x" * 300 + ".wav"):
        r = api.client.post("/jobs", files=[("files", (name, wav_bytes, "audio/wav"))])
        assert r.status_code == 400, (name, r.text)
    assert not [p for p in tmp_path.rglob("escape.wav")] and not Path("/etc/escape.wav").exists()
    assert not any((api.services.settings.data_dir / "uploads").iterdir())
    assert api.client.get("/jobs").json()["items"] == []


# --- server-side folders: only under the allowed root, links never followed ------------------


def test_server_folder_links_are_not_followed_out_of_the_root(make_api, wav_bytes, tmp_path):
    root = tmp_path / "shared"
    batch = root / "batch"
    batch.mkdir(parents=True)
    (batch / "real.wav").write_bytes(wav_bytes)
    secret = tmp_path / "private"
    secret.mkdir()
    (secret / "secret.wav").write_bytes(wav_bytes + b"PRIVATE")
    (batch / "passwd.wav").symlink_to("/etc/passwd")
    (batch / "private").symlink_to(secret, target_is_directory=True)
    (root / "via_link").symlink_to(secret, target_is_directory=True)
    api = make_api(allowed_root=root)

    r = api.client.post("/jobs", json={"folder": "batch"})
    assert r.status_code == 201, r.text
    assert api.process(r.json()["id"]) == "done_with_errors"
    rows = {row["path"]: row for row in api.client.get(f"/jobs/{r.json()['id']}/results").json()}
    assert rows["real.wav"]["prediction"] in ("female", "male")
    for link in ("passwd.wav", "private"):
        assert "symbolic link; links are not followed" in rows[link]["error"]
    copied = [p for p in api.services.settings.jobs_dir.rglob("*") if p.is_file() and p.suffix == ".wav"]
    assert [p.name for p in copied] == ["real.wav"]
    assert all(b"PRIVATE" not in p.read_bytes() and b"root:" not in p.read_bytes() for p in copied)
    for folder in ("via_link", str(secret), "/", "batch/../../private"):
        r = api.client.post("/jobs", json={"folder": folder})
        assert r.status_code == 403 and "outside the allowed root" in r.json()["detail"], (folder, r.text)


# --- limits hold while the bytes arrive -------------------------------------------------------


def test_an_endless_upload_is_cut_off_at_the_limit(tmp_path):
    """Driven at :func:`receive_multipart` itself: the test client would buffer the whole body first."""
    import asyncio

    from api.uploads import UploadTooLarge, receive_multipart

    sent = {"bytes": 0}
    boundary = "endless"

    async def body():
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.wav\"\r\n\r\n").encode()
        while sent["bytes"] < 50_000_000:  # 50 MB if it were read to the end
            sent["bytes"] += 65536
            yield b"\0" * 65536

    limits = UploadLimits(max_bytes=200_000, max_files=10)
    with pytest.raises(UploadTooLarge, match="larger than 200000 bytes"):
        asyncio.run(receive_multipart(body(), content_type=f"multipart/form-data; boundary={boundary}",
                                      root=tmp_path, limits=limits))
    assert sent["bytes"] <= 200_000 + 65536, sent  # it stopped at the first block past the limit
    assert sum(p.stat().st_size for p in tmp_path.rglob("*") if p.is_file()) <= 200_000


# --- tokens and secrets -------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "", "  ", "changeme", "SECRET", " token "])
def test_production_refuses_a_default_or_empty_token(token, monkeypatch):
    for name in [n for n in os.environ if n.startswith("VOICEGENDER_")]:
        monkeypatch.delenv(name)
    with pytest.raises(ValueError, match="VOICEGENDER_API_TOKEN must be set to a real secret") as info:
        Settings(mode="production", api_token=token, database_url="postgresql+psycopg://vg:db-pw-31337@db/vg")
    assert "db-pw-31337" not in str(info.value)  # the refusal does not echo the other settings
    assert Settings(mode="production", api_token=TOKEN).api_token == TOKEN
    assert Settings(mode="development", api_token=token).mode == "development"


def test_the_api_command_will_not_start_in_production_without_a_token(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEGENDER_")}
    env.update(PYTHONPATH=str(REPO), VOICEGENDER_MODE="production", VOICEGENDER_API_TOKEN="changeme",
               VOICEGENDER_DATA_DIR=str(tmp_path / "data"),
               VOICEGENDER_DATABASE_URL="postgresql+psycopg://vg:db-pw-31337@127.0.0.1:1/vg")
    proc = subprocess.run([sys.executable, "-m", "voicegender", "api", "--port", "1"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["voicegender: error: settings: VOICEGENDER_API_TOKEN must be set to a real secret when VOICEGENDER_MODE=production"]
    assert "db-pw-31337" not in proc.stderr + proc.stdout and "changeme" not in proc.stderr + proc.stdout


def test_tokens_and_passwords_stay_out_of_logs_and_responses(make_api, caplog):
    api = make_api(api_token=TOKEN, broker_url="redis://:broker-pw-4242@127.0.0.1:1/0")
    caplog.set_level(logging.DEBUG)
    seen = []
    for method, path, headers in [
        ("POST", "/jobs", {"Authorization": "Bearer wrong-" + TOKEN}),
        ("POST", "/jobs", {}),
        ("DELETE", "/jobs/nope", {"Authorization": f"Bearer {TOKEN}"}),
        ("DELETE", "/jobs/nope", {"Authorization": "Bearer " + TOKEN[:-1]}),
        ("GET", "/health", {}),
        ("GET", "/jobs", {}),
    ]:
        r = api.client.request(method, path, headers=headers)
        seen.append(r.text + str(dict(r.headers)))
    assert "redis" in seen[4] and "broker-pw" not in seen[4]
    text = caplog.text + "".join(seen)
    assert TOKEN not in text and "broker-pw-4242" not in text


# --- the report escapes what clients named ----------------------------------------------------


def test_report_escapes_file_names_and_errors_from_the_client(make_api, wav_bytes):
    api = make_api()
    script = '<script>alert("name")</script>_female.wav'
    img = "<img src=x onerror=alert(1)>.wav"
    r = api.client.post("/jobs", files=[
        ("files", (script, wav_bytes, "audio/wav")),
        ("files", (img, b"RIFF not really audio", "audio/wav")),  # fails: its error message carries the name
    ])
    assert r.status_code == 201, r.text
    assert api.process(r.json()["id"]) == "done_with_errors"
    html = api.client.get(f"/jobs/{r.json()['id']}/report").text
    assert '<script>alert("name")' not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(" in html and "&lt;img src=x onerror=alert(1)&gt;" in html


# --- stale upload folders -------------------------------------------------------------------------


def test_upload_folders_left_by_a_crash_are_removed_at_start(make_api, tmp_path):
    uploads = tmp_path / "data" / "uploads"
    stale, fresh = uploads / "crashed", uploads / "in-progress"
    for folder in (stale, fresh):
        (folder / "files").mkdir(parents=True)
        (folder / "files" / "a.wav").write_bytes(b"RIFF")
    two_days_ago = time.time() - 2 * 86400
    os.utime(stale, (two_days_ago, two_days_ago))
    make_api()
    assert not stale.exists() and (fresh / "files" / "a.wav").is_file()
