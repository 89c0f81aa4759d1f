"""Arguments and output of the benchmark; ``voicegender bench`` and ``python -m bench`` both land here.

Kept free of heavy imports: the ``voicegender`` parser adds these arguments
on every start.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

# The targets on the 2-core reference machine: key -> (bound, "min"|"max").
TARGETS = {
    "e2e_over_limit": (0.70, "min"),
    "e2e_over_baseline": (20.0, "min"),
    "features_speedup": (3.0, "min"),
    "two_over_one_worker": (1.8, "min"),
    "small_job_latency_s": (2.0, "max"),
    "worker_peak_rss_mb": (1536.0, "max"),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--clips", type=int, default=2000, help="clips in the end-to-end job (30000 for the memory figure)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--device", default="cpu", help="cpu or cuda (workers use it too)")
    p.add_argument("--model", type=Path, help="checkpoint (default: VOICEGENDER_MODEL_PATH, the starter model)")
    p.add_argument("--workers", type=int, default=None, help="worker processes for end to end (default: CPU count)")
    p.add_argument("--scale-clips", type=int, default=3000, help="clips in each of the one- and two-worker jobs (large enough that the one-off finalize is not the figure)")
    p.add_argument("--baseline-clips", type=int, default=100, help="files through the seed-style loop")
    p.add_argument("--limit-seconds", type=float, default=15.0, help="how long the model-limit loop runs")
    p.add_argument("--latency-runs", type=int, default=5, help="10-clip jobs timed (the median is reported)")
    p.add_argument("--work-dir", type=Path, help="where the run's files go (default: the temp folder)")
    p.add_argument("--keep", action="store_true", help="keep the run's files (worker logs, database)")


def run(args: argparse.Namespace) -> int:
    from bench.run import BenchOptions, run_benchmark

    if args.clips < 1:
        print("voicegender bench: --clips must be >= 1", file=sys.stderr)
        return 2
    opts = BenchOptions(
        clips=args.clips, device=args.device, model=args.model, scale_clips=args.scale_clips,
        baseline_clips=args.baseline_clips, limit_seconds=args.limit_seconds, latency_runs=args.latency_runs, work_dir=args.work_dir, keep=args.keep,
        **({"workers": args.workers} if args.workers else {}),
    )
    from bench.service import BenchError

    try:
        figures = run_benchmark(opts)
    except BenchError as exc:
        print(f"voicegender bench: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(figures) if args.json else format_figures(figures))
    return 0


def format_figures(f: dict) -> str:
    """The figures and ratios as lines a person reads, each ratio against its target."""
    d = f["details"]
    lines = [
        f"model limit        {f['model_limit_cps']:9.1f} clips/s  forward + GradCAM, {d['workers']} x 1 thread, batch {d['batch_windows']}, bf16={d['bf16']}",
        f"end to end         {f['end_to_end_cps']:9.1f} clips/s  {d['clips']} clips, submit -> report, {d['workers']} workers",
        f"seed-style loop    {f['baseline_cps']:9.2f} clips/s  per file, {d['baseline_threads']} threads",
        f"features           {d['features_seed_mfcc_cps']['batched_cps']:9.1f} clips/s  batched, vs librosa.feature.mfcc {d['features_seed_mfcc_cps']['librosa_cps']:.1f}",
        f"one / two workers  {d['one_worker_cps']:9.1f} / {d['two_workers_cps']:.1f} clips/s  ({d['scale_clips']} clips each)",
        "  their phases     " + "; ".join(f"{n.replace('_', ' ')}: " + ", ".join(f"{k.removesuffix('_s')} {v:.2f} s" for k, v in phases.items())
                                      for n, phases in d["scale_phases_s"].items())
        + f"  (classify phase two / one {d['two_over_one_worker_classify_phase']:.2f})",
        f"10-clip job        {f['small_job_latency_s']:9.3f} s  median of {d['latency_runs_s']}",
        f"worker peak RSS    {f['worker_peak_rss_mb'] or float('nan'):9.1f} MiB",
        "",
    ]
    for key, (bound, kind) in TARGETS.items():
        value = f[key]
        ok = value is not None and (value >= bound if kind == "min" else value <= bound)
        lines.append(f"{key:<22} {value!s:>8}   target {'>=' if kind == 'min' else '<='} {bound:g}   {'ok' if ok else 'MISSED'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m bench``."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    add_arguments(parser)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return run(parser.parse_args(argv))
