"""Deterministic synthetic speech: speakers, digit utterances, corpora on disk.

Tests and demos need recordings whose answer is known (a speaker's F0 and
formants) without shipping the real AudioMNIST corpus. A source-filter model
is enough for that: a band-limited glottal pulse train at the speaker's F0,
with a slow pitch contour, jitter, shimmer and a little aspiration noise,
through a cascade of second-order formant resonators (Klatt, 1980, JASA 67).

Women's voices are built from the two differences a gender classifier can
hear: a higher F0 (165-255 Hz against 85-155 Hz) and formants about 15-20 %
higher (a shorter vocal tract), each with per-speaker variation.

Every function is a pure function of its arguments: the same arguments give
the same samples, and the writers give byte-identical files.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import lfilter

GENDERS = ("female", "male")
F0_RANGE_HZ = {"female": (165.0, 255.0), "male": (85.0, 155.0)}
# Vocal-tract length factor applied to the reference (adult male) formants.
FORMANT_SCALE_RANGE = {"female": (1.14, 1.21), "male": (0.96, 1.04)}
DEFAULT_BANDWIDTHS_HZ = (70.0, 100.0, 130.0, 200.0, 250.0, 300.0)
AUDIOMNIST_SR = 48_000
AUDIOMNIST_META = "audioMNIST_meta.txt"
CLIP_RANGE_S = (0.4, 0.9)
MIN_SYLLABLE_S = 0.06
FORMANT_BLOCK_S = 0.005  # formant tracks change once per block: smooth enough for glides
NOISE_FLOOR = 3e-4  # about -70 dBFS, a quiet room through a decent microphone

# Reference (adult male) F1-F4 in Hz, ARPAbet names: Peterson & Barney (1952)
# means, with /EY/ and /OW/ from Hillenbrand et al. (1995).
VOWELS_HZ: dict[str, tuple[float, float, float, float]] = {
    "IY": (270.0, 2290.0, 3010.0, 3600.0),
    "IH": (390.0, 1990.0, 2550.0, 3500.0),
    "EY": (476.0, 2089.0, 2691.0, 3500.0),
    "EH": (530.0, 1840.0, 2480.0, 3500.0),
    "AE": (660.0, 1720.0, 2410.0, 3500.0),
    "AA": (730.0, 1090.0, 2440.0, 3400.0),
    "AH": (640.0, 1190.0, 2390.0, 3400.0),
    "AO": (570.0, 840.0, 2410.0, 3400.0),
    "OW": (497.0, 910.0, 2459.0, 3400.0),
    "UH": (440.0, 1020.0, 2240.0, 3400.0),
    "UW": (300.0, 870.0, 2240.0, 3400.0),
    "ER": (490.0, 1350.0, 1690.0, 3300.0),
}
N_FORMANTS = 4

# The vowel nuclei of the English digit words, one tuple per syllable; a
# tuple of several vowels is a diphthong glided through in order.
DIGIT_SYLLABLES: dict[int, tuple[tuple[str, ...], ...]] = {
    0: (("IH", "ER"), ("OW", "UH")),  # zero
    1: (("UW", "AH"),),  # one
    2: (("UW",),),  # two
    3: (("ER", "IY"),),  # three
    4: (("AO", "ER"),),  # four
    5: (("AA", "IH"),),  # five
    6: (("IH",),),  # six
    7: (("EH",), ("AH",)),  # seven
    8: (("EY", "IY"),),  # eight
    9: (("AH", "AA", "IY"),),  # nine
}
# Typical clip length of each digit in AudioMNIST, silence included.
DIGIT_DURATION_S = {0: 0.72, 1: 0.56, 2: 0.5, 3: 0.56, 4: 0.56, 5: 0.62, 6: 0.52, 7: 0.74, 8: 0.5, 9: 0.64}

# Metadata values shaped like the real audioMNIST_meta.txt.
_ORIGINS = (
    ("German", "Europe, Germany, Wuerzburg"),
    ("German", "Europe, Germany, Hamburg"),
    ("German", "Europe, Germany, Berlin"),
    ("Spanish", "Europe, Spain, Madrid"),
    ("Italian", "Europe, Italy, Rome"),
    ("English", "Europe, England, London"),
    ("Chinese", "Asia, China, Beijing"),
)
_ROOMS = ("Kino", "Ruheraum", "Vortragsraum", "VR-Raum", "library")
_FIRST_RECORDING = datetime(2017, 6, 22, 11, 4, 28)
_META_STREAM = 1_000  # keeps metadata draws apart from voice draws of the same speaker


@dataclass(frozen=True)
class SyntheticSpeaker:
    """One synthetic voice; every field is drawn from ``make_speaker``'s seed."""

    speaker_id: int
    gender: str
    f0_hz: float  # mean fundamental frequency
    formant_scale: float  # vocal-tract length factor on the reference formants
    formant_offsets: tuple[float, ...]  # (N_FORMANTS,) per-formant idiosyncrasy, ~1
    duration_scale: float  # >1 speaks more slowly
    vibrato_hz: float
    jitter: float  # relative period-to-period F0 perturbation
    shimmer: float  # relative period-to-period amplitude perturbation
    aspiration: float  # breath noise relative to the voiced source
    age: int

    def formants_hz(self, vowel: str) -> tuple[float, ...]:
        """This speaker's F1-F4 for an ARPAbet vowel in :data:`VOWELS_HZ`."""
        ref = np.asarray(VOWELS_HZ[vowel]) * self.formant_scale * np.asarray(self.formant_offsets)
        return tuple(float(f) for f in ref)


def make_speaker(*, speaker_id: int, gender: str, seed: int) -> SyntheticSpeaker:
    """Draw one speaker's voice, deterministically from ``(seed, speaker_id, gender)``.

    Parameters
    ----------
    speaker_id : non-negative id; also the AudioMNIST speaker number.
    gender : ``"female"`` or ``"male"``; sets the F0 and formant-scale ranges.
    seed : corpus seed; the same seed and id give the same voice.
    """
    if gender not in GENDERS:
        raise ValueError(f"gender must be one of {GENDERS}, got {gender!r}")
    if speaker_id < 0:
        raise ValueError(f"speaker_id must be >= 0, got {speaker_id}")
    rng = np.random.default_rng([seed, speaker_id, GENDERS.index(gender)])
    female = gender == "female"
    return SyntheticSpeaker(
        speaker_id=speaker_id,
        gender=gender,
        f0_hz=float(rng.uniform(*F0_RANGE_HZ[gender])),
        formant_scale=float(rng.uniform(*FORMANT_SCALE_RANGE[gender])),
        formant_offsets=tuple(float(v) for v in 1.0 + rng.uniform(-0.04, 0.04, N_FORMANTS)),
        duration_scale=float(rng.uniform(0.9, 1.1)),
        vibrato_hz=float(rng.uniform(4.5, 6.5)),
        jitter=float(rng.uniform(0.004, 0.012)),
        shimmer=float(rng.uniform(0.02, 0.06)),
        # Women's voices are on average breathier (incomplete glottal closure).
        aspiration=float(rng.uniform(0.03, 0.08) if female else rng.uniform(0.01, 0.05)),
        age=int(rng.integers(19, 46)),
    )


def make_speakers(*, n_female: int, n_male: int, seed: int, first_id: int = 1) -> list[SyntheticSpeaker]:
    """Speakers ``first_id, first_id + 1, ...`` with the genders spread evenly.

    Women are interleaved among men (6 + 6 alternate, 12 + 48 puts a woman
    every fifth place) so any contiguous block of ids holds both genders.
    """
    if n_female < 0 or n_male < 0:
        raise ValueError(f"speaker counts must be >= 0, got n_female={n_female}, n_male={n_male}")
    n = n_female + n_male
    speakers = []
    for i in range(n):
        is_female = (i + 1) * n_female // n > i * n_female // n
        gender = "female" if is_female else "male"
        speakers.append(make_speaker(speaker_id=first_id + i, gender=gender, seed=seed))
    return speakers


def resonator_coefficients(*, formant_hz: float, bandwidth_hz: float, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """One Klatt formant resonator: a two-pole filter with unity gain at DC.

    Parameters
    ----------
    formant_hz : centre frequency, below ``sr / 2``.
    bandwidth_hz : -3 dB bandwidth.
    sr : sample rate in Hz.

    Returns
    -------
    b : np.ndarray [shape=(1,)]
    a : np.ndarray [shape=(3,)]
        Coefficients for :func:`scipy.signal.lfilter`.
    """
    if not 0 < formant_hz < sr / 2:
        raise ValueError(f"formant_hz must be in (0, {sr / 2}), got {formant_hz}")
    if bandwidth_hz <= 0:
        raise ValueError(f"bandwidth_hz must be > 0, got {bandwidth_hz}")
    r = math.exp(-math.pi * bandwidth_hz / sr)
    a1 = -2.0 * r * math.cos(2.0 * math.pi * formant_hz / sr)
    a2 = r * r
    return np.array([1.0 + a1 + a2]), np.array([1.0, a1, a2])


def synthesize_utterance(
    *,
    f0_hz: float,
    formants_hz: Sequence[float] | Sequence[Sequence[Sequence[float]]],
    duration_s: float,
    sr: int,
    seed: int,
    n_syllables: int = 1,
    bandwidths_hz: Sequence[float] = DEFAULT_BANDWIDTHS_HZ,
    vibrato_hz: float = 5.5,
    vibrato_depth: float = 0.006,
    jitter: float = 0.008,
    shimmer: float = 0.04,
    aspiration: float = 0.04,
    peak: float = 0.5,
) -> np.ndarray:
    """Synthesize a voiced utterance of syllables separated by short gaps.

    Parameters
    ----------
    f0_hz : mean fundamental frequency; the contour falls a few per cent
        across the utterance (declination) and wanders slowly around it.
    formants_hz : either one vowel, ``(F1, F2, ...)`` in Hz, held in each of
        ``n_syllables`` syllables; or one entry per syllable, each an
        array_like [shape=(n_targets, n_formants)] of vowel targets glided
        through in order (a diphthong). Formants at or above ``0.45 * sr``
        are left out.
    duration_s : clip length, including the leading and trailing silence.
    sr : sample rate in Hz.
    seed : every random draw (syllable timing, jitter, noise) comes from it.
    n_syllables : syllable count when ``formants_hz`` is one vowel.
    bandwidths_hz : bandwidth of each formant, in order.
    vibrato_hz, vibrato_depth : slow sinusoidal F0 modulation (depth relative).
    jitter, shimmer : period-to-period F0 and amplitude perturbation (relative).
    aspiration : breath noise relative to the voiced source.
    peak : absolute peak of the result.

    Returns
    -------
    y : np.ndarray [shape=(round(duration_s * sr),), dtype=float32]
    """
    _check_utterance_args(f0_hz=f0_hz, duration_s=duration_s, sr=sr, peak=peak)
    syllables = _as_syllables(formants_hz, n_syllables=n_syllables, bandwidths_hz=bandwidths_hz)
    rng = np.random.default_rng(seed)
    n = int(round(duration_s * sr))
    spans = _plan_syllables(n_samples=n, n_syllables=len(syllables), sr=sr, rng=rng)
    f0_track = _pitch_contour(
        n_samples=n, sr=sr, f0_hz=f0_hz, vibrato_hz=vibrato_hz, vibrato_depth=vibrato_depth, jitter=jitter, rng=rng
    )
    y = np.zeros(n)
    for (start, stop), targets in zip(spans, syllables):
        source = _glottal_source(f0_track[start:stop], sr=sr, shimmer=shimmer, rng=rng)
        # Breath noise rides on the same envelope and passes the same vocal tract.
        excitation = (source + aspiration * rng.standard_normal(stop - start)) * _envelope(stop - start, sr=sr, rng=rng)
        y[start:stop] = _resonate(excitation, targets, bandwidths_hz=bandwidths_hz, sr=sr)
    y *= peak / np.abs(y).max()
    y += NOISE_FLOOR * peak * rng.standard_normal(n)
    return y.astype(np.float32)


def digit_formants(*, digit: int, speaker: SyntheticSpeaker) -> list[np.ndarray]:
    """The vowel targets of a spoken digit in this speaker's voice.

    Returns
    -------
    syllables : list of np.ndarray [shape=(n_targets, N_FORMANTS)], in Hz,
        one per syllable, as :func:`synthesize_utterance` takes them.
    """
    if digit not in DIGIT_SYLLABLES:
        raise ValueError(f"digit must be in 0-9, got {digit!r}")
    return [np.array([speaker.formants_hz(v) for v in vowels]) for vowels in DIGIT_SYLLABLES[digit]]


def synthesize_digit(*, speaker: SyntheticSpeaker, digit: int, repetition: int, sr: int, seed: int) -> np.ndarray:
    """One take of a spoken digit, 0.4-0.9 s, deterministic in all arguments.

    Takes differ in length, pitch (a few per cent) and every random draw, as
    repeated takes by one person do.

    Returns
    -------
    y : np.ndarray [shape=(n,), dtype=float32]
    """
    rng = np.random.default_rng([seed, speaker.speaker_id, digit, repetition])
    duration_s = DIGIT_DURATION_S[digit] * speaker.duration_scale * rng.uniform(0.92, 1.08)
    return synthesize_utterance(
        f0_hz=speaker.f0_hz * rng.uniform(0.97, 1.03),
        formants_hz=digit_formants(digit=digit, speaker=speaker),
        duration_s=float(np.clip(duration_s, *CLIP_RANGE_S)),
        sr=sr,
        seed=int(rng.integers(2**32)),
        vibrato_hz=speaker.vibrato_hz,
        jitter=speaker.jitter,
        shimmer=speaker.shimmer,
        aspiration=speaker.aspiration,
    )


# The women of the real AudioMNIST (its meta file); its gender folds use them.
AUDIOMNIST_FEMALE_IDS = (12, 26, 28, 36, 43, 47, 52, 56, 57, 58, 59, 60)


def write_audiomnist(
    root: str | os.PathLike,
    *,
    n_female: int,
    n_male: int,
    digits: Iterable[int] = range(10),
    repetitions: int,
    sr: int = AUDIOMNIST_SR,
    seed: int = 0,
    female_ids: Iterable[int] | None = None,
) -> Path:
    """Write a corpus in AudioMNIST's published layout and return its data dir.

    ``female_ids`` fixes which speaker numbers are women (e.g.
    ``AUDIOMNIST_FEMALE_IDS`` with 12 + 48 speakers mirrors the real corpus,
    so its official gender folds apply); otherwise genders are interleaved.

    ``root/data/NN/D_NN_I.wav`` (speaker ``NN`` from 01, digit ``D``, take
    ``I`` from 0), 16-bit PCM mono WAV, and ``root/data/audioMNIST_meta.txt``:
    a JSON object keyed ``"01", "02", ...`` with the real file's fields.
    """
    digits = list(digits)
    if any(d not in DIGIT_SYLLABLES for d in digits):
        raise ValueError(f"digits must be in 0-9, got {digits}")
    if not 0 < n_female + n_male <= 99:
        raise ValueError(f"AudioMNIST numbers speakers 01-99, got {n_female + n_male} speakers")
    data = Path(root) / "data"
    if female_ids is None:
        speakers = make_speakers(n_female=n_female, n_male=n_male, seed=seed)
    else:
        women = set(female_ids)
        if len(women) != n_female or not women <= set(range(1, n_female + n_male + 1)):
            raise ValueError(f"female_ids {sorted(women)} must name {n_female} of speakers 1-{n_female + n_male}")
        speakers = [
            make_speaker(speaker_id=i, gender="female" if i in women else "male", seed=seed)
            for i in range(1, n_female + n_male + 1)
        ]
    for speaker in speakers:
        folder = data / f"{speaker.speaker_id:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        for digit in digits:
            for take in range(repetitions):
                y = synthesize_digit(speaker=speaker, digit=digit, repetition=take, sr=sr, seed=seed)
                write_pcm16(folder / f"{digit}_{speaker.speaker_id:02d}_{take}.wav", y=y, sr=sr)
    meta = {f"{s.speaker_id:02d}": _audiomnist_meta(s, seed=seed) for s in speakers}
    (data / AUDIOMNIST_META).write_text(json.dumps(meta, indent=4) + "\n", encoding="utf-8")
    return data


def write_gender_folders(
    root: str | os.PathLike, *, n_female: int, n_male: int, clips_per_speaker: int, sr: int = 16_000, seed: int = 0
) -> Path:
    """Write ``root/{female,male}/speaker_NN/utt_KKK.wav`` and return ``root``.

    Take ``KKK`` of a speaker says digit ``KKK % 10``.
    """
    root = Path(root)
    for speaker in make_speakers(n_female=n_female, n_male=n_male, seed=seed):
        folder = root / speaker.gender / f"speaker_{speaker.speaker_id:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(clips_per_speaker):
            y = synthesize_digit(speaker=speaker, digit=k % 10, repetition=k // 10, sr=sr, seed=seed)
            write_pcm16(folder / f"utt_{k:03d}.wav", y=y, sr=sr)
    return root


def write_labelled_folder(root: str | os.PathLike, *, n_clips: int, sr: int = 16_000, seed: int = 0) -> Path:
    """Write ``root/clip_KKK_<gender>.wav``, one speaker per clip, and return ``root``.

    The gender is the trailing token of the name (the seed's
    ``me_eight_male.wav`` convention); genders alternate.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    speakers = make_speakers(n_female=n_clips // 2, n_male=n_clips - n_clips // 2, seed=seed)
    for k, speaker in enumerate(speakers):
        y = synthesize_digit(speaker=speaker, digit=k % 10, repetition=0, sr=sr, seed=seed)
        write_pcm16(root / f"clip_{k:03d}_{speaker.gender}.wav", y=y, sr=sr)
    return root


def write_pcm16(path: str | os.PathLike, *, y: np.ndarray, sr: int) -> None:
    """Write ``y`` (shape=(n,), in [-1, 1]) as 16-bit PCM mono WAV.

    Quantised here, not by libsndfile, so the bytes depend only on ``y``.
    """
    pcm = np.clip(np.round(np.asarray(y, dtype=np.float64) * 32767.0), -32768, 32767).astype(np.int16)
    sf.write(os.fspath(path), pcm, sr, subtype="PCM_16", format="WAV")


def _check_utterance_args(*, f0_hz: float, duration_s: float, sr: int, peak: float) -> None:
    if sr <= 0:
        raise ValueError(f"sr must be > 0, got {sr}")
    if not 20.0 <= f0_hz < sr / 8:
        raise ValueError(f"f0_hz must be in [20, {sr / 8}), got {f0_hz}")
    if duration_s <= 0:
        raise ValueError(f"duration_s must be > 0, got {duration_s}")
    if not 0 < peak <= 1:
        raise ValueError(f"peak must be in (0, 1], got {peak}")


def _as_syllables(
    formants_hz: Sequence[float] | Sequence[Sequence[Sequence[float]]],
    *,
    n_syllables: int,
    bandwidths_hz: Sequence[float],
) -> list[np.ndarray]:
    """Normalise ``formants_hz`` to a list of (n_targets, n_formants) arrays."""
    if n_syllables < 1:
        raise ValueError(f"n_syllables must be >= 1, got {n_syllables}")
    if len(formants_hz) and np.ndim(formants_hz[0]) == 0:
        syllables = [np.asarray(formants_hz, dtype=float)[None, :]] * n_syllables
    else:
        syllables = [np.atleast_2d(np.asarray(s, dtype=float)) for s in formants_hz]
    for targets in syllables:
        if targets.ndim != 2 or targets.size == 0 or np.any(targets <= 0):
            raise ValueError(f"formants_hz must hold positive frequencies in Hz, got {targets.tolist()}")
        if targets.shape[1] > len(bandwidths_hz):
            raise ValueError(f"{targets.shape[1]} formants but only {len(bandwidths_hz)} bandwidths_hz")
    if not syllables:
        raise ValueError("formants_hz is empty")
    return syllables


def _plan_syllables(*, n_samples: int, n_syllables: int, sr: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """(start, stop) sample spans of each syllable, between silences and gaps."""
    lead = int(rng.uniform(0.03, 0.08) * sr)
    trail = int(rng.uniform(0.03, 0.08) * sr)
    gaps = (rng.uniform(0.03, 0.07, n_syllables - 1) * sr).astype(int)
    voiced = n_samples - lead - trail - int(gaps.sum())
    if voiced < n_syllables * MIN_SYLLABLE_S * sr:
        raise ValueError(f"{n_samples / sr:.3f} s is too short for {n_syllables} syllables")
    weights = rng.uniform(0.8, 1.2, n_syllables)
    lengths = np.floor(voiced * weights / weights.sum()).astype(int)
    starts = lead + np.concatenate([[0], np.cumsum(lengths[:-1] + gaps)])
    return [(int(s), int(s + n)) for s, n in zip(starts, lengths)]


def _pitch_contour(
    *,
    n_samples: int,
    sr: int,
    f0_hz: float,
    vibrato_hz: float,
    vibrato_depth: float,
    jitter: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Instantaneous F0 in Hz, shape (n_samples,), averaging about ``f0_hz``."""
    t = np.arange(n_samples) / sr
    # Declination: pitch falls through a statement, here symmetric about the mean.
    declination = -rng.uniform(0.02, 0.05) * np.linspace(-1.0, 1.0, n_samples)
    drift = 0.015 * np.sin(2 * np.pi * rng.uniform(1.0, 3.0) * t + rng.uniform(0, 2 * np.pi))
    vibrato = vibrato_depth * np.sin(2 * np.pi * vibrato_hz * t + rng.uniform(0, 2 * np.pi))
    # Jitter is a per-period event, so hold each draw for one nominal period.
    period = max(1, int(round(sr / f0_hz)))
    held = np.repeat(rng.standard_normal(n_samples // period + 1), period)[:n_samples]
    return f0_hz * (1.0 + declination + drift + vibrato) * (1.0 + jitter * held)


def _glottal_source(f0_track: np.ndarray, *, sr: int, shimmer: float, rng: np.random.Generator) -> np.ndarray:
    """A band-limited sawtooth following ``f0_track`` (shape (n,)), shape (n,).

    The sawtooth's sharp fall is the glottal closure, and its 1/k harmonic
    roll-off (-6 dB/octave) is that of a glottal flow derivative with lip
    radiation. PolyBLEP smoothing keeps the aliasing far below the harmonics.
    """
    dt = f0_track / sr  # cycles per sample
    phase = rng.uniform() + np.cumsum(dt)
    frac = phase % 1.0
    saw = 2.0 * frac - 1.0
    head = frac < dt
    tail = frac > 1.0 - dt
    u = frac[head] / dt[head]
    saw[head] -= 2 * u - u * u - 1.0
    v = (frac[tail] - 1.0) / dt[tail]
    saw[tail] -= v * v + 2 * v + 1.0
    periods = np.floor(phase).astype(np.int64)
    periods -= periods[0]
    return saw * (1.0 + shimmer * rng.standard_normal(periods[-1] + 1))[periods]


def _envelope(n: int, *, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Syllable loudness, shape (n,): raised-cosine onset and offset, slow sag."""
    attack = min(n // 3, int(rng.uniform(0.015, 0.035) * sr))
    release = min(n // 3, int(rng.uniform(0.04, 0.08) * sr))
    env = np.linspace(1.0, rng.uniform(0.6, 0.85), n)  # subglottal pressure falls
    env[:attack] *= 0.5 - 0.5 * np.cos(np.pi * np.arange(attack) / attack)
    env[n - release :] *= 0.5 + 0.5 * np.cos(np.pi * np.arange(release) / release)
    return env * rng.uniform(0.7, 1.0)


def _formant_tracks(targets: np.ndarray, n_blocks: int) -> np.ndarray:
    """Formants per block, shape (n_formants, n_blocks), from (n_targets, n_formants).

    A smoothstep between consecutive targets lingers near each one and moves
    quickly between them, as a diphthong does.
    """
    if len(targets) == 1:
        return np.repeat(targets.T, n_blocks, axis=1)
    pos = (np.arange(n_blocks) + 0.5) / n_blocks * (len(targets) - 1)
    i = np.minimum(pos.astype(int), len(targets) - 2)
    w = pos - i
    w = (w * w * (3.0 - 2.0 * w))[:, None]
    return (targets[i] * (1.0 - w) + targets[i + 1] * w).T


def _resonate(x: np.ndarray, targets: np.ndarray, *, bandwidths_hz: Sequence[float], sr: int) -> np.ndarray:
    """Pass ``x`` (shape (n,)) through the cascade of formant resonators."""
    block = max(1, int(FORMANT_BLOCK_S * sr))
    tracks = _formant_tracks(targets, n_blocks=-(-len(x) // block))
    y = x
    for track, bandwidth_hz in zip(tracks, bandwidths_hz):
        # A resonance near Nyquist is not speech any more: leave it out.
        if track.max() >= 0.45 * sr:
            continue
        y = _resonate_one(y, track, bandwidth_hz=bandwidth_hz, sr=sr, block=block)
    return y


def _resonate_one(x: np.ndarray, track: np.ndarray, *, bandwidth_hz: float, sr: int, block: int) -> np.ndarray:
    """One time-varying resonator: new coefficients per block, state carried over."""
    if np.all(track == track[0]):
        b, a = resonator_coefficients(formant_hz=float(track[0]), bandwidth_hz=bandwidth_hz, sr=sr)
        return lfilter(b, a, x)
    y = np.empty_like(x)
    zi = np.zeros(2)
    for k, formant_hz in enumerate(track):
        b, a = resonator_coefficients(formant_hz=float(formant_hz), bandwidth_hz=bandwidth_hz, sr=sr)
        seg = slice(k * block, (k + 1) * block)
        y[seg], zi = lfilter(b, a, x[seg], zi=zi)
    return y


def _audiomnist_meta(speaker: SyntheticSpeaker, *, seed: int) -> dict[str, object]:
    """One speaker's entry of audioMNIST_meta.txt, quirks of the real file included."""
    rng = np.random.default_rng([seed, speaker.speaker_id, _META_STREAM])
    accent, origin = _ORIGINS[int(rng.integers(len(_ORIGINS)))]
    recorded = _FIRST_RECORDING + timedelta(days=2 * (speaker.speaker_id - 1), seconds=int(rng.integers(0, 36_000)))
    first = speaker.speaker_id == 1
    return {
        # The real file spells speaker 01's accent in lower case and gives its
        # age as a number; every other age is a string. Readers must cope.
        "accent": accent.lower() if first else accent,
        "age": speaker.age if first else str(speaker.age),
        "gender": speaker.gender,
        "native speaker": "yes" if accent == "English" else "no",
        "origin": origin,
        "recordingdate": recorded.strftime("%y-%m-%d-%H-%M-%S"),
        "recordingroom": _ROOMS[int(rng.integers(len(_ROOMS)))],
    }
