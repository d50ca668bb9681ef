"""ManagementEnv and reward config (owned by envs/). Every constant has a documented default."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from core.config.base import FrozenModel


class RewardConfig(FrozenModel):
    """Shaped reward (envs/rewards.py). `version` is logged with every model."""

    version: str = "r1"
    unrealized_scale: float = 1.0  # weight of unrealised % scaled by position size
    fee_scale: float = 1.0  # weight of the fee term (rebates positive)
    realized_scale: float = 1.0  # weight of realised pnl % on closes
    open_position_hours: float = 2.0  # holding beyond this is penalised
    open_position_penalty: float = 0.001  # per step beyond the limit
    close_position_hours: float = 1.0  # staying flat beyond this is penalised
    close_position_penalty: float = 0.0005  # per step beyond the limit
    terminal_penalty: float = 0.01  # at episode end while holding
    punishment_suppression_rate: float = Field(0.5, ge=0, le=1)  # penalties start at (1-rate)
    punishment_suppression_cycles: int = Field(4, ge=0)  # curriculum steps to full penalties
    punishment_scaling: float = Field(1.0, ge=0)  # final penalty multiplier


class EnvConfig(FrozenModel):
    """ManagementEnv: stacked partial positions, maker orders, time-aware state."""

    window: int = Field(16, ge=1)  # feature rows in the observation (must equal FeatureSpec.window)
    stake_fraction: float = Field(0.1, gt=0, le=1)  # exposure added per fill
    max_exposure: float = Field(1.0, gt=0)  # cap on total exposure (fraction of equity)
    fill_model: Literal["trade_through", "touch"] = "trade_through"
    step_skip: int = Field(1, ge=1)  # bars per env step
    mean_steps_per_episode: int = Field(2048, ge=1)
    std_steps_per_episode: float = Field(0.0, ge=0)  # 0: fixed budget
    random_start: bool = True
    random_initial_position: bool = False
    initial_equity_xbt: float = Field(1.0, gt=0)
    obs_clip: float = Field(10.0, gt=0)  # normalised features are clipped to +-obs_clip
    funding: bool = False
    reward: RewardConfig = RewardConfig()
