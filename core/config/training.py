"""PPO, sweep, evaluation and gate config (owned by training/)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from core.config.base import FrozenModel, omit_when
from core.config.env import EnvConfig


class PPOConfig(FrozenModel):
    """SB3 PPO's constructor arguments, plus `n_envs`: copies of the training env stepped
    together (SB3's DummyVecEnv, each copy seeded seed + i, so each starts its episodes
    elsewhere in the slice). As in SB3, `n_steps` is per env: a rollout holds
    n_steps x n_envs steps. One policy forward serves every copy, so more copies cost
    less CPU per step (8 copies: ~2.6x the steps per CPU second of one)."""

    learning_rate: float = 3e-4
    n_envs: int = Field(1, ge=1)
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

    _omit = omit_when(n_envs=1)  # one env, as before the field existed: not written


class TrialConfig(FrozenModel):
    """One point of the experiment grid: env + reward + PPO parameters, and how the
    trained policy is averaged (`training.averaging`): `ensemble` PPO members trained
    from the task's seed and the next ones (seed + 1000 k), their logits averaged; with
    `mirror`, each also averaged with its mirror image (buyers and sellers swapped), so
    the policy treats a market and its mirror image alike. Each member costs a training."""

    name: str = "base"
    env: EnvConfig = EnvConfig()
    ppo: PPOConfig = PPOConfig()
    ensemble: int = Field(1, ge=1)
    mirror: bool = False

    _omit = omit_when(ensemble=1, mirror=False)  # as before the fields existed: not written


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
    # beats_baselines: one-sided p-value of the paired test "candidate beats the best
    # baseline" must be strictly below this (training/gates.py states the test)
    max_baseline_p: float = Field(0.05, gt=0, le=1)
    # PBO over fewer distinct trial configs (seeds of one config are not distinct) says
    # nothing about selection: "not enough trials", decision retest
    min_pbo_configs: int = Field(4, ge=2)


class BaselinesConfig(FrozenModel):
    """The reference policies backtested beside every candidate (training/baselines.py)."""

    names: tuple[
        Literal["flat", "always_quote", "random", "imbalance_rule", "hold_long", "hold_short"],
        ...,
    ] = ("flat", "always_quote", "random", "imbalance_rule", "hold_long", "hold_short")
    random_seeds: tuple[int, ...] = (0, 1, 2, 3, 4)  # uniform random actions, one run each
    rule_feature: str = "imbalance_l1"  # the simple rule quotes the side this feature favours
    rule_threshold: float = Field(0.0, ge=0)  # |raw feature| above this to quote a side

    @model_validator(mode="after")
    def _enough_random_seeds(self) -> BaselinesConfig:
        if "random" in self.names and len(set(self.random_seeds)) < 5:
            raise ValueError(
                f"the random baseline needs at least 5 distinct seeds (mean and spread), "
                f"got {self.random_seeds}"
            )
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"baseline names repeat: {self.names}")
        return self


SECONDS_PER_YEAR = 365 * 24 * 3600
RETURN_PERIOD_S = 3600.0


class EvaluationConfig(FrozenModel):
    """Backtest evaluation. Returns (for Sharpe, PBO and DSR) are equity changes over
    `return_period_s`; Sharpe is annualised by sqrt(periods_per_year), which defaults to
    (and, when given, must equal) the number of return periods in a 365-day year."""

    gates: GatesConfig = GatesConfig()
    baselines: BaselinesConfig = BaselinesConfig()
    periods_per_year: float | None = None  # None: SECONDS_PER_YEAR / return_period_s
    # Non-overlapping return period of Sharpe, DSR, PBO and the paired baseline test.
    # 60 s returns of these policies are serially correlated (positions live for minutes
    # to hours), which inflates Sharpe and every test that assumes independent periods;
    # the default is where the measured autocorrelation is gone (BENCHMARKS.md,
    # "Return period").
    return_period_s: float = Field(default=RETURN_PERIOD_S, gt=0)
    pbo_splits: int = Field(default=16, ge=2)  # CSCV blocks (even; fewer when too few periods)
    # maker fees (fraction of notional; negative = rebate) at which every report re-scores
    # the candidate and every baseline from the same fills; taker fills keep the taker fee
    # below. BitMEX's 2021 rebate, zero, and a +2 bp maker fee.
    fee_sensitivity: tuple[float, ...] = (-0.00025, 0.0, 0.0002)
    fee_sensitivity_taker: float = 0.00075

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
