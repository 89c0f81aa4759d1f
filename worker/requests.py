"""What the API and the CLI ask of the registry and the retrain lock.

Apart from :mod:`worker.retrain`, which runs a retrain, so that asking never
imports the model code (torch) into the API.
"""
from __future__ import annotations

from typing import Any

from db import registry
from db.schema import TrainingRun
from training.registration import ensure_active_model
from voicegender.settings import Settings


def request_retrain(sessions, settings: Settings, *, trigger: str) -> TrainingRun:
    """Take the retrain lock (raises :class:`db.registry.RetrainRunning` with who holds it)."""
    with sessions() as s:
        return registry.start_run(
            s, trigger=trigger, stale_after_s=settings.retrain_stale_s,
            # An unclaimed run waits behind at most one task per worker process on its own queue.
            unclaimed_after_s=settings.task_time_limit_s + 10 * settings.retrain_stale_s,
        )


def registry_models(sessions, settings: Settings) -> list[dict[str, Any]]:
    """Every registered version, newest first; an empty registry adopts the configured checkpoint first."""
    with sessions() as s:
        ensure_active_model(s, settings.model_path)  # InvalidCheckpoint when there is none to adopt
        return [registry.describe_model(m) for m in registry.list_models(s)]
