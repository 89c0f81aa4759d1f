"""Can a file's own noise level undo steady noise's pull toward "female"?

Steady noise makes men read female while the ranking holds
(``noise_robustness.py``), so a threshold that moves with a file's
signal-to-noise ratio looks like a fix that needs no labelled clips. This
measures two ways of using a per-file noise estimate, both from the file
alone:

- a threshold shift: the log-odds lowered by ``slope * max(0, knee - snr)``,
  with ``snr`` the file's estimated SNR (:func:`quiet_frames_snr_db`);
  ``knee`` and ``slope`` fitted on half of the validation speakers (clean
  clips weighted as much as all noisy conditions together, as most files
  are clean) and scored on the other half, then the other way round;
- with ``--spectral-subtraction``, the noise removed from the waveform
  before windowing (:func:`subtract_noise`) instead, the model unchanged.

The estimate is then read on every clip of the manifest by corpus and
gender (real recordings, real noise), and with ``--holdout-run`` the shift
fitted on all validation speakers is applied to a hold-out run's unseen
clips: a fix fitted on synthetic noise must not hurt real ones. Usage:

    python scripts/noise_threshold.py MODEL SPLIT_JSON MANIFEST [--kind KIND ...] [--snr DB ...] [--holdout-run RUN] [--spectral-subtraction] [--cache-dir DIR] [--json FILE]
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np
from scipy import signal

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from codec_robustness import add_run_arguments, condition_row, print_row, validation_clips  # this folder is on sys.path when a script runs
from noise_robustness import SLOPES, noisy

from training.loop import file_log_odds, run_validation_log_odds
from training.metrics import balanced_accuracy_at

N_FFT = 256  # 32 ms at 8 kHz
QUIET_SHARE = 0.1  # the quietest tenth of the frames is taken for noise
KNEES = np.arange(5.0, 36.0, 1.0)
SLOPES_PER_DB = np.arange(0.0, 0.61, 0.02)


# One framing for the analysis and for the resynthesis of ``subtract_noise``.
_FRAMING = {"window": "hann", "nperseg": N_FFT, "noverlap": 3 * N_FFT // 4}


def _stft(y: np.ndarray, sr: int) -> np.ndarray:
    return signal.stft(np.asarray(y, np.float64), fs=sr, boundary="even", padded=True, **_FRAMING)[2]


def _quiet_frames(energy: np.ndarray) -> np.ndarray:
    """Indices of the quietest tenth of the frames (at least one): taken for the noise."""
    return np.argsort(energy)[: max(1, round(QUIET_SHARE * len(energy)))]


def _snr_db(energy: np.ndarray) -> float:
    active = energy[energy >= energy.max() * 1e-3]
    return float(10 * np.log10(active.mean() / max(energy[_quiet_frames(energy)].mean(), 1e-30)))


def quiet_frames_snr_db(y: np.ndarray, sr: int) -> float:
    """The file's SNR: mean power of its frames within 30 dB of the loudest over that of its quietest tenth.

    Pauses give the noise floor away; a clip with none reads lower than it is.
    """
    return _snr_db((np.abs(_stft(y, sr)) ** 2).sum(axis=0))


def subtract_noise(y: np.ndarray, sr: int, *, over: float = 2.0, floor_db: float = -15.0, above_db: float = 30.0) -> np.ndarray:
    """``y`` with its quietest frames' mean spectrum subtracted (power, ``over`` times, gain floored at ``floor_db``).

    Files estimated ``above_db`` or cleaner are returned as they are.
    """
    if len(y) < N_FFT:
        return np.asarray(y, np.float32)
    spec = _stft(y, sr)
    power = np.abs(spec) ** 2
    energy = power.sum(axis=0)
    if _snr_db(energy) >= above_db:
        return np.asarray(y, np.float32)
    noise = power[:, _quiet_frames(energy)].mean(axis=1)
    gain = np.maximum(1 - over * noise[:, None] / np.maximum(power, 1e-30), 10 ** (floor_db / 10))
    _, out = signal.istft(spec * np.sqrt(gain), fs=sr, boundary=True, **_FRAMING)
    return out[: len(y)].astype(np.float32)


def shift_of(snr_db: np.ndarray, knee: float, slope: float) -> np.ndarray:
    """How far toward "male" the log-odds move: ``slope`` per dB of estimated SNR below ``knee``."""
    return slope * np.maximum(0.0, knee - snr_db)


def shifted(z: np.ndarray, snr_db: np.ndarray, knee: float, slope: float) -> np.ndarray:
    """Log-odds moved by ``shift_of``."""
    return z - shift_of(snr_db, knee, slope)


def fit_shift(conditions: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], threshold: float) -> tuple[float, float]:
    """``(knee, slope)`` with the best mean of the clean condition's balanced accuracy and the noisy ones' mean.

    ``conditions`` maps a name to ``(z, snr_db, is_female)``; "as recorded" is the clean one.
    """

    def score(knee: float, slope: float) -> float:
        acc = {name: balanced_accuracy_at(shifted(z, s, knee, slope), f, threshold) for name, (z, s, f) in conditions.items()}
        clean = acc.pop("as recorded")
        return 0.5 * clean + 0.5 * float(np.mean(list(acc.values())))

    # Ties go to the smaller shift: the lower slope, then the lower knee.
    best = max(itertools.product(KNEES, SLOPES_PER_DB), key=lambda g: (score(*g), -g[1], -g[0]))
    return float(best[0]), float(best[1])


def speaker_halves(speakers: list[str], seed: int = 0) -> list[set[str]]:
    order = np.random.default_rng(seed).permutation(sorted(set(speakers)))
    return [set(order[::2]), set(order[1::2])]


def cross_fitted(conditions: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], speakers: np.ndarray, threshold: float) -> tuple[dict[str, tuple[float, float]], list[tuple[float, float]]]:
    """Each condition's balanced accuracy before and after the shift, every speaker scored by a fit without them."""
    after = {name: np.zeros(len(z)) for name, (z, _, _) in conditions.items()}
    fits = []
    for half in speaker_halves(list(speakers)):
        fit_on = np.array([s in half for s in speakers])
        knee, slope = fit_shift({n: (z[fit_on], s[fit_on], f[fit_on]) for n, (z, s, f) in conditions.items()}, threshold)
        fits.append((knee, slope))
        for name, (z, s, _) in conditions.items():
            after[name][~fit_on] = shifted(z, s, knee, slope)[~fit_on]
    rows = {n: (balanced_accuracy_at(z, f, threshold), balanced_accuracy_at(after[n], f, threshold)) for n, (z, _, f) in conditions.items()}
    return rows, fits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(ap, split_help="a run's split.json: its val clips are scored")
    ap.add_argument("--kind", action="append", choices=sorted(SLOPES), default=None, help="steady noises to fit on (default: all)")
    ap.add_argument("--snr", action="append", type=float, default=None, help="signal-to-noise ratios in dB (default: 20, 10, 5)")
    ap.add_argument("--holdout-run", type=Path, default=None, help="a hold-out run folder: the shift is also applied to its unseen clips")
    ap.add_argument("--spectral-subtraction", action="store_true", help="also score every condition after subtract_noise")
    args = ap.parse_args()

    bundle, clips, _, val, waves = validation_clips(args)
    sr = bundle.features.sample_rate
    threshold = bundle.calibration.threshold_log_odds
    speakers = np.array([clips[i].speaker for i in val])
    conditions, report = {}, {"model": bundle.version, "threshold": threshold}
    for kind, snr in [(None, None), *itertools.product(args.kind or sorted(SLOPES), args.snr or [20.0, 10.0, 5.0])]:
        name = "as recorded" if kind is None else f"{kind} {snr:g} dB"
        heard = waves if kind is None else {i: noisy(waves[i], sr, kind, snr, np.random.default_rng(i), None) for i in val}
        z, is_female = file_log_odds(bundle, clips, heard, val)
        estimate = np.array([quiet_frames_snr_db(heard[i], sr) for i in val])
        conditions[name] = (z, estimate, is_female)
        print(f"{name:>12}: balanced accuracy {balanced_accuracy_at(z, is_female, threshold):.3f}, estimated SNR median {np.median(estimate):.1f} dB", flush=True)
        if args.spectral_subtraction:
            cleaned = {i: subtract_noise(heard[i], sr) for i in val}
            row = condition_row(bundle, clips, cleaned, val, threshold)
            print_row(f"{name} - noise", row)
            report.setdefault("spectral_subtraction", {})[name] = row

    rows, fits = cross_fitted(conditions, speakers, threshold)
    print("threshold shift, cross-fitted over two halves of the speakers: " + ", ".join(f"knee {k:g} dB, slope {s:.2f}" for k, s in fits))
    for name, (before, after) in rows.items():
        print(f"{name:>12}: {before:.3f} -> {after:.3f}")
    knee, slope = fit_shift(conditions, threshold)
    print(f"fitted on every validation speaker: knee {knee:g} dB, slope {slope:.2f} per dB")
    report.update(cross_fitted=rows, half_fits=fits, fit={"knee_db": knee, "slope": slope})

    # Real recordings: where the estimate falls on each corpus, and what the shift would do there.
    estimates = {i: quiet_frames_snr_db(w, sr) for i, w in enumerate(waves) if w is not None}  # every clip: validation_clips decoded them all
    report["corpora"] = {}
    for corpus, gender in sorted({(c.corpus, c.gender) for c in clips}):
        e = np.array([estimates[i] for i, c in enumerate(clips) if c.corpus == corpus and c.gender == gender and i in estimates])
        shift = shift_of(e, knee, slope)
        report["corpora"][f"{corpus} {gender}"] = {"clips": len(e), "snr_p10_median_p90": np.percentile(e, [10, 50, 90]).tolist(), "median_shift": float(np.median(shift))}
        print(f"{corpus:>22} {gender:>6}: {len(e):4d} clips, estimated SNR p10 / median / p90 {np.percentile(e, 10):.1f} / {np.median(e):.1f} / {np.percentile(e, 90):.1f} dB, median shift {np.median(shift):.2f}")
    if args.holdout_run:
        run_bundle, idx, z, is_female = run_validation_log_odds(args.holdout_run, clips, cache_dir=args.cache_dir)
        e = np.array([estimates[i] for i in idx])
        moved = shifted(z, e, knee, slope)
        report["holdout"] = {}
        for t in sorted({0.0, run_bundle.calibration.threshold_log_odds, threshold}):
            before, after = balanced_accuracy_at(z, is_female, t), balanced_accuracy_at(moved, is_female, t)
            report["holdout"][f"{t:.2f}"] = {"before": before, "after": after}
            print(f"hold-out {args.holdout_run.name} at {t:.2f}: {before:.3f} -> {after:.3f}")
        for speaker in sorted({clips[i].speaker for i in idx}):
            m = np.array([clips[i].speaker == speaker for i in idx])
            right = lambda v: float(np.mean((v[m] >= threshold) == is_female[m]))  # noqa: E731
            print(f"  {speaker}: estimated SNR median {np.median(e[m]):.1f} dB, right at {threshold:.2f} {right(z):.2f} -> {right(moved):.2f}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
