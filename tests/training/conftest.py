"""Fixtures of the training tests: a data folder in the real on-disk formats (slice
parquet + manifest, frozen stats, folds.json) holding a random-walk XBTUSD market, so the
sweep, backtest and flows run without the ingest and features stages."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from core.atomic import write_json_atomic
from core.config.experiment import ExperimentConfig, load_config
from core.config.features import FeatureSpec
from core.paths import DataLayout
from core.schema import EXEC_COLUMNS, MID_TICKS, TS
from core.slice_reference import SliceKind
from features.slices import SliceManifest, SlicePart, SliceValidation
from features.stats import FrozenStats
from features.store import (
    MANIFEST_SUFFIX,
    SLICE_FORMAT,
    read_slice,
    segment_file,
    slice_digest,
    write_segment,
)
from tests.envs.conftest import random_events

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "conf" / "tiny.yaml"
T0 = 1_704_067_200 * 1_000_000_000  # 2024-01-01 00:00 UTC


def market_columns(
    spec: FeatureSpec,
    n: int,
    seed: int,
    t0: int,
    vol: int = 2,
    leak: str | None = None,
    leak_bars: int = 30,
) -> dict[str, np.ndarray]:
    """A random-walk book around 80,000 ticks with taker prints on both sides (uninformed:
    they do not anticipate the walk) and noise features (columns in slice order).
    `leak` names a feature that instead holds the mid move over the NEXT `leak_bars`
    bars: planted skill for a policy that reads it, which no real feature may have."""
    rng = np.random.default_rng(seed)
    bid = 80_000 + np.cumsum(rng.integers(-vol, vol + 1, n)).astype(np.int64)
    ask = bid + np.where(rng.random(n) < 0.9, 1, 2).astype(np.int64)
    u = rng.random(n)
    buy_hi = np.where(u < 0.35, ask + rng.integers(0, 3, n), 0).astype(np.int64)
    sell_lo = np.where((u > 0.4) & (u < 0.75), bid - rng.integers(0, 3, n), 0).astype(np.int64)
    cols: dict[str, np.ndarray] = {
        TS: t0 + spec.interval_ns * np.arange(1, n + 1, dtype=np.int64),
        MID_TICKS: (bid + ask) / 2.0,
    }
    for j, name in enumerate(spec.names):
        cols[name] = rng.normal(j * 0.1, 1.0 + 0.1 * j, n)
    if leak is not None:
        mid = cols[MID_TICKS]
        ahead = np.zeros(n)
        ahead[:-leak_bars] = mid[leak_bars:] - mid[:-leak_bars]
        cols[leak] = ahead
    cols[EXEC_COLUMNS[0]] = bid
    cols[EXEC_COLUMNS[1]] = ask
    cols[EXEC_COLUMNS[2]] = buy_hi
    cols[EXEC_COLUMNS[3]] = sell_lo
    cols[EXEC_COLUMNS[4]] = np.where(buy_hi > 0, rng.integers(100, 5000, n), 0).astype(np.int64)
    cols[EXEC_COLUMNS[5]] = np.where(sell_lo > 0, rng.integers(100, 5000, n), 0).astype(np.int64)
    # #17's queue and latency columns, consistent with the book and prints above (an
    # experiment's default execution, risk_averse with latency, reads them)
    m = {"bid": bid, "ask": ask, "buy_hi": buy_hi, "sell_lo": sell_lo}
    cols.update(random_events(m, bar_ns=spec.interval_ns, t0=t0, seed=seed))
    return cols


def write_slice(
    layout: DataLayout,
    spec: FeatureSpec,
    slice_id: str,
    kind: SliceKind,
    fold: int | None,
    n: int,
    seed: int,
    t0: int,
    stats_id: str | None = None,
    vol: int = 2,
    leak: str | None = None,
) -> SliceManifest:
    """Slice segment + manifest in the contract format; returns the manifest."""
    cols = market_columns(spec, n, seed, t0, vol, leak)
    return publish_columns(
        layout.slices(spec.spec_hash), spec, cols, slice_id, kind, fold, stats_id
    )


def publish_columns(
    folder: Path,
    spec: FeatureSpec,
    cols: dict[str, np.ndarray],
    slice_id: str,
    kind: SliceKind,
    fold: int | None,
    stats_id: str | None = None,
    instrument: dict[str, object] | None = None,
) -> SliceManifest:
    """`cols` as a slice in `folder`: one segment and its manifest (recording
    `instrument` when given, as the features flow does); returns the manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{slice_id}{MANIFEST_SUFFIX}"
    digest, rows = write_segment(folder, pl.from_arrow(pa.table(cols)))
    manifest = SliceManifest(
        slice_id=slice_id,
        kind=kind,
        fold=fold,
        spec_hash=spec.spec_hash,
        t_start_ns=int(cols[TS][0]),
        t_end_ns=int(cols[TS][-1]),
        rows=rows,
        sha256=slice_digest([(digest, rows)]),
        path=str(path.resolve()),
        format=SLICE_FORMAT,
        parts=[SlicePart(file=segment_file(digest), sha256=digest, rows=rows)],
        event_partitions={},
        validation=SliceValidation(success=True, suite="test"),
        stats_id=stats_id,
        instrument=instrument,
    )
    write_json_atomic(path, manifest.to_json())
    return manifest


@dataclass(frozen=True)
class DataDir:
    root: Path
    layout: DataLayout
    cfg: ExperimentConfig


def build_data_dir(
    root: Path,
    cfg: ExperimentConfig,
    rows: int = 600,
    stress_vol: int = 8,
    validation: bool = False,
    test_rows: int | None = None,
    leak: str | None = None,
    vol: int = 2,
) -> DataDir:
    """folds.json with cfg.features.walk_forward.n_folds folds (train, [validation,] test)
    and one stress slice (a wider random walk: a regime unlike training). Test slices have
    `test_rows` rows (default rows // 2); `leak`: see `market_columns`."""
    test_rows = test_rows or rows // 2
    spec = cfg.features.spec
    layout = DataLayout(root.resolve())
    folds = []
    step = rows * spec.interval_ns
    stats_id = None
    for k in range(cfg.features.walk_forward.n_folds):
        t0 = T0 + k * step
        train = write_slice(
            layout, spec, f"fold{k:02d}-train", "train", k, rows, 100 + k, t0, vol=vol, leak=leak
        )
        x = read_slice(train.path, columns=list(spec.names)).to_numpy()
        stats = FrozenStats.fit(
            x,
            spec.names,
            spec.spec_hash,
            spec.sigma_floor,
            [{"slice_id": train.slice_id, "sha256": train.sha256}],
        )
        stats.save(layout.stats(stats.stats_id))
        stats_id = stats.stats_id
        write_slice(
            layout,
            spec,
            f"fold{k:02d}-test",
            "test",
            k,
            test_rows,
            200 + k,
            t0 + step + 10**12,
            stats_id,
            vol=vol,
            leak=leak,
        )
        if validation:
            write_slice(
                layout,
                spec,
                f"fold{k:02d}-validation",
                "validation",
                k,
                rows // 3,
                400 + k,
                t0 + step + 10**11,
                stats_id,
            )
        folds.append(
            {
                "fold": k,
                "train": f"fold{k:02d}-train",
                "validation": f"fold{k:02d}-validation" if validation else None,
                "test": f"fold{k:02d}-test",
                "stats_id": stats.stats_id,
            }
        )
    write_slice(
        layout,
        spec,
        "stress00",
        "stress",
        None,
        rows // 2,
        300,
        T0 + 10**14,
        stats_id,
        vol=stress_vol,
        leak=leak,
    )
    write_json_atomic(
        layout.slices(spec.spec_hash) / "folds.json",
        {
            "spec_hash": spec.spec_hash,
            "folds": folds,
            "stress": ["stress00"],
            "stress_stats_id": stats_id,
        },
    )
    return DataDir(root.resolve(), layout, cfg)


@pytest.fixture(scope="session")
def tiny_cfg() -> ExperimentConfig:
    """conf/tiny.yaml with exactly 2 walk-forward folds, whatever the file says, so these
    tests count tasks and slices independently of the smoke config."""
    cfg = load_config(TINY)
    wf = cfg.features.walk_forward.model_copy(update={"n_folds": 2})
    return cfg.model_copy(update={"features": cfg.features.model_copy(update={"walk_forward": wf})})


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory, tiny_cfg: ExperimentConfig) -> DataDir:
    return build_data_dir(tmp_path_factory.mktemp("tiny-data"), tiny_cfg)
