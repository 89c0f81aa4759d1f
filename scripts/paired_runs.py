"""Differences between paired hold-out runs: an option against its baseline, seed by seed.

On a whole-corpus hold-out one run's figures move with its seed by about as
much as most options move them (models/EXPERIMENTS.md), so an option is read
from pairs: the same command and seed with and without it, in the same
precision. This reads each run's ``holdout.json`` (``scripts/holdout_report.py
--json``) and, where both runs of a pair have one at the same threshold,
``noise.json`` (``scripts/noise_robustness.py --json``), and prints every
pair's difference (candidate minus baseline, in points of balanced accuracy
or of AUC) and their mean with its standard error over the pairs. Usage:

    python scripts/paired_runs.py BASELINE CANDIDATE [BASELINE CANDIDATE ...] [--speaker NAME ...] [--json OUT]

``--speaker`` adds that speaker's accuracy at log-odds 0 (one with 50 clips
or more: ``speakers_with_50_clips_at_0``).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path


def run_figures(run: dict, noise: dict | None, speakers: list[str]) -> dict[str, float]:
    """The comparable figures of one run: its hold-out report's summary, its noise conditions, the named speakers."""
    figures = {
        "AUC": run["auc"],
        "at 0": run["balanced_accuracy_at_0"],
        "at best": run["balanced_accuracy_at_best"],
        **{f"at {t}": v for t, v in run["balanced_accuracy_at"].items()},
    }
    if noise is not None:
        figures.update({f"{c} at {noise['threshold']:g}": row["balanced_accuracy"] for c, row in noise["conditions"].items()})
    for s in speakers:
        figures[f"{s} at 0"] = run["speakers_with_50_clips_at_0"][s]
    return figures


def pair_difference(baseline: dict[str, float], candidate: dict[str, float]) -> dict[str, float]:
    """Candidate minus baseline in points, on the figures both runs have (in the baseline's order)."""
    return {k: 100.0 * (candidate[k] - v) for k, v in baseline.items() if k in candidate}


def mean_and_standard_error(diffs: list[dict[str, float]]) -> dict[str, tuple[float, float]]:
    """Per figure every pair has: the mean difference and its standard error (nan from one pair)."""
    out = {}
    for key in [k for k in diffs[0] if all(k in d for d in diffs)]:
        values = [d[key] for d in diffs]
        mean = sum(values) / len(values)
        if len(values) < 2:
            out[key] = (mean, math.nan)
            continue
        var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
        out[key] = (mean, math.sqrt(var / len(values)))
    return out


def load_run(run_dir: Path, speakers: list[str]) -> dict[str, float]:
    holdout = run_dir / "holdout.json"
    if not holdout.is_file():
        sys.exit(f"{holdout} not found: score the run with scripts/holdout_report.py RUN MANIFEST --json {holdout}")
    noise_file = run_dir / "noise.json"
    noise = json.loads(noise_file.read_text()) if noise_file.is_file() else None
    run = json.loads(holdout.read_text())
    missing = [s for s in speakers if s not in run["speakers_with_50_clips_at_0"]]
    if missing:
        sys.exit(f"{run_dir}: no speaker {', '.join(missing)} with 50 clips or more in its hold-out report")
    return run_figures(run, noise, speakers)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", type=Path, nargs="+", metavar="RUN_DIR", help="baseline, candidate, baseline, candidate, ...")
    ap.add_argument("--speaker", action="append", default=[], help="also compare this speaker's accuracy at log-odds 0 (repeatable)")
    ap.add_argument("--json", type=Path, default=None, help="also write the differences and their means here")
    args = ap.parse_args()
    if len(args.runs) % 2:
        ap.error(f"runs come in pairs (baseline candidate ...): {len(args.runs)} given")

    pairs = [(args.runs[k], args.runs[k + 1]) for k in range(0, len(args.runs), 2)]
    diffs = [pair_difference(load_run(base, args.speaker), load_run(cand, args.speaker)) for base, cand in pairs]
    summary = mean_and_standard_error(diffs)
    for k, (base, cand) in enumerate(pairs, 1):
        print(f"pair {k}: {cand} against {base}")
    width = max(len(k) for k in [*summary, "points, candidate - baseline"])
    print(f"{'points, candidate - baseline':<{width}}  " + "  ".join(f"{f'pair {k}':>7}" for k in range(1, len(pairs) + 1)) + "  mean (s.e.)")
    for key, (mean, se) in summary.items():
        print(f"{key:<{width}}  " + "  ".join(f"{d[key]:>+7.1f}" for d in diffs) + f"  {mean:>+5.1f} ({se:.1f})")
    if args.json:
        args.json.write_text(json.dumps({
            "pairs": [{"baseline": str(b), "candidate": str(c), "points": d} for (b, c), d in zip(pairs, diffs)],
            "mean": {k: m for k, (m, _) in summary.items()},
            "standard_error": {k: None if math.isnan(se) else se for k, (_, se) in summary.items()},  # none from one pair (NaN is not JSON)
        }, indent=2))


if __name__ == "__main__":
    main()
