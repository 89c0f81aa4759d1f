"""Per-process resources of a worker: database sessions and the cached model.

Built lazily in each worker process on its first task (after the fork, and
outside ``worker_process_init``'s 4 s limit). The model is the registry's
active version, looked up for every chunk (one indexed row) and loaded once
per version, so a promotion is picked up at the next chunk without a restart.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from sqlalchemy.orm import Session, sessionmaker

from classifier.errors import InvalidCheckpoint
from classifier.model import ModelBundle, load_checkpoint
from classifier.pipeline import Classifier, use_bf16
from db.session import create_db_engine, make_session_factory
from training.registration import adopt_updated_default, ensure_active_model
from voicegender.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    sessions: sessionmaker[Session]
    _models: dict[str, ModelBundle] = field(default_factory=dict)
    _classifier: Classifier | None = None
    # Tasks of a threads pool may ask for the classifier at once.
    _lock: threading.RLock = field(default_factory=threading.RLock)

    @classmethod
    def create(cls, settings: Settings) -> "Runtime":
        # One torch thread per worker process: two lost 2.5x throughput here
        # as soon as anything else used a core.
        torch.set_num_threads(settings.torch_threads or 1)
        return cls(settings=settings, sessions=make_session_factory(create_db_engine(settings.db_url)))

    def model(self) -> ModelBundle:
        """The active model (the configured checkpoint while the registry is empty), loaded once per version."""
        with self.sessions() as s:
            row = ensure_active_model(s, Path(self.settings.model_path))
            version, path, sha256 = row.version, row.path, row.sha256
        if version not in self._models:
            bundle = load_checkpoint(path)
            if bundle.sha256 != sha256:
                with self.sessions() as s:
                    adopted = adopt_updated_default(s, active_version=version, active_path=path, bundle=bundle, default_path=Path(self.settings.model_path))
                if adopted is None:
                    raise InvalidCheckpoint(f"{path} changed since model {version} was registered (sha256 {bundle.sha256[:12]}, registered {sha256[:12]})")
                log.info("the default model file now holds %s (was %s): registered and made active", adopted.version, version)
                version = adopted.version
            self._models.clear()  # one model in memory per process
            self._models[version] = bundle
            log.info("loaded model %s from %s", version, path)
        return self._models[version]

    def classifier(self) -> Classifier:
        """A classifier of the current model, made once per model (its device and layout are set then)."""
        with self._lock:
            bundle = self.model()
            if self._classifier is None or self._classifier.bundle is not bundle:
                device = self.settings.device
                bf16 = use_bf16(self.settings.precision, device)
                self._classifier = Classifier(bundle, batch_windows=self.settings.batch_windows, explain=True, bf16=bf16, device=device, max_duration_s=self.settings.max_duration_s)
            return self._classifier

    def warm_up(self) -> None:
        """Load the model and score one silent batch, so a worker's first chunk pays no start-up.

        oneDNN builds its kernels on first use of each shape; a full batch
        here means the first real chunk runs at the steady-state rate.
        """
        # Held throughout: a thread asking for the classifier meanwhile waits
        # rather than running GradCAM hooks on the same model at once.
        with self._lock:
            torch.set_num_threads(self.settings.torch_threads or 1)  # per thread under OpenMP
            clf = self.classifier()
            clf.score_windows(np.zeros((clf.batch_windows, clf.bundle.features.window_samples), dtype=np.float32))
        log.info("warmed up: model %s on %s, bf16=%s", clf.bundle.version, clf.device, clf.bf16)
