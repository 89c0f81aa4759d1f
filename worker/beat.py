"""The Celery beat schedule, built from settings: the retrain cron entry, when one is set.

Exactly one ``voicegender beat`` runs per deployment (one service in
docker-compose.yml). Should a second one run anyway, the retrain lock in the
database refuses its retrain: a schedule can never run two at once.
"""
from __future__ import annotations

from celery.schedules import crontab

from voicegender.settings import Settings
from worker.names import RETRAIN

RETRAIN_ENTRY = "retrain"


def beat_schedule(settings: Settings) -> dict[str, dict]:
    """``{}`` unless ``VOICEGENDER_RETRAIN_CRON`` is set (minute hour day-of-month month day-of-week, UTC)."""
    if not settings.retrain_cron:
        return {}
    return {RETRAIN_ENTRY: {"task": RETRAIN, "schedule": crontab.from_string(settings.retrain_cron), "kwargs": {"run_id": None}}}


def beat_schedule_file(settings: Settings) -> str:
    """Where beat keeps its last-run times (in the data directory, which survives restarts)."""
    return str(settings.data_dir / "celerybeat-schedule")
