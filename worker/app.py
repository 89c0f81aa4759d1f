"""The Celery app, built from settings by the composition root (never at import).

Tasks only say how to run an action as a task; the work is in
:mod:`worker.jobs`. Messages are doorbells: the job table is the truth, and
each worker's heartbeat thread sweeps for chunks whose message was lost.
"""
from __future__ import annotations

import importlib
import logging
import os
import socket
import threading
from typing import TYPE_CHECKING

from celery import Celery, signals
from kombu import Queue
from celery.concurrency import prefork
from kombu.transport import filesystem
from sqlalchemy.exc import InterfaceError, OperationalError

from db import jobs as repo
from voicegender.settings import Settings
from worker.beat import beat_schedule, beat_schedule_file
from worker.names import CLASSIFY_CHUNK, FINALIZE_JOB, PROCESS_JOB, RETRAIN, SWEEP, TRAINING_QUEUE

if TYPE_CHECKING:
    from worker.runtime import Runtime

log = logging.getLogger(__name__)
__all__ = ["CLASSIFY_CHUNK", "FINALIZE_JOB", "PROCESS_JOB", "RETRAIN", "SWEEP", "create_celery"]


def create_celery(settings: Settings) -> Celery:
    """A configured app with its tasks registered."""
    app = Celery("voicegender")
    app.conf.update(_celery_config(settings))
    app.voicegender_settings = settings
    _register_tasks(app)
    return app


def _celery_config(settings: Settings) -> dict:
    longest_task_s = settings.task_time_limit_s
    conf = {
        "broker_url": settings.broker,
        "result_backend": settings.result_backend,
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_time_limit": longest_task_s,
        "task_soft_time_limit": longest_task_s - 30,
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
        # Redis redelivers an unacknowledged task after this; above the longest task.
        "broker_transport_options": {"visibility_timeout": 2 * longest_task_s},
        # Retrains on their own queue, which every worker also consumes by default.
        "task_queues": (Queue("celery", routing_key="celery"), Queue(TRAINING_QUEUE, routing_key=TRAINING_QUEUE)),
        "task_routes": {RETRAIN: {"queue": TRAINING_QUEUE}},
        "beat_schedule": beat_schedule(settings),
        "beat_schedule_filename": beat_schedule_file(settings),
        "timezone": "UTC",
    }
    if settings.broker.startswith("filesystem://"):
        folder = settings.broker_folder
        for sub in ("queue", "processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        conf["broker_transport_options"] = {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            "control_folder": str(folder / "control"),
        }
        # Set on the class: kombu's virtual transport crashes the worker when
        # polling_interval comes through transport options for this transport.
        filesystem.Transport.polling_interval = settings.poll_interval_s
    return conf


_runtimes: dict[int, Runtime] = {}


def runtime(app: Celery) -> Runtime:
    """This process's runtime, created on first use; keyed by pid so a forked
    child never shares its parent's database connections."""
    from worker.runtime import Runtime  # the model code: see import_task_code

    pid = os.getpid()
    if pid not in _runtimes:
        _runtimes.clear()
        _runtimes[pid] = Runtime.create(app.voicegender_settings)
    return _runtimes[pid]


# A database briefly down or locked past its busy timeout: the task retries after
# 1, 2, 4 ... up to 30 s (jittered, so workers do not return in step) instead of
# failing; a task that gives up is still found again by the sweep.
DB_RETRY = {
    "autoretry_for": (OperationalError, InterfaceError),
    "retry_backoff": 1, "retry_backoff_max": 30, "retry_jitter": True, "max_retries": 10,
}


def import_task_code() -> None:
    """Import what the tasks run (torch, the model code).

    Not at module import: the API and the CLI build this Celery app only to
    send tasks. A worker calls this before its pool forks, so the children
    share the imported code instead of each importing it on its first task.
    """
    for name in ("worker.jobs", "worker.retrain"):
        importlib.import_module(name)


def _register_tasks(app: Celery) -> None:
    # Each body imports what it runs when called (see import_task_code).
    @app.task(name=PROCESS_JOB, **DB_RETRY)
    def process_job(job_id: str) -> None:
        from worker import jobs

        indices = jobs.start_job(runtime(app), job_id)
        enqueue_chunks(app, job_id, indices)

    @app.task(name=CLASSIFY_CHUNK, **DB_RETRY)
    def classify_chunk(job_id: str, index: int) -> None:
        from worker import jobs

        if jobs.run_chunk(runtime(app), job_id, index):
            app.send_task(FINALIZE_JOB, args=[job_id])

    @app.task(name=FINALIZE_JOB, **DB_RETRY)
    def finalize_job(job_id: str) -> None:
        from worker import jobs

        jobs.finalize(runtime(app), job_id)

    @app.task(name=SWEEP)
    def sweep() -> int:
        return run_sweep(app)

    # A retrain outlives the visibility timeout; a redelivered copy finds its run claimed and stops.
    limit_s = app.voicegender_settings.retrain_time_limit_s

    @app.task(name=RETRAIN, time_limit=limit_s, soft_time_limit=limit_s - 60)
    def retrain_model(run_id: int | None = None, overrides: dict | None = None) -> None:
        from worker import retrain

        retrain.retrain_task(runtime(app), run_id, overrides=overrides)


def enqueue_chunks(app: Celery, job_id: str, indices: list[int]) -> None:
    """Record the enqueue time first, so the sweep measures its deadline from now."""
    if not indices:
        app.send_task(FINALIZE_JOB, args=[job_id])
        return
    with runtime(app).sessions() as s:
        repo.mark_chunks_enqueued(s, job_id, indices)
    for index in indices:
        app.send_task(CLASSIFY_CHUNK, args=[job_id, index])


def run_sweep(app: Celery) -> int:
    from worker import jobs, retrain

    retrain.expire_stale_runs(runtime(app))  # frees the retrain lock of a dead worker
    return jobs.sweep(
        runtime(app),
        enqueue=lambda job_id, index: app.send_task(CLASSIFY_CHUNK, args=[job_id, index]),
        finalize_later=lambda job_id: app.send_task(FINALIZE_JOB, args=[job_id]),
    )


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Heartbeat(threading.Thread):
    """Writes this worker's heartbeat and runs the sweep, in the worker's main process."""

    def __init__(self, app: Celery) -> None:
        super().__init__(name="voicegender-heartbeat", daemon=True)
        self.app = app
        self.stopped = threading.Event()

    def run(self) -> None:
        from worker.runtime import Runtime

        settings = self.app.voicegender_settings
        rt = Runtime(settings=settings, sessions=runtime(self.app).sessions)
        since_sweep = settings.sweep_interval_s  # sweep at start-up
        while not self.stopped.is_set():
            try:
                with rt.sessions() as s:
                    repo.beat(s, worker_name())
                if since_sweep >= settings.sweep_interval_s:
                    run_sweep(self.app)
                    since_sweep = 0.0
            except Exception:  # a database hiccup must not kill the heartbeat
                log.exception("heartbeat/sweep failed; retrying")
            self.stopped.wait(settings.heartbeat_s)
            since_sweep += settings.heartbeat_s


def preload_model(app: Celery) -> None:
    """Load and warm the model before the first task, so a small job does not wait for it.

    In the worker's own thread: the GradCAM hooks and flags it sets are
    model-wide, so a background warm-up could collide with a task's (the
    report's evidence uses the same model).
    """
    try:
        runtime(app).warm_up()
    except Exception:  # the first chunk loads it again and reports the error on its clips
        log.exception("model preload failed")


def install_worker_signals(app: Celery) -> None:
    """Start the heartbeat when the worker is ready; forget it at shutdown."""
    holder: dict[str, Heartbeat] = {}

    @signals.worker_ready.connect(weak=False)
    def _ready(sender=None, **_kwargs) -> None:
        holder["hb"] = Heartbeat(app)
        holder["hb"].start()
        # Solo/threads pool: tasks run in this process. Prefork children load
        # lazily: worker_process_init allows 4 s, too little for a warm-up.
        if not isinstance(getattr(sender, "pool", None), prefork.TaskPool):
            preload_model(app)

    @signals.worker_shutdown.connect(weak=False)
    def _shutdown(**_kwargs) -> None:
        if "hb" in holder:
            holder["hb"].stopped.set()
        with runtime(app).sessions() as s:
            repo.forget_worker(s, worker_name())
