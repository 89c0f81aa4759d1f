"""Batched features against librosa, and on signals whose answer is known."""
from dataclasses import replace

import librosa
import numpy as np
import pytest
import torch

from classifier.features import (
    FeatureConfig,
    compute_features,
    feature_axis,
    logmel_config,
    mel_band_centres,
    preemphasize,
    seed_mfcc_config,
)


def _librosa_seed_mfcc(y: np.ndarray, sr: int) -> np.ndarray:
    """The seed notebook's call, verbatim."""
    y = librosa.effects.preemphasis(y)
    return librosa.feature.mfcc(
        y=y, sr=sr, n_mfcc=12, dct_type=2, norm="ortho", lifter=22, n_fft=int(0.025 * sr),
        hop_length=int(0.01 * sr), power=2, center=False, window="hann", n_mels=40,
    )


def _speechlike(n: int, sr: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sr
    y = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 20)) + 0.05 * rng.standard_normal(n)
    return (0.3 * y / np.abs(y).max()).astype(np.float64)


@pytest.mark.parametrize("sr", [16_000, 48_000])
def test_mfcc_matches_librosa_float64(sr):
    cfg = seed_mfcc_config(sr)
    batch = np.stack([_speechlike(sr, sr, seed) for seed in range(3)])
    ours = compute_features(torch.from_numpy(batch), cfg).numpy()
    for i in range(len(batch)):
        ref = _librosa_seed_mfcc(batch[i], sr)
        assert ours[i].shape == ref.shape == (12, cfg.n_frames)
        assert np.abs(ours[i] - ref).max() <= 1e-9 * np.abs(ref).max()


def test_mfcc_matches_librosa_float32():
    sr = 48_000
    cfg = seed_mfcc_config(sr)
    batch = np.stack([_speechlike(sr, sr, seed) for seed in range(4)]).astype(np.float32)
    ours = compute_features(torch.from_numpy(batch), cfg).numpy()
    for i in range(len(batch)):
        ref = _librosa_seed_mfcc(batch[i], sr)
        assert np.abs(ours[i] - ref).max() <= 1e-3 * np.abs(ref).max()


def test_batch_members_are_independent():
    """Each clip is clipped to top_db below its own peak, as librosa does per call."""
    cfg = seed_mfcc_config(16_000)
    loud, quiet = _speechlike(16_000, 16_000, 0), 1e-3 * _speechlike(16_000, 16_000, 1)
    together = compute_features(torch.from_numpy(np.stack([loud, quiet])), cfg)
    alone = compute_features(torch.from_numpy(quiet[None]), cfg)
    torch.testing.assert_close(together[1:], alone, rtol=0, atol=1e-9)


def test_preemphasis_matches_librosa():
    y = np.random.default_rng(0).standard_normal((2, 100))
    ours = preemphasize(torch.from_numpy(y), 0.97).numpy()
    for i in range(2):
        np.testing.assert_allclose(ours[i], librosa.effects.preemphasis(y[i], coef=0.97), atol=1e-12)


def test_logmel_peak_band_is_the_tone_frequency():
    """A 1 kHz tone puts its energy in the mel band whose centre is nearest 1 kHz."""
    cfg = logmel_config(sample_rate=16_000, n_mels=64)
    t = np.arange(16_000) / 16_000
    feats = compute_features(torch.from_numpy(np.sin(2 * np.pi * 1000 * t)[None]), cfg)[0]  # (64, T)
    hz, label = feature_axis(cfg)
    assert label == "mel band centre (Hz)" and len(hz) == 64
    assert abs(hz[int(feats.mean(dim=1).argmax())] - 1000) < 60


def test_logmel_is_gain_invariant_with_ref_max():
    cfg = logmel_config(sample_rate=16_000)
    y = torch.from_numpy(_speechlike(16_000, 16_000, 2))
    torch.testing.assert_close(compute_features(y[None], cfg), compute_features(0.01 * y[None], cfg), rtol=0, atol=1e-6)
    assert float(compute_features(y[None], cfg).max()) == 0.0


def test_config_round_trips_through_dict():
    cfg = logmel_config(sample_rate=8_000, n_mels=48)
    assert FeatureConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.n_bins == 48 and seed_mfcc_config().n_bins == 12


def test_checkpoints_from_before_band_norm_and_short_fill_load_without_them():
    old = {k: v for k, v in logmel_config().to_dict().items() if not k.startswith(("band_norm", "short_fill", "wideband"))}
    cfg = FeatureConfig.from_dict(old)
    assert cfg.band_norm == "none" and cfg.short_fill == "zeros"  # what those checkpoints were trained with
    assert cfg.wideband_short_fill is None and cfg.fill_for(True) == cfg.fill_for(False) == "zeros"


def test_the_wideband_fill_applies_to_wideband_files_only():
    cfg = replace(logmel_config(), short_fill="zeros", wideband_short_fill="trim")
    assert (cfg.fill_for(True), cfg.fill_for(False)) == ("trim", "zeros")
    assert FeatureConfig.from_dict(cfg.to_dict()) == cfg


def _bass_and_mids(bass_gain: float, sr: int = 8_000) -> torch.Tensor:
    """A 150 Hz buzz under louder 1.2 and 2 kHz tones; ``bass_gain`` turns the buzz up."""
    t = np.arange(sr) / sr
    rng = np.random.default_rng(5)
    lows = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in (1, 2))
    mids = 3 * np.sin(2 * np.pi * 1200 * t) + np.sin(2 * np.pi * 2000 * t) + 0.01 * rng.standard_normal(sr)  # holds the peak
    return torch.from_numpy((bass_gain * lows + mids)[None] * np.hanning(sr))


def test_band_norm_lows_removes_the_level_of_the_bass_and_keeps_the_rest():
    cfg = FeatureConfig.from_dict({**logmel_config(sample_rate=8_000, n_mels=48).to_dict(), "fmax": 4000.0, "frame_s": 0.064})
    normed = FeatureConfig.from_dict({**cfg.to_dict(), "band_norm": "lows"})
    lows = mel_band_centres(cfg) < normed.band_norm_hz
    quiet, loud = _bass_and_mids(0.3), _bass_and_mids(1.0)  # +10.5 dB of bass
    plain_gap = (compute_features(loud, cfg)[0, lows] - compute_features(quiet, cfg)[0, lows]).mean()
    assert plain_gap > 5  # without it, the bass level shows
    a, b = compute_features(quiet, normed)[0], compute_features(loud, normed)[0]
    assert abs(float((b[lows] - a[lows]).mean())) < 0.5
    # The bands above the corner are left as they were.
    torch.testing.assert_close(a[~lows], compute_features(quiet, cfg)[0, ~lows])
    # The lows' mean level now equals the mean level of the other bands.
    assert abs(float(a[lows].mean() - a[~lows].mean())) < 1e-4


def test_band_norm_all_leaves_every_band_with_zero_mean_and_is_gain_invariant():
    cfg = FeatureConfig.from_dict({**logmel_config(sample_rate=8_000, n_mels=48).to_dict(), "band_norm": "all"})
    y = torch.from_numpy(_speechlike(8_000, 8_000, 3))[None]
    feats = compute_features(y, cfg)
    torch.testing.assert_close(feats.mean(dim=-1), torch.zeros(1, 48, dtype=feats.dtype), rtol=0, atol=1e-9)
    torch.testing.assert_close(feats, compute_features(0.05 * y, cfg), rtol=0, atol=1e-6)


def test_unknown_band_norm_is_named():
    cfg = FeatureConfig.from_dict({**logmel_config(sample_rate=8_000).to_dict(), "band_norm": "treble"})
    with pytest.raises(ValueError, match="treble"):
        compute_features(torch.from_numpy(_speechlike(8_000, 8_000, 1))[None], cfg)


def test_seed_recipe_shape_at_48k():
    cfg = seed_mfcc_config()
    assert (cfg.n_fft, cfg.hop_length, cfg.n_frames) == (1200, 480, 98)


@pytest.mark.parametrize("bad", [np.zeros(100), np.zeros((2, 10))])
def test_bad_shapes_are_named(bad):
    with pytest.raises(ValueError, match="expected a|shorter than one frame"):
        compute_features(torch.from_numpy(bad), seed_mfcc_config(16_000))
