"""The API's own CPU per ``GET /jobs/{id}``: what a polling client costs the server.

Starts ``voicegender api`` alone (SQLite, the filesystem broker, no worker: the
job stays queued) on a loopback port in a temporary data directory, submits
one 2-clip job, then polls its status ``--requests`` times from one client in
sequence and reads the API process's CPU time (user + system, from
``/proc/PID/stat``) before and after. CPU time, unlike wall time, does not
grow when other processes share the cores, so the figure holds on a busy
machine. Under the load test's polling (hundreds of requests a second on two
cores) this per-request cost is what sets the status route's latency::

    .venv/bin/python scripts/api_cpu.py                   # 2,000 requests
    .venv/bin/python scripts/api_cpu.py --access-log      # with uvicorn's per-request log line
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
import wave
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from scripts.loadtest import _health, free_port, process, wait_for  # noqa: E402  (after the path)

WARM_UP = 50


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--access-log", action="store_true", help="start the API with --access-log")
    p.add_argument("--json", action="store_true")
    return p.parse_args(argv)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (fields 14 and 15 of /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_second_wav() -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes((np.sin(np.arange(8000) / 5) * 8000).astype("<i2").tobytes())
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="vg-api-cpu-") as tmp_name:
        tmp = Path(tmp_name)
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEGENDER_")}
        env.update(PYTHONPATH=str(REPO), VOICEGENDER_DATA_DIR=str(tmp / "data"))
        cmd = [sys.executable, "-m", "voicegender", "api", "--port", str(port)] + (["--access-log"] if args.access_log else [])
        with process(cmd, tmp / "api.log", env) as api:
            base = f"http://127.0.0.1:{port}"
            wait_for("the API", lambda: _health(base) is not None, [api], timeout_s=300)
            with httpx.Client(base_url=base, timeout=60) as client:
                wav = one_second_wav()
                r = client.post("/jobs", files=[("files", ("a.wav", wav, "audio/wav")), ("files", ("b.wav", wav, "audio/wav"))])
                if r.status_code != 201:
                    print(f"api_cpu: submitting the job got {r.status_code}: {r.text[:300]}", file=sys.stderr)
                    return 1
                url = f"/jobs/{r.json()['id']}"
                for _ in range(WARM_UP):
                    client.get(url)
                cpu0, wall0 = cpu_seconds(api.pid), time.perf_counter()
                for _ in range(args.requests):
                    if client.get(url).status_code != 200:
                        print(f"api_cpu: GET {url} failed", file=sys.stderr)
                        return 1
                cpu1, wall1 = cpu_seconds(api.pid), time.perf_counter()
    result = {
        "requests": args.requests, "access_log": args.access_log,
        "server_cpu_ms_per_request": round(1000 * (cpu1 - cpu0) / args.requests, 3),
        "wall_ms_per_request": round(1000 * (wall1 - wall0) / args.requests, 3),
    }
    print(json.dumps(result) if args.json else
          f"GET /jobs/{{id}} x {args.requests}: API CPU {result['server_cpu_ms_per_request']:.2f} ms per request, "
          f"client wall {result['wall_ms_per_request']:.2f} ms (access log {'on' if args.access_log else 'off'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
