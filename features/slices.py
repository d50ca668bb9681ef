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

import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict

from core import schema as S
from core.atomic import atomic_path, write_bytes_atomic, write_json_atomic, write_with_atomic
from core.clock import NS_PER_DAY
from core.config.features import FeaturesConfig, FeatureSpec
from core.hashing import fingerprint, sha256_bytes, sha256_file
from core.paths import DataLayout
from features.compute import compute_features
from features.stats import FrozenStats, json_bytes, write_if_changed
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


def slice_rows(bars: pl.LazyFrame, spec: FeatureSpec) -> pl.DataFrame:
    """Features of every bar once over the whole history, warm-up rows dropped, slice
    columns in order: every slice is a zero-copy row range of this frame."""
    return (
        compute_features(bars, spec).filter(~pl.col(S.WARMUP)).select(slice_columns(spec)).collect()
    )


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


#: Parquet encoding of slice and bar files. Part of a file's bytes, hence of its sha256:
#: changing it changes every slice's sha256 (and stats_id). LZ4 pages, PLAIN encoding
#: (no dictionary pages: float features barely repeat), no column statistics (slices
#: are always read whole; statistics cost a pass over every column), pyarrow's default
#: row groups (1M rows) and data pages (1 MiB). Deterministic: the same frame gives the
#: same bytes (tests/features/test_slices.py::test_parquet_encoding_is_deterministic...).
PARQUET_OPTIONS: dict[str, Any] = {
    "compression": "lz4",
    "use_dictionary": False,
    "write_statistics": False,
}


def encode_parquet(frame: pl.DataFrame) -> Any:
    """`frame` as a parquet file in memory (a `pyarrow.Buffer`, no extra copy), with
    `PARQUET_OPTIONS`. Same frame -> same bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(frame.to_arrow(), sink, **PARQUET_OPTIONS)
    return sink.getvalue()


def parquet_bytes(frame: pl.DataFrame) -> bytes:
    """Deterministic parquet encoding of `frame` as bytes (`encode_parquet`)."""
    return encode_parquet(frame).to_pybytes()


def write_parquet_atomic(target: str | Path, frame: pl.DataFrame) -> tuple[Path, str]:
    """Encode `frame` once in memory, hash those bytes (no re-read), publish them at
    `target` atomically. Returns (path, sha256 of the file's bytes)."""
    buf = encode_parquet(frame)
    view = memoryview(buf)
    digest = hashlib.sha256(view).hexdigest()
    path = write_with_atomic(target, lambda p: p.write_bytes(view))
    return path, digest


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


def _cut(frame: pl.LazyFrame, start_ns: int, end_ns: int) -> pl.LazyFrame:
    return frame.filter((pl.col(S.TS) >= start_ns) & (pl.col(S.TS) < end_ns))


# ---------------------------------------------------------------- stage -> validate -> publish
class StagedSlice(_Model):
    """A slice computed into the staging folder, not yet validated or published."""

    slice_id: str
    kind: Literal["train", "validation", "test", "stress"]
    fold: int | None
    start_ns: int  # window [start_ns, end_ns)
    end_ns: int
    path: str  # staged parquet
    sha256: str
    rows: int
    t_start_ns: int
    t_end_ns: int
    stats_id: str


class SlicePlan(_Model):
    """Everything `stage_slices` made; JSON-able (passed between flow tasks)."""

    spec_hash: str
    staging_dir: str
    bars_path: str
    origin_ns: int
    slices: list[StagedSlice]
    folds: list[FoldEntry]
    stress: list[str]
    stress_stats_id: str

    def staged(self, slice_id: str) -> StagedSlice:
        for s in self.slices:
            if s.slice_id == slice_id:
                return s
        raise KeyError(slice_id)

    def stats_dir(self, stats_id: str) -> Path:
        return Path(self.staging_dir) / "stats" / stats_id


def stage_slices(
    bars_path: str, cfg: FeaturesConfig, staging_dir: str, origin_ns: int | None = None
) -> SlicePlan:
    """Bars parquet -> features -> warm-up dropped -> walk-forward windows -> staged slice
    files and per-fold frozen stats (fitted on the train slice only) under `staging_dir`.

    `origin_ns` is the walk-forward origin (default 00:00 UTC of the first bar's day).
    Raises SliceBuildError (gaps, empty slices, all warm-up), WalkForwardError.
    """
    spec = cfg.spec
    sh = spec.spec_hash
    bars = pl.read_parquet(bars_path)
    check_grid(bars, spec)
    ready = slice_rows(bars.lazy(), spec)
    ts = ready[S.TS].to_numpy()
    if ready.height == 0:
        raise SliceBuildError("every bar is a warm-up row: not enough data for the look-back")
    if origin_ns is None:
        origin_ns = int(bars[S.TS][0]) // NS_PER_DAY * NS_PER_DAY
    data_end = int(bars[S.TS][-1]) + 1
    folds = make_folds(cfg.walk_forward, origin_ns, data_end)
    stress = make_stress_windows(cfg.walk_forward, origin_ns, data_end)
    root = Path(staging_dir)
    staged: list[StagedSlice] = []

    def stage(w: Window, stats_id: str | None) -> tuple[StagedSlice, pl.DataFrame]:
        # ts is sorted: a zero-copy row range instead of a filter
        lo, hi = (int(i) for i in np.searchsorted(ts, [w.start_ns, w.end_ns], side="left"))
        frame = ready.slice(lo, hi - lo)
        if frame.height == 0:
            raise SliceBuildError(
                f"slice {w.slice_id} [{w.start_ns}, {w.end_ns}) has no rows after warm-up"
            )
        path, digest = write_parquet_atomic(root / "slices" / f"{w.slice_id}.parquet", frame)
        item = StagedSlice(
            slice_id=w.slice_id,
            kind=w.kind,
            fold=w.fold,
            start_ns=w.start_ns,
            end_ns=w.end_ns,
            path=str(path),
            sha256=digest,
            rows=frame.height,
            t_start_ns=int(frame[S.TS][0]),
            t_end_ns=int(frame[S.TS][-1]),
            stats_id=stats_id or "",
        )
        return item, frame

    entries: list[FoldEntry] = []
    for f in folds:
        train, frame = stage(f.train, None)
        st = FrozenStats.fit_columns(
            [frame[n].to_numpy() for n in spec.names],  # zero-copy views
            spec.names,
            sh,
            spec.sigma_floor,
            [{"slice_id": train.slice_id, "sha256": train.sha256}],
        )
        st.save(root / "stats" / st.stats_id)
        staged.append(train.model_copy(update={"stats_id": st.stats_id}))
        for w in (f.validation, f.test):
            if w is not None:
                staged.append(stage(w, st.stats_id)[0])
        entries.append(
            FoldEntry(
                fold=f.fold,
                train=f.train.slice_id,
                validation=f.validation.slice_id if f.validation else None,
                test=f.test.slice_id,
                stats_id=st.stats_id,
            )
        )
    last = entries[-1].stats_id
    staged += [stage(w, last)[0] for w in stress]
    plan = SlicePlan(
        spec_hash=sh,
        staging_dir=str(root),
        bars_path=str(bars_path),
        origin_ns=origin_ns,
        slices=staged,
        folds=entries,
        stress=[w.slice_id for w in stress],
        stress_stats_id=last,
    )
    write_json_atomic(root / "plan.json", plan.model_dump(mode="json"))
    return plan


def validate_staged_slice(
    plan: SlicePlan, slice_id: str, cfg: FeaturesConfig, data_docs_dir: str | None = None
) -> dict[str, Any]:
    """Run the book suite on the slice's bars and the feature suite on the staged
    slice, with its fold's frozen stats (normalised-range check) except for stress
    slices, which are out of distribution by design. Returns the manifest
    `validation` summary; raises SliceValidationError listing the failed expectations."""
    from expectations.runner import validate_slice

    item = plan.staged(slice_id)
    frame = pl.read_parquet(item.path)
    # the bars of the rows that entered the slice (warm-up bars, e.g. a desynced book,
    # were dropped and are not the slice's)
    bars = (
        _cut(pl.scan_parquet(plan.bars_path), item.start_ns, item.end_ns)
        .join(frame.lazy().select(S.TS), on=S.TS, how="semi")
        .collect()
    )
    # Stress windows are out of distribution by design: no normalised-range check.
    st = None if item.kind == "stress" else FrozenStats.load(plan.stats_dir(item.stats_id))
    res = validate_slice(
        frame,
        cfg.spec,
        cfg.expectations,
        bars=bars,
        mean=st.mean if st else None,
        sigma=st.sigma if st else None,
        slice_id=slice_id,
        data_docs_dir=data_docs_dir,
    )
    return res.to_json()


def publish_slices(
    plan: SlicePlan,
    validations: Mapping[str, Mapping[str, Any]],
    layout: DataLayout,
    event_partitions: Mapping[str, str],
    lookback_ns: int,
) -> FoldIndex:
    """Publish every staged slice that passed validation: stats folders, slice files
    (atomic; an identical existing file is left alone), manifests (after their file),
    then folds.json. Raises SliceBuildError, before writing anything, when a slice has
    no successful validation or its staged file changed since staging.

    Each slice file is hashed once: a published file that already holds the staged
    sha256 is kept (nothing of the staged copy is used, so it needs no check); any
    other staged file is re-hashed before it is linked into place."""
    publish: list[StagedSlice] = []
    for item in plan.slices:
        v = validations.get(item.slice_id)
        if not v or not v.get("success"):
            raise SliceBuildError(
                f"slice {item.slice_id} has no successful validation: not published"
            )
        if _holds(slice_path(layout, plan.spec_hash, item.slice_id), item):
            continue
        if sha256_file(item.path) != item.sha256:
            raise SliceBuildError(f"staged slice {item.slice_id} changed after staging")
        publish.append(item)
    for stats_id in sorted({i.stats_id for i in plan.slices}):
        FrozenStats.load(plan.stats_dir(stats_id)).save(layout.stats(stats_id))
    for item in plan.slices:
        path = slice_path(layout, plan.spec_hash, item.slice_id)
        if item in publish:
            _publish_file(Path(item.path), path)
        window = Window(item.slice_id, item.kind, item.fold, item.start_ns, item.end_ns)
        manifest = {
            "slice_id": item.slice_id,
            "kind": item.kind,
            "fold": item.fold,
            "spec_hash": plan.spec_hash,
            "t_start_ns": item.t_start_ns,
            "t_end_ns": item.t_end_ns,
            "rows": item.rows,
            "sha256": item.sha256,
            "path": str(path.resolve()),
            "event_partitions": partitions_for(window, lookback_ns, event_partitions),
            "validation": dict(validations[item.slice_id]),
            "stats_id": item.stats_id,
        }
        write_if_changed(manifest_path(layout, plan.spec_hash, item.slice_id), json_bytes(manifest))
    index = FoldIndex(
        spec_hash=plan.spec_hash,
        folds=plan.folds,
        stress=plan.stress,
        stress_stats_id=plan.stress_stats_id,
    )
    write_if_changed(
        layout.slices(plan.spec_hash) / FOLDS_FILE, json_bytes(index.model_dump(mode="json"))
    )
    return index


def _holds(target: Path, item: StagedSlice) -> bool:
    """`target` already holds the bytes the plan staged for `item` (its sha256; one read
    of `target`, none of the staged copy)."""
    try:
        return sha256_file(target) == item.sha256
    except FileNotFoundError:
        return False


def _publish_file(src: Path, target: Path) -> None:
    """Atomically place `src`'s bytes at `target`: a hard link when staging and data
    share a file system (no copy), else a copy; renamed over `target` either way."""
    with atomic_path(target) as tmp:
        tmp.unlink()
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)


def remove_staging(plan: SlicePlan) -> None:
    """Delete a plan's staging folder (published files are separate hard links/copies)."""
    shutil.rmtree(plan.staging_dir, ignore_errors=True)


def staging_dir_for(layout: DataLayout, cfg: FeaturesConfig, bars_sha256: str) -> Path:
    """Deterministic staging folder of (config, bars)."""
    key = fingerprint({"features": cfg.model_dump(mode="json"), "bars": bars_sha256})[:16]
    return layout.root / "staging" / "features" / key


def validate_all(
    plan: SlicePlan, cfg: FeaturesConfig, data_docs_dir: str | None = None
) -> dict[str, dict[str, Any]]:
    """Validate every staged slice; raise one SliceValidationError listing the failures
    of every failing slice (slice id prefixed), else return the summaries by slice id."""
    from expectations.runner import SliceValidationError

    out: dict[str, dict[str, Any]] = {}
    failed: list[str] = []
    bad: list[str] = []
    for item in plan.slices:
        try:
            out[item.slice_id] = validate_staged_slice(plan, item.slice_id, cfg, data_docs_dir)
        except SliceValidationError as e:
            bad.append(item.slice_id)
            failed += [f"{item.slice_id}: {f}" for f in e.failed]
    if failed:
        raise SliceValidationError(",".join(bad), failed)
    return out


def build_slices_from_bars(
    bars: pl.DataFrame,
    cfg: FeaturesConfig,
    layout: DataLayout,
    *,
    event_partitions: Mapping[str, str] | None = None,
    origin_ns: int | None = None,
) -> FoldIndex:
    """Bars -> staged, validated, published slices + stats + folds.json, in one call.

    `event_partitions` maps event day -> sha256 of that day's manifest (lineage).
    Raises SliceBuildError, WalkForwardError or SliceValidationError (every failing
    slice listed); on any of them nothing is published. The staging folder is removed.
    """
    check_grid(bars, cfg.spec)
    data = parquet_bytes(bars)
    staging = staging_dir_for(layout, cfg, sha256_bytes(data))
    try:
        bars_path = write_bytes_atomic(staging / "bars.parquet", data)
        plan = stage_slices(str(bars_path), cfg, str(staging), origin_ns)
        docs = str(layout.gx) if cfg.expectations.data_docs else None
        validations = validate_all(plan, cfg, docs)
        return publish_slices(
            plan, validations, layout, event_partitions or {}, cfg.spec.lookback_ns
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def event_partition_hashes(layout: DataLayout, symbol: str, days: list[str]) -> dict[str, str]:
    """day -> sha256 of `events/<symbol>/<day>/manifest.json`."""
    return {d: sha256_file(layout.events_day(symbol, d) / "manifest.json") for d in days}


def build_bars(cfg: FeaturesConfig, data_dir: str, symbol: str) -> dict[str, Any]:
    """Events of `symbol` -> bars parquet (features.sampler), keyed by the event
    partitions' manifest hashes and the spec. Returns JSON-able
    {"bars_path", "bars_sha256", "event_partitions", "origin_ns"}; raises
    SliceBuildError when there are no events. Idempotent."""
    from features.sampler import sample_bars
    from ingest.events import list_event_days, read_events

    layout = DataLayout(Path(data_dir))
    days = list_event_days(layout, symbol)
    if not days:
        raise SliceBuildError(
            f"no event partitions for {symbol} under {layout.events_symbol(symbol)}"
        )
    parts = event_partition_hashes(layout, symbol, days)
    key = fingerprint({"spec": cfg.spec.spec_hash, "events": parts})[:16]
    path = layout.root / "bars" / symbol / layout.spec12(cfg.spec.spec_hash) / f"bars-{key}.parquet"
    if not path.exists():
        book, trades = read_events(layout, symbol)
        bars = sample_bars(book, trades, cfg.spec)
        check_grid(bars, cfg.spec)
        write_bytes_atomic(path, parquet_bytes(bars))
    return {
        "bars_path": str(path),
        "bars_sha256": sha256_file(path),
        "event_partitions": parts,
        "origin_ns": day_start_ns(days[0]),
    }


def build_slices(cfg: FeaturesConfig, layout: DataLayout, symbol: str) -> FoldIndex:
    """Events of `symbol` -> bars (the one sampler) -> validated, published slices."""
    info = build_bars(cfg, str(layout.root), symbol)
    bars = pl.read_parquet(info["bars_path"])
    return build_slices_from_bars(
        bars, cfg, layout, event_partitions=info["event_partitions"], origin_ns=info["origin_ns"]
    )


def manifest_json(path: str | Path) -> dict[str, Any]:
    """A manifest as plain JSON (for MLflow dataset logging)."""
    return json.loads(Path(path).read_text())
