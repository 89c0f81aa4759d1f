"""Deletion check: does masking the bands an explanation points at hurt the model more than masking random bands?

If GradCAM's per-frequency attention is faithful, replacing the most-attended
feature bands with an uninformative value should lower the confidence in the
predicted class more than replacing the same number of bands chosen at random
(the "deletion" test of RISE / Petsiuk et al. 2018, applied to whole bands).
Pure computation: the caller supplies a ``predict`` function and the maps.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

Predict = Callable[[torch.Tensor], torch.Tensor]  # features (N, F, T) -> class probabilities (N, C)


@dataclass
class DeletionResult:
    """Mean confidence drops of the predicted class, per number of masked bands ``k``."""

    ks: list[int]
    n_windows: int
    base_confidence: float  # mean probability of the predicted class, nothing masked
    top_drop: list[float]  # mean drop when the k most-attended bands are masked
    random_drop: list[float]  # mean drop when k random bands are masked (mean over draws)
    difference: list[float]  # mean over windows of (top drop - random drop)
    difference_se: list[float]  # its standard error over windows

    def is_faithful(self, *, z: float = 2.0) -> bool:
        """True when, at every k, masking the top bands hurts more than random by ``z`` standard errors."""
        return all(d > z * se for d, se in zip(self.difference, self.difference_se))

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def top_bands(profiles: np.ndarray, k: int) -> np.ndarray:
    """Indices (N, k) of the ``k`` largest values of each row of ``profiles`` (N, F); ties by lower index."""
    if not 0 < k <= profiles.shape[1]:
        raise ValueError(f"k must be in 1..{profiles.shape[1]}, got {k}")
    order = np.argsort(-profiles, axis=1, kind="stable")
    return order[:, :k]


def mask_bands(features: torch.Tensor, bands: np.ndarray, fill: torch.Tensor) -> torch.Tensor:
    """Copy of ``features`` (N, F, T) with rows ``bands`` (N, k) of each window set to ``fill`` (F,)."""
    keep = torch.ones(features.shape[:2], dtype=torch.bool)  # (N, F)
    keep[torch.arange(len(bands))[:, None], torch.as_tensor(bands, dtype=torch.long)] = False
    filled = fill.to(features.dtype).reshape(1, -1, 1).expand_as(features)
    return torch.where(keep[:, :, None], features, filled)


def band_counts(n_bins: int, fractions: Sequence[float] = (1 / 16, 1 / 8, 1 / 4)) -> list[int]:
    """Numbers of bands to mask: fractions of the bins, at least 1, distinct, ascending."""
    return sorted({max(1, int(round(f * n_bins))) for f in fractions})


@dataclass
class DeletionDrops:
    """Per-window confidence drops, before averaging: parts computed apart (a job's chunks) concatenate."""

    ks: list[int]
    base: np.ndarray  # (N,) probability of the predicted class, nothing masked
    top: np.ndarray  # (K, N) drop when the k most-attended bands are masked
    random: np.ndarray  # (K, N) mean drop over the random draws of k bands

    @staticmethod
    def concat(parts: Sequence[DeletionDrops]) -> DeletionDrops:
        if not parts or any(p.ks != parts[0].ks for p in parts):
            raise ValueError(f"need parts with the same ks, got {[p.ks for p in parts]}")
        return DeletionDrops(
            ks=list(parts[0].ks),
            base=np.concatenate([p.base for p in parts]),
            top=np.concatenate([p.top for p in parts], axis=1),
            random=np.concatenate([p.random for p in parts], axis=1),
        )

    def summary(self) -> DeletionResult:
        n = len(self.base)
        diff = self.top - self.random  # (K, N)
        se = diff.std(axis=1, ddof=1) / np.sqrt(n) if n > 1 else np.full(len(self.ks), np.inf)
        return DeletionResult(
            ks=list(self.ks), n_windows=n, base_confidence=float(self.base.mean()),
            top_drop=self.top.mean(axis=1).tolist(), random_drop=self.random.mean(axis=1).tolist(),
            difference=diff.mean(axis=1).tolist(), difference_se=[float(v) for v in se],
        )


def deletion_drops(
    predict: Predict,
    features: torch.Tensor,
    profiles: np.ndarray,
    *,
    fill: torch.Tensor,
    ks: Sequence[int],
    n_random: int = 4,
    seed: int = 0,
) -> DeletionDrops:
    """Per-window confidence drops when masking the most-attended vs random bands.

    Parameters
    ----------
    predict : callable, features (N, F, T) -> probabilities (N, C)
    features : torch.Tensor [shape=(N, F, T)]
    profiles : np.ndarray [shape=(N, F)], per-window attention over the feature bins
    fill : torch.Tensor [shape=(F,)], value a masked band takes (e.g. the training mean)
    ks : numbers of bands to mask
    n_random : random draws of ``k`` bands per window
    """
    if features.ndim != 3 or profiles.shape != tuple(features.shape[:2]):
        raise ValueError(f"features (N, F, T) and profiles (N, F) disagree: {tuple(features.shape)} vs {profiles.shape}")
    if len(features) == 0:
        raise ValueError("no windows to check")
    rng = np.random.default_rng(seed)
    n, n_bins = profiles.shape
    # Every masked copy goes to ``predict`` in one call (the caller batches it):
    # per k, the top bands, then ``n_random`` random draws.
    masks = []
    for k in ks:
        masks.append(top_bands(profiles, k))
        masks.extend(np.stack([rng.choice(n_bins, size=k, replace=False) for _ in range(n)]) for _ in range(n_random))
    probs = predict(torch.cat([features] + [mask_bands(features, bands, fill) for bands in masks]))
    base = probs[:n]
    target = base.argmax(dim=1, keepdim=True)  # (N, 1)
    p0 = base.gather(1, target)[:, 0].numpy()
    drops = [p0 - probs[n * (j + 1) : n * (j + 2)].gather(1, target)[:, 0].numpy() for j in range(len(masks))]
    per_k = [drops[i * (1 + n_random) : (i + 1) * (1 + n_random)] for i in range(len(ks))]
    return DeletionDrops(
        ks=list(ks), base=p0.astype(np.float64),
        top=np.stack([d[0] for d in per_k]).astype(np.float64),
        random=np.stack([np.mean(d[1:], axis=0) for d in per_k]).astype(np.float64),
    )
