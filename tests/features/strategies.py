"""Synthetic bar frames with the exact sampler schema (core.schema.bar_columns), for
feature tests. `make_bars` is deterministic from a seed; `bar_frames` is the Hypothesis
strategy built on it."""

from __future__ import annotations

import numpy as np
import polars as pl
from hypothesis import strategies as st

from core import schema as S
from core.config.features import FeatureSpec

T0_NS = 1_704_067_200 * 1_000_000_000  # 2024-01-01 00:00 UTC


def make_bars(
    n: int,
    seed: int,
    spec: FeatureSpec,
    *,
    p_not_ok: float = 0.0,
    p_missing_level: float = 0.1,
    p_trade: float = 0.5,
    first_trade_bar: int = 0,
    t0_ns: int = T0_NS,
    mid0_ticks: int = 80_000,
) -> pl.DataFrame:
    """n bars on spec's grid: a random-walk book with sizes, OFI and trades."""
    rng = np.random.default_rng(seed)
    depth = spec.depth
    ts = t0_ns + spec.interval_ns * np.arange(1, n + 1, dtype=np.int64)
    bid0 = mid0_ticks + np.cumsum(rng.integers(-3, 4, n))
    spread = rng.choice([1, 1, 1, 2, 3, 7], n)
    ask0 = bid0 + spread
    cols: dict[str, np.ndarray] = {S.TS: ts}
    for i in range(depth):
        gap_b = i * rng.integers(1, 3, n) if i else 0
        gap_a = i * rng.integers(1, 3, n) if i else 0
        bpx = bid0 - gap_b
        apx = ask0 + gap_a
        bsz = rng.integers(1, 2_000_000, n)
        asz = rng.integers(1, 2_000_000, n)
        if i > 0:
            miss_b = rng.random(n) < p_missing_level
            miss_a = rng.random(n) < p_missing_level
            bpx = np.where(miss_b, 0, bpx)
            bsz = np.where(miss_b, 0, bsz)
            apx = np.where(miss_a, 0, apx)
            asz = np.where(miss_a, 0, asz)
        cols[S.bid_px(i)] = bpx.astype(np.int64)
        cols[S.bid_sz(i)] = bsz.astype(np.int64)
        cols[S.ask_px(i)] = apx.astype(np.int64)
        cols[S.ask_sz(i)] = asz.astype(np.int64)
    book_ok = rng.random(n) >= p_not_ok
    for i in range(depth):  # a not-ok bar: one side empty
        cols[S.ask_px(i)] = np.where(book_ok, cols[S.ask_px(i)], 0)
        cols[S.ask_sz(i)] = np.where(book_ok, cols[S.ask_sz(i)], 0)
    traded = (rng.random(n) < p_trade) & (np.arange(n) >= first_trade_bar)
    buy = np.where(traded & (rng.random(n) < 0.6), rng.integers(1, 50_000, n), 0)
    sell = np.where(traded & (rng.random(n) < 0.6), rng.integers(1, 50_000, n), 0)
    traded = (buy + sell) > 0
    n_trades = np.where(traded, rng.integers(1, 20, n), 0)
    last = np.where(traded, ts - rng.integers(0, spec.interval_ns, n), -1)
    last = np.maximum.accumulate(last)
    cols[S.BOOK_OK] = book_ok
    cols[S.N_BOOK_EVENTS] = rng.integers(0, 100, n).astype(np.int64)
    cols[S.OFI_L1] = rng.integers(-1_000_000, 1_000_000, n).astype(np.int64)
    cols[S.BUY_VOL] = buy.astype(np.int64)
    cols[S.SELL_VOL] = sell.astype(np.int64)
    cols[S.N_TRADES] = n_trades.astype(np.int64)
    cols[S.LAST_TRADE_TS] = last.astype(np.int64)
    cols[S.BUY_HI_TICKS] = np.where(buy > 0, cols[S.ask_px(0)], 0).astype(np.int64)
    cols[S.SELL_LO_TICKS] = np.where(sell > 0, cols[S.bid_px(0)], 0).astype(np.int64)
    for vol, at, first, last in (
        (sell, S.SELL_AT_BID_VOL, S.SELL_THRU_BID_FIRST_TS, S.SELL_THRU_BID_LAST_TS),
        (buy, S.BUY_AT_ASK_VOL, S.BUY_THRU_ASK_FIRST_TS, S.BUY_THRU_ASK_LAST_TS),
    ):  # part of a side's volume at the reference; through it in some bars, within the bar
        cols[at] = (vol * rng.random(n)).astype(np.int64)
        thru = (vol > cols[at]) & (rng.random(n) < 0.5)
        a, b = ts - rng.integers(0, spec.interval_ns, n), ts - rng.integers(0, spec.interval_ns, n)
        cols[first] = np.where(thru, np.minimum(a, b), -1).astype(np.int64)
        cols[last] = np.where(thru, np.maximum(a, b), -1).astype(np.int64)
    frame = pl.DataFrame(cols)
    return frame.select(S.bar_columns(depth))


SMALL_SPEC = FeatureSpec(windows_s=(3, 7), return_horizons_s=(1, 2, 5), depth_bps=(2.0, 10.0))


@st.composite
def bar_frames(
    draw: st.DrawFn, spec: FeatureSpec = SMALL_SPEC, max_rows: int = 120
) -> pl.DataFrame:
    n = draw(st.integers(1, max_rows))
    seed = draw(st.integers(0, 2**32 - 1))
    return make_bars(
        n,
        seed,
        spec,
        p_not_ok=draw(st.sampled_from([0.0, 0.0, 0.05, 0.3])),
        p_missing_level=draw(st.sampled_from([0.0, 0.1, 0.5])),
        p_trade=draw(st.sampled_from([0.0, 0.1, 0.5, 1.0])),
        first_trade_bar=draw(st.integers(0, 20)),
        mid0_ticks=draw(st.sampled_from([50, 80_000, 3_000_000])),
    )


def make_events(
    seed: int,
    n_messages: int,
    *,
    p_snapshot: float = 0.02,
    p_cross: float = 0.0,
    trade_rate: float = 0.5,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Canonical events (core.schema BOOK_COLUMNS / TRADE_COLUMNS, EVENT_DTYPES): a
    snapshot, then messages of 1-3 deltas (updates, inserts, deletes of existing levels;
    with probability `p_cross` a delta that crosses the book and desyncs it until the
    next snapshot), occasional new snapshots, and trades, all in ts_recv order with gaps
    of 0-2.5 s (so some bars are empty)."""
    rng = np.random.default_rng(seed)
    t = T0_NS + int(rng.integers(0, 10**9))
    center = int(rng.integers(1000, 100_000))
    book: list[tuple[int, int, int, int, int, bool]] = []
    trades: list[tuple[int, int, int, int, int]] = []
    levels: dict[int, dict[int, int]] = {S.BID: {}, S.ASK: {}}

    def snapshot(ts: int, c: int) -> None:
        levels[S.BID].clear()
        levels[S.ASK].clear()
        for i in range(12):
            for side, px in ((S.BID, c - 1 - i), (S.ASK, c + 1 + i)):
                size = int(rng.integers(1, 5000))
                levels[side][px] = size
                book.append((ts, ts, side, px, size, True))

    snapshot(t, center)
    for _ in range(n_messages):
        t += int(rng.choice([0, 1, 1, 50, 300, 900, 2500])) * 1_000_000
        if rng.random() < p_snapshot:
            center += int(rng.integers(-5, 6))
            snapshot(t, center)
            continue
        for _ in range(int(rng.integers(1, 4))):
            side = S.BID if rng.random() < 0.5 else S.ASK
            own = levels[side]
            if own and rng.random() < 0.25 and len(own) > 1:  # delete an existing level
                px = int(rng.choice(sorted(own)))
                del own[px]
                book.append((t, t, side, px, 0, False))
                continue
            best_bid = max(levels[S.BID], default=center - 1)
            best_ask = min(levels[S.ASK], default=center + 1)
            off = int(rng.integers(0, 8))
            if rng.random() < p_cross:
                px = best_ask + 1 if side == S.BID else best_bid - 1
            else:
                px = best_ask - 1 - off if side == S.BID else best_bid + 1 + off
                if (side == S.BID and px >= best_ask) or (side == S.ASK and px <= best_bid):
                    continue
            size = int(rng.integers(1, 5000))
            own[px] = size
            book.append((t, t, side, px, size, False))
        if rng.random() < trade_rate:
            side = S.BUY if rng.random() < 0.5 else S.SELL
            trades.append((t, t, side, center + side, int(rng.integers(1, 3000))))
    bdf = pl.DataFrame(book, schema=list(S.BOOK_COLUMNS), orient="row")
    tdf = pl.DataFrame(trades, schema=list(S.TRADE_COLUMNS), orient="row")
    casts = {
        c: getattr(pl, d.capitalize()) if d != "bool" else pl.Boolean
        for c, d in S.EVENT_DTYPES.items()
    }
    return bdf.cast({c: casts[c] for c in bdf.columns}), tdf.cast(
        {c: casts[c] for c in tdf.columns}
    )
