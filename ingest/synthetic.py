# mypy: disable-error-code="arg-type,assignment"
# (numba kernels mix np.int64 and int freely; numba, not mypy, types their bodies)
"""Deterministic synthetic BitMEX-like XBTUSD market in canonical form. Pure.

Two models (``SyntheticMarketConfig.model``); both share the event clock, the latency
and the day layout below.

``simple`` (the default; output pinned byte for byte by tests/ingest/test_synthetic.py)
is a queue-reactive limit order book, simulated event by event in numba:
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
  mechanical queue-depletion effect (the thinner queue empties first), so this model
  has no "no edge" setting.

``realistic`` (a market that fights back; parameters in `RealisticMarketConfig`,
calibrated to the real capture with `chappie audit market`): the price is a value
process the book follows, so what a maker sees is what it would see on BitMEX:
- *Moves* (changes of value) arrive at ``moves_per_s * v(t) * volatility_scale``;
  a move is k ticks, geometric (``jump_continue_p``). Its direction is a coin tilted
  only by the planted edge (`PlantedEdgeConfig`): with strength 0 the mid is a
  martingale and no observable predicts it.
- A move goes through the stale quotes first (message 1): an *informed* market order
  sweeps the k levels ahead (always when k >= 2, else with ``informed_share``), taking
  a lognormal amount at each and the makers pulling the rest; otherwise the makers
  cancel them. The other side follows one tick behind the new touch ``follow_ms``
  later (message 2): a fresh small order at the new touch, then a burst of joins
  (``burst_updates_per_s`` for ~``burst_ms``) filling it toward its target. A resting
  order at the old touch is filled just before the price moves through it: passive
  fills are adversely selected (negative markouts), and latency hurts stale quotes.
- *Uninformed market orders* (``noise_orders_per_s``, lognormal sizes with the
  capture's heavy tail) print at the touch; the makers there replenish what they take
  beyond the queue, so they never move the price.
- *Touch queues* drift toward targets ``touch_queue_median * exp(+-touch_lean_ln * L
  + touch_queue_sigma * eps)`` (bid +, ask -; L the book's lean): one heavy and one
  light side, as in the capture. *Behind the touch*, adds and cancels make levels
  appear and vanish (a lone small order or real size), giving the capture's
  insert / update / delete mix.
- **The planted edge**: ``P(next move up) = (1 + strength * L) / 2``, ``L = tanh(lean
  * Z)`` with Z an Ornstein-Uhlenbeck lean (half-life ``half_life_s``; edge model
  ``lean``) or the gap ``(F - mid) / J`` to a hidden fair value F that jumps by +-J
  ticks at the rate giving it the no-edge mid's variance (model ``fair_value``: the mid
  follows F, so the edge does not add volatility over hours). L shows in the named
  feature (touch queues, the real size behind them, trade flow or only the price path)
  at every strength; `market_metadata` records which and how strong.

Each day starts with a snapshot of the whole book at 00:00:00 UTC; state (price,
queues, activity) carries over between days. ``ts_recv = ts_event + latency`` (1 ms
plus an exponential 2 ms jitter), made non-decreasing. Every random number comes
from one ``numpy.random.Generator`` seeded by ``cfg.seed``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Literal, TypedDict

import numpy as np
import polars as pl

from core import schema
from core.clock import NS_PER_DAY, NS_PER_S, iso_day, parse_day
from core.config.market import RegimeConfig, SyntheticMarketConfig
from core.hashing import fingerprint
from core.instrument import InstrumentSpec
from core.numba_cache import njit

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


# ------------------------------------------------------------------ realistic model
# Parameter vector of `_simulate_day_realistic` (one float64 array: numba-friendly).
(
    P_MOVES,
    P_JUMP,
    P_INFORMED,
    P_NOISE,
    P_NOISE_MED,
    P_NOISE_SIG,
    P_TQ_MED,
    P_TQ_SIG,
    P_TOUCH,
    P_BURST,
    P_BURST_MS,
    P_FOLLOW_MS,
    P_DEEP,
    P_DEEP_MED,
    P_DEEP_CANCEL,
    P_EDGE,
    P_EDGE_HL,
    P_LEAN,
    P_VOL,
    P_TRADE_SCALE,
    P_TLEAN,
    P_DEEP_SMALL,
    P_CARRIER,
    P_FLOW_LEAN,
    P_FV,
    P_FV_JUMP,
    P_K2,
) = range(27)
N_PARAMS = 27
# Where the planted edge's lean shows (`PlantedEdgeConfig.feature`).
CARRIERS = {"imbalance_l1": 0, "trade_imbalance_60s": 1, "log_return_60s": 2, "imbalance_l10": 3}
_BOOK, _FLOW, _DEEP = 0, 1, 3
# Carried state (float64): activity h, last ts_recv, the edge's lean Z, the book's
# lean (Z itself when the book carries the edge, else an independent twin: the book
# leans the same amount either way), touch-target noise of the bid and ask, end of the
# bid's and ask's filling burst (ns), and (edge model "fair_value") the gap F - mid in
# ticks between the hidden fair value and the mid.
S_H, S_RECV, S_Z, S_ZB, S_EPS_B, S_EPS_A, S_FRESH_B, S_FRESH_A, S_GAP = range(9)
N_STATE = 9
_FRESH_MEDIAN = 200.0  # contracts: the first order at a new price (the capture: 100-400)
_INFORMED_MULT = 4.0  # an informed order's touch take: noise median times this
_DEEP_SIGMA = 1.2  # ln size of a real-size deep level (the capture: 5k to 300k)
_DEEP_LEVEL_P = 0.2  # geometric parameter of the deep level an add/cancel hits
_PATH_STEP_S = 1.0  # grid of the activity and lean paths (half-lives of 60 s and more)


@njit(cache=True)
def _activity(stf: np.ndarray) -> float:
    """The activity multiplier of the rates now: exp(h) with mean 1 (h the carried
    log activity, stationary std `_H_STD`)."""
    return np.exp(stf[S_H] - 0.5 * _H_STD * _H_STD)


@njit(cache=True)
def _size(rng: np.random.Generator, median: float, sigma: float) -> np.int64:
    """Lognormal size in whole lots (at least one lot), contracts."""
    x = median * np.exp(sigma * rng.standard_normal()) / LOT
    return np.int64(max(1.0, np.floor(x))) * LOT


@njit(cache=True)
def _latency(rng: np.random.Generator, te: np.int64, last_recv: np.int64, t1: int) -> np.int64:
    """ts_recv of an event at te: 1 ms + exp(2 ms) later, never before the last one,
    and before the day's end t1 (a day's rows stay in its partition)."""
    tr = te + np.int64(1_000_000 + rng.exponential(2_000_000.0))
    tr = tr if tr > last_recv else last_recv
    return tr if tr < t1 else np.int64(t1 - 1)


@njit(cache=True)
def _touch_target(p: np.ndarray, stf: np.ndarray, side: int) -> float:
    """Target size of a touch queue: the book's lean tilts the two sides opposite ways."""
    eps = stf[S_EPS_B] if side > 0 else stf[S_EPS_A]
    z = stf[S_Z] if p[P_CARRIER] == _BOOK else stf[S_ZB]
    # when the deep book carries the edge the touch queues do not lean at all (their
    # lean, on the twin, would drown the deep book's in imbalance_l10)
    lean = 0.0 if p[P_CARRIER] == _DEEP else np.tanh(p[P_LEAN] * z)
    return p[P_TQ_MED] * np.exp(side * p[P_TLEAN] * lean + p[P_TQ_SIG] * eps)


@njit(cache=True)
def _deep_size(rng: np.random.Generator, p: np.ndarray, stf: np.ndarray, side: int) -> np.int64:
    """A new level behind the touch: a lone small order or a real-size level. When the
    deep book carries the edge (feature imbalance_l10), real size leans toward L as the
    touch queues would (median x exp(+-touch_lean_ln L), bid +, ask -)."""
    if rng.random() < p[P_DEEP_SMALL]:
        return _size(rng, _FRESH_MEDIAN, 0.7)
    median = p[P_DEEP_MED]
    if p[P_CARRIER] == _DEEP:
        median *= np.exp(side * p[P_TLEAN] * np.tanh(p[P_LEAN] * stf[S_Z]))
    return _size(rng, median, _DEEP_SIGMA)


@njit(cache=True)
def _snapshot(
    book: np.ndarray, nb: int, t0: int, bidq: np.ndarray, askq: np.ndarray, pb: int, pa: int
) -> tuple[np.ndarray, int]:
    for i in range(bidq.shape[0]):
        if bidq[i] > 0:
            book = _push(book, nb, t0, t0, 1, pb - i, bidq[i], 1)
            nb += 1
    for i in range(askq.shape[0]):
        if askq[i] > 0:
            book = _push(book, nb, t0, t0, -1, pa + i, askq[i], 1)
            nb += 1
    return book, nb


@njit(cache=True)
def _simulate_day_realistic(
    rng: np.random.Generator,
    rng_path: np.random.Generator,
    stf: np.ndarray,
    sti: np.ndarray,
    bidq: np.ndarray,
    askq: np.ndarray,
    t0: int,
    t1: int,
    p: np.ndarray,
) -> tuple[np.ndarray, int, np.ndarray, int]:
    """Simulate [t0, t1) ns of the realistic model (module doc): events from `rng`, the
    activity and lean paths from `rng_path`. stf: `S_*` state,
    sti = [best_bid_ticks, spread_ticks]; bidq[i] / askq[i] = size at best_bid - i /
    best_ask + i, 0 = no level (the touch, i = 0, is never empty between messages)."""
    depth = bidq.shape[0]
    book = np.zeros((1 << 16, 6), dtype=np.int64)
    trades = np.zeros((1 << 14, 5), dtype=np.int64)
    pb = sti[0]
    spread = sti[1]
    book, nb = _snapshot(book, 0, t0, bidq, askq, pb, pb + spread)
    nt = 0
    # the activity h and the leans Z, ZB: exogenous paths on a 1 s grid from their own
    # generator, so that markets differing only in a dial (edge strength, a regime's
    # scales) share them exactly
    a_h = np.exp(-np.log(2.0) / _HALF_LIFE_S * _PATH_STEP_S)
    a_z = np.exp(-np.log(2.0) / p[P_EDGE_HL] * _PATH_STEP_S)
    step_ns = _PATH_STEP_S * NS_PER_S
    grid = float(t0) + step_ns
    t = float(t0)
    last_recv = t0
    while True:
        while grid <= t:
            grid += step_ns
            z = rng_path.standard_normal()
            stf[S_H] = stf[S_H] * a_h + _H_STD * np.sqrt(1.0 - a_h * a_h) * z
            stf[S_Z] = stf[S_Z] * a_z + np.sqrt(1.0 - a_z * a_z) * rng_path.standard_normal()
            stf[S_ZB] = stf[S_ZB] * a_z + np.sqrt(1.0 - a_z * a_z) * rng_path.standard_normal()
            if p[P_FV] > 0.0:
                # the hidden fair value jumps at the rate that gives it the variance per
                # second of the mid's own moves: rate x jump^2 = moves/s x E[k^2]
                jump2 = p[P_FV_JUMP] * p[P_FV_JUMP]
                rate = p[P_MOVES] * p[P_VOL] * _activity(stf) * p[P_K2] / jump2
                u_jump = rng_path.random()
                sign = 1.0 if rng_path.random() < 0.5 else -1.0
                if u_jump < rate * _PATH_STEP_S:
                    stf[S_GAP] += sign * p[P_FV_JUMP]
                stf[S_Z] = stf[S_GAP] / p[P_FV_JUMP]
        v = _activity(stf)
        r_move = p[P_MOVES] * p[P_VOL] * v
        r_noise = p[P_NOISE] * p[P_TRADE_SCALE] * v
        r_burst_b = p[P_BURST] if t < stf[S_FRESH_B] else 0.0
        r_burst_a = p[P_BURST] if t < stf[S_FRESH_A] else 0.0
        r_touch_b = 0.5 * p[P_TOUCH] + r_burst_b
        r_touch_a = 0.5 * p[P_TOUCH] + r_burst_a
        total = r_move + r_noise + r_touch_b + r_touch_a + p[P_DEEP]
        t_next = t + rng.exponential(1.0 / total) * NS_PER_S
        # rates are piecewise constant: at a change (a grid step, a burst's end) the
        # clock restarts from there (exact, as the waiting time is memoryless)
        change = grid
        if t < stf[S_FRESH_B] < change:
            change = stf[S_FRESH_B]
        if t < stf[S_FRESH_A] < change:
            change = stf[S_FRESH_A]
        if t_next >= change:
            t = change
            if t >= t1:
                break
            continue
        t = t_next
        te = np.int64(t)
        if te >= t1:
            break
        if te <= t0:
            te = t0 + 1
        tr = _latency(rng, te, last_recv, t1)
        last_recv = tr
        u = rng.random() * total
        if u < r_move:
            # a change of value: the planted edge decides its direction
            lean = np.tanh(p[P_LEAN] * stf[S_Z])
            d = 1 if rng.random() < 0.5 * (1.0 + p[P_EDGE] * lean) else -1
            k = 1
            while rng.random() < p[P_JUMP] and k < depth // 2:
                k += 1
            ahead = askq if d > 0 else bidq
            behind = bidq if d > 0 else askq
            side_a = -d  # book side of the stale quotes (ask on an up move)
            touch_a = pb + spread if d > 0 else pb
            informed = k >= 2 or rng.random() < p[P_INFORMED]
            # message 1: the stale quotes go, swept by an informed order or cancelled
            for i in range(k):
                if ahead[i] > 0:
                    if informed:
                        # it takes what it wants; the makers pull the rest of the level
                        x = _size(rng, p[P_NOISE_MED] * _INFORMED_MULT, p[P_NOISE_SIG])
                        take = min(ahead[i], x)
                        trades = _push(trades, nt, te, tr, d, touch_a + d * i, take, 0)
                        nt += 1
                    book = _push(book, nb, te, tr, side_a, touch_a + d * i, 0, 0)
                    nb += 1
            for i in range(depth - k):
                ahead[i] = ahead[i + k]
            for i in range(depth - k, depth):
                ahead[i] = 0
            if ahead[0] == 0:
                ahead[0] = _size(rng, _FRESH_MEDIAN, 1.0)
                book = _push(book, nb, te, tr, side_a, touch_a + d * k, ahead[0], 0)
                nb += 1
            # message 2: the other side follows to one tick behind the new touch
            te = min(te + np.int64(rng.exponential(p[P_FOLLOW_MS] * 1e6)) + 1, t1 - 1)
            t = float(te)
            tr = _latency(rng, te, last_recv, t1)
            last_recv = tr
            touch_b_old = pb if d > 0 else pb + spread
            for i in range(depth - k, depth):
                if behind[i] > 0:
                    book = _push(book, nb, te, tr, d, touch_b_old - d * i, 0, 0)
                    nb += 1
            for i in range(depth - 1, k - 1, -1):
                behind[i] = behind[i - k]
            touch_b = touch_a + d * (k - 1)  # one tick behind the new touch
            for i in range(k):
                behind[i] = 0
                if i == 0 or rng.random() < 0.5:
                    behind[i] = _size(rng, _FRESH_MEDIAN, 1.0)
                    book = _push(book, nb, te, tr, d, touch_b - d * i, behind[i], 0)
                    nb += 1
            pb = touch_b if d > 0 else touch_a - k
            spread = 1
            if p[P_FV] > 0.0:
                stf[S_GAP] -= d * k  # the mid moved k ticks toward (or away from) F
                stf[S_Z] = stf[S_GAP] / p[P_FV_JUMP]
            burst_end = t + rng.exponential(p[P_BURST_MS] * 1e6)
            if d > 0:
                stf[S_FRESH_B] = burst_end
            else:
                stf[S_FRESH_A] = burst_end
            stf[S_EPS_B] = rng.standard_normal()
            stf[S_EPS_A] = rng.standard_normal()
        elif u < r_move + r_noise:
            # an uninformed market order: prints at the touch; the makers there
            # replenish what it takes beyond their queue (the price does not move)
            tilt = 0.0
            if p[P_CARRIER] == _FLOW:
                tilt = p[P_FLOW_LEAN] * np.tanh(p[P_LEAN] * stf[S_Z])
            buy = rng.random() < 0.5 * (1.0 + tilt)
            x = _size(rng, p[P_NOISE_MED], p[P_NOISE_SIG])
            q = askq if buy else bidq
            px = pb + spread if buy else pb
            trades = _push(trades, nt, te, tr, 1 if buy else -1, px, x, 0)
            nt += 1
            q[0] -= x
            if q[0] <= 0:
                q[0] = _size(rng, _FRESH_MEDIAN, 1.0)
            book = _push(book, nb, te, tr, -1 if buy else 1, px, q[0], 0)
            nb += 1
        elif u < r_move + r_noise + r_touch_b + r_touch_a:
            # the touch queue drifts toward its target (adds and cancels at the touch)
            side = 1 if u < r_move + r_noise + r_touch_b else -1
            q = bidq if side > 0 else askq
            target = _touch_target(p, stf, side)
            new = q[0] + rng.random() * 0.5 * (target - q[0])
            new += 0.1 * q[0] * rng.standard_normal()
            lots = np.int64(max(1.0, np.floor(new / LOT))) * LOT
            if lots != q[0]:
                q[0] = lots
                px = pb if side > 0 else pb + spread
                book = _push(book, nb, te, tr, side, px, lots, 0)
                nb += 1
        else:
            # adds and cancels behind the touch: levels appear and vanish there
            side = 1 if rng.random() < 0.5 else -1
            q = bidq if side > 0 else askq
            k = 1
            while k < depth - 1 and rng.random() > _DEEP_LEVEL_P:
                k += 1
            px = pb - k if side > 0 else pb + spread + k
            r = rng.random()
            old = q[k]
            if old == 0:
                q[k] = _deep_size(rng, p, stf, side)
            elif r < p[P_DEEP_CANCEL]:
                q[k] = 0
            elif r < 0.5 * (1.0 + p[P_DEEP_CANCEL]):
                q[k] = old + _deep_size(rng, p, stf, side)
            else:
                q[k] = max(np.int64(LOT), old - np.int64(np.floor(old / LOT * rng.random())) * LOT)
            if q[k] != old:
                book = _push(book, nb, te, tr, side, px, q[k], 0)
                nb += 1
    stf[S_RECV] = float(last_recv)
    sti[0] = pb
    sti[1] = spread
    return book, nb, trades, nt


def realistic_params(cfg: SyntheticMarketConfig, regime: RegimeConfig) -> np.ndarray:
    """The parameter vector of one day of the realistic model (`P_*` order)."""
    r = cfg.realistic
    p = np.zeros(N_PARAMS)
    p[P_MOVES] = r.moves_per_s
    p[P_JUMP] = r.jump_continue_p
    p[P_INFORMED] = r.informed_share
    p[P_NOISE] = r.noise_orders_per_s
    p[P_NOISE_MED] = r.noise_size_median
    p[P_NOISE_SIG] = r.noise_size_sigma
    p[P_TQ_MED] = r.touch_queue_median
    p[P_TQ_SIG] = r.touch_queue_sigma
    p[P_TOUCH] = r.touch_updates_per_s
    p[P_BURST] = r.burst_updates_per_s
    p[P_BURST_MS] = r.burst_ms
    p[P_FOLLOW_MS] = r.follow_ms
    p[P_DEEP] = r.deep_updates_per_s
    p[P_DEEP_MED] = r.deep_size_median
    p[P_DEEP_CANCEL] = r.deep_full_cancel_p
    p[P_EDGE] = min(1.0, cfg.edge.strength * regime.edge_scale)
    p[P_EDGE_HL] = cfg.edge.half_life_s
    p[P_LEAN] = cfg.edge.lean
    p[P_VOL] = regime.volatility_scale
    p[P_TRADE_SCALE] = regime.trade_rate_scale
    p[P_TLEAN] = r.touch_lean_ln
    p[P_DEEP_SMALL] = r.deep_small_p
    p[P_CARRIER] = CARRIERS[cfg.edge.feature]
    p[P_FLOW_LEAN] = cfg.edge.flow_lean
    p[P_FV] = 1.0 if cfg.edge.model == "fair_value" else 0.0
    p[P_FV_JUMP] = cfg.edge.fair_value_jump_ticks
    p[P_K2] = move_size_second_moment(r.jump_continue_p, cfg.depth_levels // 2)
    return p


def move_size_second_moment(continue_p: float, k_max: int) -> float:
    """E[k^2] of a move's size in ticks: geometric (P(k > j | k >= j) = continue_p),
    capped at k_max (the simulator's `k < depth // 2`)."""
    k = np.arange(1, max(1, k_max) + 1, dtype=np.float64)
    prob = continue_p ** (k - 1) * (1.0 - continue_p)
    prob[-1] = continue_p ** (k[-1] - 1)  # the cap takes the tail
    return float(np.sum(prob * k * k))


def _realistic_start(
    cfg: SyntheticMarketConfig, rng: np.random.Generator, rng_path: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Initial (state, bid sizes, ask sizes): touch queues at their targets, deep levels
    present with the stationary share of a level being there."""
    r = cfg.realistic
    depth = cfg.depth_levels
    stf = np.zeros(N_STATE)
    stf[S_Z] = rng_path.standard_normal()
    if cfg.edge.model == "fair_value":
        stf[S_Z] = 0.0  # the mid starts at the fair value (the draw keeps the paths aligned)
    stf[S_ZB] = rng_path.standard_normal()
    stf[S_EPS_B] = rng.standard_normal()
    stf[S_EPS_A] = rng.standard_normal()
    p = realistic_params(cfg, _regime(cfg, 0))
    present = 1.0 / (1.0 + r.deep_full_cancel_p)
    sides = []
    for side in (1, -1):
        q = np.zeros(depth, dtype=np.int64)
        q[0] = max(1, int(_touch_target(p, stf, side) // LOT)) * LOT
        for i in range(1, depth):
            if rng.random() < present:
                q[i] = int(_deep_size(rng, p, stf, side))
        sides.append(q)
    return stf, sides[0], sides[1]


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
    if cfg.model == "realistic":
        yield from _generate_realistic(cfg, inst, rng)
        return
    depth = cfg.depth_levels
    bidq = np.array([int(_lots_py(rng, _SIZE_MU + 0.7)) for _ in range(depth)], dtype=np.int64)
    askq = np.array([int(_lots_py(rng, _SIZE_MU + 0.7)) for _ in range(depth)], dtype=np.int64)
    sti = _start_ticks(cfg, inst)
    stf = np.array([0.0, 0.0])

    def simulate(d: int, t0: np.int64, t1: np.int64) -> _DayRows:
        reg = _regime(cfg, d)
        return _simulate_day(
            rng,
            stf,
            sti,
            bidq,
            askq,
            t0,
            t1,
            float(cfg.book_events_per_s),
            float(cfg.trades_per_s * reg.trade_rate_scale),
            float(reg.volatility_scale),
            float(reg.imbalance_tilt),
        )

    yield from _days(cfg, simulate)


_DayRows = tuple[np.ndarray, int, np.ndarray, int]  # book rows, used, trade rows, used


def _start_ticks(cfg: SyntheticMarketConfig, inst: InstrumentSpec) -> np.ndarray:
    """[best bid ticks, spread ticks] at the start: `start_price` on the tick grid."""
    pb = inst.price_to_ticks(round(cfg.start_price / inst.tick_size) * inst.tick_size)
    return np.array([pb, 1], dtype=np.int64)


def _days(
    cfg: SyntheticMarketConfig, simulate: Callable[[int, np.int64, np.int64], _DayRows]
) -> Iterator[tuple[str, pl.DataFrame, pl.DataFrame]]:
    """Run `simulate(day index, t0, t1)` day by day; yield canonical frames."""
    day0 = parse_day(cfg.start_day)
    span = int(cfg.day_hours * 3600 * NS_PER_S)
    for d in range(cfg.days):
        t0 = day0 + d * NS_PER_DAY
        book, nb, trades, nt = simulate(d, np.int64(t0), np.int64(t0 + span))
        yield (
            iso_day(t0),
            _frame(book[:nb], schema.BOOK_COLUMNS, _book_schema()),
            _frame(trades[:nt], schema.TRADE_COLUMNS, _trade_schema()),
        )


def _lots_py(rng: np.random.Generator, mu: float) -> int:
    return max(1, int(np.floor(np.exp(mu + 0.8 * rng.standard_normal())))) * LOT


def _generate_realistic(
    cfg: SyntheticMarketConfig, inst: InstrumentSpec, rng: np.random.Generator
) -> Iterator[tuple[str, pl.DataFrame, pl.DataFrame]]:
    rng_path = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(1,)))
    stf, bidq, askq = _realistic_start(cfg, rng, rng_path)
    sti = _start_ticks(cfg, inst)

    def simulate(d: int, t0: np.int64, t1: np.int64) -> _DayRows:
        p = realistic_params(cfg, _regime(cfg, d))
        return _simulate_day_realistic(rng, rng_path, stf, sti, bidq, askq, t0, t1, p)

    yield from _days(cfg, simulate)


class SimpleEdge(TypedDict):
    """The simple model's edge: imbalance_tilt per day (no strength setting)."""

    feature: str
    strength: None
    imbalance_tilt_by_day: list[float]
    description: str


class PlantedEdge(TypedDict):
    """The realistic model's planted edge: its feature, strength (per day: times the
    regime's edge_scale, capped at 1) and the half-life of the lean it shows."""

    feature: str
    strength: float
    strength_by_day: list[float]
    half_life_s: float
    description: str


class MarketMetadata(TypedDict):
    """`market_metadata`: recorded as JSON in every synthetic partition's manifest
    (``extra["market"]``) and compared by `chappie audit market`."""

    source: Literal["synthetic"]
    model: Literal["simple", "realistic"]
    seed: int
    fingerprint: str  # the config's: the partitions' synthetic input sha256
    edge: SimpleEdge | PlantedEdge


def market_metadata(cfg: SyntheticMarketConfig) -> MarketMetadata:
    """What is known about a synthetic market by construction (JSON-able): its model,
    seed, config fingerprint (the partition manifests' synthetic input sha256) and the
    planted edge: the named feature, its strength per day and what the strength means."""
    days = [_regime(cfg, d) for d in range(cfg.days)]
    edge: SimpleEdge | PlantedEdge
    if cfg.model == "simple":
        edge = {
            "feature": "imbalance_l1",
            "strength": None,
            "imbalance_tilt_by_day": [r.imbalance_tilt for r in days],
            "description": "simple model: imbalance_tilt tilts the next market order's "
            "side by level-1 imbalance; the thinner queue also empties first, so "
            "imbalance_l1 predicts moves even at tilt 0 (no zero-edge setting)",
        }
    else:
        e = cfg.edge
        where = {
            "imbalance_l1": f"the touch queues lean (log ratio +-{cfg.realistic.touch_lean_ln:g} L)",
            "trade_imbalance_60s": f"uninformed orders buy with probability (1 + {e.flow_lean:g} L) / 2",
            "log_return_60s": "only the price path (momentum)",
            "imbalance_l10": f"real size behind the touch leans (log ratio +-{cfg.realistic.touch_lean_ln:g} L)",
        }[e.feature]
        z = (
            f"Z = (F - mid) / {e.fair_value_jump_ticks:g} ticks, F a hidden fair value jumping "
            f"+-{e.fair_value_jump_ticks:g} ticks with the no-edge mid's variance,"
            if e.model == "fair_value"
            else f"Z an OU lean (half-life {e.half_life_s:g} s)"
        )
        edge = {
            "feature": e.feature,
            "strength": e.strength,
            "strength_by_day": [min(1.0, e.strength * r.edge_scale) for r in days],
            "half_life_s": e.half_life_s,
            "description": f"P(next move up) = (1 + {e.strength:g} L) / 2, L = tanh({e.lean:g} Z), "
            f"{z} shown by {where}; strength 0 = no edge",
        }
    return {
        "source": "synthetic",
        "model": cfg.model,
        "seed": cfg.seed,
        "fingerprint": fingerprint(cfg),
        "edge": edge,
    }
