"""Labelled training sources: AudioMNIST's own layout, a manifest CSV, gender folders."""
from __future__ import annotations

import csv
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from classifier.audio import is_audio_path
from classifier.errors import InvalidDataset

log = logging.getLogger(__name__)

GENDERS = ("female", "male")
AUDIOMNIST_META = "audioMNIST_meta.txt"
AUDIOMNIST_NAME = re.compile(r"^(\d)_(\d\d)_(\d+)$")  # digit_speaker_index


@dataclass(frozen=True)
class LabelledClip:
    path: Path
    speaker: str
    gender: str  # "female" | "male"
    corpus: str
    text: str = ""


def normalise_gender(value: str, *, where: str) -> str:
    """'Female', 'f', 'woman' -> 'female'; anything unknown is an error naming ``where``."""
    v = value.strip().lower()
    table = {"female": "female", "f": "female", "woman": "female", "male": "male", "m": "male", "man": "male"}
    if v not in table:
        raise InvalidDataset(f"{where}: gender {value!r} is not female or male")
    return table[v]


def read_source(path: str | Path) -> list[LabelledClip]:
    """Any supported source, recognised by its shape."""
    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".csv":
        return read_manifest(path)
    if path.is_dir() and find_audiomnist_meta(path) is not None:
        return read_audiomnist(path)
    if path.is_dir() and (path / "female").is_dir() and (path / "male").is_dir():
        return read_gender_folders(path)
    raise InvalidDataset(
        f"{path}: not a manifest .csv, an AudioMNIST folder (with {AUDIOMNIST_META}) "
        "or a folder with female/ and male/ subfolders"
    )


def find_audiomnist_meta(root: Path) -> Path | None:
    """The meta file in ``root``, its ``data/`` folder, or the parent (AudioMNIST keeps it in data/)."""
    for candidate in (root / AUDIOMNIST_META, root / "data" / AUDIOMNIST_META, root.parent / AUDIOMNIST_META):
        if candidate.is_file():
            return candidate
    return None


def read_audiomnist(root: Path) -> list[LabelledClip]:
    """AudioMNIST as published: ``data/NN/D_NN_I.wav`` and ``audioMNIST_meta.txt``."""
    meta_path = find_audiomnist_meta(root)
    if meta_path is None:
        raise InvalidDataset(f"{root}: no {AUDIOMNIST_META} in it, its data/ folder or its parent")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidDataset(f"{meta_path}: not valid JSON ({exc})") from None
    clips = []
    for wav in sorted(meta_path.parent.rglob("*")):
        m = AUDIOMNIST_NAME.match(wav.stem)
        if not (m and is_audio_path(wav)):
            continue
        digit, speaker, _ = m.groups()
        if speaker not in meta:
            raise InvalidDataset(f"{wav}: speaker {speaker} is not in {meta_path}")
        gender = normalise_gender(str(meta[speaker].get("gender", "")), where=f"{meta_path} speaker {speaker}")
        clips.append(LabelledClip(wav, speaker=f"audiomnist_{speaker}", gender=gender, corpus="audiomnist", text=digit))
    if not clips:
        raise InvalidDataset(f"{root}: no D_NN_I.wav files found next to {meta_path}")
    return clips


def read_manifest(csv_path: Path) -> list[LabelledClip]:
    """A CSV with at least ``path,speaker,gender`` (paths relative to the CSV); ``corpus``, ``text`` optional."""
    with open(csv_path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    missing = {"path", "speaker", "gender"} - set(rows[0].keys() if rows else [])
    if missing:
        raise InvalidDataset(f"{csv_path}: missing column(s) {', '.join(sorted(missing))}")
    base = csv_path.parent
    return [
        LabelledClip(
            path=base / row["path"],
            speaker=row["speaker"],
            gender=normalise_gender(row["gender"], where=f"{csv_path} line {i + 2}"),
            corpus=row.get("corpus") or csv_path.stem,
            text=row.get("text") or "",
        )
        for i, row in enumerate(rows)
    ]


def read_gender_folders(root: Path) -> list[LabelledClip]:
    """``female/`` and ``male/`` subfolders; a further subfolder names the speaker.

    Files directly inside ``female/`` or ``male/`` count as one speaker each,
    which cannot guarantee speaker-disjoint splits: a warning says so.
    """
    clips, loose = [], 0
    for gender in GENDERS:
        for f in sorted((root / gender).rglob("*")):
            if not (f.is_file() and is_audio_path(f)):
                continue
            rel = f.relative_to(root / gender)
            speaker = rel.parts[0] if len(rel.parts) > 1 else f.stem
            loose += len(rel.parts) == 1
            clips.append(LabelledClip(f, speaker=f"{root.name}_{gender}_{speaker}", gender=gender, corpus=root.name))
    if loose:
        log.warning("%d files in %s have no speaker folder: each counts as its own speaker", loose, root)
    if not clips:
        raise InvalidDataset(f"{root}: no audio files under female/ or male/")
    return clips
