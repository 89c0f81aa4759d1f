"""One benchmark run: every figure of issue 6, measured side by side on one corpus.

Order matters on a small machine: the in-process measurements (features,
baseline, model limit) run before any worker starts, and the service
figures run with nothing else of ours using a core.
"""
from __future__ import annotations

import logging
import os
import platform
import shutil
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from bench.baseline import measure_seed_baseline
from bench.corpus import subset_folder, write_bench_clips
from bench.features import measure_features
from bench.model_limit import LimitJob, measure_model_limit
from bench.service import JobRun, Workers, redis_server, run_job, worker_env
from classifier.features import seed_mfcc_config
from classifier.model import ModelBundle, load_checkpoint
from classifier.pipeline import prepare_file, use_bf16
from voicegender.bootstrap import build_services
from voicegender.settings import Settings

log = logging.getLogger(__name__)
LATENCY_CLIPS = 10


@dataclass(frozen=True)
class BenchOptions:
    clips: int = 2000
    device: str = "cpu"
    model: Path | None = None  # default: the configured model (VOICEGENDER_MODEL_PATH)
    workers: int = os.cpu_count() or 1  # for end to end and the model limit: one per core, as deployed
    scale_clips: int = 3000  # the one-vs-two-workers jobs
    baseline_clips: int = 100
    feature_clips: int = 256
    limit_seconds: float = 15.0
    latency_runs: int = 5
    work_dir: Path | None = None  # default: the system's temp folder
    keep: bool = False

    @property
    def scale_clips_used(self) -> int:
        return min(self.scale_clips, self.clips)

    @property
    def service_workers(self) -> int:
        """Workers for end to end and model-limit processes: at least the two of the scale figure."""
        return max(self.workers, 2)


def run_benchmark(opts: BenchOptions) -> dict:
    """All figures as one dict (the ``--json`` object); progress goes to stderr."""
    settings = Settings()
    model_path = (opts.model or settings.model_path).resolve()
    bundle = load_checkpoint(model_path)
    work = Path(tempfile.mkdtemp(prefix="voicegender-bench-", dir=opts.work_dir))
    try:
        _say(f"writing {opts.clips} synthetic clips at {bundle.features.sample_rate} Hz under {work}")
        clips = write_bench_clips(work / "clips", n_clips=opts.clips, sr=bundle.features.sample_rate)
        feats = _measure_features(clips[: opts.feature_clips], bundle, batch=settings.batch_windows)
        baseline = _measure_baseline(clips[: opts.baseline_clips], bundle, opts.device)
        _say(f"model limit: {opts.service_workers} processes x 1 thread, {opts.limit_seconds:g} s")
        limit_job = LimitJob(str(model_path), tuple(map(str, clips[:64])), settings.batch_windows, settings.precision, opts.device, opts.limit_seconds)
        limit = measure_model_limit(limit_job, processes=opts.service_workers)
        service = _measure_service(opts, settings, model_path, clips, work)
    finally:
        if not opts.keep:
            shutil.rmtree(work, ignore_errors=True)
    return summarise(opts, settings, bundle, feats, baseline, limit, service)


def _measure_features(paths: list[Path], bundle: ModelBundle, *, batch: int) -> dict:
    _say(f"features: batched vs librosa per clip, {len(paths)} clips, 1 thread")
    # Full windows only: a trimmed short clip's (short_fill "trim") is narrower and would not stack.
    windows = np.concatenate([w for w in (prepare_file(p, bundle).windows for p in paths) if w.shape[1] == bundle.features.window_samples])
    seed = measure_features(windows, seed_mfcc_config(bundle.features.sample_rate), batch=batch)
    production = measure_features(windows, bundle.features, batch=batch)
    return {"seed_mfcc": seed, "production": production}


def _measure_baseline(paths: list[Path], bundle: ModelBundle, device: str) -> dict:
    threads = os.cpu_count() or 1
    with tqdm(total=len(paths), desc="seed-style baseline", unit="clip", file=sys.stderr) as bar:
        return measure_seed_baseline(paths, bundle, threads=threads, device=device, progress=bar.update)


def _measure_service(opts: BenchOptions, settings: Settings, model_path: Path, clips: list[Path], work: Path) -> dict:
    small = subset_folder(clips[:LATENCY_CLIPS], work / "small")
    scale = subset_folder(clips[: opts.scale_clips_used], work / "scale")
    with redis_server(work / "redis") as broker_url:
        data_dir = work / "data"
        database_url = f"sqlite:///{data_dir / 'voicegender.db'}"
        own = {"data_dir": data_dir, "database_url": database_url, "broker_url": broker_url, "model_path": model_path, "device": opts.device}
        services = build_services(Settings(**own, torch_threads=1))
        workers = Workers(worker_env({k.upper(): str(v) for k, v in own.items()}), log_dir=work)
        try:
            return _service_figures(opts, services, workers, clips, small, scale)
        finally:
            workers.stop()


def _service_figures(opts: BenchOptions, services, workers: Workers, clips: list[Path], small: Path, scale: Path) -> dict:
    out: dict = {}
    for n_workers in (1, 2):
        while len(workers.procs) < n_workers:
            _say(f"starting worker {len(workers.procs) + 1}")
            workers.start()
        run_job(services, small)  # first job of a worker: report and database paths warm up
        run = _job(services, scale, opts.scale_clips_used, f"{n_workers} worker(s)")
        out[f"scale_{n_workers}_cps"] = opts.scale_clips_used / run.seconds
        out[f"scale_{n_workers}_phases"] = run
    while len(workers.procs) < opts.service_workers:
        workers.start()
    out["end_to_end_s"] = _job(services, clips[0].parent, len(clips), f"end to end, {len(workers.procs)} workers", workers).seconds
    out["end_to_end_cps"] = len(clips) / out["end_to_end_s"]
    out["worker_peak_rss_mb"] = workers.peak_rss_mb()
    out["worker_peak_anon_mb"] = workers.peak_anon_kib / 1024
    _say(f"latency: {opts.latency_runs} jobs of {LATENCY_CLIPS} clips")
    out["latency_s"] = [run_job(services, small).seconds for _ in range(opts.latency_runs)]
    out["workers"] = len(workers.procs)
    out["finalize_s"] = workers.task_seconds("worker.tasks.finalize_job")[-opts.latency_runs :]
    return out


def _job(services, folder: Path, n: int, what: str, workers: Workers | None = None) -> JobRun:
    def progress(done: int) -> None:
        bar.update(done - bar.n)
        if workers is not None:
            workers.sample()

    with tqdm(total=n, desc=what, unit="clip", file=sys.stderr) as bar:
        return run_job(services, folder, progress=progress)


def summarise(opts, settings, bundle, feats, baseline, limit, service) -> dict:
    """The issue's keys first, then the conditions that produced them under ``details``."""
    e2e, limit_cps, base_cps = service["end_to_end_cps"], limit["cps"], baseline["cps"]
    return {
        "model_limit_cps": _sig(limit_cps),
        "end_to_end_cps": _sig(e2e),
        "baseline_cps": _sig(base_cps),
        "e2e_over_limit": _sig(e2e / limit_cps),
        "e2e_over_baseline": _sig(e2e / base_cps),
        "features_speedup": _sig(feats["seed_mfcc"]["speedup"]),
        "two_over_one_worker": _sig(service["scale_2_cps"] / service["scale_1_cps"]),
        "small_job_latency_s": _sig(statistics.median(service["latency_s"])),
        "worker_peak_rss_mb": None if service["worker_peak_rss_mb"] is None else _sig(service["worker_peak_rss_mb"]),
        "details": {
            "clips": opts.clips,
            "scale_clips": opts.scale_clips_used,
            "workers": service["workers"],
            "device": opts.device,
            "bf16": use_bf16(settings.precision, opts.device),
            "batch_windows": settings.batch_windows,
            "chunk_size": settings.chunk_size,
            "model": f"{bundle.version} ({bundle.features.kind}, {bundle.features.n_bins}x{bundle.features.n_frames}, GradCAM at {bundle.gradcam_layer})",
            "model_limit_per_process_cps": limit["per_process_cps"],
            "one_worker_cps": _sig(service["scale_1_cps"]),
            "two_workers_cps": _sig(service["scale_2_cps"]),
            # Where the scale jobs' time went: only the workers' share can scale with their number.
            "scale_phases_s": {f"{n}_worker{'s' * (n > 1)}": {k: _sig(getattr(service[f"scale_{n}_phases"], k)) for k in ("submit_s", "classify_s", "finalize_s")} for n in (1, 2)},
            "two_over_one_worker_classify_phase": _sig(service["scale_1_phases"].classify_s / service["scale_2_phases"].classify_s),
            "end_to_end_s": _sig(service["end_to_end_s"]),
            "worker_peak_private_mb": _sig(service["worker_peak_anon_mb"]),
            "latency_runs_s": [_sig(t) for t in service["latency_s"]],
            "latency_finalize_task_s": [_sig(t) for t in service["finalize_s"]],
            "baseline_threads": baseline["threads"],
            "features_seed_mfcc_cps": {k: _sig(feats["seed_mfcc"][k]) for k in ("batched_cps", "librosa_cps")},
            "features_production_speedup": _sig(feats["production"]["speedup"]),
            "cpu": f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}",
            "load_average_at_end": [_sig(x) for x in os.getloadavg()],
            "torch": torch.__version__,
        },
    }


def _sig(x: float, digits: int = 4) -> float:
    """``x`` to ``digits`` significant figures: tiny smoke-run rates keep their ratios."""
    return float(f"{x:.{digits}g}")


def _say(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)
