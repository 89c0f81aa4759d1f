"""Pitch shift that keeps the spectral envelope (formants): a training augmentation.

Emotional speech raises a man's pitch while his vocal tract, and so his
formants, stay where they were; the RAVDESS holdout's errors are mostly such
takes called female. Shifting a male crop's F0 up (and a female crop's down)
with the envelope kept teaches the model that pitch alone does not decide.

How: FFT-resample ``round(n * r)`` source samples to ``n`` (every frequency,
F0 and formants alike, times ``r``), then per STFT frame multiply by the
ratio of the original envelope to the shifted one (cepstral envelopes, so
harmonics are smoothed away). A smooth per-frame gain is a time-varying
filter, which overlap-add reproduces without the artefacts of moving
harmonics by hand.
"""
from __future__ import annotations

import math

import numpy as np
import torch

N_FFT = 512
HOP = 128
GAIN_LIMIT_DB = 20.0  # never lift a band that resampling emptied by more than this


def pitch_ratios(
    labels: torch.Tensor, *, prob: float, male_up: float, female_down: float, generator: torch.Generator, both_ways: bool = False
) -> torch.Tensor:
    """Per-crop ratio: 1 (no shift) or a log-uniform shift.

    Towards the other gender (default): up to ``male_up`` for males, down to
    ``female_down`` for females, and not beyond: a shift that made the voice
    ambiguous would need a new label, not this one.

    ``both_ways``: every shifted crop, of either gender, draws from
    ``[female_down, male_up]``. Whatever trace the shift itself leaves then
    carries no label; towards-only shifting makes "raised" mean male, and
    the RAVDESS hold-out's shouting women were called male for it.
    """
    b = labels.shape[0]
    u = torch.rand(b, generator=generator)
    v = torch.rand(b, generator=generator)
    low, high = math.log(female_down), math.log(male_up)
    if both_ways:
        log_r = low + v * (high - low)
    else:
        log_r = v * torch.where(labels == 1, torch.tensor(high), torch.tensor(low))
    return torch.where(u < prob, torch.exp(log_r), torch.ones(b))


def speed_ratios(b: int, *, prob: float, max_ratio: float, generator: torch.Generator) -> torch.Tensor:
    """Per-crop speed factor: 1 (as recorded) or log-uniform in [1 / max_ratio, max_ratio].

    A factor ``a`` plays the crop ``a`` times faster: F0 and every formant
    move by ``a`` together, as between a shorter and a longer vocal tract
    (speed perturbation, Ko et al. 2015; VTLP's warp on the waveform). The
    draw ignores the label: a shouting man's raised F1 and F0 should not
    read female, and a range of +-10 % stays inside either gender's spread.
    Measured on both whole-corpus hold-outs it did not help (emotional
    speech a little worse; models/EXPERIMENTS.md), so it is off by default.
    """
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"speed perturbation prob must be in [0, 1], got {prob}")
    if max_ratio < 1.0:
        raise ValueError(f"speed perturbation max_ratio must be at least 1, got {max_ratio}")
    u = torch.rand(b, generator=generator)
    v = torch.rand(b, generator=generator)
    log_a = (2 * v - 1) * math.log(max_ratio)
    return torch.where(u < prob, torch.exp(log_a), torch.ones(b))


def loudest_segment(y: np.ndarray, m: int) -> np.ndarray:
    """The ``m`` consecutive samples of ``y`` with the most energy (zero-padded if ``y`` is shorter)."""
    if len(y) <= m:
        return np.pad(y, (0, m - len(y)))
    energy = np.concatenate([[0.0], np.cumsum(np.square(y, dtype=np.float64))])
    start = int(np.argmax(energy[m:] - energy[:-m]))
    return y[start : start + m]


def _fft_resample(seg: torch.Tensor, n: int) -> torch.Tensor:
    # Ideal band-limited resampling: truncate or zero-pad the spectrum.
    m = seg.shape[-1]
    spec = torch.fft.rfft(seg)
    keep = min(spec.shape[-1], n // 2 + 1)
    out = torch.zeros(n // 2 + 1, dtype=spec.dtype)
    out[:keep] = spec[:keep]
    return torch.fft.irfft(out, n=n) * (n / m)


def cepstral_envelope(log_mag: torch.Tensor, *, sr: int, quefrency_s: float = 0.002) -> torch.Tensor:
    """Smooth log-magnitude envelope (..., bins): keep quefrencies below ``quefrency_s``.

    2 ms is below the period of any voice up to 500 Hz, so harmonics do not
    leak into the envelope.
    """
    n_fft = 2 * (log_mag.shape[-1] - 1)
    cep = torch.fft.irfft(log_mag, n=n_fft)
    q = max(1, int(quefrency_s * sr))
    lifter = torch.zeros(n_fft, dtype=log_mag.dtype)
    lifter[:q] = 1.0
    lifter[n_fft - q + 1 :] = 1.0
    return torch.fft.rfft(cep * lifter).real


def _warp_bins(env: torch.Tensor, ratios: torch.Tensor) -> torch.Tensor:
    """``env`` (B, bins, T) read at bin ``k * r`` per row (linear interpolation, clamped at Nyquist)."""
    b, bins, _ = env.shape
    pos = (torch.arange(bins, dtype=env.dtype)[None, :] * ratios[:, None]).clamp(max=bins - 1)  # (B, bins)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=bins - 1)
    frac = (pos - lo)[..., None]
    take = lambda idx: torch.gather(env, 1, idx[..., None].expand(-1, -1, env.shape[-1]))  # noqa: E731
    return take(lo) * (1 - frac) + take(hi) * frac


def _resampled_segment(source: np.ndarray, ratio: float, n: int) -> torch.Tensor:
    seg = torch.from_numpy(loudest_segment(source, round(n * ratio))).float()
    return seg if seg.shape[-1] == n else _fft_resample(seg, n)  # an unshifted crop needs no resampling


def shift_pitch(sources: list[np.ndarray], ratios: torch.Tensor, *, n: int, sr: int, speeds: torch.Tensor | None = None) -> torch.Tensor:
    """Crops (B, n) with F0 times ``ratios`` and the envelope kept.

    ``speeds`` (B,), optional: each crop also plays that many times faster,
    F0 and envelope alike (``speed_ratios``), so F0 moves by ``r * a`` and
    the formants by ``a``. ``sources`` are crops at least ``n * max(r * a)``
    long; each contributes its loudest ``round(n * r * a)`` samples (a short
    clip padded in silence keeps its speech).
    """
    total = ratios if speeds is None else ratios * speeds
    out = torch.stack([_resampled_segment(s, float(r), n) for s, r in zip(sources, total)])
    shifted = ratios != 1
    if not shifted.any():
        return out
    y = out[shifted]
    window = torch.hann_window(N_FFT, dtype=y.dtype)
    spec = torch.stft(y, n_fft=N_FFT, hop_length=HOP, window=window, return_complex=True)  # (b, bins, T)
    env = cepstral_envelope(torch.log(spec.abs().transpose(1, 2) + 1e-7), sr=sr).transpose(1, 2)
    # After resampling the envelope is E(f / (r a)); reading it at f * r gives E(f / a):
    # the envelope as recorded (a = 1) or played faster with the rest.
    limit = GAIN_LIMIT_DB / 20 * math.log(10)
    gain_log = (_warp_bins(env, ratios[shifted].to(y.dtype)) - env).clamp(-limit, limit)
    y = torch.istft(spec * torch.exp(gain_log), n_fft=N_FFT, hop_length=HOP, window=window, length=n)
    out[shifted] = y.to(out.dtype)
    return out
