"""Refit a finished run's calibration on its own validation speakers with today's rule.

Used when the calibration rule changes after a long training (the starter model:
its first calibration was fit with every clip weighing the same, so one
500-clip validation speaker moved the decision boundary). Weights are untouched.

    python scripts/recalibrate.py RUN_DIR MANIFEST [--cache-dir DIR]

Rewrites RUN_DIR/model.pt (calibration only) and RUN_DIR/metrics.json (the
previous metrics are kept under "previous_calibration").
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from classifier.model import save_checkpoint
from training.loop import fit_calibration, metrics_from_log_odds, run_validation_log_odds
from training.sources import read_source


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("manifest", type=Path)
    ap.add_argument("--cache-dir", type=Path)
    args = ap.parse_args()

    clips = read_source(args.manifest)
    bundle, kept, log_odds, is_female = run_validation_log_odds(args.run_dir, clips, cache_dir=args.cache_dir)
    bundle.calibration, ece = fit_calibration(log_odds, is_female, groups=[clips[i].speaker for i in kept])
    metrics = metrics_from_log_odds(bundle.calibration, log_odds, clips, kept)
    old = json.loads((args.run_dir / "metrics.json").read_text())
    keep = {k: old[k] for k in ("learning_curve", "train_seconds", "crops_seen", "speaker_overlap") if k in old}
    prev = {k: old[k] for k in ("balanced_accuracy", "calibration", "ece_uncalibrated", "ece_calibrated_crossfit", "confusion_matrix") if k in old}
    metrics.update(ece, **keep, previous_calibration=prev)
    bundle.metrics = {k: v for k, v in metrics.items() if k not in ("per_speaker", "learning_curve")}
    save_checkpoint(bundle, args.run_dir / "model.pt")
    (args.run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float))
    summary = {k: metrics[k] for k in ("balanced_accuracy", "speaker_balanced_accuracy", "calibration", "ece_uncalibrated", "ece_calibrated_crossfit")}
    summary["per_corpus"] = {c: round(m["accuracy"], 4) for c, m in metrics["per_corpus"].items()}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
