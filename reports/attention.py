"""Per-job mean GradCAM maps, accumulated chunk by chunk without a database column.

Each chunk task writes ``<job dir>/cams/chunk-NNNN.npz`` holding, per
predicted class, the sum of its clips' (frequency x time) maps and their
count. The file is replaced atomically, so a redelivered chunk rewrites the
same file instead of adding twice; the finalize sums the files.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from classifier.pipeline import ClipResult

log = logging.getLogger(__name__)


@dataclass
class ClassMaps:
    """Mean map per predicted class and how many clips each mean holds."""

    classes: tuple[str, ...]
    sums: np.ndarray  # (C, F, T)
    counts: np.ndarray  # (C,)

    def mean(self, name: str) -> np.ndarray | None:
        """(F, T) mean map of clips predicted ``name``; None when there are none."""
        k = self.classes.index(name)
        return self.sums[k] / self.counts[k] if self.counts[k] else None


def chunk_cams_path(folder: Path, index: int) -> Path:
    return folder / f"chunk-{index:04d}.npz"


def predicted_class(result: ClipResult, classes: Sequence[str]) -> int | None:
    """Index of the class a clip's map explains (the calibrated verdict; "uncertain" by p_female)."""
    if result.p_female is None:
        return None
    return classes.index(result.prediction) if result.prediction in classes else (0 if result.p_female >= 0.5 else 1)


def write_chunk_cams(folder: Path, index: int, results: list[ClipResult], classes: Sequence[str]) -> Path | None:
    """Sum this chunk's clip maps per predicted class into one file; None when no clip has a map."""
    explained = [(predicted_class(r, classes), r.cam) for r in results if r.cam is not None and r.p_female is not None]
    if not explained:
        return None
    shape = explained[0][1].shape
    sums = np.zeros((len(classes), *shape), dtype=np.float64)
    counts = np.zeros(len(classes), dtype=np.int64)
    for k, cam in explained:
        sums[k] += cam
        counts[k] += 1
    return save_npz(chunk_cams_path(folder, index), sums=sums, counts=counts, classes=np.array(classes))


def save_npz(path: Path, **arrays: np.ndarray) -> Path:
    """Write a chunk's file whole or not at all: a chunk delivered twice rewrites it, never tears it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # per process: two deliveries never share a tmp file
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    os.replace(tmp, path)
    return path


def read_job_cams(folder: Path, classes: Sequence[str]) -> ClassMaps | None:
    """Sum every chunk file of a job; files of another shape (a model changed mid-job) are skipped."""
    total: ClassMaps | None = None
    for path in sorted(folder.glob("chunk-*.npz")):
        with np.load(path) as data:
            if tuple(data["classes"].tolist()) != tuple(classes):
                log.warning("%s: classes %s, expected %s; skipped", path, data["classes"].tolist(), list(classes))
                continue
            sums, counts = data["sums"], data["counts"]
        if total is None:
            total = ClassMaps(classes=tuple(classes), sums=sums.copy(), counts=counts.copy())
        elif sums.shape == total.sums.shape:
            total.sums += sums
            total.counts += counts
        else:
            log.warning("%s: maps of shape %s, expected %s; skipped", path, sums.shape[1:], total.sums.shape[1:])
    return total
