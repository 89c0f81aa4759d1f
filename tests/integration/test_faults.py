"""Faults with real processes: the broker restarted, the database locked or down, the
data directory full, the same submission raced. Each test checks what the design
promises: every clip recorded exactly once, and a clear state when a job cannot end well.

(Worker SIGKILLs, five at different points of one job, are in ``test_service.py``.)
"""
from __future__ import annotations

import concurrent.futures
import errno
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from classifier.synthetic import write_labelled_folder

from .conftest import REPO, free_port, wait_until
from .test_service import FINAL_STATES, assert_every_clip_once, wait_for_final_row, write_long_clips

pytestmark = pytest.mark.slow
# Finalizing renders the report with model evidence; on a busy 2-core machine that alone can take minutes.
FINISH_S = 600


def submit(_voicegender, env: dict[str, str], folder: Path) -> dict:
    """What ``voicegender submit`` does, in this process: on a busy machine a fresh interpreter
    (torch imported again) can take minutes to start, and the faults here are in the service."""
    from db import jobs as repo
    from voicegender.bootstrap import build_services
    from voicegender.settings import Settings
    from worker.submit import submit_folder

    settings = Settings(**{k.removeprefix("VOICEGENDER_").lower(): v for k, v in env.items() if k.startswith("VOICEGENDER_")})
    services = build_services(settings)
    job, _ = submit_folder(settings, services.sessions, services.app, folder.resolve())
    with services.sessions() as s:
        status = repo.job_status(s, job.id)
    services.app.close()
    return status


# --- a Redis we may kill and start again --------------------------------------------------------


class RestartableRedis:
    """``redis-server`` on a fixed port, without persistence: a restart forgets every queued message."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.port = folder, free_port()
        self.proc: subprocess.Popen | None = None
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import redis

        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.folder)], stdout=open(self.folder / "redis.log", "ab"), stderr=subprocess.STDOUT,
        )
        client = redis.Redis(host="127.0.0.1", port=self.port)

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        wait_until(answers, timeout_s=15, what="redis-server to answer")
        client.close()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)


@pytest.fixture
def restartable_redis(tmp_path: Path) -> Iterator[RestartableRedis]:
    import shutil

    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    server = RestartableRedis(tmp_path / "redis")
    server.start()
    yield server
    if server.proc and server.proc.poll() is None:
        server.kill()


def test_redis_restarted_mid_job_loses_and_doubles_nothing(
    restartable_redis, service_env, worker, voicegender, job_table, tmp_path
):
    folder = write_long_clips(tmp_path / "in", n_clips=10, duration_s=5)
    env = service_env(broker_url=restartable_redis.url, chunk_size=2, chunk_deadline_s=6, sweep_interval_s=1)
    job_id = submit(voicegender, env, folder)["id"]
    table = job_table(tmp_path / "data")
    with worker(env) as w:
        w.wait_ready(timeout_s=300)
        wait_until(lambda: table.count(job_id, "done") >= 2, timeout_s=300, what="progress before the restart")
        restartable_redis.kill()  # no persistence: every queued chunk message is gone with it
        done_at_kill = table.count(job_id, "done")
        time.sleep(3)
        restartable_redis.start()
        final = wait_for_final_row(table, job_id, timeout_s=FINISH_S, worker=w)
    assert done_at_kill < 10, "the job finished before Redis went down; make the clips longer"
    assert final["state"] == "done", w.log_tail()
    assert_every_clip_once(table, job_id, folder)
    assert "Connection to broker lost" in w.log_tail(1_000_000) or "Cannot connect to redis" in w.log_tail(1_000_000)
    assert max(c["attempts"] for c in table.chunks(job_id)) >= 2, "no chunk was enqueued again after the restart"


# --- the database locked, and down ---------------------------------------------------------------


def test_sqlite_locked_for_seconds_mid_job_then_the_job_completes(service_env, redis_url, worker, voicegender, job_table, tmp_path):
    folder = write_long_clips(tmp_path / "in", n_clips=8, duration_s=5)
    env = service_env(broker_url=redis_url, chunk_size=2)
    job_id = submit(voicegender, env, folder)["id"]
    table = job_table(tmp_path / "data")
    with worker(env) as w:
        w.wait_ready(timeout_s=300)
        wait_until(lambda: table.count(job_id, "done") >= 2, timeout_s=300, what="progress before the lock")
        lock = sqlite3.connect(tmp_path / "data" / "voicegender.db", timeout=30, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")  # no other connection may write until we let go
        done_at_lock = table.count(job_id, "done")
        time.sleep(6)
        done_while_locked = table.count(job_id, "done")  # WAL: reading still works
        lock.execute("ROLLBACK")
        lock.close()
        final = wait_for_final_row(table, job_id, timeout_s=FINISH_S, worker=w)
    assert done_while_locked == done_at_lock < 8, "a clip was written while the database was locked"
    assert final["state"] == "done", w.log_tail()
    assert_every_clip_once(table, job_id, folder)


class PostgresCluster:
    """A throwaway PostgreSQL cluster we may stop and start again (``pg_ctl``)."""

    def __init__(self) -> None:
        import shutil
        import tempfile

        from .test_migrations import _as_postgres_user, postgres_bin_dir

        bin_dir = postgres_bin_dir()
        if bin_dir is None:
            pytest.skip("PostgreSQL server binaries not found (apt-get install postgresql)")
        self.bin_dir, self.as_pg, self.port = bin_dir, _as_postgres_user(), free_port()
        self.root = Path(tempfile.mkdtemp(prefix="vg-pg-faults-"))  # the postgres user must reach it
        if self.as_pg:
            shutil.chown(self.root, user="postgres")
        self._run("initdb", "-D", str(self.root / "data"), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        self.start()

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([*self.as_pg, str(self.bin_dir / tool), *args], check=True, capture_output=True, text=True, timeout=120)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.root / "data"), "-o", options, "-l", str(self.root / "server.log"), "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "fast", "-w", "stop")

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def close(self) -> None:
        import shutil

        subprocess.run([*self.as_pg, str(self.bin_dir / "pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def postgres_cluster() -> Iterator[PostgresCluster]:
    pytest.importorskip("psycopg")
    cluster = PostgresCluster()
    try:
        yield cluster
    finally:
        cluster.close()


def test_postgres_down_mid_job_tasks_retry_with_backoff_then_succeed(
    postgres_cluster, service_env, redis_url, worker, voicegender, tmp_path
):
    import psycopg

    with psycopg.connect(postgres_cluster.url("postgres").replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute("CREATE DATABASE vg_faults")
    url = postgres_cluster.url("vg_faults")
    folder = write_long_clips(tmp_path / "in", n_clips=8, duration_s=5)
    # A deadline past the test: only the tasks' own retries can finish the job, not the sweep.
    env = service_env(broker_url=redis_url, database_url=url, chunk_size=2, chunk_deadline_s=3600)
    job_id = submit(voicegender, env, folder)["id"]
    engine = create_engine(url, pool_pre_ping=True)

    def count(state: str) -> int:
        with engine.connect() as c:
            return c.execute(text("SELECT count(*) FROM clips WHERE job_id = :j AND state = :s"), {"j": job_id, "s": state}).scalar_one()

    def job_state() -> str:
        with engine.connect() as c:
            return c.execute(text("SELECT state FROM jobs WHERE id = :j"), {"j": job_id}).scalar_one()

    try:
        with worker(env) as w:
            w.wait_ready(timeout_s=300)
            wait_until(lambda: count("done") >= 2, timeout_s=300, what="progress before the outage")
            engine.dispose()
            postgres_cluster.stop()
            time.sleep(6)
            postgres_cluster.start()
            wait_until(lambda: job_state() in FINAL_STATES, timeout_s=FINISH_S, interval_s=0.5, what="the job to finish")
            log = w.log_tail(1_000_000)
        assert job_state() == "done", log[-4000:]
        with engine.connect() as c:
            clips = c.execute(text("SELECT path, state FROM clips WHERE job_id = :j ORDER BY position"), {"j": job_id}).all()
            attempts = c.execute(text("SELECT max(attempts) FROM chunks WHERE job_id = :j"), {"j": job_id}).scalar_one()
    finally:
        engine.dispose()
    assert sorted(p for p, _ in clips) == sorted(p.name for p in folder.iterdir())
    assert {s for _, s in clips} == {"done"}
    assert "Retry in" in log and "OperationalError" in log, "no task retried through the outage"
    assert attempts == 1, "the sweep enqueued a chunk again; the retry was meant to carry it"


# --- the data directory full -----------------------------------------------------------------------


@pytest.fixture
def small_data_dir(tmp_path: Path) -> Iterator[Path]:
    """``tmp_path/data`` as a 16 MiB tmpfs, so it can really fill up (needs root or CAP_SYS_ADMIN)."""
    mount_point = tmp_path / "data"
    mount_point.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount_point)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({proc.stderr.strip()}); the disk-full test needs root")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def fill(folder: Path) -> Path:
    """Write until the file system says ENOSPC; returns the filler file."""
    filler = folder / "filler.bin"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * (1 << 20))
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    return filler


def test_disk_full_mid_job_fails_the_job_clearly_and_the_service_keeps_serving(
    small_data_dir, service_env, redis_url, worker, voicegender, tmp_path
):
    (tmp_path / "db").mkdir()
    db_url = f"sqlite:///{tmp_path / 'db' / 'vg.db'}"  # the database on another disk, as PostgreSQL would be
    env = service_env(broker_url=redis_url, database_url=db_url, chunk_size=2)
    healthy = write_labelled_folder(tmp_path / "healthy", n_clips=4, sr=8000, seed=8)
    long = write_long_clips(tmp_path / "long", n_clips=8, duration_s=5)
    engine = create_engine(db_url)

    def job(job_id: str) -> dict:
        with engine.connect() as c:
            return dict(c.execute(text("SELECT * FROM jobs WHERE id = :j"), {"j": job_id}).mappings().one())

    def count(job_id: str, state: str) -> int:
        with engine.connect() as c:
            q = text("SELECT count(*) FROM clips WHERE job_id = :j AND state = :s")
            return c.execute(q, {"j": job_id, "s": state}).scalar_one()

    def finished(job_id: str) -> dict:
        return wait_until(lambda: (j := job(job_id))["finished_at"] and j, timeout_s=FINISH_S, what=f"job {job_id} to finish")

    with worker(env) as w:
        before = submit(voicegender, env, healthy)["id"]
        assert finished(before)["state"] == "done", w.log_tail()
        report_before = Path(job(before)["report_path"]).read_bytes()

        doomed = submit(voicegender, env, long)["id"]
        wait_until(lambda: count(doomed, "done") >= 2, timeout_s=300, what="progress before the disk fills")
        filler = fill(small_data_dir)
        final = finished(doomed)
        assert final["state"] == "failed", w.log_tail()
        assert "could not write the report" in final["error"] and "No space left on device" in final["error"]
        assert count(doomed, "done") == 8  # the clips themselves were recorded: only the report is missing

        refused = voicegender(env, "submit", str(healthy), check=False)
        assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr[-2000:]
        assert "cannot store the job's files under the data directory: No space left on device" in refused.stderr
        with engine.connect() as c:
            assert c.execute(text("SELECT count(*) FROM jobs")).scalar_one() == 2  # no half-made job
        assert sorted(p.name for p in (small_data_dir / "jobs").iterdir()) == sorted([before, doomed])

        filler.unlink()
        after = submit(voicegender, env, healthy)["id"]  # space again: the same worker serves on
        assert finished(after)["state"] == "done", w.log_tail()
    assert Path(job(before)["report_path"]).read_bytes() == report_before  # nothing else was touched
    with engine.connect() as c:
        assert c.execute(text("PRAGMA integrity_check")).scalar_one() == "ok"
    engine.dispose()


def test_api_answers_507_when_the_data_directory_is_full(small_data_dir, tiny_model, tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from api.app import create_api
    from voicegender.bootstrap import build_services
    from voicegender.settings import Settings

    for name in [n for n in os.environ if n.startswith("VOICEGENDER_")]:
        monkeypatch.delenv(name)
    settings = Settings(data_dir=small_data_dir, database_url=f"sqlite:///{tmp_path / 'api.db'}", model_path=tiny_model)
    services = build_services(settings)
    wav = next(write_labelled_folder(tmp_path / "clips", n_clips=1, sr=8000, seed=9).glob("*.wav")).read_bytes()
    fill(small_data_dir)
    with TestClient(create_api(services)) as client:
        r = client.post("/jobs", files=[("files", ("a.wav", wav * 40, "audio/wav"))])
        assert r.status_code == 507, r.text
        assert "No space left on device" in r.json()["detail"]
        assert client.get("/jobs").status_code == 200  # reads still served
    assert not (small_data_dir / "uploads").exists() or not any((small_data_dir / "uploads").iterdir())


# --- the same submission, raced ------------------------------------------------------------------


@pytest.fixture
def api_process(service_env, redis_url, tmp_path) -> Iterator[tuple[str, dict]]:
    """``voicegender api`` in its own process on a free port; yields (base URL, its environment)."""
    port = free_port()
    env = service_env(broker_url=redis_url, allowed_root=tmp_path)
    log = open(tmp_path / "api.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "voicegender", "api", "--port", str(port)], cwd=REPO, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"api exited {proc.returncode}: {(tmp_path / 'api.log').read_text()[-2000:]}")
        try:
            return httpx.get(f"{base}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(up, timeout_s=300, interval_s=0.2, what="the API to answer")
        yield base, env
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def test_same_idempotency_key_raced_over_http_and_cli_gives_one_job(api_process, voicegender, job_table, tmp_path):
    base, env = api_process
    folder = write_labelled_folder(tmp_path / "batch", n_clips=4, sr=8000, seed=10)
    files = [("files", (p.name, p.read_bytes(), "audio/wav")) for p in sorted(folder.glob("*.wav"))]

    def post(i: int) -> httpx.Response:
        if i % 2:  # half name a server-side folder, half upload: the key decides, not the body
            return httpx.post(f"{base}/jobs", json={"folder": "batch"}, headers={"Idempotency-Key": "race-1"}, timeout=60)
        return httpx.post(f"{base}/jobs", files=files, headers={"Idempotency-Key": "race-1"}, timeout=60)

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        cli = pool.submit(voicegender, env, "submit", str(folder), "--idempotency-key", "race-1", "--json")
        responses = list(pool.map(post, range(8)))
        cli_status = json.loads(cli.result().stdout)
    assert all(r.status_code in (200, 201) for r in responses), [r.text for r in responses]
    ids = {r.json()["id"] for r in responses} | {cli_status["id"]}
    assert len(ids) == 1
    assert sum(r.status_code == 201 for r in responses) <= 1
    table = job_table(tmp_path / "data")
    assert table.job_ids() == list(ids)
    assert [p.name for p in (tmp_path / "data" / "jobs").iterdir()] == list(ids)  # the losers' copies are gone
    assert len(table.clips(next(iter(ids)))) == 4
