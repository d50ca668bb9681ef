"""Batch features: hand-computed rows, batch == streaming bit for bit, no look-ahead."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core import schema as S
from core.config.features import FeatureSpec
from features.compute import bars_for, compute_features, output_columns
from features.stream import FeatureStream
from tests.features.strategies import SMALL_SPEC, bar_frames, make_bars


def _batch(bars: pl.DataFrame, spec: FeatureSpec) -> pl.DataFrame:
    return compute_features(bars.lazy(), spec).collect()


def _stream(bars: pl.DataFrame, spec: FeatureSpec) -> tuple[np.ndarray, list[bool]]:
    fs = FeatureStream(spec)
    rows, warm = [], []
    for bar in bars.iter_rows(named=True):
        rows.append(fs.update(bar))
        warm.append(fs.warmup)
    return np.stack(rows), warm


def _bit_equal(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-element bit equality (NaN == NaN)."""
    return (a.view(np.int64) == b.view(np.int64)) | (np.isnan(a) & np.isnan(b))


def test_compute_features_columns_and_dtypes_follow_the_contract():
    bars = make_bars(50, 0, SMALL_SPEC)
    out = _batch(bars, SMALL_SPEC)
    assert out.columns == output_columns(SMALL_SPEC)
    for name in SMALL_SPEC.names:
        assert out.schema[name] == pl.Float64, name
    assert out.schema[S.WARMUP] == pl.Boolean
    for name in S.EXEC_COLUMNS:
        assert out.schema[name] == pl.Int64, name
    assert out.height == bars.height


def _one_level_bars(spec: FeatureSpec, rows: list[dict]) -> pl.DataFrame:
    """Bars with explicit level-0 values; other levels empty."""
    base = {c: 0 for c in S.bar_columns(spec.depth)}
    base[S.BOOK_OK] = True
    base[S.LAST_TRADE_TS] = -1
    data = []
    for r in rows:
        d = dict(base)
        d.update(r)
        data.append(d)
    return pl.DataFrame(
        data,
        schema={c: (pl.Boolean if c == S.BOOK_OK else pl.Int64) for c in S.bar_columns(spec.depth)},
    )


def test_level_features_match_hand_computed_values():
    spec = FeatureSpec(windows_s=(2, 3), return_horizons_s=(1, 2, 3), depth_bps=(100.0,))
    # bid 100 x 30, ask 102 x 10, bid1 99 x 5: 100 bps of mid 101 reaches 100 and 102, not 99
    bars = _one_level_bars(
        spec,
        [
            {
                S.TS: 1_000_000_000,
                S.bid_px(0): 100,
                S.bid_sz(0): 30,
                S.ask_px(0): 102,
                S.ask_sz(0): 10,
                S.bid_px(1): 99,
                S.bid_sz(1): 5,
            },
            {
                S.TS: 2_000_000_000,
                S.bid_px(0): 101,
                S.bid_sz(0): 10,
                S.ask_px(0): 102,
                S.ask_sz(0): 10,
                S.BUY_VOL: 30,
                S.SELL_VOL: 10,
                S.N_TRADES: 3,
                S.LAST_TRADE_TS: 1_500_000_000,
                S.OFI_L1: 7,
            },
            {
                S.TS: 3_000_000_000,
                S.bid_px(0): 103,
                S.bid_sz(0): 1,
                S.ask_px(0): 104,
                S.ask_sz(0): 3,
                S.SELL_VOL: 20,
                S.N_TRADES: 1,
                S.LAST_TRADE_TS: 2_250_000_000,
                S.OFI_L1: -2,
            },
        ],
    )
    out = _batch(bars, spec)
    r0, r1, r2 = out.row(0, named=True), out.row(1, named=True), out.row(2, named=True)
    assert r0[S.MID_TICKS] == 101.0
    assert r0["spread_ticks"] == 2.0
    assert r0["spread_bps"] == pytest.approx(1e4 * 2 / 101)
    # microprice = (100*10 + 102*30)/40 = 101.5 -> +0.5 ticks over mid 101
    assert r0["microprice_offset_bps"] == pytest.approx(1e4 * 0.5 / 101)
    assert r0["imbalance_l1"] == 0.5
    # L5 weights 5,4..: (5*(30-10) + 4*5) / (5*40 + 4*5) = 120/220
    assert r0["imbalance_l5"] == pytest.approx(120 / 220)
    assert r0["imbalance_l10"] == pytest.approx((10 * 20 + 9 * 5) / (10 * 40 + 9 * 5))
    assert r0["depth_bid_100bps"] == 30.0 and r0["depth_ask_100bps"] == 10.0
    assert math.isnan(r0["time_since_trade_s"]) and r0[S.WARMUP]
    assert math.isnan(r0["log_return_1s"])
    assert r1["ofi_2s"] == 7.0 and r2["ofi_2s"] == 5.0 and r2["ofi_3s"] == 5.0
    assert r1["signed_volume_2s"] == 20.0 and r2["signed_volume_2s"] == 0.0
    assert r1["trade_imbalance_2s"] == 0.5 and r2["trade_imbalance_2s"] == 0.0
    assert r2["trade_imbalance_3s"] == 0.0
    assert r1["trade_intensity_2s"] == pytest.approx(1.5)
    assert r2["trade_intensity_3s"] == pytest.approx(4 / 3)
    assert r1["time_since_trade_s"] == pytest.approx(0.5)
    assert r2["time_since_trade_s"] == pytest.approx(0.75)
    assert r1["log_return_1s"] == pytest.approx(math.log(101.5 / 101))
    assert r2["log_return_2s"] == pytest.approx(math.log(103.5 / 101))
    # 2*mid: 202, 203, 207 -> squared changes 1, 16 over the last 2 bars
    assert r2["realized_vol_2s"] == pytest.approx(1e4 * math.sqrt(17) / 207)
    assert r1["realized_vol_2s"] == pytest.approx(1e4 * 1 / 203)


def test_trade_imbalance_without_trades_is_zero_and_spread_of_empty_book_is_nan():
    spec = FeatureSpec(windows_s=(1, 2), return_horizons_s=(1, 2, 3))
    bars = _one_level_bars(spec, [{S.TS: 1_000_000_000, S.BOOK_OK: False}])
    r = _batch(bars, spec).row(0, named=True)
    assert r["trade_imbalance_1s"] == 0.0 and r["imbalance_l1"] == 0.0
    assert math.isnan(r["spread_bps"]) and math.isnan(r["realized_vol_1s"])
    assert r[S.WARMUP]


def test_warmup_covers_lookback_and_bars_after_a_bad_book():
    spec = SMALL_SPEC
    bars = make_bars(60, 3, spec, first_trade_bar=0, p_trade=1.0)
    ok = bars[S.BOOK_OK].to_list()
    bad = 30
    bars = bars.with_columns(pl.Series(S.BOOK_OK, [v and i != bad for i, v in enumerate(ok)]))
    warm = _batch(bars, spec)[S.WARMUP].to_list()
    n = spec.lookback_bars
    assert all(warm[: n - 1]) and not any(warm[n - 1 : bad])
    assert all(warm[bad : bad + n]) and not any(warm[bad + n :])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bars=bar_frames())
def test_streaming_features_equal_batch_bit_for_bit(bars):
    """Every feature is exactly equal (no tolerance needed: see features/compute.py)."""
    batch = _batch(bars, SMALL_SPEC)
    online, warm = _stream(bars, SMALL_SPEC)
    ok = _bit_equal(batch.select(SMALL_SPEC.names).to_numpy(), online)
    bad = [SMALL_SPEC.names[j] for j in np.where(~ok.all(axis=0))[0]]
    assert not bad, f"batch != streaming for {bad}"
    assert batch[S.WARMUP].to_list() == warm


def test_streaming_equals_batch_on_default_spec_long_run():
    spec = FeatureSpec()
    bars = make_bars(3000, 42, spec, p_not_ok=0.002, p_trade=0.3)
    online, warm = _stream(bars, spec)
    batch = _batch(bars, spec)
    assert _bit_equal(batch.select(spec.names).to_numpy(), online).all()
    assert batch[S.WARMUP].to_list() == warm


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bars=bar_frames(max_rows=80), data=st.data())
def test_features_on_first_k_bars_equal_first_k_rows_on_all_bars(bars, data):
    """No look-ahead: truncating the future never changes a past row."""
    full = _batch(bars, SMALL_SPEC)
    for k in data.draw(st.lists(st.integers(1, bars.height), min_size=1, max_size=6)):
        head = _batch(bars.head(k), SMALL_SPEC)
        a = full.head(k).select(SMALL_SPEC.names).to_numpy()
        b = head.select(SMALL_SPEC.names).to_numpy()
        assert _bit_equal(a, b).all(), k
        assert full.head(k)[S.WARMUP].to_list() == head[S.WARMUP].to_list()


def test_bars_for_rounds_windows_up_to_whole_bars():
    spec = FeatureSpec(interval_ms=400)
    assert bars_for(1, spec) == 3 and bars_for(2, spec) == 5 and bars_for(0.1, spec) == 1


def test_stream_restarts_its_windows_after_a_skipped_bar_and_rejects_old_bars():
    spec = SMALL_SPEC
    bars = make_bars(80, 11, spec, p_trade=1.0)
    gapped = pl.concat([bars.head(30), bars.slice(31)])  # bar 30 missing
    online, warm = _stream(gapped, spec)
    fresh, fresh_warm = _stream(bars.slice(31), spec)  # a new stream from bar 31
    assert _bit_equal(online[30:], fresh).all() and warm[30:] == fresh_warm
    assert warm[30] and not warm[29]
    fs = FeatureStream(spec)
    rows = list(bars.head(3).iter_rows(named=True))
    fs.update(rows[0])
    fs.update(rows[1])
    with pytest.raises(ValueError, match="not after"):
        fs.update(rows[1])
    assert fs.gaps == 0
