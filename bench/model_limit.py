"""What the model alone allows: forward + GradCAM on features computed in advance.

Runs the worker's own :class:`Classifier` (same precision, layout, batch and
GradCAM layer) in as many processes as the service has workers, each with
one torch thread as a worker has, all at once; the figure is their sum.
Decoding, features, the queue and the database are left out: this is the
ceiling the end-to-end figure is measured against.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from classifier.features import compute_features
from classifier.model import load_checkpoint
from classifier.pipeline import Classifier, prepare_file, use_bf16

REPO_ROOT = Path(__file__).resolve().parents[1]

WARMUP_BATCHES = 2


@dataclass(frozen=True)
class LimitJob:
    model_path: str
    clip_paths: tuple[str, ...]  # recordings whose windows make the batch
    batch_windows: int
    precision: str
    device: str
    seconds: float
    threads: int = 1


def measure_model_limit(job: LimitJob, *, processes: int) -> dict:
    """Clips per second of ``processes`` concurrent model loops, summed.

    Each loop is a ``python -m bench.model_limit`` process (not
    multiprocessing: the CLI's ``__main__`` must not run again in a child);
    all warm up, then start together on a line from the parent.
    """
    cmd = [sys.executable, "-m", "bench.model_limit", json.dumps(asdict(job))]
    env = {**os.environ, "OMP_NUM_THREADS": str(job.threads)}
    procs = [subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(processes)]
    try:
        for proc in procs:
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError(f"model-limit process {proc.pid} failed to start (exit {proc.wait()})")
        for proc in procs:
            proc.stdin.write("go\n")
            proc.stdin.flush()
        rates = [float(proc.stdout.readline()) for proc in procs]
    except BaseException:
        for proc in procs:
            proc.kill()
        raise
    finally:
        for proc in procs:
            proc.wait()
    return {"cps": float(sum(rates)), "per_process_cps": [round(r, 1) for r in rates]}


def run_model_loop(job: LimitJob, wait_for_go) -> float:
    """Clips per second of forward + GradCAM on one production batch, repeated for ``job.seconds``."""
    torch.set_num_threads(job.threads)
    bundle = load_checkpoint(job.model_path)
    bf16 = use_bf16(job.precision, job.device)
    clf = Classifier(bundle, batch_windows=job.batch_windows, explain=True, bf16=bf16, device=job.device)
    feats = _feature_batch(clf, [Path(p) for p in job.clip_paths])
    for _ in range(WARMUP_BATCHES):
        clf.forward_features(feats)
    wait_for_go()  # every process measures while the others run, as workers do
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < job.seconds:
        logits, cam = clf.forward_features(feats)
        cam.cpu()  # the maps leave the device, as they do for the report
        done += len(feats)
    _synchronize(clf.device)
    return done / (time.perf_counter() - started)


def _feature_batch(clf: Classifier, paths: list[Path]) -> torch.Tensor:
    """One production-size batch (batch_windows, F, T) of real windows, on the model's device."""
    # Full windows only: a trimmed short clip's (short_fill "trim") is narrower and would not stack.
    windows = np.concatenate([w for w in (prepare_file(p, clf.bundle).windows for p in paths) if w.shape[1] == clf.bundle.features.window_samples])
    reps = -(-clf.batch_windows // len(windows))
    batch = np.tile(windows, (reps, 1))[: clf.batch_windows]
    return compute_features(torch.from_numpy(batch).to(clf.device), clf.bundle.features)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _main(argv: list[str]) -> int:
    job = LimitJob(**{**json.loads(argv[0]), "clip_paths": tuple(json.loads(argv[0])["clip_paths"])})

    def wait_for_go() -> None:
        print("ready", flush=True)
        sys.stdin.readline()

    print(run_model_loop(job, wait_for_go), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
