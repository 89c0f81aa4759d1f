"""``voicegender bench`` with a tiny N: every part runs for real and the figures hang together.

A smoke run, not a timed test: it asserts that each figure was measured
(positive, finite) and that the ratios are the ratios of the figures, never
how fast anything is.
"""
import json
import math
import os
import shutil

import pytest

from tests.integration.conftest import REPO, run_voicegender

KEYS = (
    "model_limit_cps", "end_to_end_cps", "baseline_cps", "e2e_over_limit", "e2e_over_baseline",
    "features_speedup", "two_over_one_worker", "small_job_latency_s", "worker_peak_rss_mb",
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bench_run(tiny_model, tmp_path_factory):
    """One run for the module's tests: 12 clips, chunks of 4, two workers."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed: the benchmark runs the real service on it")
    work = tmp_path_factory.mktemp("bench")
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEGENDER_")}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", VOICEGENDER_MODEL_PATH=str(tiny_model), VOICEGENDER_CHUNK_SIZE="4")
    args = [
        "bench", "--clips", "12", "--scale-clips", "12", "--baseline-clips", "3", "--limit-seconds", "1",
        "--latency-runs", "2", "--workers", "2", "--work-dir", str(work), "--json",
    ]
    proc = run_voicegender(env, *args, timeout_s=600)
    return json.loads(proc.stdout), proc.stderr, work


def test_bench_measures_every_figure(bench_run):
    figures, _, _ = bench_run
    for key in KEYS:
        assert isinstance(figures[key], (int, float)) and math.isfinite(figures[key]) and figures[key] > 0, key
    d = figures["details"]
    assert d["clips"] == 12 and d["workers"] == 2 and len(d["latency_runs_s"]) == 2
    assert len(d["model_limit_per_process_cps"]) == 2
    assert figures["small_job_latency_s"] == pytest.approx(sum(d["latency_runs_s"]) / 2, rel=1e-3)  # median of two


def test_ratios_are_the_ratios_of_the_figures(bench_run):
    f, _, _ = bench_run
    assert f["e2e_over_limit"] == pytest.approx(f["end_to_end_cps"] / f["model_limit_cps"], rel=0.02, abs=2e-3)
    assert f["e2e_over_baseline"] == pytest.approx(f["end_to_end_cps"] / f["baseline_cps"], rel=0.05, abs=0.1)
    d = f["details"]
    assert f["two_over_one_worker"] == pytest.approx(d["two_workers_cps"] / d["one_worker_cps"], rel=0.02, abs=0.01)
    assert f["end_to_end_cps"] == pytest.approx(d["clips"] / d["end_to_end_s"], rel=0.02)
    for n in ("1_worker", "2_workers"):  # the phases of a scale job add up to its wall time
        phases = d["scale_phases_s"][n]
        assert all(v >= 0 for v in phases.values()), phases
        cps = d["one_worker_cps"] if n == "1_worker" else d["two_workers_cps"]
        assert sum(phases.values()) == pytest.approx(d["scale_clips"] / cps, rel=0.1, abs=0.1), phases
    ratio = d["scale_phases_s"]["1_worker"]["classify_s"] / d["scale_phases_s"]["2_workers"]["classify_s"]
    assert d["two_over_one_worker_classify_phase"] == pytest.approx(ratio, rel=0.02)


def test_progress_goes_to_stderr_and_nothing_is_left_behind(bench_run):
    _, stderr, work = bench_run
    assert "seed-style baseline" in stderr and "end to end" in stderr
    assert list(work.iterdir()) == []  # the run's corpus, database and logs are removed
