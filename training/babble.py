"""Other voices behind a crop (babble): a training augmentation.

Heard through six-talker babble (three women, three men) 10 dB below their
own level, unseen RAVDESS women read male on 16 % of their clips, its men
on none, and every corpus loses 10 points (`scripts/noise_robustness.py`;
models/EXPERIMENTS.md, "Background noise"). The guess: the other voices
add low energy, and strong lows read male, the cue that also calls unseen
telephone women male. Training with other
voices of the batch mixed in behind a share of the crops, the label kept,
asks the model to follow the loudest voice rather than the sum of the low
energy in the room. The voices are mixed before the channel, as they
would be in one room heard through one microphone. On the telephone digit
hold-out it ranked worse than the same seed without it (AUC 0.948 against
0.968; models/EXPERIMENTS.md, "Other voices behind the crops in
training"), so it is off by default.
"""
from __future__ import annotations

import torch

TALKERS = 3
SNR_DB = (5.0, 25.0)


def add_babble(crops: torch.Tensor, *, prob: float, generator: torch.Generator, talkers: int = TALKERS, snr_db: tuple[float, float] = SNR_DB) -> torch.Tensor:
    """Copy of ``crops`` (B, n) in which a share ``prob`` carries other crops of the batch behind them.

    A chosen crop gets ``talkers`` other crops of the batch (drawn at random,
    so of either gender: batches are balanced by gender), each at the same
    level, summed and added uniformly 5-25 dB below the crop's own level.
    """
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"babble prob must be in [0, 1], got {prob}")
    b, n = crops.shape
    if b < 2:
        return crops
    chosen = torch.rand(b, generator=generator) < prob
    # Others, never the crop itself: draw from the b - 1 others and step over it.
    others = torch.randint(0, b - 1, (b, talkers), generator=generator)
    others = others + (others >= torch.arange(b)[:, None]).long()
    snr = snr_db[0] + (snr_db[1] - snr_db[0]) * torch.rand(b, 1, generator=generator)
    power = crops.square().mean(dim=-1, keepdim=True).clamp_min(1e-10)  # (B, 1)
    voices = crops / power.sqrt()  # each at unit level
    babble = voices[others].sum(dim=1)  # (B, n)
    babble = babble / babble.square().mean(dim=-1, keepdim=True).clamp_min(1e-10).sqrt()
    behind = babble * torch.sqrt(power / 10 ** (snr / 10))
    return torch.where(chosen[:, None], crops + behind, crops)
