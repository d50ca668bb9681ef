"""Feature, slice and validation config (owned by features/ and expectations/).

`FeatureSpec` is the observation contract, a versioned API: its `spec_hash` is stamped
on every slice, stats file, model version and live session.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, model_validator

from core.clock import NS_PER_MS, NS_PER_S
from core.config.base import FrozenModel
from core.hashing import fingerprint
from core.schema import feature_names


class FeatureSpec(FrozenModel):
    version: Literal["v1"] = "v1"
    interval_ms: int = Field(1000, gt=0)  # bar length
    depth: int = Field(10, ge=10)  # book levels sampled per side
    windows_s: tuple[int, ...] = (10, 60)  # trailing windows (t - W, t]
    return_horizons_s: tuple[int, ...] = (1, 10, 60)
    depth_bps: tuple[float, ...] = (10.0,)
    window: int = Field(16, ge=1)  # feature rows in one observation
    sigma_floor: float = Field(1e-8, gt=0)  # frozen sigma never below this

    @model_validator(mode="after")
    def _windows_make_distinct_columns(self) -> FeatureSpec:
        for field, values in (
            ("windows_s", self.windows_s),
            ("return_horizons_s", self.return_horizons_s),
            ("depth_bps", self.depth_bps),
        ):
            if not values:
                raise ValueError(f"{field} must not be empty")
            if any(v <= 0 for v in values):
                raise ValueError(f"{field} must be positive, got {list(values)}")
            if len(set(values)) != len(values):
                raise ValueError(
                    f"{field} has duplicates (feature columns would collide): {list(values)}"
                )
        return self

    @property
    def names(self) -> tuple[str, ...]:
        """Ordered feature columns (core.schema.feature_names)."""
        return tuple(feature_names(self))

    @property
    def interval_ns(self) -> int:
        return self.interval_ms * NS_PER_MS

    @property
    def lookback_bars(self) -> int:
        """Bars needed before a row's features are complete (longest window or horizon,
        plus the bar the oldest difference is taken against)."""
        longest_s = max((*self.windows_s, *self.return_horizons_s))
        return math.ceil(longest_s * NS_PER_S / self.interval_ns) + 1

    @property
    def lookback_ns(self) -> int:
        return self.lookback_bars * self.interval_ns

    @property
    def spec_hash(self) -> str:
        """sha256 of the canonical JSON of the spec and its ordered feature names."""
        return fingerprint({**self.model_dump(mode="json"), "names": list(self.names)})


class WalkForwardConfig(FrozenModel):
    """Walk-forward folds, in hours from the first event day's 00:00 UTC.

    Fold k: train [start + k*step (sliding) or start (expanding), +train) then an embargo,
    then test [.., +test). An optional validation window sits between train and test.
    """

    start_hours: float = Field(0.0, ge=0)
    train_hours: float = Field(24.0, gt=0)
    validation_hours: float = Field(0.0, ge=0)
    test_hours: float = Field(6.0, gt=0)
    step_hours: float = Field(6.0, gt=0)
    n_folds: int = Field(4, ge=1)
    embargo_s: float = Field(120.0, ge=0)
    mode: Literal["sliding", "expanding"] = "sliding"
    # extra evaluation windows (hours from start) reported separately, e.g. a stress day
    stress_windows: tuple[tuple[float, float], ...] = ()
    # a stretch this long without any book event or trade is a hole in the data (a
    # recorder outage, a day not captured), not a quiet market: a window that meets one
    # is refused, naming both; rows whose look-back reaches into one are warm-up (never
    # in a slice). 0 turns the check off.
    max_quiet_s: float = Field(300.0, ge=0)


class ExpectationsConfig(FrozenModel):
    """Integrity expectations refuse a slice; distribution drift against the frozen stats
    is measured and reported, never refused (expectations/suites.py)."""

    # drift report: share of normalised values beyond +-this (the observation clip)
    normalized_abs_max: float = Field(10.0, gt=0)
    # drift report: a feature is flagged when more than 1 - this share lies beyond the clip
    normalized_mostly: float = Field(0.99, ge=0, le=1)
    data_docs: bool = True


class FeaturesConfig(FrozenModel):
    spec: FeatureSpec = FeatureSpec()
    walk_forward: WalkForwardConfig = WalkForwardConfig()
    expectations: ExpectationsConfig = ExpectationsConfig()

    @model_validator(mode="after")
    def _embargo_covers_lookback(self) -> FeaturesConfig:
        need_s = self.spec.lookback_ns / NS_PER_S
        if self.walk_forward.embargo_s < need_s:
            raise ValueError(
                f"walk_forward.embargo_s={self.walk_forward.embargo_s} is shorter than the "
                f"longest feature look-back ({need_s:g} s)"
            )
        return self
