"""A tick change between two event days (XBTUSD 0.5 -> 0.1 USD): the same prices give
the same bps features under either tick, tick-bound features are refused across the
change in one line, and each slice carries (and is priced in) its own day's contract.

The fixture: the two synthetic days of `events_dir` (tick 0.5), and a copy whose second
day is re-expressed at tick 0.1 (every price * 5, its manifest's contract 0.1): the
same market, another tick from day two on."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from core import schema as S
from core.clock import parse_day
from core.config.features import FeaturesConfig, WalkForwardConfig
from core.hashing import sha256_file
from core.instrument import XBTUSD
from core.paths import DataLayout
from features.bars import build_bars, read_bars
from features.compute import TICK_BOUND_FEATURES
from features.instrument_days import (
    TICK_COLUMNS,
    check_windows,
    price_factors,
    price_grid,
    to_day_ticks,
)
from features.slices import SliceBuildError, load_manifest
from features.slicing import features_in_blocks
from features.store import read_slice
from features.walk_forward import make_folds, make_stress_windows
from ingest.events import partition_files, read_manifest

SYMBOL = "XBTUSD"
DAY1, DAY2 = "2024-01-01", "2024-01-02"
CFG = FeaturesConfig()
SPEC = CFG.spec
# folds inside day two, their look-back too (start 72 s after midnight > 61 s look-back)
DAY2_FOLDS = WalkForwardConfig(
    start_hours=24.02,
    train_hours=0.06,
    test_hours=0.03,
    step_hours=0.03,
    n_folds=2,
    embargo_s=120,
)


def _copy(src: Path, dst: Path) -> DataLayout:
    shutil.copytree(src / "events", dst / "events")
    return DataLayout(dst)


def _retick(layout: DataLayout, day: str, factor: int, tick: float) -> None:
    """Re-express a published day at a tick `factor` times finer: prices * factor, the
    manifest's contract and file hashes updated (the same market, another tick)."""
    folder = layout.events_day(SYMBOL, day)
    m = read_manifest(layout, SYMBOL, day)
    assert m is not None
    files = partition_files(m)
    for kind in ("book", "trades"):
        path = folder / files[kind]
        frame = pl.read_parquet(path)
        frame.with_columns(pl.col(S.PRICE_TICKS) * factor).write_parquet(path)
        m["outputs"][files[kind]] = sha256_file(path)
    m["instrument"]["tick_size"] = tick
    (folder / "manifest.json").write_text(json.dumps(m))


@pytest.fixture(scope="module")
def two_ticks(events_dir, tmp_path_factory) -> tuple[DataLayout, DataLayout]:
    """(one tick: both days at 0.5, a tick change: day two at 0.1)."""
    root = tmp_path_factory.mktemp("ticks")
    same = _copy(events_dir, root / "same")
    changed = _copy(events_dir, root / "changed")
    _retick(changed, DAY2, 5, 0.1)
    return same, changed


def test_price_grid_is_the_gcd_of_the_ticks_and_no_change_has_no_factor() -> None:
    c05, c01 = {"tick_size": 0.5}, {"tick_size": 0.1}
    assert price_grid({DAY1: c05, DAY2: c01}) == price_grid({DAY1: c01, DAY2: c05})
    assert str(price_grid({DAY1: c05, DAY2: c01})) == "0.1"
    assert str(price_grid({DAY1: {"tick_size": 0.25}, DAY2: {"tick_size": 0.1}})) == "0.05"
    assert price_factors({DAY1: c05, DAY2: c01}) == {DAY1: 5, DAY2: 1}
    assert price_factors({DAY1: c05, DAY2: c05}) == {} and price_grid({}) is None


def test_bps_features_are_continuous_across_a_tick_change(two_ticks, tmp_path) -> None:
    """The same prices under tick 0.5 then 0.1: every feature that is not tick-bound has
    the same value on every bar (bit for bit; realised volatility to a rounding of its
    square root), also on the bars whose look-back crosses the change; the tick-bound
    ones and the tick columns, put back in each day's ticks, are the day's."""
    same, changed = two_ticks
    built_a = build_bars(CFG, str(same.root), SYMBOL)
    built_b = build_bars(CFG, str(changed.root), SYMBOL)
    assert built_a.day_instruments is None and built_a.instrument == XBTUSD.contract()
    assert built_b.day_instruments is not None
    assert built_b.day_instruments[DAY2]["tick_size"] == 0.1
    assert built_b.instrument is not None and built_b.instrument["tick_size"] == 0.1  # grid
    bars_a, bars_b = read_bars(built_a.bars_path), read_bars(built_b.bars_path)
    # the sampler saw one unit: the grid bars are the 0.5 bars with prices * 5
    price_cols = [c for c in bars_a.columns if c.endswith(("_px_0", "_ticks")) or "_px_" in c]
    assert bars_b.drop(price_cols).equals(bars_a.drop(price_cols))
    for c in price_cols:
        assert (bars_b[c] == bars_a[c] * 5).all(), c
    fa = features_in_blocks(bars_a, SPEC)
    fb = features_in_blocks(bars_b, SPEC)
    day2 = parse_day(DAY2)
    assert (fa[S.TS] >= day2).any() and (fa[S.TS] < day2).any()
    for name in SPEC.names:
        if name in TICK_BOUND_FEATURES:
            continue
        a, b = fa[name].to_numpy(), fb[name].to_numpy()
        if name.startswith("realized_vol"):
            np.testing.assert_allclose(b, a, rtol=1e-14, atol=0, equal_nan=True)
        else:
            assert np.array_equal(a, b, equal_nan=True), name
    # the tick columns in each day's ticks: day one as under 0.5 alone, day two * 5
    back = to_day_ticks(
        fb.select(S.TS, *(c for c in TICK_COLUMNS if c in fb.columns)),
        {
            DAY1: 5,
            DAY2: 1,
        },
    )
    on1 = fa[S.TS] < day2
    for c in back.columns[1:]:
        assert back[c].filter(on1).equals(fa[c].filter(on1)), c
        assert (back[c].filter(~on1) == fa[c].filter(~on1) * 5).all(), c


def test_tick_bound_features_across_the_change_are_refused_in_one_line(two_ticks) -> None:
    """A fold whose stats would span the change, with spread_ticks in the spec: refused,
    naming the features and the day; a slice holding the change: refused too."""
    _, changed = two_ticks
    built = build_bars(CFG, str(changed.root), SYMBOL)
    contracts = built.day_instruments
    assert contracts is not None
    origin = built.origin_ns
    # a stress window in day two under the stats of folds in day one
    wf = WalkForwardConfig(
        train_hours=0.06,
        test_hours=0.03,
        step_hours=0.03,
        n_folds=1,
        embargo_s=120,
        stress_windows=((24.05, 24.2),),
    )
    folds = make_folds(wf, origin, origin + 2 * 86_400 * 10**9)
    stress = make_stress_windows(wf, origin, origin + 2 * 86_400 * 10**9)
    with pytest.raises(SliceBuildError) as err:
        check_windows(SPEC, folds, stress, contracts, SYMBOL)
    msg = str(err.value)
    assert "\n" not in msg and "spread_ticks" in msg and DAY2 in msg and "0.5 -> 0.1" in msg
    # a fold in day two whose look-back reaches back over midnight
    early = DAY2_FOLDS.model_copy(update={"start_hours": 24.0})
    folds = make_folds(early, origin, origin + 2 * 86_400 * 10**9)
    with pytest.raises(SliceBuildError, match=r"fold 0 spans XBTUSD's tick change on 2024-01-02"):
        check_windows(SPEC, folds, [], contracts, SYMBOL)
    # one slice holding midnight: two contracts in one slice
    across = WalkForwardConfig(
        start_hours=23.9, train_hours=0.2, test_hours=0.03, n_folds=1, embargo_s=120
    )
    folds = make_folds(across, origin, origin + 2 * 86_400 * 10**9)
    with pytest.raises(SliceBuildError, match=r"slice fold00-train spans XBTUSD's contract"):
        check_windows(SPEC, folds, [], contracts, SYMBOL)
    # on one side of the change (look-back included): accepted
    check_windows(
        SPEC, make_folds(DAY2_FOLDS, origin, origin + 2 * 86_400 * 10**9), [], contracts, SYMBOL
    )


def test_slices_carry_and_are_priced_in_their_days_contract(
    two_ticks, tmp_path, prefect_harness
) -> None:
    """Through the features flow: slices after the change record the 0.1 contract and
    hold their prices in 0.1 ticks (the same prices: 5 x the 0.5 ticks); slices before
    it record 0.5 and hold exactly what a history without the change gives."""
    from flows.features import build_features_flow

    same, changed = two_ticks
    cfg2 = CFG.model_copy(update={"walk_forward": DAY2_FOLDS})
    cfg1 = CFG.model_copy(
        update={
            "walk_forward": WalkForwardConfig(
                train_hours=0.06, test_hours=0.03, step_hours=0.03, n_folds=2, embargo_s=120
            )
        }
    )
    for cfg, factor, tick in ((cfg2, 5, 0.1), (cfg1, 1, 0.5)):
        a = _copy(same.root, tmp_path / f"a{tick}")
        b = _copy(changed.root, tmp_path / f"b{tick}")
        build_features_flow(SYMBOL, cfg, str(a.root))
        build_features_flow(SYMBOL, cfg, str(b.root))
        sh = cfg.spec.spec_hash
        for sid in ("fold00-train", "fold01-test"):
            ma = load_manifest(a.slices(sh) / f"{sid}.manifest.json")
            mb = load_manifest(b.slices(sh) / f"{sid}.manifest.json")
            assert ma.instrument == XBTUSD.contract()
            assert mb.instrument == XBTUSD.model_copy(update={"tick_size": tick}).contract()
            ra, rb = read_slice(ma.path), read_slice(mb.path)
            assert ra[S.TS].equals(rb[S.TS])
            for c in TICK_COLUMNS:
                assert (rb[c] == ra[c] * factor).all(), (sid, c)
            for c in ra.columns:
                if c in TICK_COLUMNS or c.startswith("realized_vol"):
                    continue
                assert ra[c].equals(rb[c]), (sid, c)
