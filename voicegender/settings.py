"""One settings object, read from ``VOICEGENDER_*`` environment variables.

Defaults work on a laptop with nothing installed: SQLite and a filesystem
broker under the data directory. Point ``VOICEGENDER_BROKER_URL`` at Redis
and ``VOICEGENDER_DATABASE_URL`` at PostgreSQL for a real deployment.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from classifier.audio import InferenceFill, ShortFill

REPO_ROOT = Path(__file__).resolve().parents[1]
STARTER_MODEL = REPO_ROOT / "models" / "starter.pt"
DEFAULT_TOKENS = {"", "changeme", "change-me", "secret", "token"}


class Settings(BaseSettings):
    # hide_input_in_errors: a refused setting's error must not echo the others (a token, a database password).
    model_config = SettingsConfigDict(env_prefix="VOICEGENDER_", hide_input_in_errors=True)

    mode: Literal["development", "production"] = "development"
    data_dir: Path = Path.home() / ".local" / "share" / "voicegender"
    database_url: str | None = None  # default: SQLite in data_dir
    broker_url: str | None = None  # default: filesystem broker in data_dir
    result_backend: str | None = None  # tasks keep no results; the job table is the truth
    model_path: Path = STARTER_MODEL
    # Windows per forward + GradCAM: 32 holds a worker's activations to ~200 MB (64: ~400 MB) for ~4 % less speed.
    batch_windows: int = 32
    max_duration_s: float = 1200.0
    torch_threads: int | None = None
    # Workers are batch work: niced, so on a shared host the API's answers
    # (clients poll job status) come before the next chunk. 0 turns it off.
    worker_nice: int = Field(default=5, ge=0, le=19)
    device: str = "cpu"  # where workers run the model: "cpu", "cuda", "cuda:1"
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 autocast on CUDA with bf16 and CPUs with AMX; also governs training
    chunk_size: int = 64
    chunk_deadline_s: float = 300.0  # a pending chunk not finished by then is enqueued again
    sweep_interval_s: float = 30.0
    heartbeat_s: float = 5.0
    task_time_limit_s: int = 1800
    poll_interval_s: float = 0.02  # server-less broker polling
    api_token: str | None = None
    allowed_root: Path | None = None  # server-side folder submissions only below this
    max_upload_bytes: int = 2 * 1024**3
    max_files: int = 100_000
    # Retraining (issue 5): sources joined by os.pathsep (AudioMNIST folders, manifest .csv, female/ male/ folders).
    training_sources: str = ""
    retrain_cron: str | None = None  # e.g. "0 3 * * 0" (minute hour day-of-month month day-of-week); off when unset
    retrain_include_jobs: bool = True  # clips of finished jobs whose labels came from the user
    retrain_features: Literal["logmel", "mfcc"] = "logmel"
    retrain_steps: int = 3000
    retrain_batch_size: int = 64
    retrain_eval_every: int = 500
    # A killed retrain's state is kept this often; the next retrain of the same data and options goes on from it.
    retrain_save_every: int = Field(100, ge=1)
    retrain_lr: float = 2e-3
    retrain_augment: bool = True
    # The shipped model's recipe (models/MODEL_CARD.md), so a scheduled candidate is trained as the model it may replace.
    retrain_pitch_shift: float = Field(0.4, ge=0.0, le=1.0)  # share of crops pitch-shifted, formants kept
    retrain_pitch_both_ways: bool = True
    retrain_spec_mask: float = Field(0.5, ge=0.0, le=1.0)  # share of crops with bands and stretches of their features hidden
    retrain_low_shelf: float = Field(0.0, ge=0.0, le=1.0)  # share of crops with the level below 150-500 Hz moved
    retrain_codec: float = Field(0.0, ge=0.0, le=1.0)  # share of crops through a real speech codec (GSM, ADPCM, Opus, MP3)
    retrain_band_norm: Literal["none", "lows", "all"] = "none"  # FeatureConfig.band_norm of the candidate's features
    retrain_short_fill: ShortFill = "zeros"  # FeatureConfig.short_fill: how clips under 1 s fill a window
    # FeatureConfig.wideband_short_fill: the same for a file with sound above the model's band (studio audio), as in the shipped model;
    # set, it also cuts the silence around a short utterance in such a file (FeatureConfig.wideband_trim_edges)
    retrain_wideband_short_fill: InferenceFill | None = "trim+loop"
    retrain_fmin: float = Field(300.0, ge=0.0, lt=3000.0)  # log-mel's lowest band edge, Hz, as in the shipped model (ignored for mfcc)
    retrain_seed: int = 0
    retrain_val_fraction: float = 0.15  # of the non-held-out speakers: learning curve and calibration
    retrain_held_out_fraction: float = 0.15  # speakers held out once, then fixed for every retrain
    retrain_margin: float = 0.01  # promote when candidate balanced accuracy >= active's - margin
    retrain_stale_s: float = 60.0  # a claimed retrain without a heartbeat this long is failed
    retrain_time_limit_s: int = 12 * 3600

    @field_validator("retrain_cron")
    @classmethod
    def _check_cron(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if len(value.split()) != 5:
            raise ValueError(f"VOICEGENDER_RETRAIN_CRON must have 5 fields (minute hour day-of-month month day-of-week), got {value!r}")
        return value.strip()

    @model_validator(mode="after")
    def _refuse_default_secrets(self) -> "Settings":
        if self.mode == "production" and (self.api_token or "").strip().lower() in DEFAULT_TOKENS:
            raise ValueError("VOICEGENDER_API_TOKEN must be set to a real secret when VOICEGENDER_MODE=production")
        return self

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'voicegender.db'}"

    @property
    def broker(self) -> str:
        # A host name, though the filesystem transport ignores it: without one kombu warns on every connection.
        return self.broker_url or "filesystem://localhost/"

    @property
    def broker_folder(self) -> Path:
        return self.data_dir / "broker"

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"

    @property
    def models_dir(self) -> Path:
        """Retrained candidates, one folder per version (checkpoint, metrics, split, report)."""
        return self.data_dir / "models"

    @property
    def training_source_paths(self) -> list[Path]:
        return [Path(p) for p in self.training_sources.split(os.pathsep) if p.strip()]
