"""scripts/noise_robustness.py's noise: its spectra, its level against the clip's speech, and who babbles."""
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from noise_robustness import active_power, babble_track, coloured_noise, noisy

SR = 8_000


def _band_power(y: np.ndarray, lo: float, hi: float) -> float:
    spectrum = np.abs(np.fft.rfft(y)) ** 2
    freqs = np.fft.rfftfreq(len(y), 1 / SR)
    return float(spectrum[(freqs >= lo) & (freqs < hi)].mean())


@pytest.mark.parametrize(("slope", "kind"), [(0.0, "white"), (1.0, "pink"), (2.0, "brown")])
def test_coloured_noise_falls_3_db_per_octave_per_unit_of_slope(slope, kind):
    noise = coloured_noise(10 * SR, SR, slope, np.random.default_rng(0))
    assert np.mean(noise**2) == pytest.approx(1.0)
    # 150 Hz to 2,400 Hz is four octaves: 0, 12 and 24 dB apart per bin.
    drop_db = 10 * np.log10(_band_power(noise, 100, 200) / _band_power(noise, 1_600, 3_200))
    assert drop_db == pytest.approx(12.0 * slope, abs=1.0), kind


def test_active_power_is_the_speech_level_pauses_do_not_lower():
    t = np.arange(SR) / SR
    speech = 0.3 * np.sin(2 * np.pi * 200 * t)
    with_pauses = np.concatenate([np.zeros(3 * SR), speech, 1e-5 * np.ones(2 * SR)])
    assert active_power(with_pauses, SR) == pytest.approx(0.045, rel=0.01)  # 0.3**2 / 2
    assert np.mean(with_pauses**2) < 0.01


@pytest.mark.parametrize("snr_db", [20.0, 5.0, 0.0])
def test_noise_is_added_the_asked_ratio_below_the_speech_level(snr_db):
    t = np.arange(2 * SR) / SR
    speech = np.concatenate([0.1 * np.sin(2 * np.pi * 180 * t), np.zeros(SR)]).astype(np.float32)
    for kind in ("white", "brown"):
        heard = noisy(speech, SR, kind, snr_db, np.random.default_rng(1), None)
        added = heard.astype(np.float64) - speech
        assert 10 * np.log10(active_power(speech, SR) / np.mean(added**2)) == pytest.approx(snr_db, abs=0.01)
    babble = coloured_noise(10 * SR, SR, 0.0, np.random.default_rng(2))
    added = noisy(speech, SR, "babble", snr_db, np.random.default_rng(3), babble).astype(np.float64) - speech
    assert 10 * np.log10(active_power(speech, SR) / np.mean(added**2)) == pytest.approx(snr_db, abs=0.5)


@dataclass
class _Clip:
    speaker: str
    gender: str


def test_babble_is_three_women_and_three_men_of_the_training_clips_only():
    rng = np.random.default_rng(4)
    clips = [_Clip(f"{g[0]}{k}", g) for g in ("female", "male") for k in range(5)] + [_Clip("val_f", "female"), _Clip("val_m", "male")]
    waves = [rng.standard_normal(int(rng.uniform(0.5, 2.0) * SR)).astype(np.float32) for _ in clips]
    waves[0] = None  # a clip that did not decode is never a talker
    train = list(range(10))
    track, talkers = babble_track(clips, waves, train, SR, seconds=5.0)
    assert len(track) == 5 * SR and np.mean(track**2) == pytest.approx(1.0)
    assert sorted(t[0] for t in talkers) == ["f", "f", "f", "m", "m", "m"] and len(set(talkers)) == 6
    assert not {"val_f", "val_m", "f0"} & set(talkers)
    assert babble_track(clips, waves, train, SR, seconds=5.0)[1] == talkers  # seeded: the same six every run
