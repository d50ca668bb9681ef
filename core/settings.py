"""Settings: where things live and secrets. Read at entry points, never at import time,
never logged (secrets are SecretStr and the model's repr hides them)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.paths import DataLayout


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CHAPPIE_", extra="ignore")

    data_dir: Path = Path("./data")
    mlflow_tracking_uri: str | None = Field(
        None, validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "CHAPPIE_MLFLOW_TRACKING_URI")
    )
    bitmex_api_key: SecretStr | None = None
    bitmex_api_secret: SecretStr | None = None
    #: how long a command waits for another run to release the data folder (seconds;
    #: 0 = stop at once with one line naming the holder)
    lock_wait_s: float = Field(0.0, ge=0.0)

    @property
    def layout(self) -> DataLayout:
        return DataLayout(self.data_dir.resolve())

    @property
    def tracking_uri(self) -> str:
        """MLFLOW_TRACKING_URI, or SQLite inside the data folder."""
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{self.layout.mlflow_db}"


def load_settings() -> Settings:
    """Settings from the environment (CHAPPIE_*, MLFLOW_TRACKING_URI)."""
    return Settings()


def ensure_single_thread_math() -> None:
    """One BLAS/OpenMP/torch thread per process: PPO on 2 cores runs up to 2x slower with
    two torch threads per process. Call at the start of every training or inference
    process, before torch is imported."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, "1")
