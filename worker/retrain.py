"""What the retrain task does, as plain functions of a :class:`Runtime`.

A retrain holds the database lock (its ``running`` row in ``training_runs``)
from the request to its end. The worker that runs it claims the row, beats
its heartbeat from a thread, trains a candidate, evaluates the candidate and
the active model on the same fixed held-out speakers, writes the training
report, and then, in one transaction, promotes (or not) and settles the run.
A worker killed at any point before that transaction leaves the active model
as it was; its run is failed once its heartbeat is stale.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from classifier.pipeline import use_bf16
from db import registry
from db.schema import utcnow
from reports.training_report import TrainingReportData, report_evaluation, write_training_report
from training.lifecycle import (
    Candidate, Comparison, choose_held_out_speakers, evaluate_checkpoint, job_clips_as_training,
    promotion_decision, read_sources, retrain_split, train_candidate,
)
from training.loop import TrainConfig
from training.registration import ensure_active_model
from voicegender.settings import Settings
from worker.requests import request_retrain
from worker.runtime import Runtime

log = logging.getLogger(__name__)
# One retrain runs at a time (its training_runs row is the lock), so one state file: a retrain killed
# part-way leaves it, and the next one with the same data and options goes on from it.
RETRAIN_STATE = "retrain_state.pt"
TRAIN_OVERRIDES = ("steps", "batch_size", "eval_every", "lr", "augment", "pitch_shift_prob", "pitch_both_ways", "spec_mask_prob", "low_shelf_prob", "codec_prob")  # what a request may change


class RetrainAborted(RuntimeError):
    """The run was failed under us (its heartbeat went stale): stop before touching the registry."""


def expire_stale_runs(rt: Runtime) -> list[int]:
    """The sweep's part: fail runs whose worker died, so the lock is free again."""
    now = utcnow()
    with rt.sessions() as s:
        stale = registry.expire_stale_runs(
            s, older_than=now - timedelta(seconds=rt.settings.retrain_stale_s),
            unclaimed_older_than=now - timedelta(seconds=rt.settings.task_time_limit_s + 10 * rt.settings.retrain_stale_s),
        )
    if stale:
        log.warning("retrain run(s) %s failed: their worker stopped beating", stale)
    return stale


class RunHeartbeat(threading.Thread):
    """Beats the run's heartbeat (with its stage) until stopped; notices when the run was failed."""

    def __init__(self, rt: Runtime, run_id: int) -> None:
        super().__init__(name=f"retrain-{run_id}-heartbeat", daemon=True)
        self.rt, self.run_id = rt, run_id
        self.stage = "starting"
        self.lost = threading.Event()
        self.stopped = threading.Event()

    def set_stage(self, stage: str) -> None:
        if self.lost.is_set():
            raise RetrainAborted(f"run {self.run_id} was failed meanwhile (its heartbeat was late); stopping")
        self.stage = stage

    def run(self) -> None:
        while not self.stopped.wait(self.rt.settings.heartbeat_s):
            try:
                with self.rt.sessions() as s:
                    if not registry.heartbeat_run(s, self.run_id, stage=self.stage):
                        self.lost.set()
                        return
            except Exception:  # a database hiccup must not end the beat; staleness is measured in tens of seconds
                log.exception("retrain heartbeat failed; retrying")


def worker_label() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def retrain_task(rt: Runtime, run_id: int | None, *, overrides: dict[str, Any] | None = None) -> dict | None:
    """The task: a requested run (``run_id``), or a scheduled one that takes the lock itself."""
    if run_id is None:
        try:
            run_id = request_retrain(rt.sessions, rt.settings, trigger="schedule").id
        except registry.RetrainRunning as exc:
            log.info("scheduled retrain skipped: %s", exc)
            return None
    return run_retrain(rt, run_id, overrides=overrides)


def run_retrain(rt: Runtime, run_id: int, *, overrides: dict[str, Any] | None = None) -> dict | None:
    """Claim run ``run_id`` and carry it out; returns the run's description, None when not ours."""
    with rt.sessions() as s:
        if not registry.claim_run(s, run_id, worker=worker_label()):
            log.warning("retrain run %d is not waiting for a worker (done, failed or taken): nothing to do", run_id)
            return None
    heartbeat = RunHeartbeat(rt, run_id)
    heartbeat.start()
    try:
        _retrain(rt, run_id, heartbeat, _train_config(rt.settings, overrides or {}))
    except Exception as exc:  # every failure, a time limit included, fails the run and keeps the active model
        log.exception("retrain run %d failed", run_id)
        with rt.sessions() as s:
            registry.finish_run(s, run_id, state="failed", error=f"{exc.__class__.__name__}: {exc}")
    finally:
        heartbeat.stopped.set()
    with rt.sessions() as s:
        return registry.describe_run(registry.get_run(s, run_id))


def _train_config(settings: Settings, overrides: dict[str, Any]) -> TrainConfig:
    unknown = set(overrides) - set(TRAIN_OVERRIDES)
    if unknown:
        raise ValueError(f"unknown retrain option(s) {sorted(unknown)}: allowed {TRAIN_OVERRIDES}")
    values = {
        "steps": settings.retrain_steps, "batch_size": settings.retrain_batch_size, "eval_every": settings.retrain_eval_every, "save_every": settings.retrain_save_every,
        "lr": settings.retrain_lr, "augment": settings.retrain_augment,
        "pitch_shift_prob": settings.retrain_pitch_shift, "pitch_both_ways": settings.retrain_pitch_both_ways,
        "spec_mask_prob": settings.retrain_spec_mask, "low_shelf_prob": settings.retrain_low_shelf,
        "codec_prob": settings.retrain_codec, **overrides,
    }
    # A short run warms up over a tenth of its steps; a full one over the usual 200.
    return TrainConfig(seed=settings.retrain_seed, warmup_steps=min(200, max(1, values["steps"] // 10)), bf16=use_bf16(settings.precision), **values)


@dataclass
class _Active:
    version: str
    path: str
    split: dict | None


def _retrain(rt: Runtime, run_id: int, hb: RunHeartbeat, cfg: TrainConfig) -> None:
    settings = rt.settings
    hb.set_stage("gathering data")
    with rt.sessions() as s:
        row = ensure_active_model(s, settings.model_path)
        active = _Active(row.version, row.path, row.split)
        held_out = registry.fixed_held_out_speakers(s)
        job_rows = registry.labelled_job_clips(s) if settings.retrain_include_jobs else []
    sources = read_sources(settings.training_source_paths)
    how = "fixed by the first retrain"
    if not held_out:
        held_out, how = choose_held_out_speakers(sources, fraction=settings.retrain_held_out_fraction, seed=settings.retrain_seed, active_split=active.split)
    with rt.sessions() as s:
        registry.update_run(s, run_id, held_out_speakers=held_out, active_version=active.version)
    job_clips = job_clips_as_training(job_rows, held_out=set(held_out))
    clips, split = retrain_split(sources, job_clips, held_out, val_fraction=settings.retrain_val_fraction, seed=settings.retrain_seed)
    version = f"retrain-{run_id}-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}"
    out_dir = settings.models_dir / version
    log.info("retrain run %d: %d clips (%d from jobs), %d held-out speakers, %d steps", run_id, len(clips), len(job_clips), len(held_out), cfg.steps)
    candidate = train_candidate(
        clips, split, feature_kind=settings.retrain_features, band_norm=settings.retrain_band_norm, short_fill=settings.retrain_short_fill, wideband_short_fill=settings.retrain_wideband_short_fill, fmin=settings.retrain_fmin if settings.retrain_features == "logmel" else None, cfg=cfg, version=version, out_dir=out_dir,
        cache_dir=settings.data_dir / "cache", progress=lambda step, _loss: hb.set_stage(f"training {step + 1}/{cfg.steps}"),
        state_path=settings.models_dir / RETRAIN_STATE,
    )
    _register_candidate(rt, candidate, parent=active.version)
    hb.set_stage("evaluating the active model")
    active_metrics = evaluate_checkpoint(Path(active.path), clips, split.test, cache_dir=settings.data_dir / "cache")
    comparison = _compare(candidate, active, active_metrics, settings.retrain_margin, held_out)
    comparison.held_out_origin = how
    hb.set_stage("deciding")
    _settle(rt, run_id, candidate, comparison, out_dir / "report.html", cfg)


def _register_candidate(rt: Runtime, candidate: Candidate, *, parent: str) -> None:
    slim = lambda m: {k: v for k, v in m.items() if k not in ("per_speaker", "learning_curve")}  # noqa: E731
    metrics = {
        "balanced_accuracy": candidate.held_out_metrics["balanced_accuracy"], "error_rate": candidate.held_out_metrics["error_rate"],
        "held_out": slim(candidate.held_out_metrics), "validation": slim(candidate.val_metrics),
    }
    with rt.sessions() as s:
        registry.register_model(
            s, version=candidate.bundle.version, path=str(candidate.checkpoint.resolve()), sha256=candidate.bundle.sha256,
            status="candidate", parent_version=parent, metrics=metrics, data_summary=candidate.data_summary, split=candidate.split_info,
        )


def _compare(candidate: Candidate, active: _Active, active_metrics: dict, margin: float, held_out: list[str]) -> Comparison:
    decision, reason = promotion_decision(
        candidate_bacc=candidate.held_out_metrics["balanced_accuracy"], active_bacc=active_metrics["balanced_accuracy"], margin=margin
    )
    return Comparison(
        candidate_version=candidate.bundle.version, active_version=active.version, candidate=candidate.held_out_metrics,
        active=active_metrics, margin=margin, decision=decision, reason=reason, held_out_speakers=held_out,
    )


def _settle(rt: Runtime, run_id: int, candidate: Candidate, comparison: Comparison, report_path: Path, cfg: TrainConfig) -> None:
    """Report first, then the promotion and the run's end in one transaction."""
    write_training_report(report_path, retrain_report_data(candidate, comparison, cfg))

    def values() -> dict[str, Any]:  # read again after a refusal changed the comparison
        return dict(decision=comparison.decision, reason=comparison.reason, comparison=comparison.as_dict(),
                    candidate_version=candidate.bundle.version, report_path=str(report_path))

    with rt.sessions() as s:
        if comparison.decision == "promoted":
            try:
                registry.promote(s, candidate.bundle.version, expected_active=comparison.active_version, settle_run=run_id, **values())
                log.info("retrain run %d promoted %s: %s", run_id, candidate.bundle.version, comparison.reason)
                return
            except registry.RegistryConflict as exc:
                comparison.decision, comparison.reason = "refused", str(exc)
                write_training_report(report_path, retrain_report_data(candidate, comparison, cfg))
        if not registry.finish_run(s, run_id, state="done", **values()):
            raise RetrainAborted(f"run {run_id} was failed meanwhile (its heartbeat was late)")
    log.info("retrain run %d refused %s: %s", run_id, candidate.bundle.version, comparison.reason)


def retrain_report_data(candidate: Candidate, comparison: Comparison, cfg: TrainConfig) -> TrainingReportData:
    bundle = candidate.bundle
    return TrainingReportData(
        title=f"Retrain: candidate {bundle.version}",
        version=bundle.version,
        created_at=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        features=bundle.features.to_dict(),
        train_config={k: getattr(cfg, k) for k in ("steps", "batch_size", "lr", "augment", "seed")},
        data_summary=candidate.data_summary,
        splits=[candidate.split_info],
        folds=[{"name": "validation (speakers outside the held-out set)", "metrics": candidate.val_metrics}],
        evaluation=report_evaluation("held-out speakers (fixed across retrains)", candidate.held_out_metrics),
        comparison=comparison.as_dict(),
    )
