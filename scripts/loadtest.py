"""Load test: concurrent HTTP clients submit small jobs to one API, one Redis and two workers.

Starts everything itself on the loopback interface, in a temporary data
directory: ``redis-server``, ``voicegender api`` and ``--workers`` worker
processes (``voicegender worker --pool solo``). Each of ``--clients`` threads
uploads ``--jobs`` jobs of ``--clips`` short recordings through ``POST /jobs``
and then polls ``GET /jobs/{id}`` until its jobs end, timing every request.
At the end the job table is read directly: every job must be ``done`` and
every clip recorded exactly once. Prints the figures; exits 1 when a check or
the ``GET`` p95 target fails::

    .venv/bin/python scripts/loadtest.py                      # 20 clients x 25 jobs x 2 clips
    .venv/bin/python scripts/loadtest.py --clients 2 --jobs 3 # a smoke run
"""
from __future__ import annotations

import argparse
import os
import secrets
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from voicegender.processes import stop_process  # noqa: E402  (after the path: a plain checkout runs this script)

FINAL = {"done", "done_with_errors", "failed", "cancelled"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--jobs", type=int, default=25, help="jobs per client")
    p.add_argument("--clips", type=int, default=2, help="recordings per job (1 s each, 16 kHz)")
    p.add_argument("--workers", type=int, default=2, help="worker processes")
    p.add_argument("--model", type=Path, default=None, help="checkpoint (default: the configured starter model)")
    p.add_argument("--tiny-model", action="store_true",
                   help="an untrained ResNet-34 on 8 kHz log-mel (as the tests use): measures the service, not the model")
    p.add_argument("--p95-ms", type=float, default=50.0, help="GET /jobs/{id} p95 target")
    p.add_argument("--timeout-s", type=float, default=1800.0)
    return p.parse_args(argv)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- the processes ------------------------------------------------------------------------------


@contextmanager
def process(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            stop_process(proc)


def wait_for(what: str, ready, procs: list[subprocess.Popen], timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if any(p.poll() is not None for p in procs):
            raise SystemExit(f"loadtest: a process exited while waiting for {what}")
        if time.monotonic() > deadline:
            raise SystemExit(f"loadtest: timed out waiting for {what}")
        time.sleep(0.2)


@dataclass
class Stack:
    base_url: str
    token: str
    data_dir: Path


@contextmanager
def start_stack(tmp: Path, args: argparse.Namespace) -> Iterator[Stack]:
    """redis-server, the API and the workers, stopped again on exit."""
    redis_bin = shutil.which("redis-server") or sys.exit("loadtest: redis-server is not installed")
    redis_port, api_port, token = free_port(), free_port(), secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEGENDER_")}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", VOICEGENDER_DATA_DIR=str(tmp / "data"),
               VOICEGENDER_BROKER_URL=f"redis://127.0.0.1:{redis_port}/0", VOICEGENDER_API_TOKEN=token,
               VOICEGENDER_TORCH_THREADS="1")
    if args.tiny_model:
        env["VOICEGENDER_MODEL_PATH"] = str(write_tiny_model(tmp / "tiny.pt"))
    elif args.model:
        env["VOICEGENDER_MODEL_PATH"] = str(args.model.resolve())
    vg = [sys.executable, "-m", "voicegender"]
    with ExitStack() as stack:
        redis = stack.enter_context(process(
            [redis_bin, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(tmp)], tmp / "redis.log"))
        subprocess.run([*vg, "db", "upgrade"], cwd=REPO, env=env, check=True, capture_output=True)
        api = stack.enter_context(process([*vg, "api", "--port", str(api_port)], tmp / "api.log", env))
        workers = [stack.enter_context(process([*vg, "worker", "--pool", "solo", "--concurrency", "1"],
                                               tmp / f"worker-{i}.log", env)) for i in range(args.workers)]
        base = f"http://127.0.0.1:{api_port}"
        wait_for("the API", lambda: _health(base) is not None, [redis, api])
        wait_for(f"{args.workers} workers", lambda: (_health(base) or {}).get("workers", 0) >= args.workers, [api, *workers])
        yield Stack(base_url=base, token=token, data_dir=tmp / "data")


def write_tiny_model(path: Path) -> Path:
    import torch

    from classifier.features import logmel_config
    from classifier.model import GenderResNet, ModelBundle, save_checkpoint

    torch.manual_seed(0)
    config = logmel_config(sample_rate=8000, n_mels=32)
    save_checkpoint(ModelBundle(model=GenderResNet(config.n_bins), features=config, version="load-tiny"), path)
    return path


def _health(base: str) -> dict | None:
    try:
        r = httpx.get(f"{base}/health", timeout=2)
        return r.json() if r.status_code == 200 else None
    except httpx.HTTPError:
        return None


# --- the clients --------------------------------------------------------------------------------


@dataclass
class Timings:
    lock: threading.Lock = field(default_factory=threading.Lock)
    submit_ms: list[float] = field(default_factory=list)
    get_ms: list[float] = field(default_factory=list)
    job_ids: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def write_clips(folder: Path, n: int) -> list[tuple[str, bytes]]:
    from classifier.synthetic import write_labelled_folder

    write_labelled_folder(folder, n_clips=n, sr=16_000, seed=5)
    return [(p.name, p.read_bytes()) for p in sorted(folder.glob("*.wav"))]


def run_client(k: int, stack: Stack, args: argparse.Namespace, clips: list[tuple[str, bytes]], t: Timings) -> None:
    """Submit this client's jobs one after another, then poll them until they end."""
    headers = {"Authorization": f"Bearer {stack.token}"}
    mine = []
    with httpx.Client(base_url=stack.base_url, headers=headers, timeout=120) as client:
        for j in range(args.jobs):
            picked = [clips[(k * args.jobs + j + i) % len(clips)] for i in range(args.clips)]
            files = [("files", (f"c{k:02d}_j{j:02d}_{i}_{name}", data, "audio/wav")) for i, (name, data) in enumerate(picked)]
            started = time.perf_counter()
            r = client.post("/jobs", files=files)
            elapsed = 1000 * (time.perf_counter() - started)
            if r.status_code != 201:
                t.errors.append(f"POST /jobs {r.status_code}: {r.text[:200]}")
                continue
            mine.append(r.json()["id"])
            with t.lock:
                t.submit_ms.append(elapsed)
                t.job_ids.append(mine[-1])
        poll_until_final(client, mine, t, deadline=time.monotonic() + args.timeout_s)


def poll_until_final(client: httpx.Client, ids: list[str], t: Timings, *, deadline: float) -> None:
    pending = list(ids)
    while pending and time.monotonic() < deadline:
        for job_id in list(pending):
            started = time.perf_counter()
            r = client.get(f"/jobs/{job_id}")
            elapsed = 1000 * (time.perf_counter() - started)
            with t.lock:
                t.get_ms.append(elapsed)
            if r.status_code != 200:
                t.errors.append(f"GET /jobs/{job_id} {r.status_code}")
            elif r.json()["state"] in FINAL:
                pending.remove(job_id)
        time.sleep(0.25)
    if pending:
        t.errors.append(f"{len(pending)} job(s) not finished before the deadline")


# --- checks and figures -------------------------------------------------------------------------


def verify(data_dir: Path, job_ids: list[str], clips_per_job: int) -> list[str]:
    """Read the job table directly: every job done, every clip recorded exactly once."""
    problems = []
    with sqlite3.connect(data_dir / "voicegender.db") as db:
        states = dict(db.execute("SELECT id, state FROM jobs"))
        per_job = {j: (n, distinct, done) for j, n, distinct, done in db.execute(
            "SELECT job_id, count(*), count(DISTINCT path), sum(state = 'done' AND finished_at IS NOT NULL) FROM clips GROUP BY job_id")}
    not_done = [j for j in job_ids if states.get(j) != "done"]
    if not_done:
        problems.append(f"{len(not_done)} job(s) not done: {[states.get(j) for j in not_done[:5]]}")
    wrong = [j for j in job_ids if per_job.get(j) != (clips_per_job, clips_per_job, clips_per_job)]
    if wrong:
        problems.append(f"{len(wrong)} job(s) without each clip exactly once: {[per_job.get(j) for j in wrong[:5]]}")
    if len(set(job_ids)) != len(job_ids) or set(states) != set(job_ids):
        problems.append(f"{len(states)} jobs in the table for {len(job_ids)} submitted")
    return problems


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else (values or [0.0])[0]


def print_figures(args: argparse.Namespace, t: Timings, wall_s: float, problems: list[str]) -> bool:
    n_jobs, n_clips = len(t.job_ids), len(t.job_ids) * args.clips
    p95 = percentile(t.get_ms, 95)
    model = "tiny untrained model" if args.tiny_model else f"model {args.model or 'configured default'}"
    print(f"loadtest: {args.clients} clients x {args.jobs} jobs x {args.clips} clips, {args.workers} workers, one Redis, {model}")
    print(f"  jobs submitted {n_jobs}, clips {n_clips}, wall {wall_s:.1f} s, {n_clips / wall_s:.1f} clips/s end to end")
    print(f"  POST /jobs  n={len(t.submit_ms)}  p50 {percentile(t.submit_ms, 50):.1f} ms  p95 {percentile(t.submit_ms, 95):.1f} ms")
    print(f"  GET /jobs/{{id}}  n={len(t.get_ms)}  p50 {percentile(t.get_ms, 50):.1f} ms  p95 {p95:.1f} ms  "
          f"p99 {percentile(t.get_ms, 99):.1f} ms  max {max(t.get_ms, default=0):.1f} ms  (target p95 < {args.p95_ms:g} ms)")
    for line in t.errors[:10] + problems:
        print(f"  PROBLEM: {line}")
    ok = not t.errors and not problems and p95 < args.p95_ms and n_jobs == args.clients * args.jobs
    print(f"  all {n_jobs} jobs done, every clip once: {'yes' if not problems and not t.errors else 'NO'}; "
          f"result: {'PASS' if ok else 'FAIL'}")
    return ok


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="vg-load-") as tmp_name:
        tmp = Path(tmp_name)
        clips = write_clips(tmp / "clips", 40)
        with start_stack(tmp, args) as stack:
            timings = Timings()
            started = time.monotonic()
            threads = [threading.Thread(target=run_client, args=(k, stack, args, clips, timings)) for k in range(args.clients)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            wall_s = time.monotonic() - started
            problems = verify(stack.data_dir, timings.job_ids, args.clips)
        return 0 if print_figures(args, timings, wall_s, problems) else 1


if __name__ == "__main__":
    raise SystemExit(main())
