"""The experiment config: every package's config composed, stored as YAML in conf/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    SerializationInfo,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

from core.config.base import FrozenModel
from core.config.env import ExecutionConfig
from core.config.features import FeaturesConfig
from core.config.ingest import IngestConfig
from core.config.live import LiveConfig
from core.config.registry import RegistryConfig
from core.config.storage import StorageConfig
from core.config.training import EvaluationConfig, SweepConfig
from core.fees import DEFAULT_FEES, FeeConfig, merge_override, split_instrument_fees
from core.hashing import fingerprint
from core.schema import feature_names, mirror_of


class ExperimentConfig(FrozenModel):
    """Every package's config. `fees` (core.fees.FeeConfig) is the one place the fee the
    account pays is set, and `execution` (core.config.env.ExecutionConfig) the one place
    its orders' fill model and latencies are: every trial's env takes both (copied into
    `env.fees` and the env's fill_model, power_prob_n and latencies)."""

    name: str = "default"
    ingest: IngestConfig = IngestConfig()
    fees: FeeConfig = DEFAULT_FEES
    execution: ExecutionConfig = ExecutionConfig()
    features: FeaturesConfig = FeaturesConfig()
    sweep: SweepConfig = SweepConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    registry: RegistryConfig = RegistryConfig()
    live: LiveConfig = LiveConfig()
    # where slices and stats live beyond the local folder (core.config.storage); None:
    # the local data folder only. Not part of the fingerprint (it says where, not what).
    storage: StorageConfig | None = None

    @model_serializer(mode="wrap")
    def _without_absent_storage(
        self, handler: SerializerFunctionWrapHandler, info: SerializationInfo
    ) -> Any:
        """A config without `storage` dumps exactly as before the field existed (the same
        JSON, YAML and fingerprint)."""
        data = handler(self)
        if self.storage is None and isinstance(data, dict):
            data.pop("storage", None)
        return data

    @model_validator(mode="before")
    @classmethod
    def _env_instrument_and_fees_from_the_experiment(cls, data: Any) -> Any:
        """Every trial's env uses the tick size of the data it trades and charges the
        experiment's fee: a trial that does not set `env.instrument` inherits
        `ingest.instrument`, and its `env.fees` is `fees`. A fee still given the old way,
        `ingest.instrument.maker_fee` / `taker_fee`, is a constant override of that side,
        moved into `fees` (core.fees.split_instrument_fees)."""
        if not isinstance(data, dict):
            return data
        ingest = data.get("ingest")
        inst = ingest.get("instrument") if isinstance(ingest, dict) else None
        fees = data.get("fees")
        execution = ExecutionConfig.model_validate(data.get("execution") or {}).model_dump()
        if isinstance(ingest, dict) and inst is not None:
            inst, override = split_instrument_fees(inst)
            if override:
                fees = merge_override(fees, override, "ingest.instrument")
                data = {**data, "ingest": {**ingest, "instrument": inst}, "fees": fees}
        sweep = dict(data.get("sweep") or {})
        default = SweepConfig.model_fields["trials"].default
        trials = sweep.get("trials", [t.model_dump(exclude_unset=True) for t in default])
        if not all(isinstance(t, dict) for t in trials):
            return data
        new_trials = []
        for t in trials:
            env = t.get("env")
            if env is not None and not isinstance(env, dict):
                new_trials.append(t)  # an EnvConfig instance: checked after validation
                continue
            env = dict(env or {})
            if inst is not None:
                env.setdefault("instrument", inst)
            if fees is not None:
                env.setdefault("fees", fees)
            for key, value in execution.items():
                env.setdefault(key, value)
            new_trials.append({**t, "env": env})
        return {**data, "sweep": {**sweep, "trials": new_trials}}

    @model_validator(mode="after")
    def _env_instrument_matches_ingest(self) -> ExperimentConfig:
        for trial in self.sweep.trials:
            if trial.env.instrument != self.ingest.instrument:
                raise ValueError(
                    f"trial {trial.name!r}: env.instrument {trial.env.instrument!r} differs from "
                    f"ingest.instrument {self.ingest.instrument!r}; the env must use the tick "
                    "size of the data it trades"
                )
            if trial.env.fees != self.fees:
                raise ValueError(
                    f"trial {trial.name!r}: env.fees ({trial.env.fees.describe()}) differs from "
                    f"fees ({self.fees.describe()}); the fee is the account's: set it once, "
                    "under the top-level `fees`"
                )
            for key, value in self.execution.model_dump().items():
                if getattr(trial.env, key) != value:
                    raise ValueError(
                        f"trial {trial.name!r}: env.{key}={getattr(trial.env, key)!r} differs "
                        f"from execution.{key}={value!r}; the gates judge every candidate "
                        "under one execution: set it once, under the top-level `execution`"
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

    @model_validator(mode="after")
    def _mirror_knows_every_feature(self) -> ExperimentConfig:
        mirrored = [t.name for t in self.sweep.trials if t.mirror]
        if mirrored:
            for name in feature_names(self.features.spec):
                try:
                    mirror_of(name)
                except ValueError:
                    raise ValueError(
                        f"trial {mirrored[0]!r}: mirror needs every feature's mirror image, "
                        f"and {name!r} has none (core.schema.mirror_of)"
                    ) from None
        return self

    def with_funding_table(self, path: str) -> ExperimentConfig:
        """This config with funding on, settled from the funding table at `path`
        (`ingest.funding`), in every trial whose env does not say `funding` itself: funding
        is on by default when the data has its history (#17). The flows call it when the
        data folder holds the symbol's table; a trial that set `funding: false` keeps it
        off."""
        trials = tuple(
            t
            if "funding" in t.env.model_fields_set
            else t.model_copy(
                update={
                    "env": t.env.model_copy(update={"funding": True, "funding_rates_path": path})
                }
            )
            for t in self.sweep.trials
        )
        return self.model_copy(update={"sweep": self.sweep.model_copy(update={"trials": trials})})

    @property
    def fingerprint(self) -> str:
        """sha256 of the canonical JSON of the research config; `storage` (where the data
        lives, not what it is) is left out."""
        return fingerprint(self.model_dump(mode="json", exclude={"storage"}))


def load_config(path: str | Path) -> ExperimentConfig:
    """Parse a YAML experiment config; unknown keys are an error naming the key."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    return ExperimentConfig.model_validate(data)
