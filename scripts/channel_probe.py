"""How a model's verdicts move when one property of the channel or voice changes.

Takes a sample of a corpus's clips per gender, alters every clip one way at a
time (shelves that raise or cut the lows or highs, a high-pass, a pitch shift
with the formants kept, pitch and formants raised together, a gain), and
prints each gender's accuracy at log-odds 0 and median log-odds per
alteration (first, each gender's level of the lows against the rest). A cue
the model should not use (the level of the lows, say) shows as a large move
on one gender and none on the other. Usage:

    python scripts/channel_probe.py MODEL MANIFEST --corpus asterisk [--n 100] [--only hp300,low-10dB] [--cache-dir DIR]
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from classifier.model import load_checkpoint
from training.data import load_waveforms
from training.loop import file_log_odds
from training.pitch import shift_pitch
from training.sources import read_source


def shelf(y: np.ndarray, sr: int, corner_hz: float, db: float, *, below: bool) -> np.ndarray:
    """Everything below (or above) ``corner_hz`` moved by ``db``, with a smooth 40 Hz transition."""
    f = np.fft.rfftfreq(len(y), 1 / sr)
    weight = 1 / (1 + np.exp((f - corner_hz) / 40 if below else (corner_hz - f) / 40))
    return np.fft.irfft(np.fft.rfft(y) * 10 ** (db * weight / 20), n=len(y)).astype(np.float32)


def pitch_kept_formants(y: np.ndarray, sr: int, ratio: float) -> np.ndarray:
    return shift_pitch([y], torch.tensor([ratio]), n=int(len(y) / ratio), sr=sr)[0].numpy()


def faster(y: np.ndarray, ratio: float) -> np.ndarray:
    """Pitch and formants raised together (played ``ratio`` times faster)."""
    n = int(len(y) / ratio)
    return np.interp(np.arange(n) * ratio, np.arange(len(y)), y).astype(np.float32)


def lows_over_rest_db(y: np.ndarray, sr: int, n_fft: int = 512, hop: int = 160) -> float:
    """Level of 50-400 Hz against 0.4-3.8 kHz over the clip's louder frames (within 30 dB of its loudest)."""
    frames = np.lib.stride_tricks.sliding_window_view(y.astype(np.float64), n_fft)[::hop] * np.hanning(n_fft)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    f = np.fft.rfftfreq(n_fft, 1 / sr)
    energy = power.sum(axis=1)
    speech = power[energy > energy.max() * 1e-3]
    return float(10 * np.log10(speech[:, (f >= 50) & (f < 400)].sum() / speech[:, (f >= 400) & (f < 3800)].sum()))


def alterations(sr: int) -> dict:
    return {
        "none": lambda y: y,
        "hp300": lambda y: shelf(y, sr, 300, -40, below=True),
        "low-10dB": lambda y: shelf(y, sr, 400, -10, below=True),
        "low+10dB": lambda y: shelf(y, sr, 400, 10, below=True),
        "high+10dB": lambda y: shelf(y, sr, 2000, 10, below=False),
        "high-10dB": lambda y: shelf(y, sr, 2000, -10, below=False),
        "pitch-x1.25": lambda y: pitch_kept_formants(y, sr, 1.25),
        "pitch-x0.8": lambda y: pitch_kept_formants(y, sr, 0.8),
        "faster-x1.12": lambda y: faster(y, 1.12),
        "gain-26dB": lambda y: y * 0.05,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path)
    ap.add_argument("manifest", type=Path)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--n", type=int, default=100, help="clips per gender (seeded sample)")
    ap.add_argument("--only", help="comma-separated alterations (default: all)")
    ap.add_argument("--cache-dir", type=Path)
    args = ap.parse_args()

    bundle = load_checkpoint(args.model)
    sr = bundle.features.sample_rate
    clips = read_source(args.manifest)
    waves = load_waveforms(clips, sr=sr, cache_dir=args.cache_dir)
    by_gender: dict[str, list[int]] = defaultdict(list)
    for i, c in enumerate(clips):
        if c.corpus == args.corpus and waves[i] is not None:
            by_gender[c.gender].append(i)
    if not by_gender:
        raise SystemExit(f"no readable clips of corpus {args.corpus!r} in {args.manifest}")
    rng = np.random.default_rng(0)
    sample = {g: sorted(rng.choice(ids, min(args.n, len(ids)), replace=False)) for g, ids in sorted(by_gender.items())}
    table = alterations(sr)
    names = args.only.split(",") if args.only else list(table)
    unknown = set(names) - set(table)
    if unknown:
        raise SystemExit(f"unknown alteration(s) {sorted(unknown)}; known: {', '.join(table)}")
    for gender, ids in sample.items():
        lows = [lows_over_rest_db(waves[i], sr) for i in ids if len(waves[i]) >= 512]
        print(f"{args.corpus} {gender}: {len(ids)} clips, lows (50-400 Hz) over 0.4-3.8 kHz: median {np.median(lows):+.1f} dB")
    print("accuracy at log-odds 0 (median log-odds)")
    for name in names:
        cells = []
        for gender, ids in sample.items():
            log_odds, _ = file_log_odds(bundle, clips, {i: table[name](waves[i]) for i in ids}, ids)
            right = log_odds >= 0 if gender == "female" else log_odds < 0
            cells.append(f"{gender} {right.mean():.2f} ({np.median(log_odds):+.2f})")
        print(f"{name:<13} " + " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
