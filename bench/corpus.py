"""The benchmark's recordings: labelled synthetic speech, written once per run."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from classifier.synthetic import make_speakers, synthesize_digit, write_pcm16

UNIQUE_CLIPS = 200  # distinct voices; larger runs repeat them as hard links


def write_bench_clips(folder: Path, *, n_clips: int, sr: int, seed: int = 0) -> list[Path]:
    """Write ``folder/clip_KKKKK_<gender>.wav`` for K in 0..n_clips-1 and return the paths.

    Parameters
    ----------
    folder : created if missing; must not hold other audio files.
    n_clips : how many files.
    sr : sample rate of the files (the model's rate: no resampling cost in any figure).
    seed : the voices' seed.

    The first ``UNIQUE_CLIPS`` files are synthesised (one speaker each,
    genders alternating, so the names carry true labels); the rest are hard
    links to them, which costs no disk and decodes the same as a copy.
    """
    if n_clips < 1:
        raise ValueError(f"n_clips must be >= 1, got {n_clips}")
    folder.mkdir(parents=True, exist_ok=True)
    n_unique = min(n_clips, UNIQUE_CLIPS)
    speakers = make_speakers(n_female=n_unique // 2, n_male=n_unique - n_unique // 2, seed=seed)
    paths = []
    for k in range(n_clips):
        speaker = speakers[k % n_unique]
        path = folder / f"clip_{k:05d}_{speaker.gender}.wav"
        if k < n_unique:
            y = synthesize_digit(speaker=speaker, digit=k % 10, repetition=0, sr=sr, seed=seed)
            write_pcm16(path, y=y, sr=sr)
        else:
            _link_or_copy(paths[k % n_unique], path)
        paths.append(path)
    return paths


def _link_or_copy(src: Path, dest: Path) -> None:
    try:
        os.link(src, dest)
    except OSError:  # a filesystem without hard links
        shutil.copyfile(src, dest)


def subset_folder(paths: list[Path], folder: Path) -> Path:
    """A folder holding links to ``paths`` (a small job made of the same recordings)."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in paths:
        _link_or_copy(path, folder / path.name)
    return folder
