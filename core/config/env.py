"""ManagementEnv and reward config (owned by envs/). Every constant has a documented default."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from core.config.base import FrozenModel
from core.fees import DEFAULT_FEES, FeeConfig, merge_override, split_instrument_fees
from core.instrument import XBTUSD, InstrumentSpec


class RewardConfig(FrozenModel):
    """Shaped reward (envs/rewards.py). `version` is logged with every model.

    Every term is a fraction of the balance per env step (so terms add up), reported
    separately by the env's `last_reward_terms()` (and in `info["reward_terms"]` when the
    env is built with `reward_terms_in_info=True`). Penalties are multiplied by the
    curriculum's punishment scale (see `envs.rewards.punishment_scale`).
    """

    # r1: the unrealized term is the unrealised return x position size (a level);
    # r2: it is the step's change of the unrealised pnl / balance (marked to market)
    version: str = "r1"
    unrealized_scale: float = 1.0  # weight of the unrealized term (see version)
    # r2 only: take the training slice's average drift out of the unrealized term, so the
    # reward pays timing, not the slice's trend (envs/rewards.py)
    detrend: bool = False
    fee_scale: float = 1.0  # weight of -fees/balance paid this step (rebates positive)
    realized_scale: float = 1.0  # weight of realised pnl / balance on closes
    funding_scale: float = 1.0  # weight of -funding/balance paid this step
    open_position_hours: float = (
        2.0  # holding (stake-weighted mean lot age) beyond this is penalised
    )
    open_position_penalty: float = 0.001  # per step beyond the limit
    close_position_hours: float = 1.0  # staying flat beyond this is penalised
    close_position_penalty: float = 0.0005  # per step beyond the limit
    terminal_penalty: float = 0.01  # at episode end while holding, times |position size|
    punishment_suppression_rate: float = Field(
        default=0.5, ge=0, le=1
    )  # penalties start at (1-rate)
    # curriculum steps to full penalties
    punishment_suppression_cycles: int = Field(default=4, ge=0)
    punishment_scaling: float = Field(default=1.0, ge=0)  # final penalty multiplier


FillModel = Literal["touch", "trade_through", "risk_averse", "power_prob"]


class ExecutionConfig(FrozenModel):
    """How the experiment's orders fill (#17): the fill model and latencies every trial's
    env runs under, in training, in the backtest the gates judge and in paper trading
    (copied into each trial's `env`, as `fees` is). The experiment's default is the
    conservative one: risk_averse (an order joins the back of the queue at its price; only
    trades there advance it) and 50 ms each way. A bot in the exchange's cloud region sees
    single-digit ms (BitMEX in AWS Tokyo: "<10 millisecond order execution latency");
    50 ms leaves room for the engine's queue under load and a bot further away. Every
    report states it and adds the touch bound (`training.candidates`).

    EnvConfig's own defaults (trade_through, 0 ms) are the bare env's, for the env's
    hand-computed tests and envs built outside an experiment."""

    fill_model: FillModel = "risk_averse"
    power_prob_n: float = Field(default=2.0, gt=0)
    entry_latency_ms: float = Field(default=50.0, ge=0)
    cancel_latency_ms: float = Field(default=50.0, ge=0)


class EnvConfig(FrozenModel):
    """ManagementEnv: stacked partial positions, maker orders, time-aware state."""

    # feature rows in the observation (must equal FeatureSpec.window)
    window: int = Field(default=16, ge=1)
    stake_fraction: float = Field(default=0.1, gt=0, le=1)  # exposure added per fill
    max_exposure: float = Field(default=1.0, gt=0)  # cap on total exposure (fraction of equity)
    # toggle: Discrete(3), 0 hold, 1/2 place or cancel the bid/ask (envs.management);
    # target: Discrete(4), the resting orders wanted: 0 none, 1 bid, 2 ask, 3 both
    action_mode: Literal["toggle", "target"] = "toggle"
    # how a resting maker order fills (envs.broker, the bar-level rules of envs.queue's
    # models): touch (front of the queue), trade_through (only a trade through its price
    # or the opposite best reaching it), risk_averse (joins the back of the queue, which
    # only trades at its price advance), power_prob (as risk_averse, and cancellations
    # ahead advance it with Rigtorp's power-law probability, exponent power_prob_n)
    # (in an experiment these four come from its top-level `execution:`, ExecutionConfig)
    fill_model: FillModel = "trade_through"
    power_prob_n: float = Field(default=2.0, gt=0)  # PowerProbQueueFunc n (power_prob only)
    # an order sent at a bar's close reaches the exchange this much later (ms); a cancel
    # (toggle off, a side not wanted, the cancel half of a re-price) lands after
    # cancel_latency_ms, the order still able to fill until then
    entry_latency_ms: float = Field(default=0.0, ge=0)
    cancel_latency_ms: float = Field(default=0.0, ge=0)
    roll_orders: bool = True  # a resting order follows the best price of its side every bar
    step_skip: int = Field(default=1, ge=1)  # bars per env step
    mean_steps_per_episode: int = Field(default=2048, ge=1)
    std_steps_per_episode: float = Field(default=0.0, ge=0)  # 0: fixed budget
    min_steps_per_episode: int = Field(default=16, ge=1)  # floor of a drawn budget
    random_start: bool = True
    random_initial_position: bool = False
    # a random initial position holds 1..max_exposure/stake lots aged uniformly in [0, this]
    initial_position_max_hours: float = Field(default=4.0, ge=0)
    initial_equity_xbt: float = Field(default=1.0, gt=0)
    obs_clip: float = Field(default=10.0, gt=0)  # normalised features are clipped to +-obs_clip
    # management-state hours are clipped to [0, hours_clip]
    hours_clip: float = Field(default=24.0, gt=0)
    pct_clip: float = Field(default=100.0, gt=0)  # unrealised % is clipped to +-pct_clip
    funding: bool = False
    funding_rate: float = 0.0001  # per funding interval, positive = longs pay shorts
    # with funding on: the funding table (`chappie ingest funding`, ingest.funding; e.g.
    # <data>/funding/XBTUSD.parquet) whose rate each funding time in the slice settles at;
    # a funding time the table lacks settles at `funding_rate` (counted in the report).
    # None: every funding time settles at `funding_rate`
    funding_rates_path: str | None = None
    instrument: InstrumentSpec = XBTUSD  # inverse XBTUSD; frozen, so sharing is safe
    # the fee charged on every fill, by the date of its bar (core.fees); in an experiment
    # it is the top-level `fees:`, copied here (one place to set it)
    fees: FeeConfig = DEFAULT_FEES
    reward: RewardConfig = RewardConfig()

    @model_validator(mode="before")
    @classmethod
    def _instrument_fees_are_an_override(cls, data: Any) -> Any:
        """`instrument.maker_fee` / `taker_fee` are never charged; when given (the fee's
        place before `fees` existed) they are a constant override of that side, moved into
        `fees`. Setting a side in both places to different values is an error."""
        if not isinstance(data, dict) or data.get("instrument") is None:
            return data
        inst, override = split_instrument_fees(data["instrument"])
        if not override:
            return data
        fees = merge_override(data.get("fees"), override, "instrument")
        return {**data, "instrument": inst, "fees": fees}

    @model_validator(mode="after")
    def _penalty_hours_are_observable(self) -> EnvConfig:
        # the penalties read the clipped management-state hours: a limit at or above the
        # clip would never trigger
        if self.reward.detrend and self.reward.version != "r2":
            raise ValueError(
                "reward.detrend needs reward.version r2 (a change-based unrealized term)"
            )
        for name in ("open_position_hours", "close_position_hours"):
            if getattr(self.reward, name) >= self.hours_clip:
                raise ValueError(
                    f"reward.{name}={getattr(self.reward, name)} must be below hours_clip={self.hours_clip}"
                )
        if self.funding_rates_path is not None and not self.funding:
            raise ValueError("funding_rates_path is set but funding is off: set funding: true")
        if self.stake_fraction > self.max_exposure:
            raise ValueError(
                f"stake_fraction={self.stake_fraction} exceeds max_exposure={self.max_exposure}"
            )
        return self
