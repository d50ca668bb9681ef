"""The broker: the ONE implementation of the order rules (pure ring). ManagementEnv (and
so the walk-forward backtest) runs it inside its step (`envs.step.env_step`); the live
loop's paper account (`BrokerAccount`, observe mode) runs it bar by bar. Read top to
bottom: the bars, the order rules as small numba kernels, then the account class.

Bars. A slice's bars (or the live loop's last bar) are a numpy structured array of
`BAR_DTYPE`, read by field name in Python (`bars["maker"]`); the kernels read bar k as a
`Bar` of scalars (`bar_at(rows, k).sell_lo`) from the same memory seen as int64 rows
(`bar_rows`; the float fields are read back bit for bit). Why not a NamedTuple of 1-D
arrays or the structured array itself: a numba call unboxes a NamedTuple argument field
by field through numba's Python typeof (about 2 us for nine arrays, most of an env step)
and a structured array through a slower type lookup (about 0.2 us); one plain 2-D array
costs about 0.05 us.

The rules (the kernels below, on one account in the packed state of `envs.kernels`, under
its `Terms`: stake, exposure cap, instrument and switches):
- `act`: the action at the close of the decision bar. Action mode "toggle" (the env's
  `EnvConfig.action_mode`, `core.schema.ACTION_NAMES`): 1 toggles a resting buy at the
  bar's best bid (cancel it if one rests, else place it if the exposure cap allows:
  `can_place`), 2 mirrors it at the best ask. "target": the action names the orders
  wanted (0 none, 1 bid only, 2 ask only, 3 both): a side not wanted is cancelled, a side
  wanted with none resting gets one at its best price if the cap allows, a side wanted
  that rests keeps its order (its price, and in the queue models its place).
- `on_bar`, each later bar: the resting buy at p fills (a maker fill of the stake at p,
  at the bar's maker rate) when a taker sell printed below p (`0 < sell_lo < p`; `<=`
  under the `touch` fill model) or the best ask came down to p; the sell mirrors it with
  `buy_hi` and the best bid; the buy first when both fill; a fill the exposure cap
  refuses removes the order (`fill_resting`). Then funding settles if the bar is due, on
  the open position marked at the bar's mid (`settle_funding`), then unfilled orders roll
  to the bar's best price of their side (`roll`).
- `flatten`: at the end of an evaluation slice, the open lots close at the touch as a
  taker fill at the bar's taker rate, and the orders go.
Fills and funding are the stacked-position accounting of `envs.kernels` (FIFO reduce,
fees by liquidity, funding on the open contracts).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, NamedTuple

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from core.config.env import EnvConfig
from core.fees import FeeConfig, merge_override, split_instrument_fees
from core.instrument import InstrumentSpec, funding_settles
from core.numba_cache import njit
from core.schema import ACTION_NAMES
from envs.kernels import (
    A_MFEE,
    A_MVOL,
    F_FILLS,
    F_PAID,
    H_ASK,
    H_BID,
    H_FILLS,
    H_FLAT,
    H_LOTCAP,
    H_N,
    H_NFILLS,
    H_TRCAP,
    L_C,
    L_SIDE,
    MAKER,
    N_ACCT,
    TAKER,
    _views,
    can_fill,
    exposure_of,
    fill,
    packed_sizes,
    pay_funding,
    side_of,
)
from envs.position import Position, StateLimits, management_state, position_from_arrays

BUY, SELL = 1, -1

# one bar, at its close: ts (ns); the best bid and ask (ticks); the highest taker buy and
# lowest taker sell printed in the bar (ticks, 0 = none); the mid (ticks, the funding and
# marking price); the maker and taker fee rates in force (core.fees); the funding rate
# settled at this close (0 = none due: core.instrument.funding_settles)
BAR_DTYPE = np.dtype(
    [
        ("ts", np.int64),
        ("bid", np.int64),
        ("ask", np.int64),
        ("buy_hi", np.int64),
        ("sell_lo", np.int64),
        ("mid", np.float64),
        ("maker", np.float64),
        ("taker", np.float64),
        ("funding_rate", np.float64),
    ]
)


# the columns of a bar row (BAR_DTYPE's field order)
_TS, _BID, _ASK, _BUY_HI, _SELL_LO, _MID, _MAKER, _TAKER, _FUNDING_RATE = range(9)
assert BAR_DTYPE.names == (
    "ts", "bid", "ask", "buy_hi", "sell_lo", "mid", "maker", "taker", "funding_rate",
) and all(BAR_DTYPE[i].itemsize == 8 for i in range(9))  # fmt: skip


class Bar(NamedTuple):
    """One bar at its close (BAR_DTYPE's fields), as the kernels read it."""

    ts: int
    bid: int
    ask: int
    buy_hi: int
    sell_lo: int
    mid: float
    maker: float
    taker: float
    funding_rate: float


class Terms(NamedTuple):
    """An account's terms, as the order kernels read them: the stake of every order (a
    fraction of the balance) and the exposure cap; the instrument (tick size, multiplier,
    inverse); the switches: the `touch` fill model (else trade_through), orders roll,
    funding settles, action mode "target" (else "toggle")."""

    stake: float
    max_exposure: float
    tick: float
    multiplier: float
    inverse: bool
    touch: bool
    roll: bool
    funding: bool
    target: bool


def _bitcast_int64_to_float64(typingctx: Any, bits: Any) -> Any:
    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


# the float64 whose IEEE 754 bits are the int64 `bits` (numpy's `.view`, on a scalar)
_float_of_bits: Any = intrinsic(_bitcast_int64_to_float64)


@njit(cache=True, nogil=True)
def bar_at(rows: np.ndarray, k: int) -> Bar:
    """Bar k of the int64 rows `bar_rows` returns."""
    return Bar(
        rows[k, _TS], rows[k, _BID], rows[k, _ASK], rows[k, _BUY_HI], rows[k, _SELL_LO],
        _float_of_bits(rows[k, _MID]), _float_of_bits(rows[k, _MAKER]),
        _float_of_bits(rows[k, _TAKER]), _float_of_bits(rows[k, _FUNDING_RATE]),
    )  # fmt: skip


def bar_rows(bars: np.ndarray) -> np.ndarray:
    """A BAR_DTYPE array's memory as int64 rows (n, 9), what the kernels take (`bar_at`)."""
    if bars.dtype != BAR_DTYPE or not bars.flags.c_contiguous:
        raise ValueError("bars must be a C-contiguous BAR_DTYPE array")
    return bars.view(np.int64).reshape(len(bars), 9)


def bar_array(
    ts: np.ndarray,
    bid: np.ndarray,
    ask: np.ndarray,
    buy_hi: np.ndarray,
    sell_lo: np.ndarray,
    mid: np.ndarray,
    maker: np.ndarray,
    taker: np.ndarray,
    funding_rate: np.ndarray,
) -> np.ndarray:
    """The bars of equal-length columns as one BAR_DTYPE array (a copy)."""
    bars = np.zeros(len(ts), BAR_DTYPE)
    bars["ts"] = ts
    bars["bid"] = bid
    bars["ask"] = ask
    bars["buy_hi"] = buy_hi
    bars["sell_lo"] = sell_lo
    bars["mid"] = mid
    bars["maker"] = maker
    bars["taker"] = taker
    bars["funding_rate"] = funding_rate
    return bars


def funding_due(ts: np.ndarray, instrument: InstrumentSpec) -> np.ndarray:
    """Bool per bar: one of the instrument's funding times lies in (ts[k-1], ts[k]]
    (`core.instrument.funding_settles`; the first bar has no previous close: False)."""
    due = np.zeros(len(ts), dtype=bool)
    due[1:] = funding_settles(ts[:-1], ts[1:], instrument)
    return due


# ------------------------------------------------------------------ the order rules
@njit(cache=True, nogil=True)
def can_place(I: np.ndarray, F: np.ndarray, terms: Terms, side: int) -> bool:  # noqa: E741
    """True when a new order of `side` may rest: it would reduce the open stack, or one
    more stake stays within the exposure cap."""
    lot_i, lot_f, _, _, acct_i, _ = _views(I, F)
    return can_fill(acct_i, lot_i, lot_f, side, terms.stake, terms.max_exposure)


@njit(cache=True, nogil=True)
def toggle(I: np.ndarray, F: np.ndarray, terms: Terms, side: int, best: int) -> None:  # noqa: E741
    """Action mode "toggle": cancel the resting order of `side`, or place one at `best`."""
    o = H_BID if side == BUY else H_ASK
    if I[o] != 0:
        I[o] = 0
    elif can_place(I, F, terms, side):
        I[o] = best


@njit(cache=True, nogil=True)
def target(
    I: np.ndarray,  # noqa: E741
    F: np.ndarray,
    terms: Terms,
    want_bid: bool,
    want_ask: bool,
    best_bid: int,
    best_ask: int,
) -> None:
    """Action mode "target": cancel a side not wanted; place a wanted side at its best
    price when none rests; a wanted order that rests keeps its price."""
    if not want_bid:
        I[H_BID] = 0
    elif I[H_BID] == 0 and can_place(I, F, terms, BUY):
        I[H_BID] = best_bid
    if not want_ask:
        I[H_ASK] = 0
    elif I[H_ASK] == 0 and can_place(I, F, terms, SELL):
        I[H_ASK] = best_ask


@njit(cache=True, nogil=True)
def act(
    I: np.ndarray,  # noqa: E741
    F: np.ndarray,
    terms: Terms,
    a: int,
    best_bid: int,
    best_ask: int,
) -> bool:
    """The action `a` at the close of the decision bar (its best prices given), read in
    the account's action mode. False: `a` is not an action of that mode (nothing done)."""
    if terms.target:
        if a < 0 or a > 3:
            return False
        target(I, F, terms, a & 1 != 0, a & 2 != 0, best_bid, best_ask)
    elif a == 1:
        toggle(I, F, terms, BUY, best_bid)
    elif a == 2:
        toggle(I, F, terms, SELL, best_ask)
    elif a != 0:
        return False
    return True


@njit(cache=True, nogil=True)
def crossed(side: int, price: int, bar: Bar, touch: bool) -> bool:
    """True when bar `bar` fills a resting order of `side` at `price`: the fill model
    (`touch` or trade_through) on the bar's prints, or the opposite best reaching it."""
    if side == BUY:
        lo = bar.sell_lo
        return (lo > 0 and (lo <= price if touch else lo < price)) or bar.ask <= price
    hi = bar.buy_hi
    return (hi > 0 and (hi >= price if touch else hi > price)) or bar.bid >= price


@njit(cache=True, nogil=True)
def fill_resting(
    I: np.ndarray,  # noqa: E741
    F: np.ndarray,
    terms: Terms,
    bar: Bar,
    side: int,
    ntr: int,
) -> tuple[int, bool]:
    """The resting order of `side` on bar `bar`: when crossed it leaves the book, and
    fills (the stake, maker, at its price and the bar's maker rate) unless the exposure
    cap refuses it. A fill is recorded in the header (H_FILLS, F_FILLS: side, price,
    contracts opened or closed, notional, fee). Returns (ntr, filled)."""
    o = H_BID if side == BUY else H_ASK
    price = I[o]
    if price == 0 or not crossed(side, price, bar, terms.touch):
        return ntr, False
    I[o] = 0
    lot_i, lot_f, tr_i, tr_f, acct_i, acct_f = _views(I, F)
    stake = terms.stake
    if not can_fill(acct_i, lot_i, lot_f, side, stake, terms.max_exposure):
        return ntr, False
    before = side_of(acct_i, lot_i)
    c0 = _contracts(acct_i, lot_f)
    vol0 = acct_f[A_MVOL]
    fee0 = acct_f[A_MFEE]
    ntr = fill(
        acct_f, acct_i, lot_i, lot_f, side, price, bar.ts, stake, bar.maker, MAKER, terms.tick,
        terms.inverse, terms.multiplier, tr_i, tr_f, ntr,
    )  # fmt: skip
    j = I[H_NFILLS]
    I[H_NFILLS] = j + 1
    I[H_FILLS + 2 * j] = side
    I[H_FILLS + 2 * j + 1] = price
    # an opening fill adds one lot; a reducing one closes part of the stack
    opened = before == 0 or before == side
    F[F_FILLS + 3 * j] = lot_f[acct_i[1] - 1, L_C] if opened else c0 - _contracts(acct_i, lot_f)
    F[F_FILLS + 3 * j + 1] = acct_f[A_MVOL] - vol0
    F[F_FILLS + 3 * j + 2] = acct_f[A_MFEE] - fee0
    return ntr, True


@njit(cache=True, nogil=True)
def _contracts(acct_i: np.ndarray, lot_f: np.ndarray) -> float:
    c = 0.0
    for i in range(acct_i[1]):
        c += lot_f[i, L_C]
    return c


@njit(cache=True, nogil=True)
def settle_funding(I: np.ndarray, F: np.ndarray, terms: Terms, bar: Bar) -> bool:  # noqa: E741
    """Funding due at the bar's close (its `funding_rate`, 0 = none), when the account
    settles funding, on an open position marked at the bar's mid; the amount paid goes to
    F[F_PAID]. Returns whether it settled."""
    rate = bar.funding_rate
    if not terms.funding or rate == 0.0 or I[H_N] == 0:
        return False
    lot_i, lot_f, _, _, acct_i, acct_f = _views(I, F)
    F[F_PAID] = pay_funding(
        acct_f, acct_i, lot_i, lot_f, rate, bar.mid, terms.tick, terms.inverse, terms.multiplier
    )
    return True


@njit(cache=True, nogil=True)
def roll(I: np.ndarray, terms: Terms, bar: Bar) -> None:  # noqa: E741
    """With rolling on, unfilled orders move to the bar's best price of their side."""
    if terms.roll:
        if I[H_BID] != 0:
            I[H_BID] = bar.bid
        if I[H_ASK] != 0:
            I[H_ASK] = bar.ask


@njit(cache=True, nogil=True)
def on_bar(
    I: np.ndarray,  # noqa: E741
    F: np.ndarray,
    terms: Terms,
    bar: Bar,
    ntr: int,
) -> tuple[int, bool]:
    """One bar after the decision bar: the resting buy, then the resting sell, may fill;
    funding settles if due; unfilled orders roll. What it filled and paid is in the
    header until the next bar (H_NFILLS, H_FILLS, F_FILLS, F_PAID). Returns (ntr, whether
    the account changed)."""
    I[H_NFILLS] = 0
    F[F_PAID] = 0.0
    ntr, bought = fill_resting(I, F, terms, bar, BUY, ntr)
    ntr, sold = fill_resting(I, F, terms, bar, SELL, ntr)
    paid = settle_funding(I, F, terms, bar)
    roll(I, terms, bar)
    return ntr, bought or sold or paid


@njit(cache=True, nogil=True)
def flatten(I: np.ndarray, F: np.ndarray, terms: Terms, bar: Bar, ntr: int) -> int:  # noqa: E741
    """Close the open lots (the caller checked there are some) at the bar's touch, a taker
    fill at the bar's taker rate, and cancel the orders. Returns ntr."""
    lot_i, lot_f, tr_i, tr_f, acct_i, acct_f = _views(I, F)
    side = -lot_i[0, L_SIDE]
    price = bar.bid if side == SELL else bar.ask
    ntr = fill(
        acct_f, acct_i, lot_i, lot_f, side, price, bar.ts, exposure_of(acct_i, lot_f),
        bar.taker, TAKER, terms.tick, terms.inverse, terms.multiplier, tr_i, tr_f, ntr,
    )  # fmt: skip
    I[H_BID] = 0
    I[H_ASK] = 0
    return ntr


# ------------------------------------------------------------------ the account
# the fill models the kernels implement (EnvConfig.fill_model names)
FILL_MODELS = ("touch", "trade_through")


def check_execution(fill_model: str, entry_latency_ms: float, cancel_latency_ms: float) -> None:
    """Raise ValueError when the broker cannot run `fill_model` with these latencies
    (a model or latency the kernels do not implement yet is refused, never run as
    another)."""
    if fill_model not in FILL_MODELS:
        raise ValueError(
            f"fill_model {fill_model!r} is not implemented by the broker yet (#17): "
            f"use one of {', '.join(FILL_MODELS)}"
        )
    if entry_latency_ms != 0 or cancel_latency_ms != 0:
        raise ValueError("order latency is not implemented by the broker yet (#17): use 0 ms")


_ENV = EnvConfig()  # the env's defaults: a field a model's env config lacks takes its value


@dataclass(frozen=True)
class BrokerRules:
    """The env parameters an account at the broker runs under, as the live loop takes them
    from the model's env config (EnvConfig, whose defaults fill what a config lacks): the
    order, fill, fee and funding rules, the state's clips, and the clip of the normalised
    features (`obs_clip`, the live observation's)."""

    action_mode: str = _ENV.action_mode  # "toggle" or "target" (core.schema.ACTION_NAMES)
    stake_fraction: float = _ENV.stake_fraction
    max_exposure: float = _ENV.max_exposure
    fill_model: str = _ENV.fill_model  # core.config.env.EnvConfig.fill_model
    power_prob_n: float = _ENV.power_prob_n
    entry_latency_ms: float = _ENV.entry_latency_ms
    cancel_latency_ms: float = _ENV.cancel_latency_ms
    roll_orders: bool = _ENV.roll_orders
    hours_clip: float = _ENV.hours_clip
    pct_clip: float = _ENV.pct_clip
    initial_equity_xbt: float = _ENV.initial_equity_xbt
    obs_clip: float = _ENV.obs_clip
    fees: FeeConfig = _ENV.fees
    funding: bool = _ENV.funding
    funding_rate: float = _ENV.funding_rate

    @classmethod
    def from_env_config(cls, env: dict[str, Any] | None) -> BrokerRules:
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
        check_execution(self.fill_model, self.entry_latency_ms, self.cancel_latency_ms)

    @property
    def limits(self) -> StateLimits:
        return StateLimits(
            max_exposure=self.max_exposure, hours_clip=self.hours_clip, pct_clip=self.pct_clip
        )


@dataclass(frozen=True, slots=True)
class BrokerFill:
    """One fill of a resting order: when (the bar's close, ns), side (+1 buy / -1 sell),
    the price it filled at (ticks), the stake, and what it moved: the contracts it opened
    or closed, notional and fee (settle currency, fee negative = rebate) and the maker
    rate charged."""

    ts_ns: int
    side: int
    price_ticks: int
    stake: float
    contracts: float
    notional: float
    fee: float
    fee_rate: float


class BrokerAccount:
    """One account at the broker, run bar by bar: the paper account of the live loop's
    observe mode. The same kernels as the env's step (`act`, `on_bar`) on the same packed
    state, fed one live bar at a time; the funding due at a bar is the instrument's rule
    between the previous bar seen and this one (`core.instrument.funding_settles`), at
    the rules' constant `funding_rate`.

    What one bar did is kept until the next `on_bar` (`last_fills`, `last_funding`), so
    the live loop can print and record it (`live.paper_log`)."""

    def __init__(self, rules: BrokerRules, instrument: InstrumentSpec, position: Position) -> None:
        self.instrument = instrument
        self._rules = rules
        self._I = np.zeros(0, np.int64)
        self._F = np.zeros(0, np.float64)
        self._load(position, 0, 0)
        self.fills = 0
        self.last_fills: list[BrokerFill] = []  # the fills of the last `on_bar`
        self.last_funding = 0.0  # funding paid on the last `on_bar` (settle currency)
        self.bar_ts: int | None = None  # close of the last bar seen (funding's previous close)

    def _load(self, position: Position, bid_px: int, ask_px: int) -> None:
        """The rules' terms, and `position` and the resting orders in fresh packed arrays,
        with room for the lots the rules allow (or `position` holds) and a bar's trades."""
        r, inst = self._rules, self.instrument
        lots = position.lots
        lot_cap = max(int((r.max_exposure + 1e-9) / r.stake_fraction), len(lots)) + 2
        trade_cap = 2 * lot_cap  # a bar's two fills close at most every lot, twice
        ni, nf = packed_sizes(lot_cap, trade_cap)
        I = np.zeros(ni, np.int64)  # noqa: E741
        F = np.zeros(nf, np.float64)
        I[H_LOTCAP] = lot_cap
        I[H_TRCAP] = trade_cap
        I[H_BID] = bid_px
        I[H_ASK] = ask_px
        p = position
        F[:N_ACCT] = (
            p.balance, p.realized_pnl, p.fees, p.funding, p.maker_volume, p.taker_volume,
            p.maker_fees, p.taker_fees,
        )  # fmt: skip
        I[H_FLAT] = p.flat_since_ns
        I[H_N] = len(lots)
        lot_i, lot_f, _, _, _, _ = _views(I, F)
        for i, lot in enumerate(lots):
            lot_i[i] = (lot.side, lot.price_ticks, lot.ts_ns)
            lot_f[i] = (lot.stake, lot.contracts, lot.entry_fee)
        self._I, self._F = I, F
        self._terms = Terms(
            float(r.stake_fraction), float(r.max_exposure), float(inst.tick_size),
            float(inst.multiplier), bool(inst.is_inverse), r.fill_model == "touch",
            bool(r.roll_orders), bool(r.funding), r.action_mode == "target",
        )  # fmt: skip

    @property
    def rules(self) -> BrokerRules:
        return self._rules

    @rules.setter
    def rules(self, rules: BrokerRules) -> None:
        """New rules (a new model) keep the position and the resting orders."""
        position, bid, ask = self.position, self.bid_px, self.ask_px
        self._rules = rules
        self._load(position, bid, ask)

    @property
    def position(self) -> Position:
        """The account and open lots now (a fresh immutable value)."""
        lot_i, lot_f, _, _, acct_i, acct_f = _views(self._I, self._F)
        return position_from_arrays(acct_f, acct_i, lot_i, lot_f)

    @position.setter
    def position(self, position: Position) -> None:
        """Live trade mode: the position the exchange's executions made."""
        self._load(position, self.bid_px, self.ask_px)

    @property
    def bid_px(self) -> int:
        """The resting buy's price (ticks, 0 = none)."""
        return int(self._I[H_BID])

    @bid_px.setter
    def bid_px(self, price: int) -> None:
        self._I[H_BID] = price

    @property
    def ask_px(self) -> int:
        """The resting sell's price (ticks, 0 = none)."""
        return int(self._I[H_ASK])

    @ask_px.setter
    def ask_px(self, price: int) -> None:
        self._I[H_ASK] = price

    @property
    def long_order(self) -> bool:
        return self.bid_px != 0

    @property
    def short_order(self) -> bool:
        return self.ask_px != 0

    def state(self, now_ns: int, mid_ticks: float) -> np.ndarray:
        """The 7 management values at `now_ns` (`envs.position.management_state`)."""
        if self.bar_ts is None:
            self.bar_ts = int(now_ns)
        return management_state(
            self.position,
            now_ns,
            mid_ticks,
            self.instrument,
            self.long_order,
            self.short_order,
            self._rules.limits,
        )

    def act(self, action: int | None, best_bid: int, best_ask: int) -> None:
        """The action at the close of the decision bar (whose best prices are given), read
        in the rules' action mode (`act`; None: no decision). Raises ValueError on an
        action the mode does not have."""
        if action is None:
            return
        if not act(self._I, self._F, self._terms, int(action), int(best_bid), int(best_ask)):
            n = len(ACTION_NAMES[self._rules.action_mode])
            raise ValueError(f"action must be one of 0..{n - 1}, got {action!r}")

    def on_bar(
        self,
        ts_ns: int,
        best_bid: int,
        best_ask: int,
        buy_hi: int,
        sell_lo: int,
        mid_ticks: float | None = None,
    ) -> None:
        """Fills, funding and rolling over one bar after the decision bar (`on_bar`);
        `mid_ticks`, the funding mark: the bar's mid, by default (best_bid + best_ask) / 2.
        The fee is the rules' in force at the bar's close."""
        r = self._rules
        ts = int(ts_ns)
        prev, self.bar_ts = self.bar_ts, ts
        due = r.funding and prev is not None and bool(funding_settles(prev, ts, self.instrument))
        maker, taker = r.fees.rates_at(ts)
        mid = (best_bid + best_ask) / 2.0 if mid_ticks is None else mid_ticks
        bar = Bar(
            ts, int(best_bid), int(best_ask), int(buy_hi), int(sell_lo), float(mid),
            float(maker), float(taker), float(r.funding_rate) if due else 0.0,
        )  # fmt: skip
        I, F = self._I, self._F  # noqa: E741
        on_bar(I, F, self._terms, bar, 0)
        self.last_funding = float(F[F_PAID])
        self.last_fills = [
            BrokerFill(
                ts_ns=ts,
                side=int(I[H_FILLS + 2 * j]),
                price_ticks=int(I[H_FILLS + 2 * j + 1]),
                stake=r.stake_fraction,
                contracts=float(F[F_FILLS + 3 * j]),
                notional=float(F[F_FILLS + 3 * j + 1]),
                fee=float(F[F_FILLS + 3 * j + 2]),
                fee_rate=float(maker),
            )
            for j in range(int(I[H_NFILLS]))
        ]
        self.fills += len(self.last_fills)
