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

The order rules (the kernels below, on one account: a BROKER_DTYPE record holding its
terms (stake, exposure cap, instrument, fill model, latency and switches), its account,
its order slots and what the last bar filled, beside its lot and trade tables). They are `envs.queue`'s event-level
rules (hftbacktest's queue models, latency and PartialFillExchange) aggregated to bars:
what a bar does not say (when in the bar a print came, the volume at a price that was
not the best at the previous close) is taken the conservative way.

- Size. An order carries a stake (a fraction of the balance); its size is the stake's
  contracts at its price on the balance now, rounded DOWN to the instrument's lot
  (`order_contracts`). An order of 0 contracts is not placed.
- `act`: the action at the close t of the decision bar. Action mode "toggle"
  (`core.schema.ACTION_NAMES`): 1 toggles a buy at the bar's best bid (cancel the live
  one, else place one if the exposure cap allows: `can_place`), 2 mirrors it at the best
  ask. "target": the action names the orders wanted (0 none, 1 bid only, 2 ask only,
  3 both): a side not wanted is cancelled, a side wanted with none live gets one at its
  best price if the cap allows, a side wanted that rests keeps its order (its price and
  its place in the queue).
- Latency. An order sent at close t arrives at t + entry latency; a cancel (toggle off,
  a side not wanted, the cancel half of a re-price) lands at t + cancel latency, and until
  then the old order stays in the book (a slot of its own) and can still fill. A second
  cancel of the same side while one is in flight drops the older order (rare: it needs a
  cancel latency longer than a bar). In bar (t0, t1] an order is live from
  max(t0, arrival) to min(t1, its cancel's landing): it sees the bar's at-price volume
  times the live fraction of the bar (prints uniform in time), a trade through its price
  only if the bar's through prints span its live window (last through ts >= start, first
  <= end), and the opposite best at the close only if it is live at the close. An order
  arriving after the close waits; until it arrives its queue place is the size at its
  price at the last close where that was the best of its side. With zero latency every
  order is live the whole bar and the timestamps are not read.
- Post-only. An order that arrives inside a bar (latency > 0) and finds the opposite best
  at or through its price at that bar's close, with no fill after its arrival (no trade
  through it, no at-price volume reaching it), is rejected, not filled: the book may have
  crossed it before it arrived, and a post-only order that would cross is refused.
- Queue (`ahead`, contracts in front of the order at its price p). At placement ahead =
  the size at the best of its side at the placing close (risk_averse and power_prob join
  the back; touch: 0; trade_through never reads it). In a bar where p was the previous
  close's best of its side (the price the bar's `*_at_vol` counts at): ahead -= at-price
  volume x live fraction; then, at the close, if the close's best of its side is p:
  risk_averse ahead = min(ahead, size at the close); power_prob: chg = size at the
  previous close - size at this close - the bar's at-price volume; if chg > 0 the order
  advances by the share of chg that was ahead (Rigtorp's power law, exponent n:
  `envs.queue.queue_on_depth`), else min(ahead, size). If the close's best moved past p
  (a bid above the best bid): ahead = min(ahead, 0). When p was not the previous close's
  best (an order kept off the best, rolling off, or waiting) the volume at p is not known:
  only through fills count, and at a close where p is the best again ahead = min(ahead,
  size) (conservative: the volume it may have traded at p is not credited).
- Fills. A trade through p in the live window (a taker sell below a bid: `sell_lo < p`)
  or the opposite best at p at the close fills the whole remainder (the whole level was
  taken). `touch` also fills the whole remainder on a print at p (`sell_lo <= p`, or with
  latency any at-price volume in the live window): the optimistic bound, as before #17.
  `trade_through`: at-price volume never fills. risk_averse / power_prob: once ahead < 0
  the order fills floor(min(-ahead, at-price volume x live fraction, size) / lot) x lot
  contracts (PartialFillExchange's rule, the volume of this bar), a partial fill: the
  order's stake pro rata (stake x filled / size) fills and the leaves keep resting; an
  opening one adds a lot of the filled contracts (merged into the lot the order's earlier
  fills opened), a reducing one closes that many contracts of the oldest lots (a whole
  fill closes the stake the order still carries, as before #17: across lots of different
  contracts per stake that can leave a lot holding part of a lot). A fill is maker, at
  p, at the bar's maker rate; one the exposure cap refuses (or for which the lot buffer
  has no room) removes the order.
  Each side's order whose cancel is in flight fills first, then the live one; the buy
  side first. A re-priced order's fills in flight shrink the stake of its replacement.
- `on_bar`, each later bar: the fills; then funding settles if the bar is due, on the
  open position marked at the bar's mid (`settle_funding`); then the close (`at_close`):
  cancels that landed remove their orders, queue places update, and with rolling on a
  live order whose price is not the bar's best of its side is re-priced: cancel + a new
  order at the best (arrival after the entry latency) for the stake it still carries,
  joining the back of the new price's queue; an order already at the best keeps its
  place.
- `flatten`: at the end of an evaluation slice, the open lots close at the touch as a
  taker fill at the bar's taker rate, and the orders go.
With touch / trade_through and zero latency these are the rules before #17 but for the
lot rounding (lot 0 in the terms turns it off: what the tests compare).
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
    ACCOUNT_DTYPE,
    MAKER,
    TAKER,
    TRADE_DTYPE,
    can_fill,
    contracts_for,
    contracts_of,
    exposure_of,
    fill,
    pay_funding,
    side_of,
)
from envs.position import (
    Position,
    StateLimits,
    _arrays,
    management_state,
    position_from_arrays,
)
from envs.queue import (
    QUEUE_MODELS,
    RISK_AVERSE,
    TOUCH,
    queue_on_depth,
    queue_on_join,
)

BUY, SELL = 1, -1

# one bar, at its close: ts (ns); the best bid and ask (ticks); the highest taker buy and
# lowest taker sell printed in the bar (ticks, 0 = none); the mid (ticks, the funding and
# marking price); the maker and taker fee rates in force (core.fees); the funding rate
# settled at this close (0 = none due: core.instrument.funding_settles); the sizes at the
# best bid and ask at the close (contracts, 0 = unknown); the contracts sold by takers at
# exactly the previous close's best bid and the ts of the first and last taker sell below
# it (-1 = none or unknown); the mirror for taker buys at / above the previous best ask
# (#17's bar contract: book.sampler's BAR_EVENT_COLUMNS)
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
        ("bid_size", np.int64),
        ("ask_size", np.int64),
        ("sell_at_vol", np.int64),
        ("sell_thru_first", np.int64),
        ("sell_thru_last", np.int64),
        ("buy_at_vol", np.int64),
        ("buy_thru_first", np.int64),
        ("buy_thru_last", np.int64),
    ]
)
# the slice column (core.schema, contract17.md) each of them is read from
SLICE_COLUMNS = {
    "bid_size": "bid_sz_0",
    "ask_size": "ask_sz_0",
    "sell_at_vol": "sell_at_bid_vol",
    "sell_thru_first": "sell_thru_bid_first_ts",
    "sell_thru_last": "sell_thru_bid_last_ts",
    "buy_at_vol": "buy_at_ask_vol",
    "buy_thru_first": "buy_thru_ask_first_ts",
    "buy_thru_last": "buy_thru_ask_last_ts",
}
_NB = BAR_DTYPE.itemsize // 8  # fields, each 8 bytes (checked below)
assert all(BAR_DTYPE[i].itemsize == 8 for i in range(_NB))


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
    bid_size: int = 0
    ask_size: int = 0
    sell_at_vol: int = 0
    sell_thru_first: int = -1
    sell_thru_last: int = -1
    buy_at_vol: int = 0
    buy_thru_first: int = -1
    buy_thru_last: int = -1


assert Bar._fields == BAR_DTYPE.names
# the fields a fill model with queue position or latency reads, and their "unknown" (Bar's
# defaults: sizes and volumes 0, timestamps -1)
_EVENT_FIELDS: dict[str, int] = dict(Bar._field_defaults)
assert tuple(_EVENT_FIELDS) == tuple(SLICE_COLUMNS)


def _bitcast_int64_to_float64(typingctx: Any, bits: Any) -> Any:
    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


# the float64 whose IEEE 754 bits are the int64 `bits` (numpy's `.view`, on a scalar)
_float_of_bits: Any = intrinsic(_bitcast_int64_to_float64)


@njit(cache=True, nogil=True)
def bar_at(rows: np.ndarray, k: int) -> Bar:
    """Bar k of the int64 rows `bar_rows` returns."""
    r = rows[k]
    return Bar(
        r[0], r[1], r[2], r[3], r[4], _float_of_bits(r[5]), _float_of_bits(r[6]),
        _float_of_bits(r[7]), _float_of_bits(r[8]), r[9], r[10], r[11], r[12], r[13], r[14],
        r[15], r[16],
    )  # fmt: skip


def bar_rows(bars: np.ndarray) -> np.ndarray:
    """A BAR_DTYPE array's memory as int64 rows (n, fields), what the kernels take."""
    if bars.dtype != BAR_DTYPE or not bars.flags.c_contiguous:
        raise ValueError("bars must be a C-contiguous BAR_DTYPE array")
    return bars.view(np.int64).reshape(len(bars), _NB)


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
    **events: np.ndarray,
) -> np.ndarray:
    """The bars of equal-length columns as one BAR_DTYPE array (a copy). `events`: the
    queue and latency fields by BAR_DTYPE name (bid_size, ..., buy_thru_last); one not
    given is "unknown" (sizes and volumes 0, timestamps -1)."""
    unknown = sorted(set(events) - set(_EVENT_FIELDS))
    if unknown:
        raise TypeError(f"bar_array: unknown bar fields {unknown}")
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
    for name, none in _EVENT_FIELDS.items():
        bars[name] = events.get(name, none)
    return bars


def funding_due(ts: np.ndarray, instrument: InstrumentSpec) -> np.ndarray:
    """Bool per bar: one of the instrument's funding times lies in (ts[k-1], ts[k]]
    (`core.instrument.funding_settles`; the first bar has no previous close: False)."""
    due = np.zeros(len(ts), dtype=bool)
    due[1:] = funding_settles(ts[:-1], ts[1:], instrument)
    return due


# ------------------------------------------------------------------ the account's state
# One account at the broker is one record of BROKER_DTYPE (the env's state holds one, a
# BrokerAccount another), beside its lot and trade tables (`envs.kernels`):
#   terms: the rules it runs under (TERMS_DTYPE);
#   account: balance and the cumulative sums (`envs.kernels.ACCOUNT_DTYPE`);
#   orders: N_ORDERS order slots (ORDER_DTYPE): LIVE_BUY, LIVE_SELL, then CANCELLING_BUY,
#     CANCELLING_SELL (the order of each side whose cancel is in flight: slot + 2);
#   n_fills, fills: what the last bar filled (`on_bar`: each side's cancelling order,
#     then its live one, the buy first) and paid: the funding it settled.
# the terms: the stake of every order (a fraction of the balance) and the exposure cap;
# the instrument (tick size, multiplier, lot in contracts: 0 = no rounding, inverse); the
# fill model (`envs.queue` code) and power_prob's exponent; entry and cancel latency (ns);
# the switches: orders roll, funding settles, action mode "target" (else "toggle")
TERMS_DTYPE = np.dtype(
    [
        ("stake", np.float64),
        ("max_exposure", np.float64),
        ("tick", np.float64),
        ("multiplier", np.float64),
        ("lot", np.float64),
        ("power", np.float64),
        ("model", np.int64),
        ("entry_ns", np.int64),
        ("cancel_ns", np.int64),
        ("inverse", np.bool_),
        ("roll", np.bool_),
        ("funding", np.bool_),
        ("target", np.bool_),
    ],
    align=True,
)
# one order: its price (ticks, 0 = none), when it reaches the exchange, when its cancel
# lands (0 = none sent), the close it was last brought up to, whether a re-price cancelled
# it (the live order of its side replaced it), the ts of the lot its fills open (0 = none
# yet); the stake it still carries, the contracts ahead of it in the queue, and the size
# at its price at the last close (-1: its price was not the best of its side there)
ORDER_DTYPE = np.dtype(
    [
        ("price", np.int64),
        ("arrive_ns", np.int64),
        ("cancel_ns", np.int64),
        ("since_ns", np.int64),
        ("lot_ts_ns", np.int64),
        ("stake", np.float64),
        ("ahead", np.float64),
        ("level", np.float64),
        ("repriced", np.bool_),
    ],
    align=True,
)
# one fill of the last bar: side, price (ticks), the contracts it opened or closed, its
# notional and fee (settle currency) and the stake it filled
FILL_DTYPE = np.dtype(
    [
        ("side", np.int64),
        ("price_ticks", np.int64),
        ("contracts", np.float64),
        ("notional", np.float64),
        ("fee", np.float64),
        ("stake", np.float64),
    ],
    align=True,
)
N_ORDERS = 4
LIVE_BUY, LIVE_SELL, CANCELLING_BUY, CANCELLING_SELL = range(N_ORDERS)
MAX_FILLS = N_ORDERS  # a bar fills each order at most once
BROKER_DTYPE = np.dtype(
    [
        ("terms", TERMS_DTYPE),
        ("account", ACCOUNT_DTYPE),
        ("orders", ORDER_DTYPE, (N_ORDERS,)),
        ("n_fills", np.int64),
        ("fills", FILL_DTYPE, (MAX_FILLS,)),
        ("paid", np.float64),
    ],
    align=True,
)


# ------------------------------------------------------------------ the order rules
@njit(cache=True, nogil=True)
def order_contracts(b: np.record, stake: float, price: int) -> float:
    """The contracts `stake` buys at `price` (ticks) on the balance now, rounded down to
    the lot (`terms.lot`; 0: not rounded). `b`: the account's BROKER_DTYPE record."""
    terms = b.terms
    c = contracts_for(stake, b.account.balance, price * terms.tick, terms.inverse, terms.multiplier)
    if terms.lot > 0.0:
        return np.floor(c / terms.lot + 1e-9) * terms.lot
    return c


@njit(cache=True, nogil=True)
def resting(b: np.record) -> bool:
    """True when the account has an order in any slot (live, or its cancel in flight)."""
    o = b.orders
    return o[0].price != 0 or o[1].price != 0 or o[2].price != 0 or o[3].price != 0


@njit(cache=True, nogil=True)
def can_place(b: np.record, lots: np.ndarray, side: int) -> bool:
    """True when a new order of `side` may rest: it would reduce the open stack, or one
    more stake stays within the exposure cap."""
    return can_fill(b.account, lots, side, b.terms.stake, b.terms.max_exposure)


@njit(cache=True, nogil=True)
def new_order(b: np.record, s: int, price: int, size: int, ts: int, stake: float) -> None:
    """An order for `stake` sent at close `ts` into live slot `s` (LIVE_BUY, LIVE_SELL) at
    `price`, the best of its side holding `size` contracts: it arrives after the entry
    latency at the back of the queue (touch: the front). Not placed (the slot empty) when
    it would be 0 contracts."""
    o = b.orders[s]
    if order_contracts(b, stake, price) <= 0.0:
        o.price = 0
        return
    o.price = price
    o.arrive_ns = ts + b.terms.entry_ns
    o.cancel_ns = 0
    o.since_ns = ts
    o.repriced = False
    o.lot_ts_ns = 0
    o.stake = stake
    o.ahead = queue_on_join(b.terms.model, float(size))
    o.level = float(size)


@njit(cache=True, nogil=True)
def cancel(b: np.record, s: int, ts: int, repriced: bool) -> None:
    """Cancel the live order of slot `s`, sent at `ts`: with a cancel latency it moves to
    its side's cancelling slot (s + 2) until the cancel lands (`repriced`: a re-price,
    whose replacement its fills shrink), dropping an older order there; else it goes now."""
    orders = b.orders
    if b.terms.cancel_ns > 0:
        c = s + 2
        orders[c] = orders[s]
        orders[c].cancel_ns = ts + b.terms.cancel_ns
        orders[c].repriced = repriced
    orders[s].price = 0


@njit(cache=True, nogil=True)
def _want(b: np.record, lots: np.ndarray, s: int, on: bool, bar: Bar) -> None:
    """Cancel the live order of slot `s` when not `on`; place one at the best of its side
    when `on` and none is live and the cap allows; a live order wanted stays."""
    live = b.orders[s].price != 0
    if not on:
        if live:
            cancel(b, s, bar.ts, False)
    elif not live and can_place(b, lots, BUY if s == LIVE_BUY else SELL):
        if s == LIVE_BUY:
            new_order(b, LIVE_BUY, bar.bid, bar.bid_size, bar.ts, b.terms.stake)
        else:
            new_order(b, LIVE_SELL, bar.ask, bar.ask_size, bar.ts, b.terms.stake)


@njit(cache=True, nogil=True)
def act(b: np.record, lots: np.ndarray, a: int, bar: Bar) -> bool:
    """The action `a` at the close of the decision bar `bar`, read in the account's action
    mode: "toggle" (1 / 2: cancel the live buy / sell, else place one) or "target" (the
    live orders wanted, a bit per side). False: `a` is not an action of that mode (nothing
    done)."""
    orders = b.orders
    if b.terms.target:
        if a < 0 or a > 3:
            return False
        _want(b, lots, LIVE_BUY, a & 1 != 0, bar)
        _want(b, lots, LIVE_SELL, a & 2 != 0, bar)
    elif a == 1:
        _want(b, lots, LIVE_BUY, orders[LIVE_BUY].price == 0, bar)
    elif a == 2:
        _want(b, lots, LIVE_SELL, orders[LIVE_SELL].price == 0, bar)
    elif a != 0:
        return False
    return True


@njit(cache=True, nogil=True)
def fill_resting(
    b: np.record, lots: np.ndarray, trades: np.ndarray, bar: Bar, s: int, ntr: int
) -> tuple[int, bool]:
    """The order of slot `s` over bar `bar` (the rules of the module docstring): what it
    fills, whole or in part, if anything; a post-only rejection. A fill is recorded in
    `b.fills` (side, price, contracts opened or closed, notional, fee, the stake filled).
    Returns (ntr, filled)."""
    o = b.orders[s]
    terms = b.terms
    p = o.price
    if p == 0:
        return ntr, False
    buy = s % 2 == 0
    side = BUY if buy else SELL
    t0, t1 = o.since_ns, bar.ts
    arrive, landing = o.arrive_ns, o.cancel_ns
    start = arrive if arrive > t0 else t0
    end = landing if 0 < landing < t1 else t1
    if start > end or (start == end and end < t1):
        return ntr, False  # not live in this bar
    if buy:
        px, first, last, at_vol = (
            bar.sell_lo,
            bar.sell_thru_first,
            bar.sell_thru_last,
            bar.sell_at_vol,
        )
        beyond = 0 < px < p
        crossed = bar.ask <= p
    else:
        px, first, last, at_vol = bar.buy_hi, bar.buy_thru_first, bar.buy_thru_last, bar.buy_at_vol
        beyond = px > p
        crossed = bar.bid >= p
    cut = start > t0 or end < t1  # latency hides part of the bar: read the timestamps
    frac = 1.0
    if cut:
        frac = (end - start) / (t1 - t0) if t1 > t0 else 0.0
        beyond = beyond and first >= 0 and last >= start and first <= end
    vol = at_vol * frac if o.level >= 0.0 else 0.0
    model = terms.model
    whole = beyond
    if model == TOUCH:
        whole = whole or (vol > 0.0 if cut else px == p)
    stake = o.stake
    size = order_contracts(b, stake, p)
    q = 0.0
    if not whole and vol > 0.0 and model >= RISK_AVERSE:
        ahead = o.ahead - vol
        o.ahead = ahead
        if ahead < 0.0:
            q = min(-ahead, vol, size)
            if terms.lot > 0.0:
                q = np.floor(q / terms.lot + 1e-9) * terms.lot
    if crossed and end == t1:
        if arrive > t0 and not whole and q <= 0.0:
            o.price = 0  # post-only: crossed in its arrival bar before any fill
            return ntr, False
        whole = True
    if whole:
        q = size
    if q <= 0.0:
        if size <= 0.0:
            o.price = 0  # nothing left to fill
        return ntr, False
    part = stake
    if q < size:
        part = stake * (q / size)
        o.stake = stake - part
    else:
        o.price = 0
    acct = b.account
    before = side_of(acct, lots)
    opened = before == 0 or before == side
    if not opened and q < size:
        part = _stake_of(acct, lots, q)  # a partial close: its contracts, oldest first
    n = acct.n_lots
    merge = (
        opened and n > 0 and o.lot_ts_ns != 0 and lots[n - 1].ts_ns == o.lot_ts_ns
        and lots[n - 1].side == side and lots[n - 1].price_ticks == p
    )  # fmt: skip
    if not can_fill(acct, lots, side, part, terms.max_exposure) or (
        opened and not merge and n >= lots.shape[0]
    ):
        o.price = 0
        return ntr, False
    c0 = contracts_of(acct, lots)
    vol0 = acct.maker_volume
    fee0 = acct.maker_fees
    ntr = fill(
        acct, lots, trades, ntr, side, p, bar.ts, part, q, merge, bar.maker, MAKER,
        terms.tick, terms.inverse, terms.multiplier,
    )  # fmt: skip
    if opened and not merge:
        o.lot_ts_ns = bar.ts
    if s >= 2 and o.repriced and b.orders[s - 2].price != 0:
        # a re-priced order filled in flight: its replacement carries only the rest
        live = b.orders[s - 2]
        left = live.stake - part
        live.stake = left
        if left <= 0.0 or order_contracts(b, left, live.price) <= 0.0:
            live.price = 0
    f = b.fills[b.n_fills]
    b.n_fills = b.n_fills + 1
    f.side = side
    f.price_ticks = p
    f.contracts = q if opened else c0 - contracts_of(acct, lots)
    f.notional = acct.maker_volume - vol0
    f.fee = acct.maker_fees - fee0
    f.stake = part
    return ntr, True


@njit(cache=True, nogil=True)
def _stake_of(acct: np.record, lots: np.ndarray, contracts: float) -> float:
    """The stake the oldest open lots carry for `contracts` of them (all of them at most):
    what a partial fill closing that many contracts reduces the stack by."""
    stake = 0.0
    left = contracts
    for i in range(acct.n_lots):
        if left <= 0.0:
            break
        c = lots[i].contracts
        take = c if c < left else left
        stake += lots[i].stake * (take / c)
        left -= take
    return stake


@njit(cache=True, nogil=True)
def settle_funding(b: np.record, lots: np.ndarray, bar: Bar) -> bool:
    """Funding due at the bar's close (its `funding_rate`, 0 = none), when the account
    settles funding, on an open position marked at the bar's mid; the amount paid goes to
    `b.paid`. Returns whether it settled."""
    rate = bar.funding_rate
    terms = b.terms
    if not terms.funding or rate == 0.0 or b.account.n_lots == 0:
        return False
    b.paid = pay_funding(
        b.account, lots, rate, bar.mid, terms.tick, terms.inverse, terms.multiplier
    )
    return True


@njit(cache=True, nogil=True)
def at_close(b: np.record, bar: Bar) -> None:
    """The orders at the bar's close: a cancel that landed removes its order; queue places
    update (the module docstring's rules); with rolling on, a live order off the best of
    its side is re-priced there (cancel + a new order for the stake it still carries)."""
    terms = b.terms
    t1 = bar.ts
    queue = terms.model >= RISK_AVERSE  # risk_averse, power_prob
    for s in (CANCELLING_BUY, CANCELLING_SELL, LIVE_BUY, LIVE_SELL):
        o = b.orders[s]
        p = o.price
        if p == 0:
            continue
        if o.cancel_ns != 0 and o.cancel_ns <= t1:
            o.price = 0
            continue
        buy = s % 2 == 0
        best = bar.bid if buy else bar.ask
        size = float(bar.bid_size if buy else bar.ask_size)
        if queue:
            ahead = o.ahead
            if best == p:
                if o.arrive_ns > t1:
                    ahead = size  # not arrived: joins the book as it stands
                elif o.level >= 0.0:
                    at_vol = bar.sell_at_vol if buy else bar.buy_at_vol
                    ahead, _ = queue_on_depth(
                        terms.model, ahead, float(at_vol), o.level, size, terms.power
                    )
                else:
                    ahead = min(ahead, size)
            elif (best < p) == buy:  # the best moved past p: the level at p was taken
                ahead = min(ahead, 0.0)
            o.ahead = ahead
        o.level = size if best == p else -1.0
        o.since_ns = t1
        if s < 2 and terms.roll and best != p:
            stake = o.stake
            cancel(b, s, t1, True)
            new_order(b, s, best, bar.bid_size if buy else bar.ask_size, t1, stake)


@njit(cache=True, nogil=True)
def on_bar(
    b: np.record, lots: np.ndarray, trades: np.ndarray, bar: Bar, ntr: int
) -> tuple[int, bool]:
    """One bar after the decision bar: each side's orders may fill (the buy side first,
    an order whose cancel is in flight before the live one); funding settles if due; the
    close (`at_close`). What it filled and paid is in `b.fills` / `b.n_fills` / `b.paid`
    until the next bar. Returns (ntr, whether the account changed)."""
    b.n_fills = 0
    b.paid = 0.0
    filled = False
    for s in (CANCELLING_BUY, LIVE_BUY, CANCELLING_SELL, LIVE_SELL):
        ntr, f = fill_resting(b, lots, trades, bar, s, ntr)
        filled = filled or f
    paid = settle_funding(b, lots, bar)
    at_close(b, bar)
    return ntr, filled or paid


@njit(cache=True, nogil=True)
def flatten(b: np.record, lots: np.ndarray, trades: np.ndarray, bar: Bar, ntr: int) -> int:
    """Close the open lots (the caller checked there are some) at the bar's touch, a taker
    fill at the bar's taker rate, and cancel the orders. Returns ntr."""
    acct, terms = b.account, b.terms
    side = -lots[0].side
    price = bar.bid if side == SELL else bar.ask
    ntr = fill(
        acct, lots, trades, ntr, side, price, bar.ts, exposure_of(acct, lots), 0.0, False,
        bar.taker, TAKER, terms.tick, terms.inverse, terms.multiplier,
    )  # fmt: skip
    for s in range(N_ORDERS):
        b.orders[s].price = 0
    return ntr


# ------------------------------------------------------------------ the account
# the bar fields each fill model reads beyond a bar's prices and prints (a slice without
# them cannot run it); latency also reads the through timestamps
QUEUE_FIELDS = ("bid_size", "ask_size", "sell_at_vol", "buy_at_vol")
LATENCY_FIELDS = ("sell_thru_first", "sell_thru_last", "buy_thru_first", "buy_thru_last")


def fields_needed(
    fill_model: str, entry_latency_ms: float, cancel_latency_ms: float
) -> tuple[str, ...]:
    """The BAR_DTYPE fields beyond today's that the fill model and latency read (touch
    and trade_through with zero latency: none, so they run on slices without them).
    Raises ValueError on an unknown model or a negative latency."""
    if fill_model not in QUEUE_MODELS:
        raise ValueError(f"fill_model {fill_model!r}: expected one of {', '.join(QUEUE_MODELS)}")
    if entry_latency_ms < 0 or cancel_latency_ms < 0:
        raise ValueError("entry_latency_ms and cancel_latency_ms must be >= 0")
    queue = QUEUE_FIELDS if QUEUE_MODELS[fill_model] >= RISK_AVERSE else ()
    latency = entry_latency_ms > 0 or cancel_latency_ms > 0
    # touch with latency reads the at-price volume of the live part of a bar
    touch = ("sell_at_vol", "buy_at_vol") if latency and fill_model == "touch" else ()
    lat = LATENCY_FIELDS if latency else ()
    return tuple(dict.fromkeys((*queue, *touch, *lat)))


def terms_for(
    fill_model: str,
    power_prob_n: float,
    entry_latency_ms: float,
    cancel_latency_ms: float,
    stake: float,
    max_exposure: float,
    instrument: InstrumentSpec,
    roll: bool,
    funding: bool,
    target: bool,
) -> np.ndarray:
    """The terms of these rules on `instrument` (its lot rounds every order), a 1-row
    TERMS_DTYPE array."""
    fields_needed(fill_model, entry_latency_ms, cancel_latency_ms)
    terms = np.zeros(1, TERMS_DTYPE)
    terms["stake"] = stake
    terms["max_exposure"] = max_exposure
    terms["tick"] = instrument.tick_size
    terms["multiplier"] = instrument.multiplier
    terms["lot"] = instrument.lot_size
    terms["power"] = power_prob_n
    terms["model"] = QUEUE_MODELS[fill_model]
    terms["entry_ns"] = round(entry_latency_ms * 1_000_000)
    terms["cancel_ns"] = round(cancel_latency_ms * 1_000_000)
    terms["inverse"] = instrument.is_inverse
    terms["roll"] = roll
    terms["funding"] = funding
    terms["target"] = target
    return terms


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
        fields_needed(self.fill_model, self.entry_latency_ms, self.cancel_latency_ms)

    @property
    def limits(self) -> StateLimits:
        return StateLimits(
            max_exposure=self.max_exposure, hours_clip=self.hours_clip, pct_clip=self.pct_clip
        )


@dataclass(frozen=True, slots=True)
class BrokerFill:
    """One fill of a resting order: when (the bar's close, ns), side (+1 buy / -1 sell),
    the price it filled at (ticks), the stake it filled (the order's, or its share in a
    partial fill), and what it moved: the contracts it opened
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


def _due_rate(due: bool, rate: float | None, rules: BrokerRules) -> float:
    """The funding rate a bar settles: 0 when no funding time falls in it, else `rate`
    (announced), else the rules' constant."""
    if not due:
        return 0.0
    return float(rules.funding_rate if rate is None else rate)


class BrokerAccount:
    """One account at the broker, run bar by bar: the paper account of the live loop's
    observe mode. The same kernels as the env's step (`act`, `on_bar`) on the same
    BROKER_DTYPE record, fed one live bar at a time; the funding due at a bar is the instrument's rule
    between the previous bar seen and this one (`core.instrument.funding_settles`), at
    the rate the exchange announced for it when the caller passes one (`on_bar`'s
    `funding_rate`; `live.funding`), else the rules' constant `funding_rate`.

    What one bar did is kept until the next `on_bar` (`last_fills`, `last_funding`), so
    the live loop can print and record it (`live.paper_log`)."""

    def __init__(self, rules: BrokerRules, instrument: InstrumentSpec, position: Position) -> None:
        self.instrument = instrument
        self._rules = rules
        self._load(position, None)
        self.fills = 0
        self.last_fills: list[BrokerFill] = []  # the fills of the last `on_bar`
        self.last_funding = 0.0  # funding paid on the last `on_bar` (settle currency)
        self.bar_ts: int | None = None  # close of the last bar seen (funding's previous close)

    def _load(self, position: Position, orders: np.ndarray | None) -> None:
        """The rules' terms, `position` and the orders (`orders`, a copy of an account's
        ORDER_DTYPE slots; None: none) in a fresh BROKER_DTYPE record, with lot room for
        what the rules allow (or `position` holds; partial fills open smaller lots) and
        trade room for a bar's fills."""
        r, inst = self._rules, self.instrument
        full = int((r.max_exposure + 1e-9) / r.stake_fraction)
        lot_cap = max(2 * full + 4, len(position.lots) + 2)
        account, lots = _arrays(position, spare=lot_cap - len(position.lots))
        broker = np.zeros(1, BROKER_DTYPE)
        broker["terms"] = terms_for(
            r.fill_model, r.power_prob_n, r.entry_latency_ms, r.cancel_latency_ms,
            r.stake_fraction, r.max_exposure, inst, r.roll_orders, r.funding,
            r.action_mode == "target",
        )  # fmt: skip
        broker["account"] = account
        if orders is not None:
            broker["orders"] = orders
        self._broker = broker
        self._b = broker[0]  # the record the kernels take (a view: they write through it)
        self._lots = lots
        # a bar's fills close at most every lot, each
        self._trades = np.zeros(MAX_FILLS * lot_cap, TRADE_DTYPE)

    def _orders(self) -> np.ndarray:
        return self._broker["orders"].copy()

    @property
    def rules(self) -> BrokerRules:
        return self._rules

    @rules.setter
    def rules(self, rules: BrokerRules) -> None:
        """New rules (a new model) keep the position and the resting orders."""
        position, orders = self.position, self._orders()
        self._rules = rules
        self._load(position, orders)

    @property
    def position(self) -> Position:
        """The account and open lots now (a fresh immutable value)."""
        return position_from_arrays(self._broker["account"], self._lots)

    @position.setter
    def position(self, position: Position) -> None:
        """Live trade mode: the position the exchange's executions made."""
        self._load(position, self._orders())

    def _set_order(self, s: int, price: int) -> None:
        """Live trade mode: the exchange's own order of slot `s` (LIVE_BUY, LIVE_SELL) at
        `price` (0: none), for one stake, arrived and at the front of its queue (its
        place there is the exchange's, not modelled)."""
        o = self._broker["orders"][0, s : s + 1]
        if price == 0:
            o["price"] = 0
            return
        t = self.bar_ts or 0
        o[:] = np.zeros(1, ORDER_DTYPE)
        o["price"] = price
        o["arrive_ns"] = t
        o["since_ns"] = t
        o["stake"] = self._rules.stake_fraction
        o["level"] = -1.0

    @property
    def bid_px(self) -> int:
        """The live buy's price (ticks, 0 = none)."""
        return int(self._broker["orders"]["price"][0, LIVE_BUY])

    @bid_px.setter
    def bid_px(self, price: int) -> None:
        self._set_order(LIVE_BUY, int(price))

    @property
    def ask_px(self) -> int:
        """The live sell's price (ticks, 0 = none)."""
        return int(self._broker["orders"]["price"][0, LIVE_SELL])

    @ask_px.setter
    def ask_px(self, price: int) -> None:
        self._set_order(LIVE_SELL, int(price))

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

    def act(
        self,
        action: int | None,
        best_bid: int,
        best_ask: int,
        *,
        ts_ns: int | None = None,
        bid_size: int = 0,
        ask_size: int = 0,
    ) -> None:
        """The action at the close of the decision bar (whose best prices, and sizes
        there, are given; `ts_ns` its close, by default the last bar seen), read in the
        rules' action mode (`act`; None: no decision). Raises ValueError on an action the
        mode does not have."""
        if action is None:
            return
        ts = int(ts_ns) if ts_ns is not None else (self.bar_ts or 0)
        bar = Bar(ts, int(best_bid), int(best_ask), 0, 0, 0.0, 0.0, 0.0, 0.0,
                  int(bid_size), int(ask_size))  # fmt: skip
        if not act(self._b, self._lots, int(action), bar):
            n = len(ACTION_NAMES[self._rules.action_mode])
            raise ValueError(f"action must be one of 0..{n - 1}, got {action!r}")

    def funding_due(self, ts_ns: int) -> bool:
        """Whether the bar closing at `ts_ns` settles funding: the rules settle it and
        one of the instrument's funding times lies between the last bar seen and it
        (`core.instrument.funding_settles`)."""
        prev = self.bar_ts
        return bool(
            self._rules.funding
            and prev is not None
            and funding_settles(prev, int(ts_ns), self.instrument)
        )

    def on_bar(
        self,
        ts_ns: int,
        best_bid: int,
        best_ask: int,
        buy_hi: int,
        sell_lo: int,
        mid_ticks: float | None = None,
        *,
        bid_size: int = 0,
        ask_size: int = 0,
        sell_at_vol: int = 0,
        sell_thru_first: int = -1,
        sell_thru_last: int = -1,
        buy_at_vol: int = 0,
        buy_thru_first: int = -1,
        buy_thru_last: int = -1,
        funding_rate: float | None = None,
    ) -> None:
        """Fills, funding and the close over one bar after the decision bar (`on_bar`);
        `mid_ticks`, the funding mark: the bar's mid, by default (best_bid + best_ask) / 2.
        The keyword fields are #17's bar fields (BAR_DTYPE's), by default unknown (no
        at-price volume, no through timestamps, sizes 0). The fee is the rules' in force at
        the bar's close; a funding time in the bar settles at `funding_rate` (the rate
        the exchange announced for it), by default the rules' constant."""
        r = self._rules
        ts = int(ts_ns)
        due = self.funding_due(ts)
        self.bar_ts = ts
        maker, taker = r.fees.rates_at(ts)
        mid = (best_bid + best_ask) / 2.0 if mid_ticks is None else mid_ticks
        bar = Bar(
            ts, int(best_bid), int(best_ask), int(buy_hi), int(sell_lo), float(mid),
            float(maker), float(taker), _due_rate(due, funding_rate, r), int(bid_size),
            int(ask_size), int(sell_at_vol), int(sell_thru_first), int(sell_thru_last),
            int(buy_at_vol), int(buy_thru_first), int(buy_thru_last),
        )  # fmt: skip
        on_bar(self._b, self._lots, self._trades, bar, 0)
        b = self._b
        self.last_funding = float(b["paid"])
        self.last_fills = [
            BrokerFill(ts, side, price, stake, contracts, notional, fee, float(maker))
            for side, price, contracts, notional, fee, stake in b["fills"][: b["n_fills"]].tolist()
        ]
        self.fills += len(self.last_fills)
