"""The paper position of observe-only mode: the env's order and fill rules, bar by bar.

Pure state machine over `envs.position` accounting (no I/O, no clock). It follows
`envs.management` (ManagementEnv) so that the management state the policy sees live
evolves exactly as in training and in the backtest:

- the actions are the model's `EnvConfig.action_mode` (`core.schema.ACTION_NAMES`):
  "toggle": action 1 toggles a resting buy at the decision bar's best bid (cancel it if
  one rests, else place it when `can_fill` allows: the exposure cap); action 2 mirrors it
  at the ask. "target": the action names the resting orders wanted (0 none, 1 bid only,
  2 ask only, 3 both; bit 1 the bid, bit 2 the ask): a side not wanted is cancelled, a side
  wanted with no resting order gets one at its best price when `can_fill` allows, a side
  wanted that already rests keeps its order (`envs.kernels._env_target`);
- on each later bar k, a resting buy at p fills (a maker fill at p, `apply_fill`) when a
  taker sell printed below p (`0 < sell_lo_ticks < p`; `<=` with the `touch` fill model) or
  the best ask came down to p; a sell mirrors it with `buy_hi_ticks` and the best bid; the
  buy is applied first when both fill; a fill the exposure cap refuses removes the order;
- unfilled orders roll to bar k's best price of their side (`roll_orders`);
- a fill on bar k is charged the maker rate of `PaperRules.fees` in force at bar k's
  close, the env's `EnvConfig.fees` rule (core.fees), so the paper account pays the same
  fee as the env for the same bar.

Funding (`PaperRules.funding`, the env's `funding`, off by default): a bar whose
(previous close, close] holds one of the instrument's funding times settles the
constant `funding_rate` on the open position, marked at the bar's mid, after the bar's
fills and before the roll: the env's order, and the same due-time rule
(`core.instrument.funding_settles`). The paper account's previous close is the last bar
it saw (`on_bar`, or `state` at the decision bar that opened it).

What one bar did is kept until the next `on_bar` (`last_fills`, `last_funding`), so the
live loop can print and record it (`live.paper_log`) without re-deriving it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from core.config.env import EnvConfig
from core.fees import FeeConfig, merge_override, split_instrument_fees
from core.instrument import InstrumentSpec, funding_settles
from core.schema import ACTION_NAMES
from envs.position import (
    LONG,
    SHORT,
    Position,
    StateLimits,
    apply_fill,
    apply_funding,
    can_fill,
    management_state,
)

_ENV = EnvConfig()  # the env's defaults: a field a model's env config lacks takes its value


@dataclass(frozen=True, slots=True)
class PaperFill:
    """One simulated fill: when (the bar's close, ns), side (+1 buy / -1 sell), the resting
    price it filled at (ticks), the stake, and what it moved: contracts, notional and fee
    (settle currency, fee negative = rebate) and the maker rate charged."""

    ts_ns: int
    side: int
    price_ticks: int
    stake: float
    contracts: float
    notional: float
    fee: float
    fee_rate: float


@dataclass(frozen=True)
class PaperRules:
    """The env parameters the live loop takes from the model's env config (EnvConfig,
    whose defaults fill what a config lacks): the paper position's order, fill and state
    rules, and the clip of the normalised features (`obs_clip`)."""

    action_mode: str = _ENV.action_mode  # "toggle" or "target" (core.schema.ACTION_NAMES)
    stake_fraction: float = _ENV.stake_fraction
    max_exposure: float = _ENV.max_exposure
    fill_model: str = _ENV.fill_model
    roll_orders: bool = _ENV.roll_orders
    hours_clip: float = _ENV.hours_clip
    pct_clip: float = _ENV.pct_clip
    initial_equity_xbt: float = _ENV.initial_equity_xbt
    obs_clip: float = _ENV.obs_clip
    fees: FeeConfig = _ENV.fees
    funding: bool = _ENV.funding
    funding_rate: float = _ENV.funding_rate

    @classmethod
    def from_env_config(cls, env: dict[str, Any] | None) -> PaperRules:
        """The rules of an EnvConfig dump (a model's env_spec.json); missing keys take the
        defaults. Its fee is `fees`, with the legacy `instrument.maker_fee` / `taker_fee`
        of older dumps as the override they meant (the EnvConfig rule). Raises
        ValueError (pydantic's) on an invalid fee, ValueError on an unknown action_mode."""
        env = env or {}
        d = cls()
        kw: dict[str, Any] = {
            f.name: type(getattr(d, f.name))(env[f.name])
            for f in fields(cls)
            if f.name in env and f.name != "fees"
        }
        _, legacy = split_instrument_fees(env.get("instrument"))
        fees = merge_override(env.get("fees"), legacy, "instrument")
        if fees is not None:
            kw["fees"] = FeeConfig.model_validate(fees)
        return cls(**kw)

    def __post_init__(self) -> None:
        if self.action_mode not in ACTION_NAMES:
            raise ValueError(
                f"action_mode {self.action_mode!r}: expected one of {sorted(ACTION_NAMES)}"
            )

    @property
    def limits(self) -> StateLimits:
        return StateLimits(
            max_exposure=self.max_exposure, hours_clip=self.hours_clip, pct_clip=self.pct_clip
        )


class PaperAccount:
    """Resting paper orders (price in ticks, 0 = none) and the paper position."""

    def __init__(self, rules: PaperRules, instrument: InstrumentSpec, position: Position) -> None:
        self.rules = rules
        self.instrument = instrument
        self.position = position
        self.bid_px = 0
        self.ask_px = 0
        self.fills = 0
        self.last_fills: list[PaperFill] = []  # the fills of the last `on_bar`
        self.last_funding = 0.0  # funding paid on the last `on_bar` (settle currency)
        self.bar_ts: int | None = None  # close of the last bar seen (funding's previous close)

    @property
    def long_order(self) -> bool:
        return self.bid_px != 0

    @property
    def short_order(self) -> bool:
        return self.ask_px != 0

    def state(self, now_ns: int, mid_ticks: float) -> np.ndarray:
        if self.bar_ts is None:
            self.bar_ts = int(now_ns)
        return management_state(
            self.position,
            now_ns,
            mid_ticks,
            self.instrument,
            self.long_order,
            self.short_order,
            self.rules.limits,
        )

    def act(self, action: int | None, best_bid: int, best_ask: int) -> None:
        """The action at the close of the decision bar (whose best prices are given), read
        in the rules' action mode (the env step's order part; None: no decision)."""
        if action is None:
            return
        if self.rules.action_mode == "target":
            self._target(action & 1 != 0, action & 2 != 0, best_bid, best_ask)
        elif action == 1:
            self.bid_px = 0 if self.bid_px else self._place(LONG, best_bid)
        elif action == 2:
            self.ask_px = 0 if self.ask_px else self._place(SHORT, best_ask)

    def _target(self, want_bid: bool, want_ask: bool, best_bid: int, best_ask: int) -> None:
        """Action mode "target" (`envs.kernels._env_target`): cancel a side not wanted; place
        a wanted side at its best price when none rests; a resting wanted order stays."""
        if not want_bid:
            self.bid_px = 0
        elif not self.bid_px:
            self.bid_px = self._place(LONG, best_bid)
        if not want_ask:
            self.ask_px = 0
        elif not self.ask_px:
            self.ask_px = self._place(SHORT, best_ask)

    def _place(self, side: int, price: int) -> int:
        """The price a new order of `side` rests at, or 0 when the exposure cap refuses it."""
        r = self.rules
        return int(price) if can_fill(self.position, side, r.stake_fraction, r.max_exposure) else 0

    def on_bar(
        self,
        ts_ns: int,
        best_bid: int,
        best_ask: int,
        buy_hi: int,
        sell_lo: int,
        mid_ticks: float | None = None,
    ) -> None:
        """Fills, funding and rolling over one bar after the decision bar (`mid_ticks`,
        the funding mark: the bar's mid, by default (best_bid + best_ask) / 2)."""
        r = self.rules
        self.last_fills = []
        self.last_funding = 0.0
        touch = r.fill_model == "touch"
        p = self.bid_px
        if p and ((sell_lo > 0 and (sell_lo <= p if touch else sell_lo < p)) or best_ask <= p):
            if can_fill(self.position, LONG, r.stake_fraction, r.max_exposure):
                self._fill(LONG, p, ts_ns)
            self.bid_px = 0
        p = self.ask_px
        if p and ((buy_hi > 0 and (buy_hi >= p if touch else buy_hi > p)) or best_bid >= p):
            if can_fill(self.position, SHORT, r.stake_fraction, r.max_exposure):
                self._fill(SHORT, p, ts_ns)
            self.ask_px = 0
        prev, self.bar_ts = self.bar_ts, int(ts_ns)
        if r.funding and prev is not None and funding_settles(prev, int(ts_ns), self.instrument):
            mark = (best_bid + best_ask) / 2.0 if mid_ticks is None else mid_ticks
            self.position, self.last_funding = apply_funding(
                self.position, r.funding_rate, mark, self.instrument
            )
        if r.roll_orders:
            if self.bid_px:
                self.bid_px = int(best_bid)
            if self.ask_px:
                self.ask_px = int(best_ask)

    def _fill(self, side: int, price: int, ts_ns: int) -> None:
        """Apply one maker fill of the stake at `price` (charged the fee in force at the
        bar's close) and keep what it moved in `last_fills`."""
        r = self.rules
        before = self.position
        self.position, _ = apply_fill(
            before,
            side,
            price,
            ts_ns,
            self.instrument,
            r.stake_fraction,
            r.max_exposure,
            fees=r.fees,
        )
        after = self.position
        self.fills += 1
        self.last_fills.append(
            PaperFill(
                ts_ns=int(ts_ns),
                side=side,
                price_ticks=int(price),
                stake=r.stake_fraction,
                # an opening fill adds one lot; a reducing one closes part of the stack
                contracts=after.lots[-1].contracts
                if before.side in (0, side)
                else before.contracts - after.contracts,
                notional=after.maker_volume - before.maker_volume,
                fee=after.maker_fees - before.maker_fees,
                fee_rate=r.fees.rates_at(int(ts_ns))[0],
            )
        )
