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
