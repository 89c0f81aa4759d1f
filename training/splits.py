"""Splits: speaker-disjoint by default, AudioMNIST's official gender folds, the seed's random clip split."""
from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import asdict, dataclass, field

from classifier.errors import InvalidDataset
from training.sources import LabelledClip

# AudioMNIST reference code (audiomnist/train/splits.py), "gender" task:
# 4 folds of 12 F + 12 M speakers, 6/3/3 speakers per gender per fold.
AUDIOMNIST_GENDER_FOLDS = [
    {"train": [36, 47, 56, 26, 12, 57, 2, 44, 50, 25, 37, 45], "validate": [43, 28, 52, 48, 53, 41], "test": [58, 59, 60, 7, 23, 38]},
    {"train": [26, 12, 57, 43, 28, 52, 25, 37, 45, 48, 53, 41], "validate": [58, 59, 60, 7, 23, 38], "test": [36, 47, 56, 2, 44, 50]},
    {"train": [43, 28, 52, 58, 59, 60, 48, 53, 41, 7, 23, 38], "validate": [36, 47, 56, 2, 44, 50], "test": [26, 12, 57, 25, 37, 45]},
    {"train": [58, 59, 60, 36, 47, 56, 7, 23, 38, 2, 44, 50], "validate": [26, 12, 57, 25, 37, 45], "test": [43, 28, 52, 48, 53, 41]},
]


@dataclass
class Split:
    """Clip indices per part, and how they were chosen (saved with the run)."""

    name: str
    kind: str  # "speaker_disjoint" | "audiomnist_fold" | "random_clip"
    train: list[int]
    val: list[int]
    test: list[int] = field(default_factory=list)
    seed: int | None = None
    speaker_overlap: bool = False

    def to_dict(self, clips: list[LabelledClip]) -> dict:
        d = asdict(self)
        for part in ("train", "val", "test"):
            d[f"{part}_speakers"] = sorted({clips[i].speaker for i in getattr(self, part)})
        return d


def split_by_speaker(clips: list[LabelledClip], *, val_fraction: float = 0.15, seed: int = 0) -> Split:
    """Hold out whole speakers, stratified by corpus and gender.

    Each (corpus, gender) group with at least two speakers gives at least one
    to validation, so every corpus is measured on someone it never heard.
    """
    groups: dict[tuple[str, str], set[str]] = defaultdict(set)
    for c in clips:
        groups[(c.corpus, c.gender)].add(c.speaker)
    rng = random.Random(seed)
    val_speakers: set[str] = set()
    for key in sorted(groups):
        speakers = sorted(groups[key])
        if len(speakers) < 2:
            continue
        n_val = max(1, round(len(speakers) * val_fraction))
        val_speakers.update(rng.sample(speakers, n_val))
    train = [i for i, c in enumerate(clips) if c.speaker not in val_speakers]
    val = [i for i, c in enumerate(clips) if c.speaker in val_speakers]
    _require_both_genders(clips, train, "training")
    _require_both_genders(clips, val, "validation")
    return Split(name=f"speaker-seed{seed}", kind="speaker_disjoint", train=train, val=val, seed=seed)


def split_by_corpus(clips: list[LabelledClip], held_out: list[str]) -> Split:
    """Hold out whole corpora: how the model transfers to recordings unlike any it trained on."""
    corpora = {c.corpus for c in clips}
    unknown = sorted(set(held_out) - corpora)
    if unknown:
        raise InvalidDataset(f"no corpus named {', '.join(unknown)}: the sources hold {', '.join(sorted(corpora))}")
    train = [i for i, c in enumerate(clips) if c.corpus not in held_out]
    val = [i for i, c in enumerate(clips) if c.corpus in held_out]
    _require_both_genders(clips, train, "training")
    _require_both_genders(clips, val, "validation")
    return Split(name="corpus-" + "+".join(sorted(held_out)), kind="corpus_disjoint", train=train, val=val)


def audiomnist_gender_folds(clips: list[LabelledClip]) -> list[Split]:
    """AudioMNIST's official 4-fold gender split, for comparison with the paper."""
    by_number = {}
    for i, c in enumerate(clips):
        if c.corpus != "audiomnist":
            raise InvalidDataset(f"the AudioMNIST folds need AudioMNIST clips, got {c.path} ({c.corpus})")
        by_number.setdefault(int(c.speaker.rsplit("_", 1)[1]), []).append(i)
    folds = []
    for k, fold in enumerate(AUDIOMNIST_GENDER_FOLDS):
        parts = {p: [i for s in fold[p] for i in by_number.get(s, [])] for p in ("train", "validate", "test")}
        if not parts["train"] or not parts["validate"]:
            raise InvalidDataset(f"AudioMNIST fold {k}: speakers {fold['train']} / {fold['validate']} are missing")
        folds.append(Split(name=f"audiomnist-fold{k}", kind="audiomnist_fold", train=parts["train"], val=parts["validate"], test=parts["test"]))
    return folds


def split_random_clips(clips: list[LabelledClip], *, val_fraction: float = 0.2, seed: int = 0) -> Split:
    """The seed notebook's split: random clips, speakers shared between parts.

    Its error rate measures memory of voices as much as gender; it is labelled
    ``speaker_overlap=True`` everywhere it is reported.
    """
    order = list(range(len(clips)))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(order) * val_fraction))
    return Split(name=f"random-clips-seed{seed}", kind="random_clip", train=sorted(order[n_val:]), val=sorted(order[:n_val]), seed=seed, speaker_overlap=True)


def _require_both_genders(clips: list[LabelledClip], part: list[int], name: str) -> None:
    genders = {clips[i].gender for i in part}
    if genders != {"female", "male"}:
        raise InvalidDataset(f"the {name} part holds only {sorted(genders) or 'no'} speakers: need both genders")
