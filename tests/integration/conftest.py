"""Real parts for the integration tier: a Redis server, a tiny checkpoint, the
``voicegender`` command in subprocesses and worker processes.

Nothing here is mocked and nothing runs eagerly: every fixture starts the
real program (``redis-server``, ``python -m voicegender worker``) and stops it
again, so the tests need no running service on the machine.
"""
from __future__ import annotations

import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import Engine, create_engine, text

from voicegender.processes import stop_process

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

    from voicegender.bootstrap import Services
    from voicegender.settings import Settings

REPO = Path(__file__).resolve().parents[2]
CLI_TIMEOUT_S = 240


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition: Callable[[], object], *, timeout_s: float, interval_s: float = 0.05, what: str) -> object:
    """Poll ``condition`` until it returns something truthy; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)


# --- Redis -------------------------------------------------------------------------------------


@dataclass
class RedisServer:
    port: int
    proc: subprocess.Popen

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A private ``redis-server`` on a free loopback port, without persistence."""
    import redis

    binary = shutil.which("redis-server") or next((p for p in ("/usr/bin/redis-server",) if os.path.exists(p)), None)
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server): the integration tier needs a real Redis")
    folder = tmp_path_factory.mktemp("redis")
    port = free_port()
    log = open(folder / "redis.log", "wb")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(folder), "--daemonize", "no"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    client = redis.Redis(host="127.0.0.1", port=port)

    def answers() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"redis-server exited with {proc.returncode}: {(folder / 'redis.log').read_text()[-2000:]}")
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    try:
        wait_until(answers, timeout_s=15, what=f"redis-server on port {port}")
        yield RedisServer(port=port, proc=proc)
    finally:
        client.close()
        stop_process(proc, timeout_s=10)
        log.close()


_redis_dbs = itertools.count(1)


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """A broker URL on a database of its own, emptied first, so no test reads another's messages."""
    import redis

    db = next(_redis_dbs) % 16
    with redis.Redis(host="127.0.0.1", port=redis_server.port, db=db) as client:
        client.flushdb()
    return redis_server.url(db)


# --- model, environment, CLI -------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained GenderResNet on 8 kHz log-mel (32 bands), version ``it-1``: fast, and real."""
    import torch

    from classifier.features import logmel_config
    from classifier.model import GenderResNet, ModelBundle, save_checkpoint

    torch.manual_seed(0)
    config = logmel_config(sample_rate=8000, n_mels=32)
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    save_checkpoint(ModelBundle(model=GenderResNet(config.n_bins), features=config, version="it-1"), path)
    return path


@dataclass
class Api:
    """The HTTP API in this process (FastAPI's TestClient) over the real composition root."""

    client: TestClient
    services: Services

    @property
    def settings(self) -> Settings:
        return self.services.settings

    def uploads_left(self) -> list[Path]:
        folder = self.settings.data_dir / "uploads"
        return sorted(folder.rglob("*")) if folder.exists() else []

    def process(self, job_id: str) -> str:
        """What the worker's tasks do, in this process: start, every chunk, finalize."""
        from worker import jobs as worker_jobs
        from worker.runtime import Runtime

        rt = Runtime.create(self.settings)
        for index in worker_jobs.start_job(rt, job_id):
            worker_jobs.run_chunk(rt, job_id, index)
        return worker_jobs.finalize(rt, job_id)


@pytest.fixture
def make_api(tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Api]]:
    """``make_api(**settings)``: the app on a fresh data dir (SQLite migrated by Alembic, the
    filesystem broker, the tiny model); no VOICEGENDER_* variable of the caller leaks in."""
    from fastapi.testclient import TestClient

    from api.app import create_api
    from voicegender.bootstrap import build_services
    from voicegender.settings import Settings

    for name in [n for n in os.environ if n.startswith("VOICEGENDER_")]:
        monkeypatch.delenv(name)
    clients: list[TestClient] = []

    def build(**overrides: object) -> Api:
        services = build_services(Settings(**{"data_dir": tmp_path / "data", "model_path": tiny_model, "chunk_size": 2, **overrides}))
        clients.append(TestClient(create_api(services)))
        return Api(client=clients[-1], services=services)

    yield build
    for client in clients:
        client.close()


EnvBuilder = Callable[..., dict[str, str]]


@pytest.fixture
def service_env(tmp_path: Path, tiny_model: Path) -> EnvBuilder:
    """Builds the environment of a ``voicegender`` subprocess; keywords set ``VOICEGENDER_<KEY>``.

    Nothing from the caller's ``VOICEGENDER_*`` variables leaks in. Without a
    ``broker_url`` keyword the command runs on the embedded default (SQLite
    and the filesystem broker under the data dir).
    """

    def build(**settings: object) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEGENDER_")}
        env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
        values = {
            "data_dir": tmp_path / "data",
            "model_path": tiny_model,
            "chunk_size": 4,
            "chunk_deadline_s": 60,
            "sweep_interval_s": 1,
            "heartbeat_s": 0.5,
            **settings,
        }
        env.update({f"VOICEGENDER_{k.upper()}": str(v) for k, v in values.items() if v is not None})
        return env

    return build


def run_voicegender(env: dict[str, str], *args: str, check: bool = True, timeout_s: float = CLI_TIMEOUT_S) -> subprocess.CompletedProcess:
    """``python -m voicegender ARGS`` from the repository root; fails the test with its stderr when ``check``."""
    proc = subprocess.run(
        [sys.executable, "-m", "voicegender", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout_s
    )
    if check and proc.returncode != 0:
        pytest.fail(f"voicegender {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture
def voicegender() -> Callable[..., subprocess.CompletedProcess]:
    return run_voicegender


# --- worker processes --------------------------------------------------------------------------


@dataclass
class WorkerProcess:
    proc: subprocess.Popen
    log_path: Path

    def log_tail(self, n_chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-n_chars:]

    def wait_ready(self, timeout_s: float = 90) -> None:
        """Until Celery says the worker consumes (the log line ``celery@... ready.``)."""

        def ready() -> bool:
            if self.proc.poll() is not None:
                pytest.fail(f"worker exited with {self.proc.returncode}:\n{self.log_tail()}")
            return " ready." in self.log_path.read_text(errors="replace")

        wait_until(ready, timeout_s=timeout_s, interval_s=0.1, what=f"worker {self.proc.pid} to be ready")

    def kill(self) -> None:
        """SIGKILL: no warm shutdown, no ack, no goodbye to the database."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)


@contextmanager
def running_worker(env: dict[str, str], log_path: Path) -> Iterator[WorkerProcess]:
    """``voicegender worker --pool solo --concurrency 1`` for the duration of the block."""
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "voicegender", "worker", "--pool", "solo", "--concurrency", "1"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            yield WorkerProcess(proc=proc, log_path=log_path)
        finally:
            stop_process(proc)


@pytest.fixture
def worker(tmp_path: Path) -> Callable[[dict[str, str]], contextmanager]:
    """``with worker(env) as w:`` runs a real worker process; each gets its own log file in tmp."""
    counter = itertools.count(1)

    def start(env: dict[str, str]):
        return running_worker(env, tmp_path / f"worker-{next(counter)}.log")

    return start


# --- the job table, read directly --------------------------------------------------------------


class JobTable:
    """Reads the jobs and clips tables of a data dir's SQLite database, as plain dicts."""

    def __init__(self, data_dir: Path) -> None:
        self.engine: Engine = create_engine(f"sqlite:///{data_dir / 'voicegender.db'}")

    def job(self, job_id: str) -> dict:
        with self.engine.connect() as conn:
            return dict(conn.execute(text("SELECT * FROM jobs WHERE id = :id"), {"id": job_id}).mappings().one())

    def job_ids(self) -> list[str]:
        with self.engine.connect() as conn:
            return list(conn.execute(text("SELECT id FROM jobs")).scalars())

    def clips(self, job_id: str) -> list[dict]:
        with self.engine.connect() as conn:
            rows = conn.execute(text("SELECT * FROM clips WHERE job_id = :id ORDER BY position"), {"id": job_id}).mappings()
            return [dict(r) for r in rows]

    def chunks(self, job_id: str) -> list[dict]:
        with self.engine.connect() as conn:
            rows = conn.execute(text('SELECT * FROM chunks WHERE job_id = :id ORDER BY "index"'), {"id": job_id}).mappings()
            return [dict(r) for r in rows]

    def count(self, job_id: str, state: str) -> int:
        with self.engine.connect() as conn:
            query = text("SELECT count(*) FROM clips WHERE job_id = :id AND state = :state")
            return conn.execute(query, {"id": job_id, "state": state}).scalar_one()


@pytest.fixture
def job_table() -> Iterator[Callable[[Path], JobTable]]:
    tables: list[JobTable] = []

    def open_table(data_dir: Path) -> JobTable:
        tables.append(JobTable(Path(data_dir)))
        return tables[-1]

    yield open_table
    for table in tables:
        table.engine.dispose()
