"""Do bf16 and fp32 agree on real speech? ``python -m bench.precision``.

Scores every file of a manifest (``path,...`` relative to the CSV, the
shared real-speech corpus by default) through the service's own pipeline
twice, in fp32 and under bf16 autocast, and counts the files (and windows)
whose verdicts agree. Attention profiles are compared on a sample, since
they need the GradCAM backward. The service keeps bf16 only if the file
agreement is at least ``--target`` (99.9 %). Files are taken in a seeded
shuffled order, so a run cut short (``--limit``) still samples every corpus.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import random
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from classifier.errors import InvalidAudio
from classifier.model import load_checkpoint
from classifier.pipeline import Classifier, PreparedClip, prepare_file
from voicegender.settings import REPO_ROOT, Settings

DEFAULT_MANIFEST = REPO_ROOT.parent / "shared" / "data" / "real-speech" / "manifest.csv"


def manifest_paths(manifest: Path) -> list[Path]:
    with open(manifest, newline="", encoding="utf-8") as fh:
        return [manifest.parent / row["path"] for row in csv.DictReader(fh)]


def measure_agreement(
    paths: list[Path], model_path: Path, *, batch_windows: int, explain_sample: int, report=None, report_every: int = 100
) -> dict:
    """Verdicts of fp32 and bf16 on every readable file; attention on the first ``explain_sample`` files.

    ``report(partial)`` gets the figures so far every ``report_every`` files.
    """
    fp32 = Classifier(load_checkpoint(model_path), batch_windows=batch_windows, explain=False, bf16=False)
    bf16 = Classifier(load_checkpoint(model_path), batch_windows=batch_windows, explain=False, bf16=True)
    file_agree, window_agree, n_windows, max_delta, skipped, corrs = 0, 0, 0, 0.0, 0, []
    scored = 0
    for path in tqdm(paths, desc="fp32 vs bf16", unit="file", file=sys.stderr):
        try:
            clip = prepare_file(path, fp32.bundle)
        except InvalidAudio:
            skipped += 1
            continue
        a, _ = fp32.score_windows(clip.windows)
        b, _ = bf16.score_windows(clip.windows)
        file_agree += _verdict(fp32, a) == _verdict(bf16, b)
        window_agree += int(((a >= 0) == (b >= 0)).sum())
        n_windows += len(a)
        max_delta = max(max_delta, float(np.abs(a - b).max()))
        if scored < explain_sample:
            corrs.append(_attention_correlation(fp32, bf16, clip))
        scored += 1
        if report is not None and scored % report_every == 0:
            report(_figures(scored, skipped, n_windows, file_agree, window_agree, max_delta, corrs))
    return _figures(scored, skipped, n_windows, file_agree, window_agree, max_delta, corrs)


def _figures(scored, skipped, n_windows, file_agree, window_agree, max_delta, corrs) -> dict:
    return {
        "files": scored, "skipped": skipped, "windows": n_windows,
        "file_agreement": file_agree / scored, "window_agreement": window_agree / n_windows,
        "max_abs_log_odds_delta": max_delta,
        "attention_corr_median": float(np.median(corrs)) if corrs else None,
        "attention_corr_p05": float(np.percentile(corrs, 5)) if corrs else None,
        "attention_files": len(corrs),
    }


def _verdict(clf: Classifier, log_odds: np.ndarray) -> bool:
    """True for "female": the mean log-odds through the calibration, as the pipeline combines windows."""
    return float(clf.bundle.calibration.p_female(torch.tensor(float(np.mean(log_odds))))) >= 0.5


def _attention_correlation(fp32: Classifier, bf16: Classifier, clip: PreparedClip) -> float:
    fp32.explain = bf16.explain = True
    try:
        (r32,), (r16,) = fp32.classify_prepared([clip]), bf16.classify_prepared([clip])
    finally:
        fp32.explain = bf16.explain = False
    if np.ptp(r32.attention) == 0 or np.ptp(r16.attention) == 0:  # a flat map has no correlation
        return 1.0 if np.allclose(r32.attention, r16.attention, atol=1e-3) else 0.0
    return float(np.corrcoef(r32.attention, r16.attention)[0, 1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.precision", description=__doc__.splitlines()[0])
    p.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST)
    p.add_argument("--model", type=Path, default=None, help="default: VOICEGENDER_MODEL_PATH (the starter model)")
    p.add_argument("--limit", type=int, default=None, help="only the first N files")
    p.add_argument("--explain-sample", type=int, default=300, help="files whose attention maps are compared")
    p.add_argument("--target", type=float, default=0.999)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--out", type=Path, help="also write the figures here, updated every 100 files")
    args = p.parse_args(argv)
    settings = Settings()
    torch.set_num_threads(args.threads)
    paths = manifest_paths(args.manifest)
    random.Random(0).shuffle(paths)  # any prefix is a fair sample of every corpus
    paths = paths[: args.limit]
    context = {"model": str(args.model or settings.model_path), "manifest": str(args.manifest), "target": args.target}

    def write(figures: dict, *, final: bool = False) -> dict:
        figures = {**figures, **context, "complete": final, "bf16_kept": figures["file_agreement"] >= args.target}
        if args.out:
            args.out.write_text(json.dumps(figures, indent=2) + "\n")
        return figures

    result = measure_agreement(
        paths, args.model or settings.model_path, batch_windows=settings.batch_windows,
        explain_sample=args.explain_sample, report=write,
    )
    result = write(result, final=True)
    print(json.dumps(result, indent=2))
    return 0 if result["bf16_kept"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
