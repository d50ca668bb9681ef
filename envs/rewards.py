"""Shaped reward of the ManagementEnv (pure ring). Spec version: `RewardConfig.version`.

Every term is a fraction of the balance at the start of the step, so terms add up and
do not depend on the account size. Penalties are multiplied by the curriculum's
punishment scale, which a training callback drives through `env.set_punishment_scale`.

Terms (r1):
- unrealized = unrealized_scale * unrealised return of the open lots * |exposure|
  (the unrealised %, as a fraction, scaled by the position size: a level, paid again
  every step a position stays open)
- realized   = realized_scale * pnl realised this step / balance
- fees       = -fee_scale * fees paid this step / balance (a maker rebate is positive)
- funding    = -funding_scale * funding paid this step / balance
- open_penalty   = -open_position_penalty * scale while the stake-weighted mean age of
  the open lots exceeds open_position_hours
- close_penalty  = -close_position_penalty * scale while flat for longer than
  close_position_hours
- terminal_penalty = -terminal_penalty * scale * |exposure| at the end of an episode
  (terminated or truncated) while holding

Spec r2 differs in one term, marked to market:
- unrealized = unrealized_scale * change of the unrealised pnl over the step / balance
  With unrealized_scale = realized_scale = fee_scale = funding_scale = s and no
  penalties, the total is s * (the step's change of equity) / balance: the reward sums
  to the episode's pnl, so a policy is paid for what the backtest scores and nothing else.
  With `detrend`, the term also gives back what the slice's average drift paid the
  position over the step (signed exposure x mean log return per bar x bars): a training
  slice that rose all day then does not teach "be long", only timing (the backtest and the
  gates score the true equity either way).
"""

from __future__ import annotations

import numpy as np

from core.config.env import RewardConfig
from envs import kernels as K

# reward spec versions this module implements; a config naming another is refused
SUPPORTED_VERSIONS: tuple[str, ...] = ("r1", "r2")

TERM_NAMES: tuple[str, ...] = (
    "unrealized",
    "realized",
    "fees",
    "funding",
    "open_penalty",
    "close_penalty",
    "terminal_penalty",
)

ZERO_TERMS: dict[str, float] = {**dict.fromkeys(TERM_NAMES, 0.0), "total": 0.0}


def check_version(cfg: RewardConfig) -> None:
    """Raise ValueError when `cfg.version` is not implemented here (a model trained under
    another reward spec must not be silently evaluated under this one)."""
    if cfg.version not in SUPPORTED_VERSIONS:
        raise ValueError(
            f"reward spec version {cfg.version!r} is not implemented (supported: {SUPPORTED_VERSIONS})"
        )


def punishment_scale(cycle: int, cfg: RewardConfig) -> float:
    """Penalty multiplier at curriculum `cycle` (0, 1, 2, ...): starts at
    `punishment_scaling * (1 - punishment_suppression_rate)` and rises linearly to
    `punishment_scaling` after `punishment_suppression_cycles` cycles (0 cycles: full
    penalties at once). Raises ValueError on a negative cycle."""
    if cycle < 0:
        raise ValueError(f"cycle must be >= 0, got {cycle}")
    n = cfg.punishment_suppression_cycles
    remaining = 0.0 if n == 0 else max(0.0, 1.0 - cycle / n)
    return cfg.punishment_scaling * (1.0 - cfg.punishment_suppression_rate * remaining)


def reward_terms(
    cfg: RewardConfig,
    *,
    balance: float,
    exposure: float,
    unrealized_return: float,
    realized_pnl: float,
    fees: float,
    funding: float,
    avg_open_hours: float,
    hours_since_close: float,
    episode_end: bool,
    scale: float,
    unrealized_change: float = 0.0,
    drift: float = 0.0,
) -> dict[str, float]:
    """The reward terms of one step (see module docstring) and their sum under "total".

    balance: settle currency at the start of the step (> 0); exposure: sum of the open
    stakes (>= 0, 0 = flat); unrealized_return: unrealised pnl / entry value of the open
    lots; realized_pnl, fees, funding: settle-currency amounts of this step (fees and
    funding positive = paid); hours: management-state values; scale: punishment scale;
    unrealized_change: the unrealised pnl's change over the step (read under spec r2);
    drift: what the slice's average drift paid the position over the step (r2 with detrend).
    """
    if not balance > 0:
        raise ValueError(f"balance must be > 0, got {balance}")
    terms = K.reward_terms(
        reward_params(cfg)[0], float(balance), float(exposure), float(unrealized_return),
        float(realized_pnl), float(fees), float(funding), float(avg_open_hours),
        float(hours_since_close), bool(episode_end), float(scale), float(unrealized_change),
        float(drift),
    )  # fmt: skip
    return dict(zip((*TERM_NAMES, "total"), terms, strict=True))


def reward_params(cfg: RewardConfig) -> np.ndarray:
    """The reward constants of `cfg` as the kernels read them: a 1-row
    `envs.kernels.REWARD_DTYPE` array."""
    out = np.zeros(1, K.REWARD_DTYPE)
    out["unrealized_scale"] = cfg.unrealized_scale
    out["realized_scale"] = cfg.realized_scale
    out["fee_scale"] = cfg.fee_scale
    out["funding_scale"] = cfg.funding_scale
    out["open_position_hours"] = cfg.open_position_hours
    out["open_position_penalty"] = cfg.open_position_penalty
    out["close_position_hours"] = cfg.close_position_hours
    out["close_position_penalty"] = cfg.close_position_penalty
    out["terminal_penalty"] = cfg.terminal_penalty
    out["mark_to_market"] = cfg.version == "r2"
    out["detrend"] = 1.0 if cfg.detrend else 0.0
    return out
