"""Decode, validate and window recordings.

Every check raises a named :mod:`classifier.errors` error carrying the bad
value, so one bad file in a batch becomes one readable per-file error.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from classifier.errors import (
    EmptyFile,
    NoSamples,
    NonFiniteSamples,
    SilentAudio,
    TooLong,
    TooShort,
    UnreadableAudio,
    UnsupportedSampleRate,
)

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".mp3")
MIN_SAMPLE_RATE = 8_000
MAX_SAMPLE_RATE = 192_000
# -80 dBFS: below 16-bit dither, nothing a microphone records is that quiet.
SILENCE_PEAK = 1e-4


@dataclass(frozen=True)
class Recording:
    """One decoded recording, mono float32 at ``sr``."""

    y: np.ndarray  # (n,)
    sr: int
    source_sr: int
    duration_s: float


def is_audio_path(path: str | os.PathLike) -> bool:
    """True for the extensions we decode, in any letter case."""
    return str(path).lower().endswith(AUDIO_EXTENSIONS)


def find_audio_files(paths: list[str | os.PathLike]) -> list[Path]:
    """Files given directly, plus audio files found recursively in folders.

    Results are sorted within each folder so batches are reproducible.
    """
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file() and is_audio_path(p)))
        else:
            found.append(path)
    return found


def load_audio(
    path: str | os.PathLike,
    *,
    sr: int,
    min_samples: int = 1,
    max_duration_s: float = 1200.0,
) -> Recording:
    """Decode ``path`` to mono float32 at ``sr`` Hz and validate it.

    Parameters
    ----------
    path : file to read (WAV, FLAC, OGG, MP3; any letter case).
    sr : target sample rate; the file is resampled with soxr when it differs.
    min_samples : fewest samples (at ``sr``) that still hold one analysis frame.
    max_duration_s : longer recordings are refused before they are decoded.
    """
    path = Path(path)
    _check_file(path)
    info = _read_info(path)
    _check_rate(info.samplerate, path)
    if info.frames == 0:
        raise NoSamples("the file holds zero samples", path=str(path))
    duration_s = info.frames / info.samplerate
    if duration_s > max_duration_s:
        raise TooLong(f"{duration_s:.1f} s is longer than the limit of {max_duration_s:.0f} s", path=str(path))
    y = _decode(path, info)
    y = _to_mono(y)
    _check_samples(y, path)
    if info.samplerate != sr:
        y = soxr.resample(y, info.samplerate, sr, quality="HQ").astype(np.float32)
    if len(y) < min_samples:
        raise TooShort(f"{len(y)} samples at {sr} Hz; at least {min_samples} are needed for one frame", path=str(path))
    return Recording(y=y, sr=sr, source_sr=info.samplerate, duration_s=len(y) / sr)


def _check_file(path: Path) -> None:
    if path.is_dir():
        raise UnreadableAudio("is a directory, not a file", path=str(path))
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise UnreadableAudio("file not found", path=str(path)) from None
    except OSError as exc:
        raise UnreadableAudio(f"cannot be opened ({exc.strerror})", path=str(path)) from None
    if size == 0:
        raise EmptyFile("the file is empty (0 bytes)", path=str(path))


def _read_info(path: Path) -> sf._SoundFileInfo:
    try:
        return sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise UnreadableAudio(f"not a readable audio file ({_short(exc)})", path=str(path)) from None


def _check_rate(rate: int, path: Path) -> None:
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise UnsupportedSampleRate(
            f"sample rate {rate} Hz is outside {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz", path=str(path)
        )


def _decode(path: Path, info: sf._SoundFileInfo) -> np.ndarray:
    try:
        y, _ = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError, MemoryError) as exc:
        raise UnreadableAudio(f"decoding failed ({_short(exc)})", path=str(path)) from None
    if len(y) == 0:
        raise NoSamples("the file holds zero samples", path=str(path))
    # libsndfile returns what it could read of a cut-off WAV without an error;
    # a header that promises more frames than the file holds means truncation.
    if info.format in ("WAV", "WAVEX", "AIFF") and len(y) < info.frames:
        raise UnreadableAudio(
            f"truncated: header declares {info.frames} frames, file holds {len(y)}", path=str(path)
        )
    return y


def _to_mono(y: np.ndarray) -> np.ndarray:
    # (n, channels) -> (n,); averaging keeps the level of a centred stereo voice.
    return np.ascontiguousarray(y.mean(axis=1, dtype=np.float32))


def _check_samples(y: np.ndarray, path: Path) -> None:
    finite = np.isfinite(y)
    if not finite.all():
        bad = int((~finite).sum())
        raise NonFiniteSamples(f"{bad} of {len(y)} samples are NaN or infinite", path=str(path))
    peak = float(np.abs(y).max())
    if peak < SILENCE_PEAK:
        raise SilentAudio(f"peak level {_dbfs(peak)} is below {_dbfs(SILENCE_PEAK)}: no sound", path=str(path))


def _dbfs(x: float) -> str:
    return "-inf dBFS" if x <= 0 else f"{20 * np.log10(x):.1f} dBFS"


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:160]


def split_windows(y: np.ndarray, *, window: int, hop: int) -> np.ndarray:
    """Cut ``y`` into overlapping windows; short clips are zero-padded.

    Parameters
    ----------
    y : np.ndarray [shape=(n,)]
    window, hop : in samples.

    Returns
    -------
    np.ndarray [shape=(n_windows, window)]
        A clip shorter than ``window`` becomes one window, centred in zeros.
        Longer clips get windows every ``hop`` samples, the last one aligned
        with the end so the tail is never dropped.
    """
    if len(y) <= window:
        out = np.zeros((1, window), dtype=np.float32)
        start = (window - len(y)) // 2
        out[0, start : start + len(y)] = y
        return out
    starts = list(range(0, len(y) - window + 1, hop))
    if starts[-1] + window < len(y):
        starts.append(len(y) - window)
    return np.stack([y[s : s + window] for s in starts]).astype(np.float32, copy=False)


def speech_mask(windows: np.ndarray, *, floor_db: float = -55.0, below_loudest_db: float = 25.0) -> np.ndarray:
    """Which windows hold enough sound to vote.

    A window votes when its RMS is above an absolute floor (near-silence) and
    within ``below_loudest_db`` of the loudest window (pauses in a reading).
    The loudest window always votes, so every valid file gets a verdict.

    Parameters
    ----------
    windows : np.ndarray [shape=(n_windows, window)]

    Returns
    -------
    np.ndarray [shape=(n_windows,), dtype=bool]
    """
    rms = np.sqrt(np.mean(np.square(windows, dtype=np.float64), axis=1))
    level_db = 20 * np.log10(np.maximum(rms, 1e-12))
    mask = (level_db > floor_db) & (level_db > level_db.max() - below_loudest_db)
    mask[int(np.argmax(level_db))] = True
    return mask
