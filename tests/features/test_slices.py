"""Slices: publish, idempotence, stats from train only, validation gate, lineage."""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from core import schema as S
from core.clock import NS_PER_DAY
from core.config.features import ExpectationsConfig, FeaturesConfig, FeatureSpec, WalkForwardConfig
from core.hashing import sha256_file
from core.paths import DataLayout
from expectations.runner import SliceValidationError
from features.bars import BuiltBars, write_bars
from features.publish import staging_dir_for
from features.slices import FoldIndex, SliceBuildError, load_fold_index, load_manifest
from features.slicing import slice_columns
from features.stats import FrozenStats
from features.store import SLICE_FORMAT, read_slice, slice_digest, verify_slice
from flows import features as flow_tasks
from tests.features.strategies import T0_NS, make_bars

SPEC = FeatureSpec()
CFG = FeaturesConfig(
    spec=SPEC,
    walk_forward=WalkForwardConfig(
        train_hours=0.25,
        test_hours=0.1,
        step_hours=0.1,
        n_folds=2,
        embargo_s=120,
        stress_windows=((0.8, 0.95),),
    ),
    expectations=ExpectationsConfig(data_docs=False),  # Data Docs: tests/expectations, test_flow
)
N_BARS = 3600  # one hour of 1 s bars


def bars_written(bars: pl.DataFrame, path: Path) -> BuiltBars:
    """`bars` written to `path`, described as the features flow's build-bars task
    describes the bars it sampled (no event partitions, no instrument)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return BuiltBars(
        bars_path=str(path),
        bars_sha256=write_bars(path, bars),
        event_partitions={},
        origin_ns=int(bars[S.TS][0]) // NS_PER_DAY * NS_PER_DAY,
        instrument=None,
    )


def build_slices_from_bars(
    bars: pl.DataFrame,
    cfg: FeaturesConfig,
    layout: DataLayout,
    *,
    event_partitions: Mapping[str, str] | None = None,
) -> FoldIndex:
    """Bars -> published slices through the features flow's own task functions
    (`.fn()`: no Prefect run), in the flow's order: stage, validate every slice, publish,
    remove the staging folder. The first failing slice raises its SliceValidationError
    (the flow's report of every failing slice: test_failing_slices_...)."""
    b = bars_written(bars, layout.root / "bars.arrow")
    staging = str(staging_dir_for(layout, cfg, b.bars_sha256))
    plan = flow_tasks.stage_slices.fn(b.bars_path, cfg, staging, b.origin_ns)
    validations = {
        s.slice_id: flow_tasks.validate_slice.fn(plan, s.slice_id, cfg, None) for s in plan.slices
    }
    index = flow_tasks.publish_slices.fn(
        plan, validations, str(layout.root), event_partitions or {}, cfg.spec.lookback_ns, None
    )
    flow_tasks.remove_staging.fn(plan)
    return index


@pytest.fixture(scope="module")
def bars() -> pl.DataFrame:
    return make_bars(N_BARS, 5, SPEC, p_missing_level=0.05, p_trade=0.4)


@pytest.fixture(scope="module")
def built(bars, tmp_path_factory):
    layout = DataLayout(tmp_path_factory.mktemp("data"))
    index = build_slices_from_bars(bars, CFG, layout, event_partitions={"2024-01-01": "ab" * 32})
    return layout, index


def test_build_slices_publishes_slices_manifests_stats_and_folds(built):
    layout, index = built
    assert load_fold_index(layout, SPEC.spec_hash) == index
    assert [f.train for f in index.folds] == ["fold00-train", "fold01-train"]
    assert index.stress == ["stress00"] and index.stress_stats_id == index.folds[-1].stats_id
    folder = layout.slices(SPEC.spec_hash)
    for sid in ["fold00-train", "fold00-test", "fold01-train", "fold01-test", "stress00"]:
        m = load_manifest(folder / f"{sid}.manifest.json")
        frame = read_slice(m.path)
        assert m.format == SLICE_FORMAT and verify_slice(m.path) == []
        assert m.sha256 == slice_digest((p.sha256, p.rows) for p in m.parts)
        for part in m.parts:  # every segment is named by the sha256 of its bytes
            assert sha256_file(folder / part.file) == part.sha256 == part.file[9:-6]
        assert frame.columns == slice_columns(SPEC) and frame.height == m.rows
        assert m.t_start_ns == frame[S.TS][0] and m.t_end_ns == frame[S.TS][-1]
        assert m.validation.success and m.validation.failed == []
        assert m.event_partitions == {"2024-01-01": "ab" * 32}
        assert m.spec_hash == SPEC.spec_hash and m.stats_id is not None
        assert frame.select(SPEC.names).to_numpy().dtype == np.float64
        assert np.isfinite(frame.select(SPEC.names).to_numpy()).all()
    train0 = read_slice(folder / "fold00-train.manifest.json")
    # warm-up rows never enter a slice: the first lookback-1 bars are gone
    assert train0[S.TS][0] >= T0_NS + SPEC.lookback_bars * SPEC.interval_ns
    test0 = load_manifest(folder / "fold00-test.manifest.json")
    assert test0.t_start_ns >= train0[S.TS][-1] + CFG.walk_forward.embargo_s * 1e9


def test_frozen_stats_are_fitted_on_the_train_slice_only(built):
    layout, index = built
    st = FrozenStats.load(layout.stats(index.folds[0].stats_id))
    train = read_slice(layout.slices(SPEC.spec_hash) / "fold00-train.manifest.json")
    x = train.select(SPEC.names).to_numpy()
    np.testing.assert_array_equal(st.mean, x.mean(axis=0))
    np.testing.assert_array_equal(st.sigma, np.maximum(x.std(axis=0), SPEC.sigma_floor))
    assert st.train_slices == (
        {
            "slice_id": "fold00-train",
            "sha256": load_manifest(layout.slices(SPEC.spec_hash) / "fold00-train").sha256,
        },
    )
    meta = json.loads((layout.stats(st.stats_id) / "stats.json").read_text())
    assert set(meta) == {
        "stats_id",
        "spec_hash",
        "feature_names",
        "sigma_floor",
        "n_rows",
        "train_slices",
    }


def test_changing_test_slice_data_leaves_stats_unchanged(bars, built, tmp_path):
    layout, index = built
    test0 = load_manifest(layout.slices(SPEC.spec_hash) / "fold00-test.manifest.json")
    in_test = (pl.col(S.TS) >= test0.t_start_ns) & (pl.col(S.TS) <= test0.t_end_ns)
    desync_at = test0.t_start_ns + 100 * SPEC.interval_ns  # a bad book inside the test window
    changed = bars.with_columns(
        pl.when(pl.col(S.TS) == desync_at)
        .then(False)
        .otherwise(pl.col(S.BOOK_OK))
        .alias(S.BOOK_OK),
        pl.when(in_test)
        .then(pl.col(S.bid_sz(0)) * 3 + 7)
        .otherwise(pl.col(S.bid_sz(0)))
        .alias(S.bid_sz(0)),
        pl.when(in_test).then(-pl.col(S.OFI_L1)).otherwise(pl.col(S.OFI_L1)).alias(S.OFI_L1),
    )
    layout2 = DataLayout(tmp_path)
    index2 = build_slices_from_bars(
        changed, CFG, layout2, event_partitions={"2024-01-01": "ab" * 32}
    )
    assert index2.folds[0].stats_id == index.folds[0].stats_id
    a, b = (
        FrozenStats.load(layout.stats(index.folds[0].stats_id)),
        FrozenStats.load(layout2.stats(index2.folds[0].stats_id)),
    )
    np.testing.assert_array_equal(a.mean, b.mean)
    np.testing.assert_array_equal(a.sigma, b.sigma)
    m2 = load_manifest(layout2.slices(SPEC.spec_hash) / "fold00-test.manifest.json")
    assert m2.sha256 != test0.sha256
    # the bad bar and the look-back after it are warm-up: dropped, the slice still valid
    assert m2.rows == test0.rows - SPEC.lookback_bars and m2.validation.success
    # same train inputs in a fresh folder -> byte-identical train slice (deterministic)
    train_a = load_manifest(layout.slices(SPEC.spec_hash) / "fold00-train.manifest.json")
    train_b = load_manifest(layout2.slices(SPEC.spec_hash) / "fold00-train.manifest.json")
    assert train_a.sha256 == train_b.sha256


def test_build_slices_is_idempotent_same_inputs_same_sha256(bars, built):
    layout, index = built
    files = sorted(p for p in layout.slices(SPEC.spec_hash).rglob("*") if p.is_file())
    before = {p.name: (sha256_file(p), p.stat().st_mtime_ns) for p in files}
    parts = {"2024-01-01": "ab" * 32}
    assert build_slices_from_bars(bars, CFG, layout, event_partitions=parts) == index
    after = {p.name: (sha256_file(p), p.stat().st_mtime_ns) for p in files}
    assert before == after  # identical files are not even rewritten
    assert sorted(p for p in layout.slices(SPEC.spec_hash).rglob("*") if p.is_file()) == files
    assert not (layout.root / "staging" / "features").exists() or not any(
        (layout.root / "staging" / "features").iterdir()
    )


def test_overlapping_windows_store_each_row_once(built):
    """Sliding folds overlap (fold01-train holds fold00-test); the store holds every row
    once, and each slice is exactly its window's rows in order."""
    layout, index = built
    folder = layout.slices(SPEC.spec_hash)
    manifests = {
        sid: load_manifest(folder / f"{sid}.manifest.json")
        for f in index.folds
        for sid in (f.train, f.test)
    } | {sid: load_manifest(folder / f"{sid}.manifest.json") for sid in index.stress}
    stored = [read_slice(p) for p in sorted((folder / "segments").glob("*.arrow"))]
    stored_ts = pl.concat([s.select(S.TS) for s in stored])[S.TS]
    assert stored_ts.n_unique() == stored_ts.len()  # no row twice
    union = pl.concat([read_slice(m.path).select(S.TS) for m in manifests.values()])[S.TS]
    assert set(union.to_list()) == set(stored_ts.to_list())
    assert sum(m.rows for m in manifests.values()) > stored_ts.len()  # windows do overlap
    shared = {p.sha256 for p in manifests["fold00-test"].parts}
    assert shared & {p.sha256 for p in manifests["fold01-train"].parts}


def test_verify_slice_finds_a_changed_segment(built, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(built[0].slices(SPEC.spec_hash), folder)
    m = load_manifest(folder / "fold00-test.manifest.json")
    assert verify_slice(folder / "fold00-test.manifest.json") == []
    seg = folder / m.parts[0].file
    data = bytearray(seg.read_bytes())
    data[len(data) // 2] ^= 0xFF
    seg.write_bytes(bytes(data))
    problems = verify_slice(folder / "fold00-test.manifest.json")
    assert len(problems) == 1 and m.parts[0].sha256 in problems[0]


def test_failing_slices_are_not_published_and_the_flow_error_lists_every_one(
    bars, tmp_path, prefect_harness
):
    """In a real Prefect run of the features flow's steps after sampling: two slices
    fail (each validated by its own task), one error names both and their failed
    expectations, and nothing is published."""
    from prefect import flow

    from flows.results import ensure_result_storage

    def crossed_after(t_s: float, frame: pl.DataFrame) -> pl.DataFrame:
        t = T0_NS + int(t_s * 1e9)
        bad_rows = (pl.col(S.TS) > t) & (pl.col(S.TS) <= t + 5 * SPEC.interval_ns)
        return frame.with_columns(
            pl.when(bad_rows)
            .then(pl.col(S.bid_px(0)) + 50)
            .otherwise(pl.col(S.bid_px(0)))
            .alias(S.bid_px(0))
        )

    # cross the book in a stretch of the second fold's test window and of the stress window
    crossed = crossed_after(0.42 * 3600, crossed_after(0.9 * 3600, bars))
    layout = DataLayout(tmp_path / "data")
    sampled = bars_written(crossed, tmp_path / "bars.arrow")

    @flow(name="slices-from-bars")
    def slices_from_bars() -> dict[str, Any]:
        ensure_result_storage()
        return flow_tasks.slices_from_bars("XBTUSD", sampled, CFG, str(layout.root))

    with pytest.raises(SliceValidationError) as err:
        slices_from_bars()
    assert err.value.slice_id == "fold01-test,stress00"
    for sid in ("fold01-test", "stress00"):
        failed = " ".join(f for f in err.value.failed if f.startswith(f"{sid}: "))
        assert "ExpectColumnPairValuesAToBeGreaterThanB(ask_px_0,bid_px_0): 5 unexpected" in failed
        assert "ExpectColumnValuesToBeBetween(spread_ticks): 5 unexpected" in failed
    assert not layout.slices(SPEC.spec_hash).exists() and not (layout.root / "stats").exists()


def test_bars_with_a_gap_raise_before_anything_is_written(bars, tmp_path):
    gapped = pl.concat([bars.head(1000), bars.slice(1001)])
    with pytest.raises(SliceBuildError, match="grid"):
        build_slices_from_bars(gapped, CFG, DataLayout(tmp_path))
    assert not (tmp_path / "slices").exists()


def test_folds_that_do_not_fit_the_data_raise(bars, tmp_path):
    cfg = CFG.model_copy(
        update={"walk_forward": CFG.walk_forward.model_copy(update={"n_folds": 20})}
    )
    from features.walk_forward import WalkForwardError

    with pytest.raises(WalkForwardError, match="fold"):
        build_slices_from_bars(bars, cfg, DataLayout(tmp_path))


def test_cli_audit_slices_rehashes_every_segment_and_exits_1_on_a_changed_one(
    built, tmp_path, capsys
):
    from flows.cli import main

    data = tmp_path / "data"
    shutil.copytree(built[0].slices(SPEC.spec_hash), DataLayout(data).slices(SPEC.spec_hash))
    assert main(["audit", "slices", "--data-dir", str(data), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    (folder,) = rep["folders"]
    assert rep["ok"] and folder["orphans"] == [] and set(folder["slices"]) >= {"fold00-train"}
    segments = DataLayout(data).slices(SPEC.spec_hash) / "segments"
    assert folder["segments"] == len(list(segments.glob("*.arrow")))  # each hashed once
    m = load_manifest(DataLayout(data).slices(SPEC.spec_hash) / "fold01-test")
    (segments / "stray.arrow").write_bytes(b"left by a failed run")
    seg = segments.parent / m.parts[-1].file
    seg.write_bytes(seg.read_bytes()[:-1] + b"\0")
    assert main(["audit", "slices", "--data-dir", str(data)]) == 1
    out = capsys.readouterr().out
    assert "fold01-test: segment" in out and "FAILED" in out
    assert "1 segment(s) no slice uses" in out
    assert main(["audit", "slices", "--data-dir", str(tmp_path / "none")]) == 2


def _hole(bars: pl.DataFrame, a_s: float, b_s: float) -> pl.DataFrame:
    """No book event and no trade in bars closing in [T0 + a_s, T0 + b_s)."""
    gap = (pl.col(S.TS) >= T0_NS + int(a_s * 1e9)) & (pl.col(S.TS) < T0_NS + int(b_s * 1e9))
    return bars.with_columns(
        pl.when(gap).then(0).otherwise(pl.col(c)).alias(c) for c in (S.N_BOOK_EVENTS, S.N_TRADES)
    )


def test_a_window_holding_a_hole_in_the_data_is_refused_before_anything_is_written(bars, tmp_path):
    from features.walk_forward import WalkForwardError

    holed = _hole(bars, 1400, 1720)  # 320 s inside fold01-test [1380 s, 1740 s)
    with pytest.raises(WalkForwardError) as err:
        build_slices_from_bars(holed, CFG, DataLayout(tmp_path))
    assert "1 window(s) hold a hole" in str(err.value) and "fold01-test [" in str(err.value)
    assert not (tmp_path / "slices").exists()
    lenient = CFG.model_copy(
        update={"walk_forward": CFG.walk_forward.model_copy(update={"max_quiet_s": 600})}
    )
    build_slices_from_bars(holed, lenient, DataLayout(tmp_path / "lenient"))  # not a hole


def test_rows_whose_look_back_reaches_into_a_hole_never_enter_a_slice(bars, built, tmp_path):
    layout = DataLayout(tmp_path)
    build_slices_from_bars(_hole(bars, 2500, 2870), CFG, layout)  # ends 10 s before stress00
    hole_end = T0_NS + 2869 * 10**9
    s = load_manifest(layout.slices(SPEC.spec_hash) / "stress00")
    assert s.t_start_ns >= hole_end + SPEC.lookback_ns
    before = load_manifest(built[0].slices(SPEC.spec_hash) / "stress00")
    assert s.t_end_ns == before.t_end_ns and s.rows < before.rows
