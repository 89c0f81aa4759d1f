"""The figures the whole-corpus hold-out rows of models/EXPERIMENTS.md give, for one run.

A run trained with ``--split corpus --holdout-corpus ...`` validates on
corpora it never heard. A seed alone moves balanced accuracy at log-odds 0 by
several points there, while ROC AUC and the best threshold's balanced accuracy
move by under one (models/EXPERIMENTS.md), so this prints all three, and
accuracy at 0 per corpus and gender and for every speaker with 50 clips or
more, and how many speakers the vote of all their clips (mean log-odds, as
the job report's speaker verdict) gets right. Raw (uncalibrated) log-odds per
clip, as ``classify`` combines windows.
Usage:

    python scripts/holdout_report.py RUN_DIR MANIFEST [--cache-dir DIR] [--also-at RAW ...] [--with RUN_DIR ...] [--by-tag KEY] [--json OUT]

``--with`` scores an ensemble: the mean raw log-odds per clip of RUN_DIR and
each other run (seeds or recipes trained on the same split), after each
member's own AUC line. ``--by-tag emotion`` splits the clips by a
``key=value`` tag of the manifest's ``text`` column (RAVDESS's is
``emotion=angry; intensity=strong; ...``) and gives each value's accuracy
per gender at 0 and at every ``--also-at``: which speaking styles a
threshold costs.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.calibrate import weighted_auc
from training.loop import run_validation_log_odds
from training.metrics import balanced_accuracy_at
from training.sources import read_source


def best_threshold(z: np.ndarray, is_female: np.ndarray) -> tuple[float, float]:
    """The raw threshold with the highest balanced accuracy, and that accuracy (an oracle: a ceiling, not a result)."""
    candidates = np.unique(z)
    scores = [balanced_accuracy_at(z, is_female, t) for t in candidates]
    k = int(np.argmax(scores))
    return float(candidates[k]), float(scores[k])


def ensemble_log_odds(members: list[tuple[list[int], np.ndarray]]) -> np.ndarray:
    """Mean raw log-odds per clip over (validation indices, log-odds) pairs; every member must have scored the same clips."""
    kept = members[0][0]
    for other, _ in members[1:]:
        if other != kept:
            raise ValueError(f"ensemble members scored different clips ({len(kept)} and {len(other)}): train them on the same split")
    return np.mean([z for _, z in members], axis=0)


def tag_value(text: str, key: str) -> str:
    """``key``'s value in a manifest text like ``emotion=angry; intensity=strong`` ("" when it has none)."""
    for part in text.split(";"):
        name, sep, value = part.partition("=")
        if sep and name.strip() == key:
            return value.strip()
    return ""


def holdout_figures(
    z: np.ndarray, is_female: np.ndarray, corpus: list[str], speaker: list[str], also_at: tuple[float, ...] = (), styles: list[str] | None = None
) -> dict:
    """``also_at``: raw thresholds (another model's calibrated one, say) to score the clips at as well.

    ``styles``: a label per clip (an emotion, say; "" for none): accuracy per label and gender at 0 and at each ``also_at``.
    """
    right = (z >= 0) == is_female
    speakers = defaultdict(list)
    for s, ok in zip(speaker, right):
        speakers[s].append(ok)
    threshold, best = best_threshold(z, is_female)
    votes = defaultdict(list)
    for s, f, v in zip(speaker, is_female, z):
        votes[(s, bool(f))].append(v)
    verdict_right = {(s, f): (np.mean(v) >= 0) == f for (s, f), v in votes.items()}
    thresholds = tuple(dict.fromkeys((0.0, *also_at)))  # 0 first, each once: the keys of every per-threshold figure
    by_corpus = _accuracy_per_group(z, is_female, corpus, thresholds)
    return {
        "clips": len(z),
        "auc": weighted_auc(z, is_female, np.ones(len(z))),
        "balanced_accuracy_at_0": balanced_accuracy_at(z, is_female, 0.0),
        "best_threshold": threshold,
        "balanced_accuracy_at_best": best,
        "accuracy_at_0": {g: right_at["0"] for g, right_at in by_corpus.items()},
        "speaker_votes_right_at_0": {
            g: f"{sum(ok for (_, f), ok in verdict_right.items() if f == (g == 'female'))} of {sum(f == (g == 'female') for _, f in verdict_right)}" for g in ("female", "male")
        },
        "speakers_with_50_clips_at_0": {k: round(float(np.mean(v)), 3) for k, v in sorted(speakers.items()) if len(v) >= 50},
        "balanced_accuracy_at": {f"{t:g}": balanced_accuracy_at(z, is_female, t) for t in also_at},
        "accuracy_by_corpus": by_corpus,
        "weakest_speaker_at": {f"{t:g}": _weakest_speaker(z, is_female, speaker, t) for t in thresholds},
        "accuracy_by_style": _accuracy_per_group(z, is_female, styles, thresholds) if styles is not None else {},
    }


def _accuracy_per_group(z: np.ndarray, is_female: np.ndarray, labels: list[str], thresholds: tuple[float, ...]) -> dict:
    """Accuracy per ``label/gender`` (a corpus, an emotion; clips labelled "" left out) at each threshold."""
    groups = defaultdict(list)
    for k, (label, f) in enumerate(zip(labels, is_female)):
        if label:
            groups[f"{label}/{'female' if f else 'male'}"].append(k)
    return {
        g: {f"{t:g}": round(float(np.mean((z[idx] >= t) == is_female[idx])), 3) for t in thresholds}
        for g, idx in sorted(groups.items())
    }


def _weakest_speaker(z: np.ndarray, is_female: np.ndarray, speaker: list[str], threshold: float) -> dict:
    """The speaker with the lowest share of clips right at ``threshold`` (the first by name on a tie): who a threshold costs most."""
    right = defaultdict(list)
    gender = {}
    for s, f, v in zip(speaker, is_female, z):
        right[s].append((v >= threshold) == f)
        gender[s] = "female" if f else "male"
    s = min(sorted(right), key=lambda k: np.mean(right[k]))
    return {"speaker": s, "gender": gender[s], "accuracy": round(float(np.mean(right[s])), 3), "clips": len(right[s])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path, help="a training run folder: model.pt and split.json")
    ap.add_argument("manifest", type=Path)
    ap.add_argument("--cache-dir", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    ap.add_argument("--with", dest="others", type=Path, action="append", default=[], metavar="RUN_DIR", help="average the raw log-odds per clip with this run's, an ensemble (same split; repeatable)")
    ap.add_argument("--by-tag", default=None, metavar="KEY", help="accuracy per value of this key=value tag of the manifest's text (e.g. emotion)")
    ap.add_argument("--also-at", type=float, action="append", default=[], metavar="RAW", help="also score at this raw log-odds threshold, e.g. a shipped model's calibrated one (repeatable)")
    args = ap.parse_args()

    clips = read_source(args.manifest)
    _, kept, z, is_female = run_validation_log_odds(args.run_dir, clips, cache_dir=args.cache_dir)
    if args.others:
        members = [(kept, z)]
        for run in args.others:
            _, other_kept, other_z, _ = run_validation_log_odds(run, clips, cache_dir=args.cache_dir)
            members.append((other_kept, other_z))
        try:
            z = ensemble_log_odds(members)  # first: it refuses runs of another split before their lengths could clash below
        except ValueError as e:
            sys.exit(str(e))
        for run, (_, member_z) in zip([args.run_dir, *args.others], members):
            print(f"member {run.name}: AUC {weighted_auc(member_z, is_female, np.ones(len(member_z))):.3f}")
    styles = [tag_value(clips[i].text, args.by_tag) for i in kept] if args.by_tag else None
    if styles is not None and not any(styles):
        print(f"note: no held-out clip's text has a '{args.by_tag}=' tag: no breakdown by it", file=sys.stderr)
    figures = holdout_figures(z, is_female, [clips[i].corpus for i in kept], [clips[i].speaker for i in kept], tuple(args.also_at), styles)
    name = "+".join(r.name for r in [args.run_dir, *args.others])
    print(
        f"{name}: {figures['clips']} clips, AUC {figures['auc']:.3f}, balanced accuracy at 0 {figures['balanced_accuracy_at_0']:.3f}, "
        f"best threshold {figures['best_threshold']:.2f} ({figures['balanced_accuracy_at_best']:.3f})"
    )
    print(f"  speakers whose clips' vote is right at 0: {figures['speaker_votes_right_at_0']}")
    print(f"  speakers with 50+ clips at 0: {figures['speakers_with_50_clips_at_0']}")
    for t, ba in figures["balanced_accuracy_at"].items():
        print(f"  balanced accuracy at {t}: {ba:.3f}")
    for t, w in figures["weakest_speaker_at"].items():
        per_corpus = {g: right[t] for g, right in figures["accuracy_by_corpus"].items()}
        print(f"  at {t}: {per_corpus}; weakest speaker {w['speaker']} ({w['gender']}) {w['accuracy']:.3f} of {w['clips']} clips")
    for style, right in figures["accuracy_by_style"].items():
        print(f"  {args.by_tag} {style}: " + ", ".join(f"{acc:.3f} at {t}" for t, acc in right.items()))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
