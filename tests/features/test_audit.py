"""Audits: parity and look-ahead on real event partitions (synthetic and the real
BitMEX capture), and that each audit FAILS on a crafted defect."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.config.features import FeatureSpec
from features.audit import (
    AuditInputError,
    ColumnDiff,
    ParityReport,
    compare_columns,
    cut_points,
    load_events,
    lookahead_report,
    parity_report,
    resolve_partitions,
)
from features.compute import compute_features
from flows.cli import main
from tests.features.strategies import make_events

SPEC = FeatureSpec()
SMALL = FeatureSpec(windows_s=(2, 5), return_horizons_s=(1, 2, 3))


def test_compare_columns_hand_computed():
    a = np.array([[1.0, np.nan, 0.0], [2.0, 1.0, np.nan]])
    b = np.array([[1.0, np.nan, 0.0], [2.0 + 2e-12, 1.0, 3.0]])
    out = compare_columns(a, b, ["x", "y", "z"])
    assert out["x"].not_bit_equal == 1 and out["x"].max_rel == pytest.approx(1e-12, rel=1e-3)
    assert out["y"] == ColumnDiff(max_abs=0.0, max_rel=0.0, not_bit_equal=0)
    assert out["z"].max_rel == np.inf and out["z"].not_bit_equal == 1


def test_cut_points_spread_and_include_one():
    assert cut_points(100, 4) == [1, 25, 50, 75, 100]
    assert cut_points(3, 10) == [1, 2, 3] and cut_points(0, 5) == []


def test_resolve_partitions_accepts_data_events_and_day_folders(events_dir):
    layout, symbol, days = resolve_partitions([events_dir])
    assert symbol == "XBTUSD" and days == ["2024-01-01", "2024-01-02"]
    assert resolve_partitions([events_dir / "events" / "XBTUSD"])[2] == days
    assert resolve_partitions([events_dir / "events" / "XBTUSD" / "2024-01-02"])[2] == [
        "2024-01-02"
    ]
    with pytest.raises(AuditInputError):
        resolve_partitions([events_dir / "events"])


def test_parity_on_synthetic_events_is_bit_for_bit(events_dir):
    book, trades, _ = load_events([events_dir / "events" / "XBTUSD" / "2024-01-01"])
    rep = parity_report(book, trades, SPEC)
    assert rep.ok and rep.bit_equal and rep.worst_rel == 0.0 and rep.bars > 600


def test_parity_on_the_real_bitmex_capture_is_bit_for_bit(capture_events_dir):
    book, trades, _ = load_events([capture_events_dir])
    for spec in (SPEC, SMALL):
        rep = parity_report(book, trades, spec)
        assert rep.ok and rep.bit_equal, rep.problems
        assert rep.bars >= 20


def test_lookahead_on_real_and_synthetic_events_finds_nothing(events_dir, capture_events_dir):
    for folder in (capture_events_dir, events_dir / "events" / "XBTUSD" / "2024-01-01"):
        book, trades, _ = load_events([folder])
        rep = lookahead_report(book, trades, SMALL, cuts=6)
        assert rep.ok and rep.sees_future == [] and len(rep.cuts) >= 4


def _leaky(bars: pl.LazyFrame, spec: FeatureSpec) -> pl.LazyFrame:
    """compute_features with one centred window: ofi_2s peeks one bar ahead."""
    out = compute_features(bars, spec)
    return out.with_columns(
        (pl.col("ofi_2s") + pl.col("ofi_2s").shift(-1).fill_null(0.0)).alias("ofi_2s")
    )


def test_lookahead_audit_catches_a_feature_that_sees_the_future(events_dir):
    book, trades, _ = load_events([events_dir / "events" / "XBTUSD" / "2024-01-01"])
    rep = lookahead_report(book, trades, SMALL, cuts=5, compute=_leaky)
    assert not rep.ok and rep.sees_future == ["ofi_2s"]


def test_cli_audit_parity_and_lookahead_json_and_exit_codes(capture_events_dir, capsys, tmp_path):
    assert main(["audit", "parity", str(capture_events_dir), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["ok"] and set(rep["features"]) == set(SPEC.names)
    assert rep["spec_hash"] == FeatureSpec().spec_hash  # the spec audited, by default
    assert ParityReport.model_validate(rep).model_dump(mode="json") == rep  # its dump
    assert main(["audit", "lookahead", str(capture_events_dir), "--cuts", "3"]) == 0
    out = capsys.readouterr().out
    assert "OK: no feature sees the future" in out and FeatureSpec().spec_hash[:12] in out
    assert main(["audit", "parity", str(tmp_path)]) == 2
    assert "no event partitions" in capsys.readouterr().err


def test_the_audits_default_spec_is_the_one_chappie_features_builds_by_default():
    """`chappie audit` defaults to FeatureSpec() (it runs on users' data, anywhere);
    `chappie features` reads conf/default.yaml. They must not drift apart."""
    from flows.cli_features import DEFAULT_CONFIG
    from flows.common import load_experiment

    root = Path(__file__).resolve().parents[2]
    assert load_experiment(root / DEFAULT_CONFIG).features.spec == FeatureSpec()


def test_cli_features_with_a_missing_config_exits_2(tmp_path, capsys):
    assert (
        main(["features", "--config", str(tmp_path / "nope.yaml"), "--data-dir", str(tmp_path)])
        == 2
    )
    assert "config file not found" in capsys.readouterr().err


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(5, 250),
    p_cross=st.sampled_from([0.0, 0.0, 0.05]),
    trade_rate=st.sampled_from([0.0, 0.3, 1.0]),
)
def test_parity_on_hypothesis_generated_events_is_bit_for_bit(seed, n, p_cross, trade_rate):
    """Events -> BarSampler -> FeatureStream equals sample_bars -> compute_features,
    including desynced books (crossing deltas) and empty bars."""
    book, trades = make_events(seed, n, p_cross=p_cross, trade_rate=trade_rate)
    rep = parity_report(book, trades, SMALL)
    assert rep.ok and rep.bit_equal, rep.problems
