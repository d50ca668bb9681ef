"""The experiment config: every package's config composed, stored as YAML in conf/."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import model_validator

from core.config.base import FrozenModel
from core.config.features import FeaturesConfig
from core.config.ingest import IngestConfig
from core.config.live import LiveConfig
from core.config.registry import RegistryConfig
from core.config.training import EvaluationConfig, SweepConfig
from core.hashing import fingerprint


class ExperimentConfig(FrozenModel):
    name: str = "default"
    ingest: IngestConfig = IngestConfig()
    features: FeaturesConfig = FeaturesConfig()
    sweep: SweepConfig = SweepConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    registry: RegistryConfig = RegistryConfig()
    live: LiveConfig = LiveConfig()

    @model_validator(mode="after")
    def _env_window_matches_spec(self) -> ExperimentConfig:
        for trial in self.sweep.trials:
            if trial.env.window != self.features.spec.window:
                raise ValueError(
                    f"trial {trial.name!r}: env.window={trial.env.window} differs from "
                    f"features.spec.window={self.features.spec.window}"
                )
        return self

    @property
    def fingerprint(self) -> str:
        return fingerprint(self)


def load_config(path: str | Path) -> ExperimentConfig:
    """Parse a YAML experiment config; unknown keys are an error naming the key."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    return ExperimentConfig.model_validate(data)
