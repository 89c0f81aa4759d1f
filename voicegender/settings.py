"""One settings object, read from ``VOICEGENDER_*`` environment variables."""
from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[1]
STARTER_MODEL = REPO_ROOT / "models" / "starter.pt"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VOICEGENDER_")

    data_dir: Path = Path.home() / ".local" / "share" / "voicegender"
    model_path: Path = STARTER_MODEL
    batch_windows: int = 64
    max_duration_s: float = 1200.0
    torch_threads: int | None = None
