"""PPO, sweep, evaluation and gate config (owned by training/)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from core.config.base import FrozenModel
from core.config.env import EnvConfig


class PPOConfig(FrozenModel):
    learning_rate: float = 3e-4
    n_steps: int = 1024
    batch_size: int = 256
    n_epochs: int = 5
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_range: float = 0.2
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    net_arch: tuple[int, ...] = (64, 64)
    activation: Literal["tanh", "relu"] = "tanh"


class TrialConfig(FrozenModel):
    """One point of the experiment grid: env + reward + PPO parameters."""

    name: str = "base"
    env: EnvConfig = EnvConfig()
    ppo: PPOConfig = PPOConfig()


class SweepConfig(FrozenModel):
    """Grid: trials x seeds x timesteps, over every walk-forward fold."""

    trials: tuple[TrialConfig, ...] = (TrialConfig(),)
    seeds: tuple[int, ...] = (0, 1)
    timesteps: tuple[int, ...] = (20_000,)
    executor: Literal["process", "dask", "sequential"] = "process"
    n_workers: int = Field(2, ge=1)
    dask_address: str | None = None  # e.g. tcp://127.0.0.1:8786; None: local cluster
    retries: int = Field(1, ge=0)


class GatesConfig(FrozenModel):
    """Thresholds of the promotion gates (training/gates.py has their definitions)."""

    min_pass_fraction: float = Field(0.5, ge=0, le=1)  # strictly more than this share of slices
    min_slice_return: float = 0.0  # a slice "passes" with total pnl above this (fraction)
    max_drawdown: float = Field(0.05, gt=0)  # cap on max drawdown of any test slice (fraction)
    min_seed_pass_fraction: float = Field(0.5, ge=0, le=1)  # seeds of the config that must pass
    max_pbo: float = Field(0.5, ge=0, le=1)  # PBO at or above a coin flip: overfit
    # Deflated Sharpe Ratio: probability that the true Sharpe is positive after deflating
    # for every trial; 0.95 is the threshold of Bailey & Lopez de Prado (2014).
    min_dsr: float = Field(0.95, ge=0, le=1)
    min_trades: int = Field(20, ge=0)  # fewer closed test trades in total: retest, not promote
    min_slices: int = Field(3, ge=1)  # fewer test slices: a "majority" means little; retest


SECONDS_PER_YEAR = 365 * 24 * 3600


class EvaluationConfig(FrozenModel):
    """Backtest evaluation. Returns (for Sharpe, PBO and DSR) are equity changes over
    `return_period_s`; Sharpe is annualised by sqrt(periods_per_year), which defaults to
    (and, when given, must equal) the number of return periods in a 365-day year."""

    gates: GatesConfig = GatesConfig()
    periods_per_year: float | None = None  # None: SECONDS_PER_YEAR / return_period_s
    return_period_s: float = Field(default=60.0, gt=0)  # equity sampled every this many seconds
    pbo_splits: int = Field(default=16, ge=2)  # CSCV blocks (even; fewer when too few periods)

    @model_validator(mode="after")
    def _annualisation_matches_period(self) -> EvaluationConfig:
        expected = SECONDS_PER_YEAR / self.return_period_s
        given = self.periods_per_year
        if given is not None and abs(given - expected) > 1e-6 * expected:
            raise ValueError(
                f"periods_per_year={given} does not match return_period_s="
                f"{self.return_period_s} (expected {expected:g})"
            )
        if self.pbo_splits % 2:
            raise ValueError(f"pbo_splits must be even, got {self.pbo_splits}")
        return self

    @property
    def annualisation(self) -> float:
        """Return periods per 365-day year (the Sharpe annualisation factor, squared)."""
        return SECONDS_PER_YEAR / self.return_period_s
