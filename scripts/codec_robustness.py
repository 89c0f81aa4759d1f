"""How a model holds up when its validation clips reach it through a speech codec.

Calls, voice messages and compressed files reach the product through GSM,
ADPCM, Opus or low-rate MP3. This scores a run's validation clips
(``split.json``'s ``val``) as they are and again after each codec of
``training/codecs.py`` (at the model's rate, as ``classify`` would read the
decoded file), and prints balanced accuracy at the model's calibrated
threshold (or ``--threshold``'s) and ROC AUC per codec, with women and men
right. Usage:

    python scripts/codec_robustness.py MODEL SPLIT_JSON MANIFEST [--corpus NAME ...] [--codec NAME ...] [--threshold Z] [--cache-dir DIR] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from classifier.model import load_checkpoint
from training.calibrate import weighted_auc
from training.codecs import available_codecs, round_trip
from training.data import load_waveforms
from training.loop import file_log_odds
from training.metrics import balanced_accuracy_at
from training.sources import read_source


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(ap, split_help="a run's split.json: its val clips are scored")
    ap.add_argument("--codec", action="append", default=None, help="only these codecs (default: all of training/codecs.py)")
    add_threshold_argument(ap)
    args = ap.parse_args()

    bundle, clips, _, val, waves = validation_clips(args)
    sr = bundle.features.sample_rate
    codecs = [c for c in available_codecs() if not args.codec or c.name in args.codec]
    threshold = scoring_threshold(bundle, args)
    rows = {}
    for name, coder in [("as recorded", None), *[(c.name, c) for c in codecs]]:
        coded = waves if coder is None else {i: round_trip(waves[i], sr, coder) for i in val}
        rows[name] = condition_row(bundle, clips, coded, val, threshold)
        print_row(name, rows[name])
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


def add_run_arguments(ap: argparse.ArgumentParser, *, split_help: str) -> None:
    """MODEL SPLIT_JSON MANIFEST [--corpus NAME ...] [--cache-dir DIR] [--json FILE]: what every condition script reads."""
    ap.add_argument("model", type=Path)
    ap.add_argument("split", type=Path, help=split_help)
    ap.add_argument("manifest", type=Path)
    ap.add_argument("--corpus", action="append", default=None, help="only these corpora's clips (default: all)")
    ap.add_argument("--cache-dir", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")


def add_threshold_argument(ap: argparse.ArgumentParser) -> None:
    """--threshold Z: the raw log-odds threshold to score at instead of the model's calibrated one."""
    ap.add_argument("--threshold", type=float, default=None, help="score at this raw log-odds threshold, not the model's calibrated threshold "
                    "(runs compared at one threshold: a hold-out run's own calibration is fitted on other corpora)")


def scoring_threshold(bundle, args: argparse.Namespace) -> float:
    """--threshold's value, or the model's shipped threshold: where its calibrated p_female crosses 0.5."""
    return bundle.calibration.threshold_log_odds if args.threshold is None else args.threshold


def validation_clips(args: argparse.Namespace) -> tuple:
    """The model, every clip, the split, the validation clips that decoded (``--corpus``'s only), and the waveforms at the model's rate."""
    bundle = load_checkpoint(args.model)
    clips = read_source(args.manifest)
    split = json.loads(args.split.read_text())
    waves = load_waveforms(clips, sr=bundle.features.sample_rate, cache_dir=args.cache_dir)
    val = [i for i in split["val"] if (not args.corpus or clips[i].corpus in args.corpus) and waves[i] is not None]
    return bundle, clips, split, val, waves


def condition_row(bundle, clips, waves, val: list[int], threshold: float) -> dict:
    """The figures of one condition: ``val``'s clips as ``waves`` holds them, scored at ``threshold`` (raw log-odds)."""
    z, is_female = file_log_odds(bundle, clips, waves, val)
    right = (z >= threshold) == is_female
    return {
        "clips": len(z),
        "balanced_accuracy": balanced_accuracy_at(z, is_female, threshold),
        "women_right": float(right[is_female].mean()),
        "men_right": float(right[~is_female].mean()),
        "auc": weighted_auc(z, is_female, np.ones(len(z))),
        # How far the condition moves the verdicts, even where none crosses the threshold.
        "median_log_odds": {"female": float(np.median(z[is_female])), "male": float(np.median(z[~is_female]))},
    }


def print_row(name: str, r: dict) -> None:
    print(f"{name:>12}: {r['clips']} clips, balanced accuracy {r['balanced_accuracy']:.3f} (women {r['women_right']:.3f}, men {r['men_right']:.3f}), AUC {r['auc']:.4f}", flush=True)


if __name__ == "__main__":
    main()
