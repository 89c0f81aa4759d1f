"""The real service for the benchmark: a private redis-server, worker processes, jobs.

Everything lives in one work folder (SQLite database, job files, logs) and
on one loopback port, so a run touches nothing of the machine's own service.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from datetime import timezone
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import func, select

from db.schema import FINAL_JOB_STATES, Chunk, Job
from voicegender.bootstrap import Services
from voicegender.processes import stop_process
from voicegender.settings import REPO_ROOT
from worker.submit import submit_folder

# Settings the benchmark decides; any other VOICEGENDER_* (chunk size, precision...) passes through.
OWN_SETTINGS = ("DATA_DIR", "DATABASE_URL", "BROKER_URL", "RESULT_BACKEND", "MODEL_PATH", "DEVICE", "TORCH_THREADS")
START_TIMEOUT_S = 180.0


class BenchError(RuntimeError):
    """The service could not be started or a job did not finish."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def redis_server(folder: Path) -> Iterator[str]:
    """A ``redis-server`` without persistence on a free loopback port; yields its URL."""
    import redis

    binary = shutil.which("redis-server")
    if binary is None:
        raise BenchError("redis-server is not installed (apt-get install redis-server); the benchmark runs the real service on it")
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    with open(folder / "redis.log", "wb") as log:
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(folder)],
            stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            client = redis.Redis(host="127.0.0.1", port=port)
            _wait(lambda: _pings(client, proc), timeout_s=15, what=f"redis-server on port {port}")
            client.close()
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            stop_process(proc)


def _pings(client, proc: subprocess.Popen) -> bool:
    import redis

    if proc.poll() is not None:
        raise BenchError(f"redis-server exited with code {proc.returncode}")
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


@dataclass
class Workers:
    """``voicegender worker --pool solo`` processes: one process, one torch thread each, as in production."""

    env: dict[str, str]
    log_dir: Path
    procs: list[subprocess.Popen] = field(default_factory=list)
    peak_anon_kib: int = 0  # private memory (RssAnon), sampled by :meth:`sample`

    def sample(self) -> None:
        """Note the workers' private resident memory now; VmHWM also counts shared library pages."""
        for proc in self.procs:
            self.peak_anon_kib = max(self.peak_anon_kib, _status_kib(proc.pid, "RssAnon") or 0)

    def start(self) -> None:
        """One more worker; returns once it consumes and its model is loaded and warm."""
        log_path = self.log_dir / f"worker-{len(self.procs) + 1}.log"
        cmd = [sys.executable, "-m", "voicegender", "worker", "--pool", "solo", "--concurrency", "1"]
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)

        def warm() -> bool:
            if proc.poll() is not None:
                raise BenchError(f"worker exited with code {proc.returncode}; log: {log_path}")
            text = log_path.read_text(errors="replace")
            return " ready." in text and "warmed up" in text

        _wait(warm, timeout_s=START_TIMEOUT_S, what=f"worker {proc.pid} to be ready and warm (log: {log_path})")

    def peak_rss_mb(self) -> float | None:
        """The largest peak resident set (VmHWM) of any worker process so far, in MiB; None off Linux."""
        peaks = [_status_kib(p.pid, "VmHWM") for p in self.procs if p.poll() is None]
        peaks = [p for p in peaks if p is not None]
        return max(peaks) / 1024 if peaks else None

    def task_seconds(self, task: str) -> list[float]:
        """How long each run of ``task`` took, from the workers' logs (Celery's "succeeded in" lines)."""
        pattern = re.compile(rf"Task {re.escape(task)}\[[^\]]+\] succeeded in ([0-9.]+)s")
        logs = sorted(self.log_dir.glob("worker-*.log"))
        return [float(m.group(1)) for log in logs for m in pattern.finditer(log.read_text(errors="replace"))]

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()  # Celery's warm shutdown
        for proc in self.procs:
            stop_process(proc)
        self.procs.clear()


def worker_env(overrides: dict[str, str]) -> dict[str, str]:
    """The environment of a worker process: ours for :data:`OWN_SETTINGS`, one OpenMP thread."""
    env = {k: v for k, v in os.environ.items() if k.removeprefix("VOICEGENDER_") not in OWN_SETTINGS}
    # The repository first; a PYTHONPATH of the caller's (packages installed with --target) stays after it.
    env.update(PYTHONPATH=os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p), OMP_NUM_THREADS="1", VOICEGENDER_TORCH_THREADS="1")
    env.update({f"VOICEGENDER_{k}": v for k, v in overrides.items()})
    return env


@dataclass(frozen=True)
class JobRun:
    """One job's wall time from submit to report, and how it splits (from the job table's timestamps)."""

    seconds: float
    submit_s: float  # copying and hashing the files, writing the rows: in the submitting process
    classify_s: float  # submit returned -> the last chunk settled: the workers' share, the part that scales
    finalize_s: float  # last chunk -> report written: one worker, whatever the pool size


def run_job(services: Services, folder: Path, *, poll_s: float = 0.02, progress: Callable[[int], None] | None = None) -> JobRun:
    """Submit ``folder`` and wait until its report is written."""
    started, started_wall = time.perf_counter(), time.time()
    job, _ = submit_folder(services.settings, services.sessions, services.app, folder)
    submitted_wall = time.time()
    last_count = 0.0
    while True:
        with services.sessions() as s:
            row = s.get(Job, job.id)
            state, report = row.state, row.report_path
            if progress and time.perf_counter() - last_count > 2.0:
                last_count = time.perf_counter()
                progress(_settled(s, job.id))
        if state in FINAL_JOB_STATES:
            break
        if time.perf_counter() - started > 24 * 3600:
            raise BenchError(f"job {job.id} did not finish within a day")
        time.sleep(poll_s)
    elapsed = time.perf_counter() - started
    if state != "done" or not report:
        raise BenchError(f"job {job.id} ended {state!r} (report {report}); see the worker logs")
    with services.sessions() as s:
        if progress:
            progress(_settled(s, job.id))
        last_chunk = s.scalar(select(func.max(Chunk.finished_at)).where(Chunk.job_id == job.id))
        finished = s.get(Job, job.id).finished_at
    last_chunk_wall, finished_wall = _epoch(last_chunk), _epoch(finished)
    return JobRun(seconds=elapsed, submit_s=submitted_wall - started_wall, classify_s=last_chunk_wall - submitted_wall,
                  finalize_s=finished_wall - last_chunk_wall)


def _epoch(moment) -> float:
    # SQLite hands timestamps back without their zone; they were written in UTC.
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()


def _settled(session, job_id: str) -> int:
    from db import jobs as repo

    counts = repo.job_counts(session, job_id)
    return counts["done"] + counts["failed"]


def _status_kib(pid: int, key: str) -> int | None:
    """A ``kB`` field of ``/proc/PID/status`` (Linux); None where there is none."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(f"{key}:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _wait(condition: Callable[[], bool], *, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.05)

