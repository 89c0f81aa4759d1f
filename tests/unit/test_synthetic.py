"""The synthetic voices have the F0 and formants they were asked for, and the
corpus writers reproduce AudioMNIST's layout byte for byte on every run."""
import hashlib
import json
import re
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.signal import freqz, welch

from classifier.synthetic import (
    F0_RANGE_HZ,
    FORMANT_SCALE_RANGE,
    VOWELS_HZ,
    make_speaker,
    make_speakers,
    resonator_coefficients,
    synthesize_digit,
    synthesize_utterance,
    write_audiomnist,
    write_gender_folders,
    write_labelled_folder,
)

SR = 16_000
META_FIELDS = {"accent", "age", "gender", "native speaker", "origin", "recordingdate", "recordingroom"}


def _estimate_f0_hz(y: np.ndarray, sr: int) -> float:
    """Median YIN F0 over the loud (voiced) frames."""
    kw = dict(frame_length=1024, hop_length=256)
    f0 = librosa.yin(y.astype(np.float64), fmin=60, fmax=500, sr=sr, **kw)
    rms = librosa.feature.rms(y=y, **kw)[0]
    return float(np.median(f0[rms > 0.2 * rms.max()]))


def _voiced_runs(y: np.ndarray, sr: int) -> int:
    """Number of separate stretches whose 10 ms RMS is above -30 dB of the loudest."""
    rms = librosa.feature.rms(y=y, frame_length=sr // 100, hop_length=sr // 100, center=False)[0]
    loud = (rms > 0.03 * rms.max()).astype(int)
    return int(np.sum(np.diff(np.concatenate([[0], loud])) == 1))


def _band_share(y: np.ndarray, sr: int, lo_hz: float, hi_hz: float) -> float:
    freqs, power = welch(y, fs=sr, nperseg=1024)
    band = (freqs >= lo_hz) & (freqs < hi_hz)
    return float(power[band].sum() / power.sum())


def _sha256_tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.*"))}


# --- the voice: known F0 and formants -------------------------------------------------------------------------------


@pytest.mark.parametrize("f0_hz", [90.0, 130.0, 180.0, 240.0])
def test_utterance_f0_estimate_matches_request(f0_hz):
    y = synthesize_utterance(f0_hz=f0_hz, formants_hz=VOWELS_HZ["AH"], duration_s=0.6, sr=SR, seed=1)
    assert _estimate_f0_hz(y, SR) == pytest.approx(f0_hz, rel=0.05)


def test_female_f0_within_10_percent_and_above_every_male():
    speakers = make_speakers(n_female=4, n_male=4, seed=0)
    estimates = {s.speaker_id: _estimate_f0_hz(synthesize_digit(speaker=s, digit=3, repetition=0, sr=SR, seed=0), SR)
                 for s in speakers}
    for s in speakers:
        assert estimates[s.speaker_id] == pytest.approx(s.f0_hz, rel=0.10), s
    female = [estimates[s.speaker_id] for s in speakers if s.gender == "female"]
    male = [estimates[s.speaker_id] for s in speakers if s.gender == "male"]
    assert min(female) > max(male)


@pytest.mark.parametrize(("formant_hz", "bandwidth_hz", "sr"), [(300, 70, 16_000), (700, 70, 16_000),
                                                                 (1200, 100, 16_000), (2500, 130, 48_000),
                                                                 (3500, 200, 48_000)])
def test_resonator_peaks_at_its_formant_with_unity_dc_gain(formant_hz, bandwidth_hz, sr):
    b, a = resonator_coefficients(formant_hz=formant_hz, bandwidth_hz=bandwidth_hz, sr=sr)
    freqs, h = freqz(b, a, worN=2**16, fs=sr)
    assert freqs[np.argmax(np.abs(h))] == pytest.approx(formant_hz, rel=0.02)
    assert abs(h[0]) == pytest.approx(1.0)


def test_steady_vowel_spectrum_peaks_at_its_formants():
    # f0 = 100 Hz puts a harmonic on each formant; the cascade must lift it above its neighbours.
    y = synthesize_utterance(f0_hz=100.0, formants_hz=(700.0, 1200.0, 2500.0, 3500.0), duration_s=0.8, sr=SR,
                             seed=3, n_syllables=2, vibrato_depth=0.0, jitter=0.0)
    freqs, power = welch(y, fs=SR, nperseg=2048)
    for lo, hi, formant in [(450, 950, 700), (950, 1600, 1200), (2000, 3000, 2500)]:
        band = (freqs >= lo) & (freqs < hi)
        assert freqs[band][np.argmax(power[band])] == pytest.approx(formant, rel=0.08)


def test_digits_differ_in_their_vowels():
    # "two" is /UW/ (F2 ~ 870 Hz), "six" is /IH/ (F2 ~ 1990 Hz): the high band tells them apart.
    speaker = make_speaker(speaker_id=1, gender="male", seed=0)
    two = synthesize_digit(speaker=speaker, digit=2, repetition=0, sr=SR, seed=0)
    six = synthesize_digit(speaker=speaker, digit=6, repetition=0, sr=SR, seed=0)
    assert _band_share(six, SR, 1500, 3000) > 3 * _band_share(two, SR, 1500, 3000)


def test_female_formants_are_higher_than_male():
    speakers = make_speakers(n_female=5, n_male=5, seed=2)
    f2 = {g: [s.formants_hz("AA")[1] for s in speakers if s.gender == g] for g in ("female", "male")}
    assert np.mean(f2["female"]) > 1.1 * np.mean(f2["male"])


def test_utterance_shape_peak_and_silent_edges():
    y = synthesize_utterance(f0_hz=200.0, formants_hz=VOWELS_HZ["IY"], duration_s=0.5, sr=SR, seed=0)
    assert y.dtype == np.float32 and y.shape == (8000,)
    assert np.abs(y).max() == pytest.approx(0.5, abs=0.01)
    edge = SR * 25 // 1000
    assert np.abs(y[:edge]).max() < 0.005 and np.abs(y[-edge:]).max() < 0.005


@pytest.mark.parametrize("n_syllables", [1, 3])
def test_syllables_are_separated_by_gaps(n_syllables):
    y = synthesize_utterance(f0_hz=120.0, formants_hz=VOWELS_HZ["AA"], duration_s=0.9, sr=SR, seed=4,
                             n_syllables=n_syllables)
    assert _voiced_runs(y, SR) == n_syllables


def test_digit_clips_last_between_0_4_and_0_9_s():
    speaker = make_speaker(speaker_id=7, gender="female", seed=5)
    lengths = [len(synthesize_digit(speaker=speaker, digit=d, repetition=r, sr=SR, seed=0)) / SR
               for d in range(10) for r in range(3)]
    assert 0.4 <= min(lengths) and max(lengths) <= 0.9


@settings(max_examples=40, deadline=None)
@given(speaker_id=st.integers(0, 10_000), seed=st.integers(0, 2**32 - 1), gender=st.sampled_from(["female", "male"]))
def test_speaker_draws_stay_in_their_gender_ranges(speaker_id, seed, gender):
    s = make_speaker(speaker_id=speaker_id, gender=gender, seed=seed)
    lo, hi = F0_RANGE_HZ[gender]
    assert lo <= s.f0_hz <= hi
    assert FORMANT_SCALE_RANGE[gender][0] <= s.formant_scale <= FORMANT_SCALE_RANGE[gender][1]
    assert s == make_speaker(speaker_id=speaker_id, gender=gender, seed=seed)


def test_genders_interleave():
    assert [s.gender for s in make_speakers(n_female=2, n_male=2, seed=0)] == ["male", "female"] * 2
    genders = [s.gender for s in make_speakers(n_female=12, n_male=48, seed=0)]
    assert genders.count("female") == 12 and genders[4::5] == ["female"] * 12


@pytest.mark.parametrize(("kwargs", "match"), [
    (dict(gender="other"), "gender must be one of"),
    (dict(speaker_id=-1), "speaker_id must be >= 0"),
])
def test_make_speaker_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_speaker(**{"speaker_id": 1, "gender": "male", "seed": 0, **kwargs})


@pytest.mark.parametrize(("kwargs", "match"), [
    (dict(duration_s=0.15, n_syllables=3), "too short for 3 syllables"),
    (dict(f0_hz=5.0), "f0_hz must be in"),
    (dict(formants_hz=(500.0, -1.0)), "positive frequencies"),
    (dict(formants_hz=(500.0,) * 7), "7 formants but only 6 bandwidths_hz"),
])
def test_synthesize_utterance_rejects_bad_arguments(kwargs, match):
    args = dict(f0_hz=120.0, formants_hz=(500.0, 1500.0), duration_s=0.5, sr=SR, seed=0)
    with pytest.raises(ValueError, match=match):
        synthesize_utterance(**{**args, **kwargs})


def test_rejects_unknown_digit(tmp_path):
    with pytest.raises(ValueError, match=r"digits must be in 0-9, got \[10\]"):
        write_audiomnist(tmp_path, n_female=1, n_male=0, digits=[10], repetitions=1)


# --- determinism ----------------------------------------------------------------------------------------------------


def test_same_seed_same_samples_other_seed_other_samples():
    args = dict(f0_hz=150.0, formants_hz=VOWELS_HZ["EH"], duration_s=0.5, sr=SR, n_syllables=2)
    assert np.array_equal(synthesize_utterance(**args, seed=9), synthesize_utterance(**args, seed=9))
    assert not np.array_equal(synthesize_utterance(**args, seed=9), synthesize_utterance(**args, seed=10))


def test_writers_are_byte_identical_across_runs(tmp_path):
    def write_all(root: Path, seed: int) -> dict[str, str]:
        write_audiomnist(root / "am", n_female=1, n_male=1, digits=(0, 9), repetitions=2, seed=seed)
        write_gender_folders(root / "gf", n_female=1, n_male=1, clips_per_speaker=2, seed=seed)
        write_labelled_folder(root / "lf", n_clips=3, seed=seed)
        return _sha256_tree(root)

    first, second, other = write_all(tmp_path / "a", 0), write_all(tmp_path / "b", 0), write_all(tmp_path / "c", 1)
    assert len(first) == 8 + 1 + 4 + 3
    assert first == second
    assert all(first[name] != other[name] for name in first)


# --- the corpora on disk --------------------------------------------------------------------------------------------


def test_audiomnist_layout(synthetic_audiomnist):
    data = synthetic_audiomnist
    assert data.name == "data"
    assert sorted(p.name for p in data.iterdir() if p.is_dir()) == [f"{i:02d}" for i in range(1, 13)]
    for folder in (p for p in data.iterdir() if p.is_dir()):
        names = sorted(p.name for p in folder.iterdir())
        assert len(names) == 20
        assert all(re.match(r"^\d_\d\d_\d+\.wav$", n) for n in names)
        assert names == sorted(f"{d}_{folder.name}_{i}.wav" for d in range(10) for i in range(2))


def test_audiomnist_meta_parses_like_the_real_file(synthetic_audiomnist):
    meta = json.loads((synthetic_audiomnist / "audioMNIST_meta.txt").read_text(encoding="utf-8"))
    assert list(meta) == [f"{i:02d}" for i in range(1, 13)]
    assert all(set(entry) == META_FIELDS for entry in meta.values())
    assert [entry["gender"] for entry in meta.values()] == ["male", "female"] * 6
    assert meta["01"]["age"] == int(meta["01"]["age"]) and isinstance(meta["02"]["age"], str)
    assert all(re.match(r"^\d\d(-\d\d){5}$", entry["recordingdate"]) for entry in meta.values())


def test_audiomnist_wavs_are_48khz_16bit_mono(synthetic_audiomnist):
    wavs = sorted(synthetic_audiomnist.rglob("*.wav"))
    assert len(wavs) == 240
    for path in wavs:
        info = sf.info(path)
        assert (info.samplerate, info.channels, info.format, info.subtype) == (48_000, 1, "WAV", "PCM_16")
        assert 0.4 <= info.duration <= 0.9


def test_labelled_folder_uses_trailing_gender_token(synthetic_labelled_folder):
    names = sorted(p.name for p in synthetic_labelled_folder.iterdir())
    assert len(names) == 20
    assert all(re.match(r"^clip_\d{3}_(female|male)\.wav$", n) for n in names)
    assert sum(n.endswith("_female.wav") for n in names) == 10
    assert sf.info(synthetic_labelled_folder / names[0]).samplerate == 16_000


def test_gender_folders_layout(tmp_path):
    root = write_gender_folders(tmp_path, n_female=1, n_male=2, clips_per_speaker=2, sr=SR)
    found = sorted(str(p.relative_to(root)) for p in root.rglob("*.wav"))
    assert found == ["female/speaker_03/utt_000.wav", "female/speaker_03/utt_001.wav",
                     "male/speaker_01/utt_000.wav", "male/speaker_01/utt_001.wav",
                     "male/speaker_02/utt_000.wav", "male/speaker_02/utt_001.wav"]
