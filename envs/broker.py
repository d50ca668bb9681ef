"""The broker: what the resting maker orders see of the market, bar by bar (pure ring).

A slice's bars (ManagementEnv, the backtest) or the live loop's last bars (the paper
account) are one numpy structured array of `BAR_DTYPE`, read by field name in Python
(`bars["maker"]`). The kernels read bar k as a `Bar` of scalars (`bar_at(bars_i, bars_f,
k).sell_lo`), from the int64 and float64 views of the same rows (`bar_views`).

Why two plain views and not a NamedTuple of 1-D arrays or the structured array itself: a
numba call unboxes a NamedTuple argument field by field through numba's Python typeof
(about 2 us for nine arrays, most of an env step) and a structured array through a slower
type lookup (about 0.2 us); a plain 2-D array costs about 0.05 us.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from core.instrument import InstrumentSpec, funding_settles

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


# the columns of a bar row in the int64 / float64 views (BAR_DTYPE's field order)
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


@njit(cache=True, nogil=True)
def bar_at(bars_i: np.ndarray, bars_f: np.ndarray, k: int) -> Bar:
    """Bar k of the views `bar_views` returns."""
    return Bar(
        bars_i[k, _TS], bars_i[k, _BID], bars_i[k, _ASK], bars_i[k, _BUY_HI], bars_i[k, _SELL_LO],
        bars_f[k, _MID], bars_f[k, _MAKER], bars_f[k, _TAKER], bars_f[k, _FUNDING_RATE],
    )  # fmt: skip


def bar_views(bars: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The int64 and float64 (rows, 9) views of a BAR_DTYPE array, what the kernels take
    (`bar_at` reads the ints from the first and the floats from the second)."""
    if bars.dtype != BAR_DTYPE or not bars.flags.c_contiguous:
        raise ValueError("bars must be a C-contiguous BAR_DTYPE array")
    n = len(bars)
    return bars.view(np.int64).reshape(n, 9), bars.view(np.float64).reshape(n, 9)


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
