"""True labels for a submitted folder, from the conventions users already follow.

In order: ``labels.csv`` (``path,gender``) in the folder; AudioMNIST's layout
with ``audioMNIST_meta.txt`` nearby; ``female/`` and ``male/`` subfolders; a
trailing ``_female`` / ``_male`` token in the file name. The first convention
that labels any file wins; files it does not cover stay unlabelled.
"""
from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

LABELS_CSV = "labels.csv"
AUDIOMNIST_META = "audioMNIST_meta.txt"
_AUDIOMNIST_NAME = re.compile(r"^\d_(\d\d)_\d+$")
_TOKEN = re.compile(r"(?:^|[_\-. ])(female|male)$", re.IGNORECASE)
_GENDERS = {"female": "female", "f": "female", "male": "male", "m": "male"}


@dataclass(frozen=True)
class Label:
    gender: str
    speaker: str | None = None


def find_labels(root: Path, rel_paths: list[str], *, labels_csv: Path | None = None) -> tuple[str | None, dict[str, Label]]:
    """Labels for ``rel_paths`` (POSIX paths relative to ``root``).

    Returns ``(source, labels)`` where ``source`` names the convention used
    (``labels.csv``, ``audiomnist``, ``folders``, ``filename``) or None.
    """
    csv_path = labels_csv or (root / LABELS_CSV)
    finders = [
        ("labels.csv", lambda: _from_csv(csv_path, rel_paths) if csv_path.is_file() else {}),
        ("audiomnist", lambda: _from_audiomnist(root, rel_paths)),
        ("folders", lambda: _from_folders(rel_paths)),
        ("filename", lambda: _from_tokens(rel_paths)),
    ]
    for name, finder in finders:
        labels = finder()
        if labels:
            return name, labels
    return None, {}


def _gender(value: str) -> str | None:
    return _GENDERS.get(value.strip().lower())


def _from_csv(csv_path: Path, rel_paths: list[str]) -> dict[str, Label]:
    wanted = set(rel_paths)
    out = {}
    with open(csv_path, newline="", encoding="utf-8", errors="replace") as fh:
        for row in csv.DictReader(fh):
            path = str(PurePosixPath((row.get("path") or "").strip().replace("\\", "/")))
            gender = _gender(row.get("gender") or "")
            if path in wanted and gender:
                out[path] = Label(gender, (row.get("speaker") or None))
    return out


def _from_audiomnist(root: Path, rel_paths: list[str]) -> dict[str, Label]:
    meta = _find_meta(root)
    if meta is None:
        return {}
    out = {}
    for rel in rel_paths:
        m = _AUDIOMNIST_NAME.match(PurePosixPath(rel).stem)
        if m and m.group(1) in meta:
            gender = _gender(str(meta[m.group(1)].get("gender", "")))
            if gender:
                out[rel] = Label(gender, f"audiomnist_{m.group(1)}")
    return out


def _find_meta(root: Path) -> dict | None:
    for candidate in (root / AUDIOMNIST_META, root / "data" / AUDIOMNIST_META, root.parent / AUDIOMNIST_META):
        if candidate.is_file():
            try:
                return json.loads(candidate.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError):
                return None
    return None


def _from_folders(rel_paths: list[str]) -> dict[str, Label]:
    out = {}
    for rel in rel_paths:
        parts = PurePosixPath(rel).parts
        for i, part in enumerate(parts[:-1]):
            if part.lower() in ("female", "male"):
                speaker = parts[i + 1] if i + 2 < len(parts) else None
                out[rel] = Label(part.lower(), speaker)
                break
    return out


def _from_tokens(rel_paths: list[str]) -> dict[str, Label]:
    out = {}
    for rel in rel_paths:
        m = _TOKEN.search(PurePosixPath(rel).stem)
        if m:
            out[rel] = Label(m.group(1).lower())
    return out
