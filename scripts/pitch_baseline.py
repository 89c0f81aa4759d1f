"""The pitch-threshold baseline on a training run's own validation speakers.

A model is only worth its weight if it beats "median F0 above ~168 Hz means
female" on the same held-out speakers. Usage:

    python scripts/pitch_baseline.py RUN_DIR MANIFEST [--cache-dir DIR] [--threshold 168]

Reads RUN_DIR/split.json (the run's validation clips), estimates each clip's
median F0 over voiced frames with pYIN, and prints balanced accuracy per corpus
and overall, as JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import librosa
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.data import load_waveforms
from training.metrics import classification_metrics
from training.sources import read_source

SR = 8_000


def median_f0(y: np.ndarray) -> float:
    # 64 ms frames resolve 60 Hz voices; pYIN's voicing decision keeps silence and noise out.
    f0, voiced, _ = librosa.pyin(y, fmin=60, fmax=400, sr=SR, frame_length=512, hop_length=160)
    f0 = f0[voiced & np.isfinite(f0)]
    return float(np.median(f0)) if f0.size else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("manifest", type=Path)
    ap.add_argument("--cache-dir", type=Path)
    ap.add_argument("--threshold", type=float, default=168.0)
    args = ap.parse_args()

    clips = read_source(args.manifest)
    split = json.loads((args.run_dir / "split.json").read_text())
    val = split["val"]
    waves = load_waveforms(clips, sr=SR, cache_dir=args.cache_dir)
    f0 = {}
    for n, i in enumerate(val):
        if waves[i] is not None:
            f0[i] = median_f0(np.asarray(waves[i], dtype=np.float32))
        if n % 100 == 0:
            print(f"{n}/{len(val)}", file=sys.stderr)
    # A clip with no voiced frame gets the majority guess "male": the baseline must answer every clip.
    pred = {i: ("female" if np.isfinite(v) and v > args.threshold else "male") for i, v in f0.items()}
    by_corpus = defaultdict(list)
    for i in pred:
        by_corpus[clips[i].corpus].append(i)
    out = {"threshold_hz": args.threshold, "clips": len(pred)}
    idx = sorted(pred)
    out["overall"] = classification_metrics([clips[i].gender for i in idx], [pred[i] for i in idx])["balanced_accuracy"]
    out["per_corpus"] = {}
    for corpus, ids in sorted(by_corpus.items()):
        y = [clips[i].gender for i in ids]
        out["per_corpus"][corpus] = {
            "clips": len(ids),
            "accuracy": float(np.mean([pred[i] == clips[i].gender for i in ids])),
            "balanced_accuracy": classification_metrics(y, [pred[i] for i in ids])["balanced_accuracy"] if len(set(y)) == 2 else None,
        }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
