"""The formant-keeping pitch shift: F0 moves by the ratio, the envelope stays."""
import math

import librosa
import numpy as np
import pytest
import scipy.signal
import torch

from classifier.synthetic import synthesize_utterance
from training.data import BalancedCropSampler
from training.loop import TrainConfig, draw_batch
from classifier.features import logmel_config
from training.pitch import cepstral_envelope, loudest_segment, pitch_ratios, shift_pitch, speed_ratios
from training.sources import LabelledClip

SR = 8000
FORMANTS = [600.0, 1400.0, 2600.0]


def _voice(f0=110.0, seconds=2.0):
    return synthesize_utterance(f0_hz=f0, formants_hz=FORMANTS, duration_s=seconds, sr=SR, seed=1, vibrato_depth=0.0, jitter=0.0)


def _f0(y):
    return float(np.median(librosa.yin(y, fmin=60, fmax=500, sr=SR, frame_length=1024)))


def _envelope_peaks(y):
    mag = np.abs(librosa.stft(y, n_fft=512, hop_length=128)) + 1e-7
    env = cepstral_envelope(torch.log(torch.from_numpy(mag.T).float()), sr=SR, quefrency_s=0.0025).numpy().mean(axis=0)
    peaks, _ = scipy.signal.find_peaks(env, prominence=0.3)
    return peaks * SR / 512


@pytest.mark.parametrize("ratio", [1.5, 0.8])
def test_f0_moves_by_the_ratio_and_formants_stay(ratio):
    y = _voice()
    out = shift_pitch([y], torch.tensor([ratio]), n=SR, sr=SR)[0].numpy()
    assert out.shape == (SR,) and np.isfinite(out).all()
    assert _f0(out) == pytest.approx(ratio * _f0(y[:SR]), rel=0.03)
    # F1 and F2 within one 16 Hz bin or so of where they were; plain resampling would move them by the ratio.
    peaks = _envelope_peaks(out)
    for formant in FORMANTS[:2]:
        assert np.min(np.abs(peaks - formant)) < 60, (formant, peaks)
        assert np.min(np.abs(peaks - formant * ratio)) > 60 or abs(ratio - 1) < 0.1


@pytest.mark.parametrize("ratio,speed", [(1.0, 1.1), (1.0, 0.9), (1.5, 1.1)])
def test_speed_moves_f0_and_formants_together(ratio, speed):
    y = _voice()
    out = shift_pitch([y], torch.tensor([ratio]), n=SR, sr=SR, speeds=torch.tensor([speed]))[0].numpy()
    assert out.shape == (SR,) and np.isfinite(out).all()
    assert _f0(out) == pytest.approx(ratio * speed * _f0(y[:SR]), rel=0.03)
    # F1 and F2 move by the speed alone: 600 Hz -> 660 / 540 Hz, more than a bin's error away from 600.
    peaks = _envelope_peaks(out)
    for formant in FORMANTS[:2]:
        assert np.min(np.abs(peaks - formant * speed)) < 35, (formant, speed, peaks)
        assert np.min(np.abs(peaks - formant)) > 35, (formant, speed, peaks)


def test_speed_ratios_are_symmetric_and_off_means_one():
    gen = torch.Generator().manual_seed(0)
    a = speed_ratios(4000, prob=0.5, max_ratio=1.1, generator=gen)
    assert ((a >= 1 / 1.1 - 1e-6) & (a <= 1.1 + 1e-6)).all()
    moved = a[a != 1]
    assert 0.45 < moved.numel() / a.numel() < 0.55
    assert abs((moved > 1).float().mean().item() - 0.5) < 0.05
    assert (speed_ratios(100, prob=0.0, max_ratio=1.1, generator=gen) == 1).all()
    with pytest.raises(ValueError, match="max_ratio"):
        speed_ratios(4, prob=0.5, max_ratio=0.9, generator=gen)


def test_ratio_one_is_the_loudest_window_unchanged():
    y = np.zeros(3 * SR, np.float32)
    y[SR : 2 * SR] = _voice(seconds=1.0)
    out = shift_pitch([y], torch.ones(1), n=SR, sr=SR)[0].numpy()
    assert np.allclose(out, y[SR : 2 * SR], atol=1e-5)


def test_loudest_segment_finds_speech_and_pads_short_input():
    y = np.zeros(1000, np.float32)
    y[700:800] = 1.0
    seg = loudest_segment(y, 200)
    assert len(seg) == 200 and seg.sum() == 100
    assert len(loudest_segment(np.ones(50, np.float32), 80)) == 80


def test_ratios_only_move_towards_the_other_gender():
    gen = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 1] * 500)
    r = pitch_ratios(labels, prob=0.5, male_up=1.8, female_down=0.75, generator=gen)
    female, male = r[labels == 0], r[labels == 1]
    assert (female <= 1).all() and (female >= 0.75).all() and (male >= 1).all() and (male <= 1.8).all()
    assert 0.4 < (r != 1).float().mean() < 0.6
    assert (pitch_ratios(labels, prob=0.0, male_up=1.8, female_down=0.75, generator=gen) == 1).all()


def test_both_ways_ratios_do_not_depend_on_the_label():
    labels = torch.tensor([0, 1] * 2000)
    r = pitch_ratios(labels, prob=0.5, male_up=1.8, female_down=0.75, generator=torch.Generator().manual_seed(0), both_ways=True)
    assert ((r >= 0.75) & (r <= 1.8)).all()
    for g in (0, 1):
        shifted = r[(labels == g) & (r != 1)]
        # both genders go up and down, in the same proportion: log-uniform puts log(1.8)/log(2.4) of them above 1
        assert abs((shifted > 1).float().mean().item() - math.log(1.8) / math.log(1.8 / 0.75)) < 0.05
        assert (shifted < 1).any() and (shifted > 1.5).any()


def _batch_drawer(seconds):
    """draw_batch(pitch, speed) on six synthetic speakers, from the same sampler and generator seeds each call."""
    clips = [LabelledClip(path=f"/x/{g}{s}.wav", speaker=f"{g}{s}", gender=g, corpus="c") for g in ("female", "male") for s in range(3)]
    waves = [_voice(f0=210.0 if c.gender == "female" else 110.0, seconds=seconds) for c in clips]
    features = logmel_config(sample_rate=SR, n_mels=48)

    def batch(pitch, speed=0.0):
        sampler = BalancedCropSampler(clips, waves, list(range(len(clips))), window=features.window_samples, seed=0)
        return draw_batch(sampler, TrainConfig(batch_size=8, pitch_shift_prob=pitch, speed_perturb_prob=speed), features, torch.Generator().manual_seed(0))

    return batch, features.window_samples


def test_training_batches_with_and_without_pitch_shift():
    batch, n = _batch_drawer(seconds=1.5)
    plain, labels = batch(0.0)
    again, _ = batch(0.0)
    shifted, labels_shifted = batch(1.0)
    assert plain.shape == shifted.shape == (8, n)
    assert torch.equal(plain, again)  # off: the seed's crops exactly as before the option existed
    assert torch.isfinite(shifted).all() and not torch.allclose(plain, shifted)
    assert labels_shifted.dtype == torch.int64 and set(labels_shifted.tolist()) <= {0, 1}


def test_training_batches_with_speed_perturbation():
    batch, n = _batch_drawer(seconds=2.5)
    sped, labels = batch(0.0, 1.0)
    plain, plain_labels = batch(0.0, 0.0)
    assert sped.shape == (8, n) and torch.isfinite(sped).all()
    assert torch.equal(labels, plain_labels) and not torch.allclose(sped, plain)
    both, _ = batch(0.4, 0.5)
    assert both.shape == (8, n) and torch.isfinite(both).all()
