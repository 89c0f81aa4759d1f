"""How a model does on short clips of speakers it did not train on.

A digit corpus such as AudioMNIST has clips of about 0.6 s; the shared corpus
has few short clips outside its telephone digits. This cuts short excerpts
(``--length`` seconds, from the loud part, 50 ms fades) out of the validation
clips of a run (``split.json``'s ``val``) and scores them next to the whole
clips, at the model's calibrated threshold (or ``--threshold Z``) and by ROC
AUC, per corpus and gender. ``--fill`` scores the excerpts with a short-clip
fill other than the checkpoint's (``zeros``, ``loop``, ``trim`` or
``trim+loop``; an inference-only what-if), ``--against FILL`` also scores them
with another and bounds the difference by resampling speakers;
``--against-model M2`` does the same for a second model (each at its own
calibrated threshold, or both at ``--threshold``, with the same ``--fill``).
These figures come from the 8 kHz training cache, so a checkpoint's
``wideband_short_fill`` is not applied; ``--write DIR`` also writes the
excerpts cut from the files as recorded, for ``voicegender classify DIR``. Usage:

    python scripts/short_clips.py MODEL SPLIT_JSON MANIFEST [--corpus NAME ...] [--length 0.6] [--fill loop] [--against trim | --against-model M2] [--threshold Z] [--write DIR] [--cache-dir DIR]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from classifier.audio import INFERENCE_FILLS
from classifier.model import load_checkpoint
from training.calibrate import weighted_auc
from training.data import load_waveforms
from training.loop import file_log_odds
from training.metrics import balanced_accuracy_at
from training.sources import read_source
from codec_robustness import add_threshold_argument, scoring_threshold  # this folder is on sys.path when a script runs


def excerpt_starts(y: np.ndarray, n_samples: int, count: int, rng: np.random.Generator) -> list[int]:
    """Up to ``count`` starts of excerpts of ``y`` whose mean power is at least 30 % of the loudest stretch's."""
    power = np.convolve(np.square(y, dtype=np.float64), np.ones(n_samples) / n_samples, mode="valid")
    loud = np.flatnonzero(power >= 0.3 * power.max())
    return [int(s) for s in rng.choice(loud, size=min(count, len(loud)), replace=False)]


def cut(y: np.ndarray, start: int, n_samples: int, fade: int) -> np.ndarray:
    """``y[start:start + n_samples]`` with Hann fades of ``fade`` samples, as a copy."""
    ramp = np.hanning(2 * fade).astype(np.float32)
    piece = y[start : start + n_samples].astype(np.float32)  # a copy: the cached waveform stays
    piece[:fade] *= ramp[:fade]
    piece[-fade:] *= ramp[fade:]
    return piece


def write_native(out_dir: Path, clip, starts: list[int], sr: int, length_s: float) -> None:
    """The same excerpts cut from the file as recorded (its own rate and band), as WAV files named ``..._GENDER.wav``.

    So ``voicegender classify`` / ``submit`` score them through the product's own path,
    which sees what the file carried above the model's band.
    """
    y, native = sf.read(clip.path, dtype="float32", always_2d=True)
    y = y.mean(axis=1)
    n = int(round(length_s * native))
    for k, start in enumerate(starts):
        s = min(int(round(start * native / sr)), max(len(y) - n, 0))
        name = f"{clip.corpus}_{clip.speaker}_{Path(clip.path).stem}_{k}_{clip.gender}.wav".replace("/", "_")
        sf.write(out_dir / name, cut(y, s, n, int(0.05 * native)), native, subtype="FLOAT")


def report(name: str, z: np.ndarray, is_female: np.ndarray, groups: list[tuple[str, str]], threshold: float) -> dict:
    right = (z >= threshold) == is_female
    per_group = defaultdict(list)
    for g, ok in zip(groups, right):
        per_group[f"{g[0]}/{g[1]}"].append(ok)
    row = {
        "clips": len(z),
        "balanced_accuracy": balanced_accuracy_at(z, is_female, threshold),
        "auc": weighted_auc(z, is_female, np.ones(len(z))),
        "accuracy": {k: round(float(np.mean(v)), 3) for k, v in sorted(per_group.items())},
    }
    print(f"{name:>18}: {row['clips']} clips, balanced accuracy {row['balanced_accuracy']:.3f}, AUC {row['auc']:.4f}, {row['accuracy']}")
    return row


def paired_bootstrap(
    z: np.ndarray, z_other: np.ndarray, is_female: np.ndarray, speakers: list, threshold: float, *, threshold_other: float | None = None, draws: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """Balanced accuracy of ``z`` minus that of ``z_other`` (the same excerpts), with a 95 % interval.

    ``threshold_other``: where ``z_other`` is cut, when it is another model's
    log-odds with a calibration of its own (default ``threshold``).

    Each draw resamples speakers with replacement, within each gender so every
    draw has both, and scores both sets of log-odds on the same excerpts: the
    interval is of the difference, which excerpts shared between the two make narrow.
    """
    t_other = threshold if threshold_other is None else threshold_other
    rng = np.random.default_rng(seed)
    by_speaker = defaultdict(list)
    for k, s in enumerate(speakers):
        by_speaker[s].append(k)
    groups = [[np.array(v) for s, v in by_speaker.items() if is_female[v[0]] == g] for g in (True, False)]
    diffs = []
    for _ in range(draws):
        pick = np.concatenate([g[j] for g in groups for j in rng.integers(len(g), size=len(g))])
        diffs.append(balanced_accuracy_at(z[pick], is_female[pick], threshold) - balanced_accuracy_at(z_other[pick], is_female[pick], t_other))
    delta = balanced_accuracy_at(z, is_female, threshold) - balanced_accuracy_at(z_other, is_female, t_other)
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return float(delta), float(lo), float(hi)


def with_fill(bundle, fill: str):
    """The bundle with every short clip filled ``fill`` (an inference-only what-if)."""
    return dataclasses.replace(bundle, features=dataclasses.replace(bundle.features, short_fill=fill))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path)
    ap.add_argument("split", type=Path, help="a run's split.json: its val clips are scored")
    ap.add_argument("manifest", type=Path)
    ap.add_argument("--corpus", action="append", default=[], help="only these corpora (repeatable; default all)")
    ap.add_argument("--length", type=float, default=0.6, help="excerpt length in seconds (default 0.6)")
    ap.add_argument("--per-clip", type=int, default=3, help="excerpts per clip (default 3)")
    ap.add_argument("--fill", choices=INFERENCE_FILLS, help="score with this short-clip fill instead of the checkpoint's")
    ap.add_argument("--against", choices=INFERENCE_FILLS, help="also score the excerpts with this fill and print the difference, with a 95 %% interval over speakers")
    ap.add_argument("--against-model", type=Path, metavar="M2", help="also score the excerpts with this model (at its own calibrated threshold, or at --threshold) and print the difference, with a 95 %% interval over speakers")
    add_threshold_argument(ap)
    ap.add_argument("--cache-dir", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="also write the figures as JSON")
    ap.add_argument("--write", type=Path, metavar="DIR", help="also write the excerpts, cut from the files at their own rate, to DIR (names end in _female/_male)")
    args = ap.parse_args()
    if args.against and args.against_model:
        ap.error("--against and --against-model compare with one thing at a time")

    bundle = load_checkpoint(args.model)
    if args.fill:
        bundle = with_fill(bundle, args.fill)
    threshold = scoring_threshold(bundle, args)
    sr = bundle.features.sample_rate
    clips = read_source(args.manifest)
    waves = load_waveforms(clips, sr=sr, cache_dir=args.cache_dir)
    n = int(round(args.length * sr))
    val = [i for i in json.loads(args.split.read_text())["val"] if waves[i] is not None and (not args.corpus or clips[i].corpus in args.corpus)]
    # Only clips long enough to give excerpts that are not the whole clip.
    val = [i for i in val if len(waves[i]) >= 2 * n]
    if not val:
        sys.exit(f"no validation clip of {2 * args.length:.1f} s or more in the chosen corpora")
    rng = np.random.default_rng(args.seed)
    ex_clips, ex_waves = [], []
    if args.write:
        args.write.mkdir(parents=True, exist_ok=True)
    for i in val:
        starts = excerpt_starts(waves[i], n, args.per_clip, rng)
        for start in starts:
            ex_clips.append(clips[i])
            ex_waves.append(cut(waves[i], start, n, fade=int(0.05 * sr)))
        if args.write:
            write_native(args.write, clips[i], starts, sr, args.length)
    print(f"{bundle.version}: short-clip fill {bundle.features.short_fill}, raw threshold {threshold:+.2f}")
    z, fem = file_log_odds(bundle, clips, waves, val)
    rows = {"whole clips": report("whole clips", z, fem, [(clips[i].corpus, clips[i].gender) for i in val], threshold)}
    z, fem = file_log_odds(bundle, ex_clips, ex_waves, list(range(len(ex_clips))))
    name = f"{args.length:g} s excerpts"
    rows[name] = report(name, z, fem, [(c.corpus, c.gender) for c in ex_clips], threshold)
    if args.against:
        z_other, _ = file_log_odds(with_fill(bundle, args.against), ex_clips, ex_waves, list(range(len(ex_clips))))
        delta, lo, hi = paired_bootstrap(z, z_other, fem, [(c.corpus, c.speaker) for c in ex_clips], threshold)
        print(f"{'':>18}  against {args.against}: balanced accuracy {delta:+.4f} (95 % over speakers {lo:+.4f} to {hi:+.4f})")
        rows[name]["against"] = {"fill": args.against, "delta": delta, "ci95": [lo, hi]}
    if args.against_model:
        other = load_checkpoint(args.against_model)
        other = with_fill(other, args.fill) if args.fill else other
        if other.features.sample_rate != sr:
            sys.exit(f"{args.against_model} reads {other.features.sample_rate} Hz audio, {args.model} {sr} Hz: the excerpts would differ")
        t_other = scoring_threshold(other, args)  # --threshold cuts both models at one place
        z_other, _ = file_log_odds(other, ex_clips, ex_waves, list(range(len(ex_clips))))
        report(f"{other.version}", z_other, fem, [(c.corpus, c.gender) for c in ex_clips], t_other)
        delta, lo, hi = paired_bootstrap(z, z_other, fem, [(c.corpus, c.speaker) for c in ex_clips], threshold, threshold_other=t_other)
        print(f"{'':>18}  against {other.version} (threshold {t_other:+.2f}): balanced accuracy {delta:+.4f} (95 % over speakers {lo:+.4f} to {hi:+.4f})")
        rows[name]["against_model"] = {"model": str(args.against_model), "version": other.version, "threshold": t_other, "delta": delta, "ci95": [lo, hi]}
    if args.out:
        args.out.write_text(json.dumps({"model": bundle.version, "short_fill": bundle.features.short_fill, "threshold": threshold, **rows}, indent=2))


if __name__ == "__main__":
    main()
