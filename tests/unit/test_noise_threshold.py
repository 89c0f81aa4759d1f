"""scripts/noise_threshold.py: the per-file SNR estimate, the noise subtraction and the threshold-shift fit."""
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from noise_robustness import noisy
from noise_threshold import cross_fitted, fit_shift, quiet_frames_snr_db, shifted, speaker_halves, subtract_noise

SR = 8_000


def _talk(seconds: float = 3.0) -> np.ndarray:
    """Bursts of a 150 Hz buzz with its harmonics, 0.3 s on and 0.2 s off: speech with pauses."""
    t = np.arange(int(seconds * SR)) / SR
    buzz = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 20))
    return (0.1 * buzz * ((t % 0.5) < 0.3)).astype(np.float32)


@pytest.mark.parametrize("snr_db", [5.0, 10.0, 20.0])
def test_the_estimate_reads_the_added_noise_level_from_the_pauses(snr_db):
    heard = noisy(_talk(), SR, "white", snr_db, np.random.default_rng(0), None)
    assert quiet_frames_snr_db(heard, SR) == pytest.approx(snr_db, abs=2.5)


def test_a_clean_file_reads_far_above_any_knee():
    assert quiet_frames_snr_db(_talk() + 1e-6 * np.random.default_rng(0).standard_normal(3 * SR), SR) > 60


def test_subtraction_lowers_the_noise_in_the_pauses_and_leaves_clean_files_alone():
    clean = _talk()
    heard = noisy(clean, SR, "white", 10.0, np.random.default_rng(1), None)
    out = subtract_noise(heard, SR)
    pauses = (np.arange(len(clean)) / SR % 0.5) > 0.35
    assert np.mean(out[pauses] ** 2) < 0.3 * np.mean(heard[pauses] ** 2)  # over 5 dB less; random peaks stay
    assert out.shape == heard.shape
    quiet = clean + 1e-6 * np.random.default_rng(0).standard_normal(len(clean)).astype(np.float32)
    np.testing.assert_array_equal(subtract_noise(quiet, SR), quiet)


def test_the_shift_moves_only_files_below_the_knee_toward_male():
    z = np.zeros(3)
    np.testing.assert_allclose(shifted(z, np.array([40.0, 30.0, 10.0]), 30.0, 0.1), [0.0, 0.0, -2.0])


def test_the_fit_finds_a_shift_planted_in_noisy_conditions():
    rng = np.random.default_rng(0)
    n = 400
    is_female = np.arange(n) % 2 == 0
    clean_z = np.where(is_female, 2.0, -2.0) + 0.5 * rng.standard_normal(n)
    conditions = {"as recorded": (clean_z, np.full(n, 40.0), is_female)}
    for snr in (20.0, 10.0, 5.0):
        # Noise pulls everyone toward "female" by 0.2 per dB below 25 dB: men cross the threshold.
        conditions[f"white {snr:g} dB"] = (clean_z + 0.2 * max(0.0, 25.0 - snr), np.full(n, snr), is_female)
    before = {name: np.mean((z >= 0) == f) for name, (z, _, f) in conditions.items()}
    assert before["white 5 dB"] < 0.6
    knee, slope = fit_shift(conditions, 0.0)
    assert knee >= 20 and slope > 0.1
    speakers = np.array([f"s{i % 20}" for i in range(n)])
    rows, fits = cross_fitted(conditions, speakers, 0.0)
    assert len(fits) == 2
    assert rows["as recorded"][1] == pytest.approx(rows["as recorded"][0])
    assert rows["white 5 dB"][1] > 0.95


def test_speaker_halves_split_every_speaker_once():
    halves = speaker_halves(["a", "b", "c", "d", "e", "a"])
    assert halves[0] | halves[1] == {"a", "b", "c", "d", "e"} and not halves[0] & halves[1]
