"""How much `voicegender calibrate` recovers on a corpus the model never saw.

Scores every validation clip of a hold-out run (``train --split corpus``) once,
then repeats: pick K women and K men of the hold-out, N labelled clips each,
fit the threshold as ``calibrate`` does (bias only, speaker-balanced), and
score balanced accuracy per clip on the hold-out's *other* speakers, next to
the same speakers at raw log-odds 0 and at a fixed threshold. Usage:

    python scripts/calibration_transfer.py RUN_DIR MANIFEST [--cache-dir DIR] [--draws 300] [--fixed -0.79]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.calibrate import fit_bias
from training.loop import run_validation_log_odds
from training.metrics import balanced_accuracy_at, speaker_balanced_weights
from training.sources import read_source


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("manifest", type=Path)
    ap.add_argument("--cache-dir", type=Path)
    ap.add_argument("--draws", type=int, default=300)
    ap.add_argument("--fixed", type=float, default=-0.79, help="a fixed raw threshold to compare with (default: starter-5's)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    clips = read_source(args.manifest)
    _, kept, z, is_female = run_validation_log_odds(args.run_dir, clips, cache_dir=args.cache_dir)
    speaker = np.array([clips[i].speaker for i in kept])
    print(f"{args.run_dir.name}: {len(z)} clips; balanced accuracy at raw 0 {balanced_accuracy_at(z, is_female, 0.0):.3f}, at {args.fixed} {balanced_accuracy_at(z, is_female, args.fixed):.3f}")

    rng = np.random.default_rng(args.seed)
    women = sorted(set(speaker[is_female]))
    men = sorted(set(speaker[~is_female]))
    if min(len(women), len(men)) < 2:
        # Calibrating on one speaker of a gender would leave none of it to score.
        sys.exit(f"needs two or more validation speakers of each gender; {args.run_dir / 'split.json'} has {len(women)} women and {len(men)} men")
    # The scale a raw model would carry (1): only the threshold matters for these figures.
    for k in (1, 2):
        if k >= min(len(women), len(men)):
            continue
        for n in (5, 10, 20):
            rows = []
            for _ in range(args.draws):
                chosen = [*rng.choice(women, k, replace=False), *rng.choice(men, k, replace=False)]
                pools = [np.flatnonzero(speaker == s) for s in chosen]
                sel = np.concatenate([rng.choice(p, min(n, len(p)), replace=False) for p in pools])
                cal = fit_bias(z[sel], is_female[sel], speaker_balanced_weights(list(speaker[sel]), is_female[sel]), scale=1.0)
                rest = ~np.isin(speaker, chosen)
                rows.append([balanced_accuracy_at(z[rest], is_female[rest], t) for t in (cal.threshold_log_odds, 0.0, args.fixed)])
            r = np.array(rows)
            print(
                f"{k} {'woman' if k == 1 else 'women'} + {k} {'man' if k == 1 else 'men'}, {n} clips each: calibrated {r[:, 0].mean():.3f} (10th percentile {np.percentile(r[:, 0], 10):.3f}); "
                f"same speakers at raw 0 {r[:, 1].mean():.3f}, at {args.fixed} {r[:, 2].mean():.3f}"
            )


if __name__ == "__main__":
    main()
