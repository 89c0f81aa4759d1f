"""The composition root: settings -> database (migrated) -> registry -> sessions -> Celery app."""
from __future__ import annotations

import logging
from dataclasses import dataclass

from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from classifier.errors import InvalidCheckpoint
from db.migrate import upgrade_database
from db.session import create_db_engine, make_session_factory
from training.registration import ensure_active_model
from voicegender.settings import Settings
from worker.app import create_celery

log = logging.getLogger(__name__)

@dataclass
class Services:
    settings: Settings
    sessions: sessionmaker[Session]
    app: Celery


def build_services(settings: Settings) -> Services:
    """Everything a command or the API needs; migrations are applied at start-up."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade_database(settings.db_url)
    sessions = make_session_factory(create_db_engine(settings.db_url))
    with sessions() as s:
        try:
            ensure_active_model(s, settings.model_path)  # an empty registry adopts the configured checkpoint
        except InvalidCheckpoint as exc:  # the API still starts (health works); /models and chunks say why
            log.warning("no active model: %s", exc)
    return Services(settings=settings, sessions=sessions, app=create_celery(settings))
