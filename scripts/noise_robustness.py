"""How a model holds up when its validation clips are heard through background noise.

Recordings made outside a studio carry noise: hiss, rumble (traffic, wind,
air conditioning: most of its power low, where the strong lows that read
male sit) and other voices. This scores a run's validation clips
(``split.json``'s ``val``) as they are and again with each kind of noise
added at each signal-to-noise ratio, at the model's rate (what ``classify``
reads), and prints balanced accuracy at the model's calibrated threshold
(or ``--threshold``'s) and ROC AUC per condition. Kinds:

- ``white``: a flat spectrum (hiss; training adds it at 5-40 dB to half the crops),
- ``pink``: power falling 3 dB per octave (much environmental noise),
- ``brown``: 6 dB per octave, most of its power below 300 Hz (rumble),
- ``babble``: six talkers at once, three women and three men of the run's
  training split (a cafe; its voices are never the clip's speaker).

The SNR is the clip's active speech level (the mean power of its 20 ms
frames within 30 dB of its loudest) over the noise's mean power. Each clip's
noise comes from a generator seeded by the clip's index, so a rerun gives
the same figures. Usage:

    python scripts/noise_robustness.py MODEL SPLIT_JSON MANIFEST [--kind KIND ...] [--snr DB ...] [--threshold Z] [--corpus NAME ...] [--cache-dir DIR] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from classifier.audio import speech_mask
from training.data import colour_noise
from codec_robustness import add_run_arguments, add_threshold_argument, condition_row, print_row, scoring_threshold, validation_clips  # this folder is on sys.path when a script runs

KINDS = ("white", "pink", "brown", "babble")
# Power falls as f**-slope: 1 is 3 dB per octave, 2 is 6.
SLOPES = {"white": 0.0, "pink": 1.0, "brown": 2.0}
BABBLE_TALKERS_PER_GENDER = 3


def active_power(y: np.ndarray, sr: int, *, frame_s: float = 0.02, below_loudest_db: float = 30.0) -> float:
    """Mean power of the 20 ms frames within ``below_loudest_db`` of the loudest: a speech level that pauses do not lower."""
    n = max(1, int(frame_s * sr))
    frames = y[: len(y) // n * n].reshape(-1, n) if len(y) >= n else y[None, :]
    # The product's own test of which frames hold sound, here with no absolute floor: the level is relative.
    sound = speech_mask(frames, floor_db=float("-inf"), below_loudest_db=below_loudest_db)
    return float(np.mean(np.square(frames[sound], dtype=np.float64)))


def coloured_noise(n: int, sr: int, slope: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise of ``n`` samples whose power falls as f**-slope (0: white), at unit mean power.

    Shaped by the training augmentation's own function, so the noise scored here is the noise ``--coloured-noise`` adds.
    """
    white = torch.from_numpy(rng.standard_normal(n))[None, :]
    return colour_noise(white, sr=sr, slope=torch.tensor([[slope]], dtype=white.dtype))[0].numpy()


def babble_track(clips, waves, train: list[int], sr: int, seconds: float = 60.0, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Six training speakers talking at once, each at the same active level, ``seconds`` long, unit mean power;
    and who they are."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    track = np.zeros(n)
    talkers = []
    for gender in ("female", "male"):
        speakers = sorted({clips[i].speaker for i in train if clips[i].gender == gender and waves[i] is not None})
        for speaker in rng.choice(speakers, size=BABBLE_TALKERS_PER_GENDER, replace=False):
            talkers.append(str(speaker))
            # The speaker's longest clip, looped from a random point, so each talker fills the track.
            own = max((i for i in train if clips[i].speaker == speaker and waves[i] is not None), key=lambda i: len(waves[i]))
            voice = waves[own].astype(np.float64)
            voice = voice / np.sqrt(active_power(voice, sr))
            start = int(rng.integers(len(voice)))
            track += np.resize(np.roll(voice, -start), n)
    return track / np.sqrt(np.mean(track**2)), talkers


def noisy(y: np.ndarray, sr: int, kind: str, snr_db: float, rng: np.random.Generator, babble: np.ndarray | None) -> np.ndarray:
    """``y`` with ``kind`` noise added ``snr_db`` below its active speech level."""
    if kind == "babble":
        start = int(rng.integers(len(babble) - len(y))) if len(babble) > len(y) else 0
        noise = np.resize(babble[start:], len(y))
    else:
        noise = coloured_noise(len(y), sr, SLOPES[kind], rng)
    scale = np.sqrt(active_power(y, sr) / 10 ** (snr_db / 10))
    return (y + scale * noise).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(ap, split_help="a run's split.json: its val clips are scored, its train speakers make the babble")
    ap.add_argument("--kind", action="append", choices=KINDS, default=None, help="only these kinds of noise (default: all)")
    ap.add_argument("--snr", action="append", type=float, default=None, help="signal-to-noise ratios in dB (default: 20, 10, 5)")
    add_threshold_argument(ap)
    args = ap.parse_args()

    bundle, clips, split, val, waves = validation_clips(args)
    sr = bundle.features.sample_rate
    kinds = args.kind or list(KINDS)
    snrs = args.snr or [20.0, 10.0, 5.0]
    babble, talkers = None, []
    if "babble" in kinds:
        babble, talkers = babble_track(clips, waves, split["train"], sr)
        print(f"babble: {', '.join(talkers)}", flush=True)
    threshold = scoring_threshold(bundle, args)
    rows = {"as recorded": condition_row(bundle, clips, waves, val, threshold)}
    print_row("as recorded", rows["as recorded"])
    for kind in kinds:
        for snr in snrs:
            name = f"{kind} {snr:g} dB"
            heard = {i: noisy(waves[i], sr, kind, snr, np.random.default_rng(i), babble) for i in val}
            rows[name] = condition_row(bundle, clips, heard, val, threshold)
            print_row(name, rows[name])
    if args.json:
        args.json.write_text(json.dumps({"model": bundle.version, "threshold": threshold, "babble_talkers": talkers, "conditions": rows}, indent=2))


if __name__ == "__main__":
    main()
