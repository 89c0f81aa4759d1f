"""Mixing crops' per-band statistics (Freq-MixStyle): a training augmentation.

The idea: unseen telephone women read male if their channel's band levels
look like what training saw from men (models/MODEL_CARD.md, Known limits).
Removing the band levels outright (``--band-norm all``) took a cue the
model needs. Freq-MixStyle (Schmid et al., DCASE 2022, for unseen recording
devices) instead gives a crop another crop's per-band level and spread over
time, mixed in a random share, and keeps its label: within-band detail
(harmonics, formant movement) has to carry the answer, while inference
sees the features unchanged. Measured on the telephone-digit hold-out it
ranked worse and those women read more male (models/EXPERIMENTS.md), so
it is off by default.
"""
from __future__ import annotations

import numpy as np
import torch


def mix_band_statistics(feats: torch.Tensor, *, prob: float, generator: torch.Generator, alpha: float = 0.3, eps: float = 1e-5) -> torch.Tensor:
    """Copy of ``feats`` (B, F, T) whose chosen crops carry mixed band statistics.

    Each crop is chosen with probability ``prob``; a chosen crop's bins are
    standardised over time, then given ``lam * own + (1 - lam) * other``
    mean and std of a partner from a random permutation of the batch (now
    and then the crop itself, which leaves it as it was), ``lam ~ Beta(alpha,
    alpha)`` (small alpha: mostly near-own or near-other, seldom halfway).
    """
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"band mix prob must be in [0, 1], got {prob}")
    if alpha <= 0:
        raise ValueError(f"band mix alpha must be positive, got {alpha}")
    b = feats.shape[0]
    chosen = torch.rand(b, generator=generator) < prob
    partner = torch.randperm(b, generator=generator)
    # torch's Beta takes no generator; a seed drawn from it keeps the run reproducible.
    rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=generator)))
    lam = torch.from_numpy(rng.beta(alpha, alpha, size=b)).to(feats.dtype).reshape(b, 1, 1)
    mean = feats.mean(dim=2, keepdim=True)
    std = (feats.var(dim=2, keepdim=True) + eps).sqrt()
    mixed_mean = lam * mean + (1 - lam) * mean[partner]
    mixed_std = lam * std + (1 - lam) * std[partner]
    mixed = (feats - mean) / std * mixed_std + mixed_mean
    return torch.where(chosen.reshape(b, 1, 1), mixed, feats)
