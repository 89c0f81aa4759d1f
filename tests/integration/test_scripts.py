"""Smoke runs of the measuring scripts, so they keep working between the runs whose figures the README quotes.

Small sizes and loose targets: these check that each script runs the real
stack and that its own checks hold, not the figures.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from .conftest import REPO


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
def test_loadtest_smoke_every_job_done_and_every_clip_once():
    # 3 clients x 2 jobs x 2 clips through the HTTP API, one Redis, two real workers.
    proc = subprocess.run(
        [sys.executable, "scripts/loadtest.py", "--clients", "3", "--jobs", "2", "--clips", "2", "--tiny-model",
         "--p95-ms", "60000", "--timeout-s", "600"],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "all 6 jobs done, every clip once: yes; result: PASS" in proc.stdout, proc.stdout


def test_api_memory_smoke_rss_does_not_follow_the_upload_size():
    proc = subprocess.run(
        [sys.executable, "scripts/api_memory.py", "--sizes-mb", "2", "24", "--max-growth-mb", "16", "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [(u["kind"], u["upload_mb"]) for u in result["uploads"]] == [("wav", 2), ("zip", 2), ("wav", 24), ("zip", 24)]
    assert result["rss_growth_mb"] <= 16
    assert result["idle_rss_mb"] < 400, result  # the API at rest carries no model code (torch alone is ~700 MiB)


def test_api_cpu_smoke_measures_the_status_route():
    proc = subprocess.run([sys.executable, "scripts/api_cpu.py", "--requests", "100", "--json"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["requests"] == 100 and not result["access_log"]
    assert 0 < result["server_cpu_ms_per_request"] < result["wall_ms_per_request"] * 10
