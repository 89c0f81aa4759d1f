"""What the tasks do, as plain functions of a :class:`Runtime` (tests call them directly)."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import numpy as np

from classifier.pipeline import Classifier, ClipResult, PreparedClip
from db import jobs as repo
from db.schema import Job, utcnow
from classifier.features import feature_axis
from db.schema import Clip
from reports.attention import write_chunk_cams
from reports.job_evidence import JobEvidence, collect_evidence, faithfulness_positions, record_chunk_deletion
from reports.job_report import JobReportData, write_job_report
from sqlalchemy import select
from sqlalchemy.orm import Session
from worker.runtime import Runtime

log = logging.getLogger(__name__)
Enqueue = Callable[[str, int], None]


def start_job(rt: Runtime, job_id: str) -> list[int]:
    """Mark the job running with the current model; returns the chunks still to do."""
    with rt.sessions() as s:
        job = s.get(Job, job_id)
        if job is None or job.cancel_requested:
            return []
        repo.mark_job_running(s, job_id, model_version=rt.model().version)
        return repo.pending_chunk_indices(s, job_id)


def run_chunk(rt: Runtime, job_id: str, index: int) -> bool:
    """Classify one chunk's pending clips and record them.

    Returns True when this call settled the job's last pending chunk, so the
    finalize is sent once (a lost one is found by the sweep). Idempotent:
    clips already recorded are skipped, and a result is written only while
    its clip is still pending.
    """
    with rt.sessions() as s:
        job = s.get(Job, job_id)
        if job is None:
            return False
        if job.state == "queued":
            repo.mark_job_running(s, job_id, model_version=rt.model().version)
        todo = [c for c in repo.chunk_clips(s, job_id, index) if c.state == "pending"]
        input_dir = Path(job.input_dir)
        sample = faithfulness_positions(job.total)
    values = _classify(rt, input_dir, todo, cams=(input_dir.parent / "cams", index), sample=sample) if todo else []
    with rt.sessions() as s:
        for clip, v in zip(todo, values):
            repo.write_clip_result(s, clip.id, v)
        settled = repo.finish_chunk(s, job_id, index)
        s.commit()
        return settled and not repo.pending_chunk_indices(s, job_id)


def _classify(rt: Runtime, input_dir: Path, clips: list, cams: tuple[Path, int], sample: set[int]) -> list[dict]:
    classifier = rt.classifier()
    sampled = {str(input_dir / c.path) for c in clips if c.position in sample}
    sampled_windows: dict[str, np.ndarray] = {}

    def keep_sampled(prepared: PreparedClip) -> None:  # the deletion check reuses them: nothing is decoded twice
        if prepared.path in sampled:
            sampled_windows[prepared.path] = prepared.windows

    started = time.perf_counter()
    results = classifier.classify_files([input_dir / c.path for c in clips], on_prepared=keep_sampled)
    per_clip_ms = 1000 * (time.perf_counter() - started) / len(clips)
    # The report's mean maps and this chunk's part of the deletion check;
    # written before the clip rows, so a re-run rewrites the same files.
    try:
        write_chunk_cams(*cams, results, classifier.bundle.class_names)
    except OSError as exc:
        log.warning("chunk %s: attention maps not saved: %s", cams[1], exc)
    checked = [sampled_windows[r.path] for r in results if r.path in sampled_windows and r.p_female is not None]
    try:
        if checked:
            record_chunk_deletion(classifier, checked, *cams)
    except (OSError, RuntimeError, ValueError) as exc:  # costs the report's deletion check, not the chunk
        log.warning("chunk %s: deletion check not saved: %s", cams[1], exc)
    for clip, r in zip(clips, results):
        if r.error:  # name the file as the client did, not by its path under the data directory
            r.error = f"{clip.path}: {r.error.removeprefix(f'{r.path}: ')}"
    return [_clip_values(r, classifier.bundle.version, per_clip_ms) for r in results]


def _clip_values(r: ClipResult, model_version: str, processing_ms: float) -> dict:
    return {
        "state": "failed" if r.error else "done",
        "prediction": r.prediction,
        "p_female": r.p_female,
        "log_odds": r.log_odds,
        "duration_s": r.duration_s,
        "windows": r.windows,
        "attention": None if r.attention is None else [round(float(v), 5) for v in r.attention],
        "error": r.error,
        "error_reason": r.error_reason,
        "model_version": model_version,
        "processing_ms": processing_ms,
    }


def finalize(rt: Runtime, job_id: str) -> str | None:
    """Render the report and settle the job's state; a second call changes nothing."""
    with rt.sessions() as s:
        job = s.get(Job, job_id)
        if job is None or job.finished_at is not None:
            return None if job is None else job.state
        report_path = rt.settings.jobs_dir / job_id / "report.html"
        try:
            write_job_report(report_path, report_data(s, job, rt.classifier()))
            job = repo.finalize_job_row(s, job_id, report_path=str(report_path))
        except OSError as exc:
            s.rollback()
            job = repo.finalize_job_row(s, job_id, report_path=None, error=f"could not write the report: {exc}")
        log.info("job %s finished: %s", job_id, job.state)
        return job.state


def sweep(rt: Runtime, enqueue: Enqueue, finalize_later: Callable[[str], None]) -> int:
    """Enqueue chunks pending past the deadline again and finalize jobs whose finalize was lost."""
    older_than = utcnow() - timedelta(seconds=rt.settings.chunk_deadline_s)
    with rt.sessions() as s:
        stale = repo.stale_chunks(s, older_than=older_than)
        for job_id, index in stale:
            repo.mark_chunks_enqueued(s, job_id, [index])
            enqueue(job_id, index)
        orphans = repo.unfinished_jobs_without_pending_chunks(s)
    for job_id in orphans:
        finalize_later(job_id)
    if stale or orphans:
        log.info("sweep: re-enqueued %d chunk(s), finalizing %d job(s)", len(stale), len(orphans))
    return len(stale)


def report_data(s: Session, job: Job, clf: Classifier) -> JobReportData:
    """Plain values for the report, read from the job table, plus what the model shows at finalize."""
    bundle = clf.bundle
    axis, label = feature_axis(bundle.features)
    keys = ("path", "label", "speaker", "prediction", "p_female", "duration_s", "windows", "error", "error_reason", "attention", "processing_ms")
    clips = [{k: getattr(c, k) for k in keys} for c in s.scalars(select(Clip).where(Clip.job_id == job.id).order_by(Clip.position))]
    return JobReportData(
        job_id=job.id,
        state=job.state if job.finished_at else _final_state(job, clips),
        source=job.source,
        label_source=job.label_source,
        model_version=job.model_version or bundle.version,
        model_metrics=bundle.metrics,
        feature_axis=[float(v) for v in axis],
        feature_axis_label=label,
        created_at=str(job.created_at)[:19],
        finished_at=str(utcnow())[:19],
        clips=clips,
        started_at=None if job.started_at is None else str(job.started_at)[:19],
        feature_kind=bundle.features.kind,
        gradcam_layer=bundle.gradcam_layer,
        window_s=bundle.features.window_s,
        evidence=_evidence(clf, job, clips),
    )


def _final_state(job: Job, clips: list[dict]) -> str:
    """The state finalize is about to set (the report is written first)."""
    if job.cancel_requested:
        return "cancelled"
    return "done_with_errors" if any(c["error"] for c in clips) else "done"


def _evidence(clf: Classifier, job: Job, clips: list[dict]) -> JobEvidence:
    """Mean maps, explained examples and the deletion check; a failure here costs those sections, not the report."""
    try:
        return collect_evidence(clf, Path(job.input_dir), Path(job.input_dir).parent / "cams", clips)
    except (OSError, RuntimeError, ValueError):
        log.exception("job %s: report evidence failed; the report goes without it", job.id)
        return JobEvidence()
