"""The experiment config: every package's config composed, stored as YAML in conf/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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

    @model_validator(mode="before")
    @classmethod
    def _env_instrument_from_ingest(cls, data: Any) -> Any:
        """Every trial's env charges the fees and uses the tick size of the data it trades:
        a trial that does not set `env.instrument` inherits `ingest.instrument`."""
        if not isinstance(data, dict):
            return data
        ingest = data.get("ingest")
        inst = ingest.get("instrument") if isinstance(ingest, dict) else None
        if inst is None:
            return data
        sweep = dict(data.get("sweep") or {})
        default = SweepConfig.model_fields["trials"].default
        trials = sweep.get("trials", [t.model_dump(exclude_unset=True) for t in default])
        if not all(isinstance(t, dict) for t in trials):
            return data
        new_trials = []
        for t in trials:
            env = dict(t.get("env") or {})
            env.setdefault("instrument", inst)
            new_trials.append({**t, "env": env})
        return {**data, "sweep": {**sweep, "trials": new_trials}}

    @model_validator(mode="after")
    def _env_instrument_matches_ingest(self) -> ExperimentConfig:
        for trial in self.sweep.trials:
            if trial.env.instrument != self.ingest.instrument:
                raise ValueError(
                    f"trial {trial.name!r}: env.instrument {trial.env.instrument!r} differs from "
                    f"ingest.instrument {self.ingest.instrument!r}; the env must charge the "
                    "fees and use the tick size of the data it trades"
                )
        return self

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
