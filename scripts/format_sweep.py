"""Does the verdict depend on how a recording was stored?

Users send 8-48 kHz audio as int or float WAV, FLAC, Ogg or MP3-decoded WAV.
The model reads every file resampled to its own rate, so the verdict
should not move with the container, the sample format or the rate above the
model's band; it can move where the storage took something away (an 8 kHz
rate, 8-bit samples, a lossy codec) and where the file's band decides the
short-clip fill (``Recording.wideband``). This writes the validation clips of
a run (``split.json``'s ``val``; with ``--excerpt S``, an S-second excerpt of
each, the loudest stretch, 50 ms fades: a digit's length; with ``--pad-to T``,
centred in T seconds of silence, as a word in a longer file) in each storage
below, classifies every copy through the product's own path (``Classifier``,
the code behind ``voicegender classify``), and prints per storage: balanced
accuracy per clip at the model's decision, the verdicts that differ from the
same clip's verdict as recorded, the largest change of log-odds, and how many
clips the band test took for wideband. Usage:

    python scripts/format_sweep.py MODEL SPLIT_JSON MANIFEST --work DIR [--corpus NAME ...] [--excerpt 0.6 [--pad-to 1.5]] [--only NAME ...] [--out JSON]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from classifier.audio import split_windows
from classifier.model import load_checkpoint
from classifier.pipeline import Classifier
from training.metrics import balanced_accuracy_at
from training.sources import read_source
from short_clips import cut  # this folder is on sys.path when a script runs


@dataclass(frozen=True)
class Storage:
    """One way of storing a recording: container, sample format, rate, and whether it went through MP3 first."""

    name: str
    rate: int | None  # None: the recording's own rate
    format: str = "WAV"
    subtype: str = "PCM_16"
    via_mp3: bool = False  # encoded to MP3 at ``rate``, decoded, and stored as 16-bit WAV

    @property
    def extension(self) -> str:
        return {"WAV": "wav", "FLAC": "flac", "OGG": "ogg", "MP3": "mp3"}[self.format]


STORAGES = (
    Storage("wav16-native", None),
    Storage("wav24-44k", 44_100, subtype="PCM_24"),
    Storage("wav32-22k", 22_050, subtype="PCM_32"),
    Storage("float-48k", 48_000, subtype="FLOAT"),
    Storage("wav8u-16k", 16_000, subtype="PCM_U8"),
    Storage("ulaw-16k", 16_000, subtype="ULAW"),
    Storage("imaadpcm-16k", 16_000, subtype="IMA_ADPCM"),
    Storage("wav16-11k", 11_025),
    Storage("wav16-8k", 8_000),
    Storage("flac-24k", 24_000, format="FLAC"),
    Storage("ogg-32k", 32_000, format="OGG", subtype="VORBIS"),
    Storage("opus-48k", 48_000, format="OGG", subtype="OPUS"),
    Storage("mp3dec-44k", 44_100, via_mp3=True),
    Storage("mp3dec-16k", 16_000, via_mp3=True),
)


def loudest_start(y: np.ndarray, n: int) -> int:
    """Start of the ``n``-sample stretch of ``y`` with the most energy (a running sum: O(len(y)))."""
    if len(y) <= n:
        return 0
    c = np.concatenate([[0.0], np.cumsum(np.square(y, dtype=np.float64))])
    return int(np.argmax(c[n:] - c[:-n]))


def excerpt(y: np.ndarray, sr: int, length_s: float) -> np.ndarray:
    """The loudest ``length_s`` of ``y`` with 50 ms Hann fades, as a copy (the whole clip when it is shorter)."""
    n = min(int(round(length_s * sr)), len(y))
    return cut(y, loudest_start(y, n), n, fade=min(int(0.05 * sr), n // 2))


def store(y: np.ndarray, sr: int, storage: Storage, path_stem: Path) -> Path:
    """Write ``y`` (mono float at ``sr``) as ``storage`` describes; returns the file's path."""
    rate = storage.rate or sr
    z = soxr.resample(y, sr, rate, quality="VHQ") if rate != sr else y
    # Full scale is the codec's limit, not the recording's: keep headroom so no storage clips.
    z = np.clip(z, -0.999, 0.999).astype(np.float32)
    if storage.via_mp3:
        mp3 = path_stem.with_suffix(".mp3")
        sf.write(mp3, z, rate, format="MP3", subtype="MPEG_LAYER_III")
        z, _ = sf.read(mp3, dtype="float32")
        mp3.unlink()
    path = path_stem.with_suffix("." + storage.extension)
    sf.write(path, z, rate, format=storage.format, subtype=storage.subtype)
    return path


def score(classifier: Classifier, paths: list[Path]) -> tuple[np.ndarray, list[str | None], int]:
    """Log-odds (NaN where the file could not be used) and errors of ``paths`` through the product's classifier,
    and how many files its band test took for wideband."""
    wideband = []
    results = classifier.classify_files(paths, on_prepared=lambda clip: wideband.append(bool(clip.wideband)))
    return np.array([np.nan if r.log_odds is None else r.log_odds for r in results]), [r.error for r in results], sum(wideband)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path)
    ap.add_argument("split", type=Path, help="a run's split.json: its val clips are stored and scored")
    ap.add_argument("manifest", type=Path)
    ap.add_argument("--work", type=Path, required=True, help="folder for the stored copies (one subfolder per storage)")
    ap.add_argument("--corpus", action="append", default=[], help="only these corpora (repeatable; default all)")
    ap.add_argument("--excerpt", type=float, metavar="S", help="store an S-second excerpt of each clip instead of the whole clip")
    ap.add_argument("--pad-to", type=float, metavar="T", help="with --excerpt: centre each excerpt in T seconds of digital silence, as a word in a longer file")
    ap.add_argument("--only", action="append", default=[], choices=[s.name for s in STORAGES], help="only these storages (repeatable)")
    ap.add_argument("--out", type=Path, help="also write the figures as JSON")
    args = ap.parse_args()
    if args.pad_to and not args.excerpt:
        ap.error("--pad-to centres an excerpt: give --excerpt too")

    bundle = load_checkpoint(args.model)
    classifier = Classifier(bundle, explain=False)
    clips = read_source(args.manifest)
    val = [i for i in json.loads(args.split.read_text())["val"] if not args.corpus or clips[i].corpus in args.corpus]
    is_female = np.array([clips[i].gender == "female" for i in val])
    threshold = bundle.calibration.threshold_log_odds
    print(f"{bundle.version}: {len(val)} clips ({int(is_female.sum())} of women), threshold {threshold:+.2f}, {'excerpts of %g s' % args.excerpt if args.excerpt else 'whole clips'}{' in %g s of silence' % args.pad_to if args.pad_to else ''}")

    # "as recorded": the file itself, or its excerpt as float WAV at the file's own rate (no rounding).
    originals: list[tuple[np.ndarray, int]] = []
    for i in val:
        y, sr = sf.read(clips[i].path, dtype="float32", always_2d=True)
        y = y.mean(axis=1)
        if args.excerpt:
            y = excerpt(y, sr, args.excerpt)
            if args.pad_to:
                # Centred in silence as the product pads a short clip (split_windows' "zeros" fill).
                n = max(int(round(args.pad_to * sr)), len(y))
                y = split_windows(y, window=n, hop=n, fill="zeros")[0]
        originals.append((y, sr))
    storages = [s for s in STORAGES if not args.only or s.name in args.only]
    groups: dict[tuple[str, str], list[int]] = {}
    for k, i in enumerate(val):
        groups.setdefault((clips[i].corpus, clips[i].gender), []).append(k)
    rows = {}
    base_z = None
    for storage in [Storage("as-recorded", None, subtype="FLOAT")] + storages:
        t0 = time.monotonic()
        out = args.work / storage.name
        out.mkdir(parents=True, exist_ok=True)
        if storage.name == "as-recorded" and not args.excerpt:
            paths = [Path(clips[i].path) for i in val]
        else:
            paths = [store(y, sr, storage, out / f"{k:05d}") for k, (y, sr) in enumerate(originals)]
        z, errors, wideband = score(classifier, paths)
        failed = [f"{p}: {e}" for p, e in zip(paths, errors) if e]
        ok = ~np.isnan(z)
        if base_z is None:
            base_z = z
        both = ok & ~np.isnan(base_z)
        flips = int(np.sum((z[both] >= threshold) != (base_z[both] >= threshold)))
        row = {
            "clips": int(ok.sum()),
            "errors": failed,
            "balanced_accuracy": balanced_accuracy_at(z[ok], is_female[ok], threshold),
            "women_right": float(np.mean(z[ok & is_female] >= threshold)),
            "men_right": float(np.mean(z[ok & ~is_female] < threshold)),
            "verdicts_changed": flips,
            "max_abs_log_odds_change": float(np.max(np.abs(z[both] - base_z[both]))) if both.any() else None,
            "wideband": wideband,
            "accuracy_per_corpus": {
                f"{c}/{g}": round(float(np.mean([(z[k] >= threshold) == is_female[k] for k in ks])), 3)
                for (c, g), ks in sorted(groups.items())
                if all(ok[k] for k in ks)
            },
        }
        rows[storage.name] = row
        print(
            f"{storage.name:>14}: balanced {row['balanced_accuracy']:.3f} (women {row['women_right']:.3f} / men {row['men_right']:.3f}), "
            f"{flips} verdicts changed, max |dz| {row['max_abs_log_odds_change']:.2f}, wideband {row['wideband']}/{row['clips']}, "
            f"{len(failed)} errors, {time.monotonic() - t0:.0f} s",
            flush=True,
        )
        print(f"{'':>16}{row['accuracy_per_corpus']}")
        for line in failed[:5]:
            print("    ", line)
    if args.out:
        args.out.write_text(json.dumps({"model": bundle.version, "threshold": threshold, "excerpt_s": args.excerpt, "pad_to_s": args.pad_to, "clips": len(val), "storages": rows}, indent=2))


if __name__ == "__main__":
    main()
