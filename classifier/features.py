"""Batched features: the seed's MFCC recipe and a log-mel in Hz.

One call computes a whole chunk of equal-length windows with torch (STFT,
mel filterbank, DCT), which is what makes chunks cheap; tests hold it to
``librosa.feature.mfcc`` on the same input.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from typing import Any, Literal

import librosa
import numpy as np
import torch

from classifier.audio import InferenceFill, ShortFill

FeatureKind = Literal["mfcc", "logmel"]
BandNorm = Literal["none", "lows", "all"]
AMIN = 1e-10  # librosa.power_to_db's floor
TOP_DB = 80.0  # librosa.power_to_db's default dynamic range


# Files up to this many windows long are probed for their band when silent edges are cut:
# a word with a few seconds of silence around it is still a short clip.
EDGE_PROBE_WINDOWS = 4


@dataclass(frozen=True)
class FeatureConfig:
    """Everything that decides preprocessing; stored inside every checkpoint."""

    kind: FeatureKind = "mfcc"
    sample_rate: int = 48_000
    window_s: float = 1.0  # model input length; longer files are windowed
    hop_s: float = 0.5  # between model windows of a long file
    frame_s: float = 0.025  # STFT window (n_fft)
    frame_hop_s: float = 0.010
    n_mels: int = 40
    fmin: float = 0.0
    fmax: float | None = None
    n_mfcc: int = 12
    lifter: int = 22
    preemphasis: float | None = 0.97
    ref_max: bool = False  # dB relative to each window's max: gain invariant
    # Per-window removal of the long-term level of bands (before the DCT), so a
    # channel's bass or tilt cannot decide: "lows" sets the mean of the bands
    # centred below band_norm_hz to the mean of the others; "all" subtracts
    # every band's mean over the window's frames (cepstral mean normalisation).
    band_norm: BandNorm = "none"
    band_norm_hz: float = 400.0
    # How a clip shorter than one window fills it: "zeros" centres it in
    # silence; "loop" repeats it, so a short word looks like the continuous
    # speech most training windows hold; "trim" scores it at its own length,
    # no padding, so silence cannot be a cue (classifier/audio.py:split_windows).
    short_fill: ShortFill = "zeros"
    # The fill for a short clip whose file carried sound above this band (studio
    # audio; ``classifier.audio.Recording.wideband``); None: ``short_fill`` for
    # every clip. Applied at inference only: training reads band-limited copies.
    # May score the clip two ways at once ("trim+loop"; classifier.audio.fill_views).
    wideband_short_fill: InferenceFill | None = None
    # A wideband file whose sound, from its first to its last loud frame, is
    # shorter than one window is that short clip: the silence around a word (a
    # 1 s command clip, a digit with pauses before and after) is cut away rather
    # than scored as part of it (classifier.audio.speech_extent). Inference only.
    wideband_trim_edges: bool = False

    def fill_for(self, wideband: bool | None) -> InferenceFill:
        """The short-clip fill for a recording that is (or is not, or was not measured) wideband."""
        return self.wideband_short_fill if wideband and self.wideband_short_fill else self.short_fill

    @property
    def band_probe_samples(self) -> int:
        """Up to how many samples a recording's band decides its fill (``load_audio``): with a wideband fill, one
        window, or ``EDGE_PROBE_WINDOWS`` when a wideband file's silent edges are cut (its sound may still be short)."""
        if not self.wideband_short_fill:
            return 0
        return self.window_samples * (EDGE_PROBE_WINDOWS if self.wideband_trim_edges else 1)

    @property
    def n_fft(self) -> int:
        return int(self.frame_s * self.sample_rate)

    @property
    def hop_length(self) -> int:
        return int(self.frame_hop_s * self.sample_rate)

    @property
    def window_samples(self) -> int:
        return int(round(self.window_s * self.sample_rate))

    @property
    def hop_samples(self) -> int:
        return int(round(self.hop_s * self.sample_rate))

    @property
    def n_bins(self) -> int:
        return self.n_mfcc if self.kind == "mfcc" else self.n_mels

    @property
    def n_frames(self) -> int:
        return 1 + (self.window_samples - self.n_fft) // self.hop_length

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FeatureConfig":
        return cls(**data)


def seed_mfcc_config(sample_rate: int = 48_000) -> FeatureConfig:
    """The notebook's recipe, at the rate it ran on (AudioMNIST's 48 kHz)."""
    return FeatureConfig(kind="mfcc", sample_rate=sample_rate)


def logmel_config(sample_rate: int = 16_000, n_mels: int = 64) -> FeatureConfig:
    """Log-mel in dB relative to each window's peak; frequency axis in Hz."""
    return replace(
        FeatureConfig(),
        kind="logmel",
        sample_rate=sample_rate,
        n_mels=n_mels,
        fmin=50.0,
        fmax=sample_rate / 2,
        preemphasis=None,
        ref_max=True,
    )


def preemphasize(y: torch.Tensor, coef: float) -> torch.Tensor:
    """``librosa.effects.preemphasis`` for a batch (B, n), same initial state.

    librosa starts the filter from ``zi = 2*y[0] - y[1]``, so the first output
    sample is ``3*y[0] - y[1]``; kept so features match the seed exactly.
    """
    first = y[..., :1] + (2 * y[..., :1] - y[..., 1:2])
    return torch.cat([first, y[..., 1:] - coef * y[..., :-1]], dim=-1)


@lru_cache(maxsize=16)
def _mel_basis(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None) -> np.ndarray:
    return librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)


@lru_cache(maxsize=16)
def _dct_matrix(n_mels: int, n_mfcc: int) -> np.ndarray:
    # Orthonormal DCT-II as a matrix (n_mfcc, n_mels), as scipy.fft.dct(norm="ortho").
    n = np.arange(n_mels)
    k = np.arange(n_mfcc)[:, None]
    basis = np.cos(math.pi * k * (2 * n + 1) / (2 * n_mels)) * math.sqrt(2.0 / n_mels)
    basis[0] /= math.sqrt(2.0)
    return basis


def compute_features(y: torch.Tensor | np.ndarray, config: FeatureConfig) -> torch.Tensor:
    """Features for a batch of equal-length windows.

    Parameters
    ----------
    y : [shape=(B, n)] float32 or float64 samples at ``config.sample_rate``,
        on any device (the result stays there).
    config : the recipe.

    Returns
    -------
    torch.Tensor [shape=(B, n_bins, n_frames)], the dtype and device of ``y``.
    """
    y = torch.as_tensor(y)
    if y.ndim != 2:
        raise ValueError(f"expected a (batch, samples) array, got shape {tuple(y.shape)}")
    if y.shape[-1] < config.n_fft:
        raise ValueError(f"windows of {y.shape[-1]} samples are shorter than one frame ({config.n_fft})")
    if config.preemphasis is not None:
        y = preemphasize(y, config.preemphasis)
    power_db = _log_mel_power(y, config)  # (B, n_mels, T)
    if config.band_norm != "none":
        power_db = normalize_bands(power_db, config)
    if config.kind == "logmel":
        return power_db
    dct = torch.as_tensor(_dct_matrix(config.n_mels, config.n_mfcc), dtype=y.dtype, device=y.device)
    mfcc = torch.einsum("km,bmt->bkt", dct, power_db)
    if config.lifter > 0:
        k = torch.arange(1, config.n_mfcc + 1, dtype=y.dtype, device=y.device)
        mfcc = mfcc * (1 + (config.lifter / 2) * torch.sin(math.pi * k / config.lifter))[:, None]
    return mfcc


def _log_mel_power(y: torch.Tensor, config: FeatureConfig) -> torch.Tensor:
    window = torch.hann_window(config.n_fft, periodic=True, dtype=y.dtype, device=y.device)
    spec = torch.stft(
        y, n_fft=config.n_fft, hop_length=config.hop_length, window=window, center=False, return_complex=True
    )
    power = spec.real.square() + spec.imag.square()  # (B, 1 + n_fft/2, T)
    mel = torch.as_tensor(
        _mel_basis(config.sample_rate, config.n_fft, config.n_mels, config.fmin, config.fmax), dtype=y.dtype, device=y.device
    )
    mel_power = torch.matmul(mel, power)  # (B, n_mels, T)
    db = 10.0 * torch.log10(torch.clamp(mel_power, min=AMIN))
    peak = db.amax(dim=(1, 2), keepdim=True)
    if config.ref_max:
        db = db - peak
        peak = torch.zeros_like(peak)
    # librosa clips each call's output to top_db below its own maximum.
    return torch.maximum(db, peak - TOP_DB)


def normalize_bands(db: torch.Tensor, config: FeatureConfig) -> torch.Tensor:
    """Remove the long-term level of some bands from (B, n_mels, T) dB; see ``FeatureConfig.band_norm``."""
    band_mean = db.mean(dim=-1, keepdim=True)  # (B, n_mels, 1)
    if config.band_norm == "all":
        return db - band_mean
    if config.band_norm != "lows":
        raise ValueError(f"unknown band_norm {config.band_norm!r}: use none, lows or all")
    lows = torch.as_tensor(mel_band_centres(config) < config.band_norm_hz, device=db.device)
    if not bool(lows.any()) or bool(lows.all()):
        raise ValueError(f"band_norm_hz={config.band_norm_hz} leaves no band on one side (bands from {config.fmin} Hz)")
    reference = band_mean[:, ~lows].mean(dim=1, keepdim=True)  # (B, 1, 1): the other bands' mean level
    shift = torch.where(lows[None, :, None], band_mean - reference, torch.zeros_like(band_mean))
    return db - shift


@lru_cache(maxsize=16)
def mel_band_centres(config: FeatureConfig) -> np.ndarray:
    hz = librosa.mel_frequencies(n_mels=config.n_mels + 2, fmin=config.fmin, fmax=config.fmax or config.sample_rate / 2)
    return hz[1:-1]


def feature_axis(config: FeatureConfig) -> tuple[np.ndarray, str]:
    """Values and label of the feature (frequency) axis, for plots and reports."""
    if config.kind == "logmel":
        return mel_band_centres(config), "mel band centre (Hz)"
    return np.arange(config.n_mfcc), "cepstral coefficient"
