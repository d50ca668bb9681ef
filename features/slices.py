"""Walk-forward slice files, manifests, frozen stats and `folds.json`. Adapter.

`build_slices` reads canonical events, samples bars with the one sampler, computes the
features, drops warm-up rows, cuts folds and stress windows, fits frozen stats on each
fold's train slice only, validates every slice with the expectation suites, and only
then publishes: slice parquet files (atomically), their manifests (written after the
file), the stats folders and finally `folds.json`. If any slice fails validation
nothing new is published and `SliceValidationError` lists every failure.

Publishing is idempotent: the same events and config give byte-identical files (same
sha256); an existing file with the right sha256 is left untouched.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import polars as pl
from pydantic import BaseModel, ConfigDict

from core import schema as S
from core.atomic import write_bytes_atomic, write_json_atomic
from core.clock import NS_PER_DAY
from core.config.features import FeaturesConfig, FeatureSpec
from core.hashing import sha256_bytes, sha256_file
from core.paths import DataLayout
from features.compute import compute_features
from features.stats import FrozenStats
from features.walk_forward import Window, make_folds, make_stress_windows

FOLDS_FILE = "folds.json"
MANIFEST_SUFFIX = ".manifest.json"


class SliceBuildError(ValueError):
    """Bars or windows that cannot make valid slices (gaps, empty slices, no data)."""


# ---------------------------------------------------------------- models
class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SliceRef(_Model):
    slice_id: str
    sha256: str


class FoldEntry(_Model):
    fold: int
    train: str
    validation: str | None = None
    test: str
    stats_id: str


class FoldIndex(_Model):
    """Mirror of `slices/<spec12>/folds.json`."""

    spec_hash: str
    folds: list[FoldEntry]
    stress: list[str] = []
    stress_stats_id: str | None = None


class SliceManifest(_Model):
    """Mirror of `<slice_id>.manifest.json`. `t_start_ns`/`t_end_ns` are the first and
    last row `ts` (inclusive); `path` is the absolute parquet path."""

    model_config = ConfigDict(frozen=True, extra="allow")

    slice_id: str
    kind: Literal["train", "validation", "test", "stress"]
    fold: int | None
    spec_hash: str
    t_start_ns: int
    t_end_ns: int
    rows: int
    sha256: str
    path: str
    event_partitions: dict[str, str]
    validation: dict[str, Any]
    stats_id: str | None


def load_fold_index(layout: DataLayout, spec_hash: str) -> FoldIndex:
    """Read `slices/<spec12>/folds.json`; raises FileNotFoundError / ValueError when it
    is missing or belongs to another spec."""
    path = layout.slices(spec_hash) / FOLDS_FILE
    index = FoldIndex.model_validate_json(path.read_text())
    if index.spec_hash != spec_hash:
        raise ValueError(f"{path} is for spec {index.spec_hash}, not {spec_hash}")
    return index


def load_manifest(path: str | Path) -> SliceManifest:
    """Read a slice manifest (`<slice_id>.manifest.json`, or the slice parquet path)."""
    p = Path(path)
    if p.suffix == ".parquet":
        p = p.with_name(p.stem + MANIFEST_SUFFIX)
    return SliceManifest.model_validate_json(p.read_text())


def slice_path(layout: DataLayout, spec_hash: str, slice_id: str) -> Path:
    return layout.slices(spec_hash) / f"{slice_id}.parquet"


def manifest_path(layout: DataLayout, spec_hash: str, slice_id: str) -> Path:
    return layout.slices(spec_hash) / f"{slice_id}{MANIFEST_SUFFIX}"


# ---------------------------------------------------------------- pure helpers
def slice_columns(spec: FeatureSpec) -> list[str]:
    """Columns of a slice file, in order."""
    return [S.TS, S.MID_TICKS, *spec.names, *S.EXEC_COLUMNS]


def day_start_ns(day: str) -> int:
    """00:00 UTC of `YYYY-MM-DD` in ns."""
    dt = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC)
    return int(dt.timestamp()) * 1_000_000_000


def check_grid(bars: pl.DataFrame, spec: FeatureSpec) -> None:
    """Raise SliceBuildError unless bar `ts` are consecutive multiples of the interval."""
    if bars.height == 0:
        raise SliceBuildError("no bars")
    ts = bars[S.TS]
    if int(ts[0]) % spec.interval_ns != 0:
        raise SliceBuildError(f"first bar ts {ts[0]} is not on the {spec.interval_ns} ns grid")
    if bars.height > 1:
        steps = ts.diff().drop_nulls()
        bad = steps.filter(steps != spec.interval_ns)
        if bad.len():
            raise SliceBuildError(
                f"bars are not on a complete {spec.interval_ns} ns grid "
                f"({bad.len()} gaps or repeats, e.g. a step of {bad[0]} ns)"
            )


def parquet_bytes(frame: pl.DataFrame) -> bytes:
    """Deterministic parquet encoding (same frame -> same bytes)."""
    buf = io.BytesIO()
    frame.write_parquet(buf, compression="zstd", compression_level=3, statistics=True)
    return buf.getvalue()


def partitions_for(
    window: Window, lookback_ns: int, partitions: Mapping[str, str]
) -> dict[str, str]:
    """Event days whose [00:00, 24:00) meets the window extended back by the look-back."""
    lo, hi = window.start_ns - lookback_ns, window.end_ns
    return {
        d: h
        for d, h in sorted(partitions.items())
        if day_start_ns(d) < hi and day_start_ns(d) + NS_PER_DAY > lo
    }


@dataclass
class _Pending:
    window: Window
    frame: pl.DataFrame
    bars: pl.DataFrame
    data: bytes
    sha256: str
    stats: FrozenStats | None
    validation: dict[str, Any] | None = None


def _cut(frame: pl.DataFrame, w: Window) -> pl.DataFrame:
    return frame.filter((pl.col(S.TS) >= w.start_ns) & (pl.col(S.TS) < w.end_ns))


def _pending(
    window: Window, ready: pl.DataFrame, bars: pl.DataFrame, spec: FeatureSpec
) -> _Pending:
    frame = _cut(ready, window).select(slice_columns(spec))
    if frame.height == 0:
        raise SliceBuildError(
            f"slice {window.slice_id} [{window.start_ns}, {window.end_ns}) has no rows after warm-up"
        )
    data = parquet_bytes(frame)
    return _Pending(window, frame, _cut(bars, window), data, sha256_bytes(data), None)


# ---------------------------------------------------------------- build
def build_slices_from_bars(
    bars: pl.DataFrame,
    cfg: FeaturesConfig,
    layout: DataLayout,
    *,
    event_partitions: Mapping[str, str] | None = None,
    origin_ns: int | None = None,
    validate: bool = True,
) -> FoldIndex:
    """Bars -> validated, published slices, stats and folds.json (see module doc).

    `event_partitions` maps event day -> sha256 of that day's manifest (lineage);
    `origin_ns` is the walk-forward origin (default: 00:00 UTC of the first bar's day).
    Raises SliceBuildError, WalkForwardError, SliceValidationError; publishes nothing
    on any of them.
    """
    spec = cfg.spec
    sh = spec.spec_hash
    check_grid(bars, spec)
    parts = dict(event_partitions or {})
    feats = compute_features(bars.lazy(), spec).collect()
    ready = feats.filter(~pl.col(S.WARMUP))
    if ready.height == 0:
        raise SliceBuildError("every bar is a warm-up row: not enough data for the look-back")
    if origin_ns is None:
        origin_ns = int(bars[S.TS][0]) // NS_PER_DAY * NS_PER_DAY
    data_end = int(bars[S.TS][-1]) + 1
    folds = make_folds(cfg.walk_forward, origin_ns, data_end)
    stress = make_stress_windows(cfg.walk_forward, origin_ns, data_end)

    pending: list[_Pending] = []
    stats_by_fold: dict[int, FrozenStats] = {}
    for f in folds:
        train = _pending(f.train, ready, bars, spec)
        x = train.frame.select(spec.names).to_numpy()
        st = FrozenStats.fit(
            x,
            spec.names,
            sh,
            spec.sigma_floor,
            [{"slice_id": f.train.slice_id, "sha256": train.sha256}],
        )
        stats_by_fold[f.fold] = st
        train.stats = st
        pending.append(train)
        for w in (f.validation, f.test):
            if w is not None:
                p = _pending(w, ready, bars, spec)
                p.stats = st
                pending.append(p)
    last_stats = stats_by_fold[folds[-1].fold]
    for w in stress:
        p = _pending(w, ready, bars, spec)
        p.stats = last_stats
        pending.append(p)

    if validate:
        _validate_all(pending, cfg)

    out_dir = layout.slices(sh)
    out_dir.mkdir(parents=True, exist_ok=True)
    for st in stats_by_fold.values():
        st.save(layout.stats(st.stats_id))
    for p in pending:
        _publish(p, layout, sh, spec, parts)
    index = FoldIndex(
        spec_hash=sh,
        folds=[
            FoldEntry(
                fold=f.fold,
                train=f.train.slice_id,
                validation=f.validation.slice_id if f.validation else None,
                test=f.test.slice_id,
                stats_id=stats_by_fold[f.fold].stats_id,
            )
            for f in folds
        ],
        stress=[w.slice_id for w in stress],
        stress_stats_id=last_stats.stats_id,
    )
    write_json_atomic(out_dir / FOLDS_FILE, index.model_dump(mode="json"))
    return index


def _validate_all(pending: list[_Pending], cfg: FeaturesConfig) -> None:
    from expectations.runner import SliceValidationError, validate_frames

    failures: list[str] = []
    for p in pending:
        st = p.stats
        res = validate_frames(
            p.frame,
            p.bars,
            cfg.spec,
            cfg.expectations,
            st.mean if st else None,
            st.sigma if st else None,
        )
        p.validation = res.to_json()
        if not res.success:
            failures += [f"{p.window.slice_id}: {f}" for f in res.failed]
    if failures:
        raise SliceValidationError(",".join(sorted({f.split(":")[0] for f in failures})), failures)


def _publish(
    p: _Pending, layout: DataLayout, sh: str, spec: FeatureSpec, parts: Mapping[str, str]
) -> None:
    path = slice_path(layout, sh, p.window.slice_id)
    if not (path.exists() and sha256_file(path) == p.sha256):
        write_bytes_atomic(path, p.data)
    manifest = {
        "slice_id": p.window.slice_id,
        "kind": p.window.kind,
        "fold": p.window.fold,
        "spec_hash": sh,
        "t_start_ns": int(p.frame[S.TS][0]),
        "t_end_ns": int(p.frame[S.TS][-1]),
        "rows": p.frame.height,
        "sha256": p.sha256,
        "path": str(path.resolve()),
        "event_partitions": partitions_for(p.window, spec.lookback_ns, parts),
        "validation": p.validation
        or {"success": True, "suite": "none", "failed": [], "statistics": {}},
        "stats_id": p.stats.stats_id if p.stats else None,
    }
    write_json_atomic(manifest_path(layout, sh, p.window.slice_id), manifest)


def event_partition_hashes(layout: DataLayout, symbol: str, days: list[str]) -> dict[str, str]:
    """day -> sha256 of `events/<symbol>/<day>/manifest.json`."""
    return {d: sha256_file(layout.events_day(symbol, d) / "manifest.json") for d in days}


def build_slices(cfg: FeaturesConfig, layout: DataLayout, symbol: str) -> FoldIndex:
    """Events of `symbol` -> bars (features.sampler) -> slices. See `build_slices_from_bars`."""
    from features.sampler import sample_bars
    from ingest.events import list_event_days, read_events

    days = list_event_days(layout, symbol)
    if not days:
        raise SliceBuildError(
            f"no event partitions for {symbol} under {layout.events_symbol(symbol)}"
        )
    book, trades = read_events(layout, symbol)
    bars = sample_bars(book, trades, cfg.spec)
    return build_slices_from_bars(
        bars,
        cfg,
        layout,
        event_partitions=event_partition_hashes(layout, symbol, days),
        origin_ns=day_start_ns(days[0]),
    )
