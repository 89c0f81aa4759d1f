"""Stopping a child process: politely first, then for certain."""
from __future__ import annotations

import subprocess


def stop_process(proc: subprocess.Popen, *, timeout_s: float = 30.0) -> int:
    """SIGTERM (a Celery worker's warm shutdown: it finishes the task at hand), wait
    up to ``timeout_s``, then SIGKILL; returns the exit code."""
    if proc.poll() is None:
        proc.terminate()
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()
