"""Reference policies: what a trivial policy scores on the same slices by the same broker.

Every candidate is judged beside this panel (DESIGN.md "Evaluation beside baselines"):

- `flat`: never trades (always hold). Scores exactly 0 before funding: the floor.
- `always_quote`: keeps a maker order on both sides whenever the action space allows
  (toggle actions: one per step, the missing bid first, then the missing ask; target
  actions: "both" every step). It never
  looks at the market; it earns the spread and the maker rebate where the fee schedule
  pays one, and loses to adverse selection where fills are informed.
- `random`: uniform actions, one `numpy.random.Generator` per (seed, fold). Reported as
  the mean over `BaselinesConfig.random_seeds` with the spread across seeds.
- `imbalance_rule`: a simple rule that reads one feature: quote only the side that the
  named feature (default `imbalance_l1`, the level-1 queue imbalance) favours: a resting
  bid when it is above `rule_threshold`, a resting ask when below `-rule_threshold`,
  nothing otherwise; it cancels the disfavoured side first.
- `hold_long` / `hold_short`: keep a maker order on one side until the position is at its
  cap, then hold it: the market's drift over the slice, whichever way it went. A policy
  that only learnt its training slice's trend scores like one of these, not like skill.

A policy is a `training.backtest.BatchPolicy`: `(N, obs_dim) float32 -> (N,) actions`,
reading only the observation the agent sees (the order flags and position size are part of
the management state; see `envs.observation`). Pure apart from each policy's own explicit
random generator.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from core.config.training import BaselinesConfig
from core.schema import ACTION_NAMES, MANAGEMENT_STATE
from envs.management import ASK_ONLY, BID_ONLY, HOLD, TOGGLE_LONG, TOGGLE_SHORT
from training.backtest import BatchPolicy

FLAT, ALWAYS_QUOTE, RANDOM, IMBALANCE_RULE = "flat", "always_quote", "random", "imbalance_rule"
HOLD_LONG, HOLD_SHORT = "hold_long", "hold_short"
BASELINE_NAMES: tuple[str, ...] = (
    FLAT,
    ALWAYS_QUOTE,
    RANDOM,
    IMBALANCE_RULE,
    HOLD_LONG,
    HOLD_SHORT,
)

_LONG_STATE = MANAGEMENT_STATE.index("long_state")
_SHORT_STATE = MANAGEMENT_STATE.index("short_state")
_POSITION = MANAGEMENT_STATE.index("position_size")


@dataclass(frozen=True)
class ObservationLayout:
    """Where things sit in the flat observation: `window` rows of `feature_names`
    (oldest first), then the 7 management values; and how the env reads an action
    (`EnvConfig.action_mode`)."""

    feature_names: tuple[str, ...]
    window: int
    action_mode: str = "toggle"

    @property
    def state_start(self) -> int:
        return len(self.feature_names) * self.window

    def state(self, obs: np.ndarray, name_index: int) -> np.ndarray:
        return obs[:, self.state_start + name_index]

    def feature_column(self, feature: str) -> int:
        """Column of the named feature in the newest window row. Raises ValueError when
        the spec has no such feature."""
        if feature not in self.feature_names:
            raise ValueError(
                f"baseline feature {feature!r} is not in the FeatureSpec ({list(self.feature_names)})"
            )
        return (self.window - 1) * len(self.feature_names) + self.feature_names.index(feature)


def flat_policy() -> BatchPolicy:
    """Always hold."""

    def act(obs: np.ndarray) -> np.ndarray:
        return np.full(obs.shape[0], HOLD, dtype=np.int64)

    return act


def _quote_toward(
    want_long: np.ndarray, want_short: np.ndarray, obs: np.ndarray, layout: ObservationLayout
) -> np.ndarray:
    """One action per row moving the resting orders toward (want_long, want_short).
    Target actions name the wanted orders (1 bid, 2 ask, 3 both). Toggle actions:
    cancel an unwanted order first, then place a missing wanted one (long before short).
    A long order is not placed at the long cap (position size 1), nor a short at -1:
    the env would ignore it and the other side would never be placed."""
    if layout.action_mode == "target":
        return want_long.astype(np.int64) * BID_ONLY + want_short.astype(np.int64) * ASK_ONLY
    has_long = layout.state(obs, _LONG_STATE) > 0.5
    has_short = layout.state(obs, _SHORT_STATE) > 0.5
    pos = layout.state(obs, _POSITION)
    out = np.full(obs.shape[0], HOLD, dtype=np.int64)
    cancel_long = has_long & ~want_long
    cancel_short = has_short & ~want_short
    place_long = ~has_long & want_long & (pos < 1.0)
    place_short = ~has_short & want_short & (pos > -1.0)
    # later assignments win: cancelling comes before placing
    out[place_short] = TOGGLE_SHORT
    out[place_long] = TOGGLE_LONG
    out[cancel_short] = TOGGLE_SHORT
    out[cancel_long] = TOGGLE_LONG
    return out


def always_quote_policy(layout: ObservationLayout) -> BatchPolicy:
    """Keep a maker order on both sides (see the module docstring)."""

    def act(obs: np.ndarray) -> np.ndarray:
        yes = np.ones(obs.shape[0], dtype=bool)
        return _quote_toward(yes, yes, obs, layout)

    return act


def hold_policy(layout: ObservationLayout, side: int) -> BatchPolicy:
    """Build a position on one side (+1 long, -1 short) with maker orders, then hold it."""

    def act(obs: np.ndarray) -> np.ndarray:
        yes = np.ones(obs.shape[0], dtype=bool)
        return _quote_toward(yes if side > 0 else ~yes, ~yes if side > 0 else yes, obs, layout)

    return act


def random_policy(seed: int, fold: int, n_actions: int = 3) -> BatchPolicy:
    """Uniform actions from `numpy.random.default_rng([seed, fold])`: reproducible, and
    different folds do not replay the same sequence."""
    rng = np.random.default_rng([seed, fold])

    def act(obs: np.ndarray) -> np.ndarray:
        return np.asarray(rng.integers(0, n_actions, size=obs.shape[0], dtype=np.int64))

    return act


def imbalance_rule_policy(
    layout: ObservationLayout,
    feature: str,
    mean: float,
    sigma: float,
    threshold: float,
) -> BatchPolicy:
    """Quote the side the feature favours (module docstring). The observation holds the
    normalised value z = (x - mean) / sigma (clipped); the rule compares the raw value
    x = z * sigma + mean with +-threshold, so its meaning does not depend on the stats."""
    col = layout.feature_column(feature)

    def act(obs: np.ndarray) -> np.ndarray:
        x = obs[:, col].astype(np.float64) * sigma + mean
        return _quote_toward(x > threshold, x < -threshold, obs, layout)

    return act


PolicyForFold = Callable[[int], BatchPolicy]


def baseline_policy_for_fold(
    name: str,
    seed: int,
    layout: ObservationLayout,
    cfg: BaselinesConfig,
    stats_for_fold: Callable[[int], tuple[Sequence[str], np.ndarray, np.ndarray]],
) -> PolicyForFold:
    """`fold -> BatchPolicy` for one baseline (and random seed). `stats_for_fold(fold)`
    returns the fold's frozen stats as (feature names, mean, sigma); only the rule reads
    them. Raises ValueError on an unknown baseline name."""
    if name == FLAT:
        return lambda fold: flat_policy()
    if name == ALWAYS_QUOTE:
        return lambda fold: always_quote_policy(layout)
    if name in (HOLD_LONG, HOLD_SHORT):
        side = 1 if name == HOLD_LONG else -1
        return lambda fold: hold_policy(layout, side)
    if name == RANDOM:
        n_actions = len(ACTION_NAMES[layout.action_mode])
        return lambda fold: random_policy(seed, fold, n_actions)
    if name == IMBALANCE_RULE:

        def rule(fold: int) -> BatchPolicy:
            names, mean, sigma = stats_for_fold(fold)
            j = list(names).index(cfg.rule_feature) if cfg.rule_feature in names else None
            if j is None:
                raise ValueError(f"baseline feature {cfg.rule_feature!r} has no frozen stats")
            return imbalance_rule_policy(
                layout, cfg.rule_feature, float(mean[j]), float(sigma[j]), cfg.rule_threshold
            )

        return rule
    raise ValueError(f"unknown baseline {name!r}; known: {list(BASELINE_NAMES)}")


def baseline_runs(cfg: BaselinesConfig) -> list[tuple[str, int]]:
    """(name, seed) of every baseline backtest: one per deterministic baseline (seed 0),
    one per random seed."""
    out: list[tuple[str, int]] = []
    for name in cfg.names:
        if name == RANDOM:
            out += [(RANDOM, s) for s in cfg.random_seeds]
        else:
            out.append((name, 0))
    return out
