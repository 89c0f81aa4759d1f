"""Per-process resources of a worker: database sessions and the cached model.

Built lazily in each worker process on its first task (after the fork, and
outside ``worker_process_init``'s 4 s limit); the model is cached by path and
content hash, so a new checkpoint is picked up at the next chunk.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from sqlalchemy.orm import Session, sessionmaker

from classifier.model import ModelBundle, load_checkpoint
from classifier.pipeline import Classifier
from db.session import create_db_engine, make_session_factory
from voicegender.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    sessions: sessionmaker[Session]
    _models: dict[tuple[str, float], ModelBundle] = field(default_factory=dict)

    @classmethod
    def create(cls, settings: Settings) -> "Runtime":
        # One torch thread per worker process: two lost 2.5x throughput here
        # as soon as anything else used a core.
        torch.set_num_threads(settings.torch_threads or 1)
        return cls(settings=settings, sessions=make_session_factory(create_db_engine(settings.db_url)))

    def model(self) -> ModelBundle:
        """The configured checkpoint, loaded once per process and per file version."""
        path = Path(self.settings.model_path)
        key = (str(path.resolve()), path.stat().st_mtime)
        if key not in self._models:
            self._models.clear()
            self._models[key] = load_checkpoint(path)
            log.info("loaded model %s from %s", self._models[key].version, path)
        return self._models[key]

    def classifier(self) -> Classifier:
        return Classifier(self.model(), batch_windows=self.settings.batch_windows, explain=True)
