"""Expectation suites accept good frames and REJECT crafted bad ones, naming the failure."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from core import schema as S
from core.config.features import ExpectationsConfig, FeatureSpec
from expectations.runner import SliceValidationError, run_suite, validate_slice
from expectations.suites import (
    BAD_THRU_COL,
    book_suite,
    book_view,
    feature_suite,
    feature_view,
)
from features.compute import compute_features
from tests.features.strategies import make_bars

SPEC = FeatureSpec()
CFG = ExpectationsConfig()


@pytest.fixture(scope="module")
def bars() -> pl.DataFrame:
    return make_bars(300, 9, SPEC, p_missing_level=0.1, p_trade=0.5)


@pytest.fixture(scope="module")
def slice_frame(bars) -> pl.DataFrame:
    return compute_features(bars.lazy(), SPEC).collect().filter(~pl.col(S.WARMUP)).drop(S.WARMUP)


def _set(frame: pl.DataFrame, col: str, row: int, value) -> pl.DataFrame:
    vals = frame[col].to_list()
    vals[row] = value
    return frame.with_columns(pl.Series(col, vals, dtype=frame.schema[col]))


def test_book_suite_accepts_a_valid_book(bars):
    res = run_suite(book_view(bars, SPEC.depth), book_suite(), "book")
    assert res.success, res.failed


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda b: _set(b, S.bid_px(0), 10, b[S.ask_px(0)][10] + 1),
            "ExpectColumnPairValuesAToBeGreaterThanB",
        ),
        (
            lambda b: _set(b, S.bid_px(0), 10, b[S.ask_px(0)][10]),
            "ExpectColumnValuesToBeBetween(spread_ticks)",
        ),
        (lambda b: _set(b, S.TS, 20, b[S.TS][19]), "ExpectColumnValuesToBeIncreasing(ts)"),
        (lambda b: _set(b, S.ask_sz(0), 5, None), "ExpectColumnValuesToNotBeNull(ask_sz_0)"),
        (lambda b: _set(b, S.bid_sz(0), 7, 0), "ExpectColumnValuesToBeBetween(bid_sz_0)"),
        (lambda b: _set(b, S.ask_sz(3), 7, -4), "ExpectColumnValuesToBeInSet(bad_levels)"),
        (lambda b: _set(b, S.BOOK_OK, 7, False), "ExpectColumnValuesToBeInSet(book_ok)"),
    ],
    ids=[
        "crossed",
        "locked",
        "time-repeat",
        "null-size",
        "zero-size",
        "negative-deep-size",
        "book-not-ok",
    ],
)
def test_book_suite_rejects_crafted_bad_books(bars, mutate, expected):
    res = run_suite(book_view(mutate(bars), SPEC.depth), book_suite(), "book")
    assert not res.success
    assert any(f.startswith(expected) for f in res.failed), res.failed


def test_feature_suite_accepts_valid_features_with_stats(slice_frame):
    x = slice_frame.select(SPEC.names).to_numpy()
    res = validate_slice(slice_frame, SPEC, CFG, mean=x.mean(0), sigma=np.maximum(x.std(0), 1e-8))
    assert res.success and res.statistics["unsuccessful_expectations"] == 0


@pytest.mark.parametrize(
    ("col", "value", "expected"),
    [
        ("ofi_10s", math.nan, "ExpectColumnValuesToBeBetween(ofi_10s)"),
        ("realized_vol_60s", math.inf, "ExpectColumnValuesToBeBetween(realized_vol_60s)"),
        ("log_return_1s", -math.inf, "ExpectColumnValuesToBeBetween(log_return_1s)"),
        ("imbalance_l5", 1.5, "ExpectColumnValuesToBeBetween(imbalance_l5)"),
        ("trade_imbalance_60s", -1.01, "ExpectColumnValuesToBeBetween(trade_imbalance_60s)"),
        ("spread_bps", -0.5, "ExpectColumnValuesToBeBetween(spread_bps)"),
        ("imbalance_l1", None, "ExpectColumnValuesToBeBetween(imbalance_l1)"),
        ("time_since_trade_s", math.nan, "ExpectColumnValuesToBeBetween(time_since_trade_s)"),
    ],
)
def test_feature_suite_rejects_crafted_bad_values(slice_frame, col, value, expected):
    bad = _set(slice_frame, col, 3, value)
    with pytest.raises(SliceValidationError) as err:
        validate_slice(bad, SPEC, CFG, slice_id="crafted")
    assert any(f.startswith(expected) for f in err.value.failed), err.value.failed
    assert "crafted" in str(err.value)


DT = SPEC.interval_ns


@pytest.mark.parametrize(
    ("col", "value", "expected"),
    [
        (S.SELL_AT_BID_VOL, -1, "ExpectColumnValuesToBeBetween(sell_at_bid_vol)"),
        (
            S.BUY_AT_ASK_VOL,
            10**9,
            "ExpectColumnPairValuesAToBeGreaterThanB(buy_vol,buy_at_ask_vol)",
        ),
        (S.ask_sz(0), 0, "ExpectColumnValuesToBeBetween(ask_sz_0)"),
        (S.SELL_THRU_BID_FIRST_TS, lambda ts: ts - DT, "ExpectColumnValuesToBeInSet(bad_thru_ts)"),
        (S.BUY_THRU_ASK_LAST_TS, lambda ts: ts + 1, "ExpectColumnValuesToBeInSet(bad_thru_ts)"),
        (S.BUY_THRU_ASK_FIRST_TS, lambda ts: ts, "ExpectColumnValuesToBeInSet(bad_thru_ts)"),
    ],
    ids=[
        "negative-at-vol",
        "at-vol-over-side-vol",
        "no-ask-size",
        "thru-before-bar",
        "thru-after-bar",
        "first-without-last",
    ],
)
def test_feature_suite_rejects_crafted_bad_execution_columns(slice_frame, col, value, expected):
    # a row with no through-trade on either side, so each crafted value alone breaks it
    quiet = (pl.col(S.BUY_THRU_ASK_FIRST_TS) == -1) & (pl.col(S.SELL_THRU_BID_FIRST_TS) == -1)
    row = int(slice_frame.with_row_index().filter(quiet)["index"][0])
    v = value(int(slice_frame[S.TS][row])) if callable(value) else value
    bad = _set(slice_frame, col, row, v)
    with pytest.raises(SliceValidationError) as err:
        validate_slice(bad, SPEC, CFG, slice_id="crafted")
    assert any(f.startswith(expected) for f in err.value.failed), err.value.failed


def test_slice_rows_with_through_trades_pass(slice_frame):
    for c in S.THRU_TS_COLUMNS:  # the fixture's slice has through-trades on both sides
        assert (slice_frame[c] != -1).sum() > 5, c


def test_values_far_outside_the_frozen_stats_are_drift_reported_not_refused(slice_frame):
    x = slice_frame.select(SPEC.names).to_numpy()
    mean, sigma = x.mean(0), np.maximum(x.std(0), 1e-8)
    j = SPEC.names.index("ofi_60s")
    shifted = slice_frame.with_columns(pl.col("ofi_60s") + 50 * float(sigma[j]))
    res = validate_slice(shifted, SPEC, CFG, mean=mean, sigma=sigma)
    assert res.success and res.drift is not None
    assert res.drift.flagged == ["ofi_60s"] and res.drift.max_beyond_clip_feature == "ofi_60s"
    ofi = res.drift.features["ofi_60s"]
    assert ofi.beyond_clip_share > 0.9 and ofi.z_mean == pytest.approx(50.0, abs=0.5)
    # it travels into the slice manifest
    assert res.to_json()["drift"] == res.drift.model_dump(mode="json")
    # the same slice against its own stats: nothing flagged, z ~ (0, 1)
    own = validate_slice(slice_frame, SPEC, CFG, mean=mean, sigma=sigma).drift
    assert own is not None and own.flagged == []
    assert own.features["ofi_60s"].z_mean is not None
    assert abs(own.features["ofi_60s"].z_mean) < 1e-6


def test_drift_report_hand_computed():
    from expectations.suites import drift_report

    frame = pl.DataFrame({S.TS: [1, 2, 3, 4], **{n: [0.0, 1.0, 2.0, 30.0] for n in SPEC.names}})
    d = drift_report(
        frame, SPEC, np.zeros(len(SPEC.names)), np.ones(len(SPEC.names)), CFG
    ).features["ofi_10s"]
    # z = x; beyond +-10: one row of four; mean 33/4; std (ddof 1) of (0, 1, 2, 30)
    assert d.beyond_clip_share == 0.25 and d.z_mean == 8.25
    assert d.z_std == pytest.approx(float(np.std([0.0, 1.0, 2.0, 30.0], ddof=1)))


def test_suites_are_plain_data_naming_every_feature():
    suite = feature_suite(SPEC, CFG)
    cols = {e.kwargs.get("column") for e in suite.expectations}
    assert set(SPEC.names) <= cols and len(suite.expectations) == 2 + len(SPEC.names) + 16
    assert {S.SELL_AT_BID_VOL, S.BUY_AT_ASK_VOL, S.bid_sz(0), BAD_THRU_COL} <= cols
    view = feature_view(
        pl.DataFrame(
            {S.TS: [1], **{n: [1.0] for n in SPEC.names}, **{c: [0] for c in S.EXEC_COLUMNS}}
        ),
        SPEC,
        np.zeros(len(SPEC.names)),
        np.full(len(SPEC.names), 2.0),
    )
    assert view["z__spread_ticks"][0] == 0.5


def test_validation_with_data_docs_writes_html_per_slice_and_still_rejects(
    slice_frame, bars, tmp_path
):
    docs = tmp_path / "gx"
    ok = validate_slice(
        slice_frame, SPEC, CFG, bars=bars, slice_id="fold00-test", data_docs_dir=docs
    )
    assert ok.success and ok.data_docs == str(docs / "index.html")
    assert (docs / "index.html").exists()
    pages = sorted(p.relative_to(docs).as_posix() for p in (docs / "validations").rglob("*.html"))
    assert any("/fold00-test/" in p for p in pages) and len(pages) == 2  # book + features
    assert "fold00-test" in (docs / "index.html").read_text()
    bad = _set(slice_frame, "imbalance_l1", 0, 2.0)
    with pytest.raises(SliceValidationError):
        validate_slice(bad, SPEC, CFG, bars=bars, slice_id="fold01-test", data_docs_dir=docs)
    assert any("/fold01-test/" in p.as_posix() for p in (docs / "validations").rglob("*.html"))
