# mypy: disable-error-code="arg-type,assignment"
# (numba kernels mix np.int64 and int freely; numba, not mypy, types their bodies)
"""Deterministic synthetic BitMEX-like XBTUSD market in canonical form. Pure.

Model (a queue-reactive limit order book, simulated event by event in numba):
- The book holds ``depth_levels`` contiguous price levels per side (one per tick);
  the spread is one tick unless a market order has just emptied a best level.
- Event clock: a Poisson process whose intensity is modulated by a stochastic
  activity factor ``v(t) = exp(h(t) - s^2/2)`` with ``h`` an Ornstein-Uhlenbeck
  process (half-life ~20 min, stationary std s). Busy periods bring more market
  orders, hence more price moves: volatility clustering and fat-tailed 1-minute
  returns.
- Events: limit adds and partial cancels at a level drawn geometrically from the
  touch (cancels never empty a level), market orders, and, while the spread is wider
  than one tick, refills inside the spread (the side that just moved follows).
- A market order that is at least the best opposite queue takes it whole: the
  level is deleted and the price moves one tick. Its size grows with the regime's
  ``volatility_scale``.
- **The predictable component** (documented, modest): the side of the next market
  order is tilted by level-1 queue imbalance ``I = (qb - qa) / (qb + qa)``:
  ``P(buy) = 0.5 + imbalance_tilt * I / 2``. With tilt 0 the book still shows the
  mechanical queue-depletion effect (the thinner queue empties first).

Each day starts with a snapshot of the whole book at 00:00:00 UTC; state (price,
queues, activity) carries over between days. ``ts_recv = ts_event + latency`` (1 ms
plus an exponential 2 ms jitter), made non-decreasing. Every random number comes
from one ``numpy.random.Generator`` seeded by ``cfg.seed``.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import polars as pl
from numba import njit

from core import schema
from core.clock import NS_PER_DAY, NS_PER_S, iso_day, parse_day
from core.config.market import RegimeConfig, SyntheticMarketConfig
from core.instrument import InstrumentSpec

LOT = 100  # XBTUSD lot (contracts)
_HALF_LIFE_S = 1200.0
_H_STD = 0.9  # stationary std of the log activity
_ADD_SHARE = 0.55  # share of book events that are adds (rest: cancels)
_REFILL_PER_S = 6.0
_LEVEL_P = 0.45  # geometric parameter of the level an add/cancel hits
_SIZE_MU = np.log(12.0)  # median order size in lots
_MARKET_MU = np.log(12.0)


def _book_schema() -> dict[str, pl.DataType]:
    return {c: _pl(schema.EVENT_DTYPES[c]) for c in schema.BOOK_COLUMNS}


def _trade_schema() -> dict[str, pl.DataType]:
    return {c: _pl(schema.EVENT_DTYPES[c]) for c in schema.TRADE_COLUMNS}


def _pl(name: str) -> pl.DataType:
    return {"int64": pl.Int64(), "int8": pl.Int8(), "bool": pl.Boolean()}[name]


@njit(cache=True)
def _lots(rng: np.random.Generator, mu: float, sigma: float) -> np.int64:
    return np.int64(max(1.0, np.floor(np.exp(mu + sigma * rng.standard_normal())))) * LOT


@njit(cache=True)
def _level(rng: np.random.Generator, depth: int) -> int:
    k = 0
    while k < depth - 1 and rng.random() > _LEVEL_P:
        k += 1
    return k


@njit(cache=True)
def _push(
    rows: np.ndarray,
    n: int,
    a: int,
    b: int,
    c: int,
    d: int,
    e: int,
    f: int,
) -> np.ndarray:
    if n >= rows.shape[0]:
        new = np.zeros((rows.shape[0] * 2, rows.shape[1]), dtype=np.int64)
        new[: rows.shape[0]] = rows
        rows = new
    rows[n, 0] = a
    rows[n, 1] = b
    rows[n, 2] = c
    rows[n, 3] = d
    rows[n, 4] = e
    if rows.shape[1] > 5:
        rows[n, 5] = f
    return rows


@njit(cache=True)
def _simulate_day(
    rng: np.random.Generator,
    stf: np.ndarray,
    sti: np.ndarray,
    bidq: np.ndarray,
    askq: np.ndarray,
    t0: int,
    t1: int,
    book_rate: float,
    trade_rate: float,
    vol_scale: float,
    tilt: float,
) -> tuple[np.ndarray, int, np.ndarray, int]:
    """Simulate [t0, t1) ns. stf = [h, last_recv]; sti = [best_bid_ticks, spread_ticks].

    bidq[i] / askq[i] = size at best_bid - i / best_ask + i. Rows of book:
    (ts_event, ts_recv, side, price, size, is_snapshot); trades: first five.
    """
    depth = bidq.shape[0]
    book = np.zeros((1 << 16, 6), dtype=np.int64)
    trades = np.zeros((1 << 14, 5), dtype=np.int64)
    nb = 0
    nt = 0
    pb = sti[0]
    spread = sti[1]
    # day-start snapshot
    for i in range(depth):
        book = _push(book, nb, t0, t0, 1, pb - i, bidq[i], 1)
        nb += 1
    for i in range(depth):
        book = _push(book, nb, t0, t0, -1, pb + spread + i, askq[i], 1)
        nb += 1
    h = stf[0]
    kappa = np.log(2.0) / _HALF_LIFE_S
    t = float(t0)
    last_recv = t0
    while True:
        v = np.exp(h - 0.5 * _H_STD * _H_STD)
        r_book = book_rate
        r_trade = trade_rate * v
        r_refill = _REFILL_PER_S if spread > 1 else 0.0
        total = r_book + r_trade + r_refill
        dt_s = rng.exponential(1.0 / total)
        a = np.exp(-kappa * dt_s)
        h = h * a + _H_STD * np.sqrt(1.0 - a * a) * rng.standard_normal()
        t += dt_s * NS_PER_S
        te = np.int64(t)
        if te >= t1:
            break
        if te <= t0:
            te = t0 + 1
        tr = te + np.int64(1_000_000 + rng.exponential(2_000_000.0))
        if tr <= last_recv:
            tr = last_recv
        last_recv = tr
        pa = pb + spread
        u = rng.random() * total
        if u < r_refill:
            # the side that just moved follows: fill inside the spread
            qb = bidq[0]
            qa = askq[0]
            if rng.random() < 0.5 + 0.3 * (qb - qa) / (qb + qa):
                for i in range(depth - 1, 0, -1):
                    bidq[i] = bidq[i - 1]
                pb += 1
                bidq[0] = _lots(rng, _SIZE_MU, 0.8)
                book = _push(book, nb, te, tr, 1, pb, bidq[0], 0)
                nb += 1
                book = _push(book, nb, te, tr, 1, pb - depth, 0, 0)
                nb += 1
            else:
                for i in range(depth - 1, 0, -1):
                    askq[i] = askq[i - 1]
                askq[0] = _lots(rng, _SIZE_MU, 0.8)
                book = _push(book, nb, te, tr, -1, pa - 1, askq[0], 0)
                nb += 1
                book = _push(book, nb, te, tr, -1, pa + depth - 1, 0, 0)
                nb += 1
            spread -= 1
        elif u < r_refill + r_trade:
            qb = bidq[0]
            qa = askq[0]
            imb = (qb - qa) / (qb + qa)
            buy = rng.random() < 0.5 + 0.5 * tilt * imb
            size = (
                np.int64(np.floor(np.exp(_MARKET_MU + 1.1 * rng.standard_normal()) * vol_scale))
                * LOT
            )
            if size < LOT:
                size = LOT
            if buy:
                if size >= askq[0]:
                    trades = _push(trades, nt, te, tr, 1, pa, askq[0], 0)
                    nt += 1
                    book = _push(book, nb, te, tr, -1, pa, 0, 0)
                    nb += 1
                    for i in range(depth - 1):
                        askq[i] = askq[i + 1]
                    askq[depth - 1] = _lots(rng, _SIZE_MU + 0.7, 0.8)
                    book = _push(book, nb, te, tr, -1, pa + depth, askq[depth - 1], 0)
                    nb += 1
                    spread += 1
                else:
                    askq[0] -= size
                    trades = _push(trades, nt, te, tr, 1, pa, size, 0)
                    nt += 1
                    book = _push(book, nb, te, tr, -1, pa, askq[0], 0)
                    nb += 1
            else:
                if size >= bidq[0]:
                    trades = _push(trades, nt, te, tr, -1, pb, bidq[0], 0)
                    nt += 1
                    book = _push(book, nb, te, tr, 1, pb, 0, 0)
                    nb += 1
                    for i in range(depth - 1):
                        bidq[i] = bidq[i + 1]
                    bidq[depth - 1] = _lots(rng, _SIZE_MU + 0.7, 0.8)
                    book = _push(book, nb, te, tr, 1, pb - depth, bidq[depth - 1], 0)
                    nb += 1
                    pb -= 1
                    spread += 1
                else:
                    bidq[0] -= size
                    trades = _push(trades, nt, te, tr, -1, pb, size, 0)
                    nt += 1
                    book = _push(book, nb, te, tr, 1, pb, bidq[0], 0)
                    nb += 1
        else:
            bid_side = rng.random() < 0.5
            k = _level(rng, depth)
            q = bidq[k] if bid_side else askq[k]
            if rng.random() < _ADD_SHARE:
                q += _lots(rng, _SIZE_MU - 0.3, 1.0)
            else:
                cut = np.int64(np.floor(q / LOT * rng.random())) * LOT
                q = max(np.int64(LOT), q - cut)
            if bid_side:
                bidq[k] = q
                book = _push(book, nb, te, tr, 1, pb - k, q, 0)
            else:
                askq[k] = q
                book = _push(book, nb, te, tr, -1, pa + k, q, 0)
            nb += 1
    stf[0] = h
    stf[1] = float(last_recv)
    sti[0] = pb
    sti[1] = spread
    return book, nb, trades, nt


def _frame(
    rows: np.ndarray, cols: tuple[str, ...], schema_: dict[str, pl.DataType]
) -> pl.DataFrame:
    data = {c: rows[:, i] for i, c in enumerate(cols)}
    return pl.DataFrame(data).cast(schema_)  # type: ignore[arg-type]


def _regime(cfg: SyntheticMarketConfig, day_index: int) -> RegimeConfig:
    return cfg.regimes[min(day_index, len(cfg.regimes) - 1)]


def generate_market(
    cfg: SyntheticMarketConfig, instrument: InstrumentSpec | None = None
) -> Iterator[tuple[str, pl.DataFrame, pl.DataFrame]]:
    """Yield ``(day "YYYY-MM-DD", book_deltas, trades)`` for ``cfg.days`` days.

    Canonical columns and dtypes (``core.schema``), rows in ts_recv order, each day
    opening with a snapshot of ``cfg.depth_levels`` levels per side at 00:00 UTC.
    Deterministic from ``cfg.seed``; the book is never crossed after a message.
    """
    inst = instrument or InstrumentSpec()
    rng = np.random.default_rng(np.random.SeedSequence(cfg.seed))
    depth = cfg.depth_levels
    bidq = np.array([int(_lots_py(rng, _SIZE_MU + 0.7)) for _ in range(depth)], dtype=np.int64)
    askq = np.array([int(_lots_py(rng, _SIZE_MU + 0.7)) for _ in range(depth)], dtype=np.int64)
    pb = inst.price_to_ticks(round(cfg.start_price / inst.tick_size) * inst.tick_size)
    sti = np.array([pb, 1], dtype=np.int64)
    stf = np.array([0.0, 0.0])
    day0 = parse_day(cfg.start_day)
    span = int(cfg.day_hours * 3600 * NS_PER_S)
    for d in range(cfg.days):
        reg = _regime(cfg, d)
        t0 = day0 + d * NS_PER_DAY
        book, nb, trades, nt = _simulate_day(
            rng,
            stf,
            sti,
            bidq,
            askq,
            np.int64(t0),
            np.int64(t0 + span),
            float(cfg.book_events_per_s),
            float(cfg.trades_per_s * reg.trade_rate_scale),
            float(reg.volatility_scale),
            float(reg.imbalance_tilt),
        )
        yield (
            iso_day(t0),
            _frame(book[:nb], schema.BOOK_COLUMNS, _book_schema()),
            _frame(trades[:nt], schema.TRADE_COLUMNS, _trade_schema()),
        )


def _lots_py(rng: np.random.Generator, mu: float) -> int:
    return max(1, int(np.floor(np.exp(mu + 0.8 * rng.standard_normal())))) * LOT
