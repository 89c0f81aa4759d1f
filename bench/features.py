"""Batched feature extraction against librosa one clip at a time, on the same windows."""
from __future__ import annotations

import time

import numpy as np
import torch

from bench.baseline import librosa_features
from classifier.features import FeatureConfig, compute_features


def measure_features(windows: np.ndarray, cfg: FeatureConfig, *, batch: int, repeats: int = 3) -> dict:
    """Clips per second of ``compute_features`` in batches vs librosa per clip, one thread each.

    Parameters
    ----------
    windows : np.ndarray [shape=(n, cfg.window_samples), dtype=float32]
    cfg : the recipe both sides compute.
    batch : clips per ``compute_features`` call (the service's batch).
    repeats : the batched side is repeated and its best pass kept (it is short).
    """
    torch.set_num_threads(1)
    y = torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32))
    compute_features(y[:batch], cfg)  # first-call set-up (filterbank, FFT plan)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for start in range(0, len(y), batch):
            compute_features(y[start : start + batch], cfg)
        best = min(best, time.perf_counter() - started)
    librosa_features(windows[0], cfg)
    started = time.perf_counter()
    for w in windows:
        librosa_features(w, cfg)
    librosa_s = time.perf_counter() - started
    batched_cps, librosa_cps = len(windows) / best, len(windows) / librosa_s
    return {"batched_cps": batched_cps, "librosa_cps": librosa_cps, "speedup": batched_cps / librosa_cps, "kind": cfg.kind}
