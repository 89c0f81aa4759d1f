"""Frequency and time masking of training features (SpecAugment): a training augmentation.

A held-out FSDD speaker's "seven", "eight" and "nine" are called female
while his other digits are not (the digit hold-out in models/EXPERIMENTS.md
traces it to Asterisk's women in training). Hiding random bands and
stretches makes the model find the answer in more than one place of the
spectrogram, so one word's fricative or formant region cannot decide a clip
on its own.

Masked cells take the training set's mean for their bin, so after the
model's per-bin standardisation they read as zero: "no evidence", not
silence (a silent band would itself be a channel cue).
"""
from __future__ import annotations

import torch


def mask_features(
    feats: torch.Tensor,
    fill: torch.Tensor,
    *,
    prob: float,
    generator: torch.Generator,
    freq_masks: int = 2,
    max_bins: int = 8,
    time_masks: int = 2,
    max_frames: int = 10,
) -> torch.Tensor:
    """Masked copy of ``feats`` (B, F, T); ``fill`` (F,) is the value per bin.

    Each crop is masked with probability ``prob``: ``freq_masks`` bands of
    0..``max_bins`` bins and ``time_masks`` stretches of 0..``max_frames``
    frames, each at a uniform position.
    """
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"mask prob must be in [0, 1], got {prob}")
    b, f, t = feats.shape
    chosen = torch.rand(b, generator=generator) < prob
    hide = _spans(b, f, freq_masks, min(max_bins, f), generator)[:, :, None] | _spans(b, t, time_masks, min(max_frames, t), generator)[:, None, :]
    hide &= chosen[:, None, None]
    return torch.where(hide, fill.reshape(1, f, 1).to(feats.dtype), feats)


def _spans(b: int, size: int, count: int, max_width: int, generator: torch.Generator) -> torch.Tensor:
    """(b, size) bool: ``count`` spans of width 0..max_width per row, placed uniformly."""
    pos = torch.arange(size)
    out = torch.zeros(b, size, dtype=torch.bool)
    for _ in range(count):
        width = torch.randint(0, max_width + 1, (b, 1), generator=generator)
        start = (torch.rand(b, 1, generator=generator) * (size - width + 1)).floor().long()
        out |= (pos >= start) & (pos < start + width)
    return out
