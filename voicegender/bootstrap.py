"""The composition root: settings -> database (migrated) -> sessions -> Celery app."""
from __future__ import annotations

from dataclasses import dataclass

from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from db.migrate import upgrade_database
from db.session import create_db_engine, make_session_factory
from voicegender.settings import Settings
from worker.app import create_celery


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
    return Services(settings=settings, sessions=sessions, app=create_celery(settings))
