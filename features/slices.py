"""Walk-forward slices, manifests, frozen stats and `folds.json`. Adapter.

The steps the features flow (`flows/features.py`, the one orchestration) runs as tasks:
`build_bars` reads canonical events one day at a time and samples bars with the one
sampler, its state carried from day to day (one bars part per day, kept, so a new day
samples that day only); `stage_slices` computes the features part by part with each
feature's look-back carried over (`ready_parts`; the same bits as one pass over the
whole history), drops warm-up rows, cuts folds and stress windows and fits frozen stats
on each fold's train slice only, into a staging folder; the flow validates every staged
slice (`expectations.runner.validate_staged_slice`) and only then `publish_slices`
publishes: segment files, the stats folders, one manifest per slice (a slice *is* its
manifest: the ordered segments it is made of, see `features.store`) and finally
`folds.json`. `publish_slices` refuses a slice without a successful validation.

Memory is flat in the number of days (#19): one day of events, one bars part, the
rows of one segment or train window, and 17 bytes a bar of times and flags.

Publishing is idempotent: the same events and config give byte-identical segments
(same sha256, hence the same slice digests); an existing segment is left untouched.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
import pyarrow as pa
from pydantic import BaseModel, ConfigDict

from core import schema as S
from core.atomic import (
    atomic_path,
    fsync_dir,
    json_bytes,
    publish_if_changed,
    write_json_atomic,
    write_with_atomic,
)
from core.clock import NS_PER_DAY
from core.config.features import FeaturesConfig, FeatureSpec
from core.hashing import fingerprint, sha256_file
from core.leftovers import STALE_AFTER_S, remove_stale_temps
from core.paths import DataLayout
from features.compute import compute_features
from features.stats import FrozenStats
from features.store import (
    MANIFEST_SUFFIX,
    SEGMENT_MAX_ROWS,
    SEGMENTS_DIR,
    SLICE_FORMAT,
    as_frame,
    manifest_for,
    read_arrow,
    read_parts,
    read_slice,
    segment_file,
    slice_digest,
    write_arrow,
    write_arrow_atomic,
    write_segment,
)
from features.walk_forward import (
    WalkForwardError,
    Window,
    after_gaps,
    make_folds,
    make_stress_windows,
    quiet_spans,
    windows_over_gaps,
)

FOLDS_FILE = "folds.json"

__all__ = ["MANIFEST_SUFFIX", "read_slice"]


class SliceBuildError(ValueError):
    """Bars or windows that cannot make valid slices (gaps, empty slices, no data)."""


# ---------------------------------------------------------------- models
class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


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


class SlicePart(_Model):
    """One segment of a slice: `file` relative to the spec's slices folder."""

    file: str
    sha256: str
    rows: int


class SliceManifest(_Model):
    """Mirror of `<slice_id>.manifest.json`: the slice itself. `t_start_ns`/`t_end_ns`
    are the first and last row `ts` (inclusive); `parts` are its segments in row order;
    `sha256` is `features.store.slice_digest` of the parts; `path` is the manifest's
    own absolute path (what the env, backtests and `read_slice` take)."""

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
    format: str
    parts: list[SlicePart]
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
    """Read a slice manifest (`<slice_id>.manifest.json`, or `<slice_id>` beside it)."""
    return SliceManifest.model_validate_json(manifest_for(path).read_text())


def manifest_path(layout: DataLayout, spec_hash: str, slice_id: str) -> Path:
    """Where a published slice lives: its manifest."""
    return layout.slices(spec_hash) / f"{slice_id}{MANIFEST_SUFFIX}"


# ---------------------------------------------------------------- pure helpers
def slice_columns(spec: FeatureSpec) -> list[str]:
    """Columns of a slice, in order."""
    return [S.TS, S.MID_TICKS, *spec.names, *S.EXEC_COLUMNS]


#: bars per feature pass of `slice_rows` (about 3 days of 1 s bars)
FEATURE_BLOCK_ROWS = 1 << 18


def slice_rows(
    bars: pl.DataFrame, spec: FeatureSpec, block_rows: int = FEATURE_BLOCK_ROWS
) -> pl.DataFrame:
    """Features of every bar once over the whole history, warm-up rows dropped, slice
    columns in order: every slice is a zero-copy row range of this frame.

    Warm-up rows are usually a prefix (the first look-back, the first trade): then the
    rest is a zero-copy row range; only warm-up rows later on (a desynced book) cost a
    filtered copy."""
    frame = features_in_blocks(bars, spec, block_rows)
    warm = frame[S.WARMUP].to_numpy()
    ok = np.flatnonzero(~warm)
    cols = slice_columns(spec)
    if ok.size == 0:
        return frame.clear().select(cols)
    first = int(ok[0])
    if ok.size == frame.height - first:  # no warm-up after the first ready row
        return frame.slice(first).select(cols)
    return frame.filter(~pl.col(S.WARMUP)).select(cols)


def features_in_blocks(
    bars: pl.DataFrame, spec: FeatureSpec, block_rows: int = FEATURE_BLOCK_ROWS
) -> pl.DataFrame:
    """`compute_features(bars.lazy(), spec).collect()`, bit for bit, computed
    `block_rows` bars at a time by polars' in-memory engine: each block is computed
    with the `spec.lookback_bars` bars before it (every lag, window and horizon
    reaches back at most that far; the windowed sums are differences of exact integer
    cumulative sums, so where a block's sums start does not change them), whose rows
    are then dropped. One contiguous chunk per block.

    Why not the streaming engine over the whole history: it emits a few tiny chunks
    wherever its shifted columns start (rows 1, 2, 10, 11, 60 of every morsel with the
    default spec), so the windows and segments over them must be copied into
    contiguous memory for the stats and the segment bytes. Measured on this VM,
    features alone, interleaved runs: 3 days 53 ms median (47 best) against 73 (47)
    streaming; 14 days 265 (253) against 331 (235); one cold 14-day pass 465 ms and
    825 MB peak against 508 ms and 877 MB, in 5 chunks instead of 58. A block's
    intermediate columns stay bounded (~230 MB at 2**18 bars)."""
    if block_rows < 1:
        raise ValueError(f"block_rows must be >= 1, got {block_rows}")
    back = spec.lookback_bars
    parts = []
    for start in range(0, max(bars.height, 1), block_rows):
        lo = max(0, start - back)
        block = bars.slice(lo, start + block_rows - lo)
        frame = compute_features(block.lazy(), spec).collect(engine="in-memory")
        parts.append(frame.slice(start - lo))
    return parts[0] if len(parts) == 1 else pl.concat(parts, rechunk=False)


def day_start_ns(day: str) -> int:
    """00:00 UTC of `YYYY-MM-DD` in ns."""
    dt = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC)
    return int(dt.timestamp()) * 1_000_000_000


def check_grid(bars: pl.DataFrame, spec: FeatureSpec, after: int | None = None) -> None:
    """Raise SliceBuildError unless bar `ts` are consecutive multiples of the interval.

    `after`: the last `ts` of the bars before these (a part of a longer history): then
    these must continue it (an empty part is fine), else they must not be empty."""
    if bars.height == 0:
        if after is None:
            raise SliceBuildError("no bars")
        return
    ts = bars[S.TS]
    if int(ts[0]) % spec.interval_ns != 0:
        raise SliceBuildError(f"first bar ts {ts[0]} is not on the {spec.interval_ns} ns grid")
    if after is not None and int(ts[0]) != after + spec.interval_ns:
        raise SliceBuildError(
            f"bars are not on a complete {spec.interval_ns} ns grid "
            f"(a step of {int(ts[0]) - after} ns between two parts of the history)"
        )
    if bars.height > 1:
        steps = ts.diff().drop_nulls()
        bad = steps.filter(steps != spec.interval_ns)
        if bad.len():
            raise SliceBuildError(
                f"bars are not on a complete {spec.interval_ns} ns grid "
                f"({bad.len()} gaps or repeats, e.g. a step of {bad[0]} ns)"
            )


def ready_parts(
    parts: Iterable[pl.DataFrame],
    spec: FeatureSpec,
    spans: Sequence[tuple[int, int]] = (),
    keep: Callable[[int, int], bool] | None = None,
) -> Iterator[pl.DataFrame]:
    """Slice rows (`slice_rows`: features, warm-up dropped, slice columns; rows whose
    look-back meets a quiet span in `spans` dropped too) of a history given as
    consecutive bar parts (days, or blocks of one frame), one part at a time, bit for
    bit as one pass over the whole history: each part is computed with the
    `spec.lookback_bars` bars before it, carried over from the parts before (however
    short they are), whose rows are then dropped (see `features_in_blocks`). Memory:
    one part and the look-back.

    `keep(first_ts, last_ts)`: False for a part no slice needs: its features are not
    computed (only its last bars are carried on as the next part's look-back) and it
    yields an empty frame."""
    back = spec.lookback_bars
    cols = slice_columns(spec)
    tail: pl.DataFrame | None = None
    for part in parts:
        if part.height == 0:
            continue
        block = part if tail is None else pl.concat([tail, part], rechunk=False)
        if keep is not None and not keep(int(part[S.TS][0]), int(part[S.TS][-1])):
            tail = block.tail(back).rechunk()
            yield pl.DataFrame()
            continue
        frame = compute_features(block.lazy(), spec).collect(engine="in-memory")
        if tail is not None:
            frame = frame.slice(tail.height)
        tail = block.tail(back).rechunk()
        ready = frame.filter(~pl.col(S.WARMUP)).select(cols)
        if spans and ready.height:
            ready = ready.filter(~after_gaps(ready[S.TS].to_numpy(), spans, spec.lookback_ns))
        yield ready


class _ReadyRows:
    """The slice rows of a history, written part by part to `folder` (Arrow IPC), read
    back by global row range: what `stage_slices` cuts segments and fits stats from
    without the whole history in memory."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.files: list[Path] = []
        self.starts: list[int] = [0]
        self.times: list[np.ndarray] = []
        self._cache: tuple[int, pa.Table] | None = None

    @property
    def rows(self) -> int:
        return self.starts[-1]

    def append(self, frame: pl.DataFrame) -> None:
        if frame.height == 0:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{len(self.files):06d}.arrow"
        write_arrow(path, frame)
        self.files.append(path)
        self.starts.append(self.starts[-1] + frame.height)
        self.times.append(frame[S.TS].to_numpy().copy())

    def ts(self) -> np.ndarray:
        return np.concatenate(self.times)

    def _part(self, i: int) -> pa.Table:
        if self._cache is None or self._cache[0] != i:
            with pa.OSFile(str(self.files[i])) as fh:  # read, not mapped: freed when dropped
                self._cache = (i, pa.ipc.open_file(fh).read_all())
        return self._cache[1]

    def table(self, lo: int, hi: int) -> pa.Table:
        """Rows [lo, hi) as one Arrow table (chunked at part edges)."""
        i = int(np.searchsorted(self.starts, lo, side="right")) - 1
        pieces = []
        while lo < hi:
            start, end = self.starts[i], self.starts[i + 1]
            take = min(hi, end) - lo
            pieces.append(self._part(i).slice(lo - start, take))
            lo += take
            i += 1
        return pieces[0] if len(pieces) == 1 else pa.concat_tables(pieces)

    def remove(self) -> None:
        self._cache = None
        shutil.rmtree(self.folder, ignore_errors=True)


def read_bars(path: str | Path) -> pl.DataFrame:
    """A bars file: Arrow IPC (`.arrow`, memory-mapped), Parquet, or a bars index
    (`.json`, what `build_bars` writes: the day parts, concatenated)."""
    p = Path(path)
    if p.suffix == ".json":
        parts = list(iter_bars(p))
        return pl.concat(parts) if parts else pl.DataFrame()
    return pl.read_parquet(p) if p.suffix == ".parquet" else as_frame(read_arrow(p))


def iter_bars(path: str | Path, block_rows: int = FEATURE_BLOCK_ROWS) -> Iterator[pl.DataFrame]:
    """A bars file part by part, in order: a bars index's day parts, or a single file's
    blocks of `block_rows` bars (zero-copy row ranges)."""
    p = Path(path)
    if p.suffix != ".json":
        bars = read_bars(p)
        for start in range(0, bars.height, block_rows):
            yield bars.slice(start, block_rows)
        return
    index = json.loads(p.read_text())
    for entry in index["parts"]:
        # memory-mapped: only the pages of the columns and rows used are read (a part
        # no slice needs costs its last bars), and they go when the part is dropped
        yield as_frame(read_arrow(p.parent / entry["file"]).slice(0, int(entry["rows"])))


def read_bars_window(path: str | Path, start_ns: int, end_ns: int) -> pl.DataFrame:
    """The bars with `start_ns <= ts < end_ns`, reading only the parts of a bars index
    that meet the window."""
    p = Path(path)
    if p.suffix != ".json":
        return _cut(read_bars(p).lazy(), start_ns, end_ns).collect()
    index = json.loads(p.read_text())
    frames = []
    for entry in index["parts"]:
        if entry["rows"] and entry["ts_first"] < end_ns and entry["ts_last"] >= start_ns:
            with pa.OSFile(str(p.parent / entry["file"])) as fh:
                table = pa.ipc.open_file(fh).read_all()
            frame = as_frame(table.slice(0, int(entry["rows"])))
            frames.append(_cut(frame.lazy(), start_ns, end_ns).collect())
    return pl.concat(frames) if frames else pl.DataFrame()


def write_bars(target: str | Path, bars: pl.DataFrame) -> str:
    """Publish bars atomically as Arrow IPC; returns the file's sha256."""
    return write_arrow_atomic(target, bars)[1]


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


def segment_bounds(ranges: list[tuple[int, int]], max_rows: int = SEGMENT_MAX_ROWS) -> list[int]:
    """Row boundaries that cut every range `[lo, hi)` into whole segments: every range
    end, plus a cut every `max_rows` rows of a stretch between them. Sorted, unique."""
    ends = sorted({b for r in ranges for b in r})
    out: list[int] = []
    for a, b in zip(ends, ends[1:], strict=False):
        out += list(range(a, b, max_rows))
    return [*out, ends[-1]] if ends else []


# ---------------------------------------------------------------- stage -> validate -> publish
class StagedSlice(_Model):
    """A slice computed into the staging folder, not yet validated or published."""

    slice_id: str
    kind: Literal["train", "validation", "test", "stress"]
    fold: int | None
    start_ns: int  # window [start_ns, end_ns)
    end_ns: int
    parts: list[SlicePart]
    sha256: str  # slice_digest(parts)
    rows: int
    t_start_ns: int
    t_end_ns: int
    stats_id: str


class SlicePlan(_Model):
    """Everything `stage_slices` made; JSON-able (passed between flow tasks).
    `segments` records each staged segment's (size, mtime_ns) to tell, without
    re-reading it, that it is unchanged when published. `stats` holds each fold's
    frozen stats (`FrozenStats.to_record`, by stats_id): they are saved only when
    published."""

    spec_hash: str
    staging_dir: str
    bars_path: str
    origin_ns: int
    slices: list[StagedSlice]
    segments: dict[str, tuple[int, int]]
    folds: list[FoldEntry]
    stress: list[str]
    stress_stats_id: str
    stats: dict[str, dict[str, Any]]

    def staged(self, slice_id: str) -> StagedSlice:
        for s in self.slices:
            if s.slice_id == slice_id:
                return s
        raise KeyError(slice_id)

    def frozen_stats(self, stats_id: str) -> FrozenStats:
        return FrozenStats.from_record(self.stats[stats_id])

    def segment_path(self, part: SlicePart) -> Path:
        return Path(self.staging_dir) / part.file

    def frame(self, slice_id: str) -> pl.DataFrame:
        """A staged slice's rows (its staged segments, memory-mapped)."""
        return as_frame(read_parts([self.segment_path(p) for p in self.staged(slice_id).parts]))


def stage_slices(
    bars_path: str, cfg: FeaturesConfig, staging_dir: str, origin_ns: int | None = None
) -> SlicePlan:
    """Bars file -> features -> warm-up dropped -> walk-forward windows -> staged segments
    under `staging_dir` (each row written once, however many windows hold it) and
    per-fold frozen stats (fitted on the train slice only; kept in the plan).

    `origin_ns` is the walk-forward origin (default 00:00 UTC of the first bar's day).
    Raises SliceBuildError (gaps, empty slices, all warm-up), WalkForwardError.
    """
    spec = cfg.spec
    sh = spec.spec_hash
    # pass 1, one bars part at a time: the grid, and the bar times and quiet flags
    # (9 bytes a bar) for the windows and the holes
    times: list[np.ndarray] = []
    quiet: list[np.ndarray] = []
    prev: int | None = None
    for part in iter_bars(bars_path):
        check_grid(part, spec, after=prev)
        if part.height:
            prev = int(part[S.TS][-1])
            times.append(part[S.TS].to_numpy().copy())
            quiet.append(((part[S.N_BOOK_EVENTS] == 0) & (part[S.N_TRADES] == 0)).to_numpy())
    if not times:
        raise SliceBuildError("no bars")
    bar_ts = np.concatenate(times)
    first_ts, last_ts = int(bar_ts[0]), int(bar_ts[-1])
    if origin_ns is None:
        origin_ns = first_ts // NS_PER_DAY * NS_PER_DAY
    wf = cfg.walk_forward
    folds = make_folds(wf, origin_ns, last_ts + 1)
    stress = make_stress_windows(wf, origin_ns, last_ts + 1)
    windows: list[Window] = [
        w for f in folds for w in (f.train, f.validation, f.test) if w is not None
    ]
    windows += stress
    spans = quiet_spans(
        bar_ts, np.concatenate(quiet), spec.interval_ns, round(wf.max_quiet_s * 1e9)
    )
    del bar_ts, times, quiet
    problems = windows_over_gaps(windows, spans)
    if problems:
        raise WalkForwardError(
            f"{len(problems)} window(s) hold a hole in the data (>= {wf.max_quiet_s:g} s "
            "without a book event or trade; the sampler carries the last book through it, "
            "so its bars look valid but are stale): "
            + "; ".join(problems)
            + ". Move the windows (walk_forward start_hours, n_folds, stress_windows), "
            "fill the gap, or raise walk_forward.max_quiet_s for a truly quiet market."
        )
    root = Path(staging_dir)
    # pass 2: features part by part with the look-back carried over (`ready_parts`);
    # the ready rows go to disk, only their times stay in memory
    ready = _ReadyRows(root / ".ready")

    def needed(first: int, last: int) -> bool:  # a part some window holds rows of
        return any(w.start_ns <= last and first < w.end_ns for w in windows)

    for frame in ready_parts(iter_bars(bars_path), spec, spans, needed):
        ready.append(frame)
    if ready.rows == 0:
        ready.remove()
        raise SliceBuildError("every bar is a warm-up row: not enough data for the look-back")
    ts = ready.ts()
    # ts is sorted: every window is a row range [lo, hi) of the ready rows
    rows: dict[str, tuple[int, int]] = {}
    for w in windows:
        lo, hi = (int(i) for i in np.searchsorted(ts, [w.start_ns, w.end_ns], side="left"))
        if hi <= lo:
            ready.remove()
            raise SliceBuildError(
                f"slice {w.slice_id} [{w.start_ns}, {w.end_ns}) has no rows after warm-up"
            )
        rows[w.slice_id] = (lo, hi)
    # each stretch between two window boundaries is written once, as one segment
    bounds = segment_bounds(list(rows.values()))
    covered = [(a, b) for a, b in zip(bounds, bounds[1:], strict=False) if _covered(a, b, rows)]
    segments: dict[int, SlicePart] = {}
    stamps: dict[str, tuple[int, int]] = {}
    for a, b in covered:
        digest, n = write_segment(root, ready.table(a, b))
        segments[a] = SlicePart(file=segment_file(digest), sha256=digest, rows=n)
        info = (root / segments[a].file).stat()
        stamps[digest] = (info.st_size, info.st_mtime_ns)

    def stage(w: Window, stats_id: str | None) -> StagedSlice:
        lo, hi = rows[w.slice_id]
        parts = [segments[a] for a, _ in covered if lo <= a < hi]
        return StagedSlice(
            slice_id=w.slice_id,
            kind=w.kind,
            fold=w.fold,
            start_ns=w.start_ns,
            end_ns=w.end_ns,
            parts=parts,
            sha256=slice_digest((p.sha256, p.rows) for p in parts),
            rows=hi - lo,
            t_start_ns=int(ts[lo]),
            t_end_ns=int(ts[hi - 1]),
            stats_id=stats_id or "",
        )

    staged: list[StagedSlice] = []
    entries: list[FoldEntry] = []
    fitted: dict[str, dict[str, Any]] = {}
    for f in folds:
        train = stage(f.train, None)
        lo, hi = rows[f.train.slice_id]
        frame = as_frame(ready.table(lo, hi))
        st = FrozenStats.fit_columns(
            _float_columns(frame, spec.names),
            spec.names,
            sh,
            spec.sigma_floor,
            [{"slice_id": train.slice_id, "sha256": train.sha256}],
        )
        fitted[st.stats_id] = st.to_record()
        staged.append(train.model_copy(update={"stats_id": st.stats_id}))
        for held_out in (f.validation, f.test):
            if held_out is not None:
                staged.append(stage(held_out, st.stats_id))
        entries.append(
            FoldEntry(
                fold=f.fold,
                train=f.train.slice_id,
                validation=f.validation.slice_id if f.validation else None,
                test=f.test.slice_id,
                stats_id=st.stats_id,
            )
        )
    ready.remove()
    last = entries[-1].stats_id
    staged += [stage(w, last) for w in stress]
    plan = SlicePlan(
        spec_hash=sh,
        staging_dir=str(root),
        bars_path=str(bars_path),
        origin_ns=origin_ns,
        slices=staged,
        segments=stamps,
        folds=entries,
        stress=[w.slice_id for w in stress],
        stress_stats_id=last,
        stats=fitted,
    )
    return plan


def _float_columns(frame: pl.DataFrame, names: Sequence[str]) -> Iterator[np.ndarray]:
    """Each named column of `frame` as a contiguous float64 array, one at a time: a
    zero-copy view where the column is one chunk; else its chunks copied into one
    scratch buffer reused for every column (valid until the next is taken). A window
    over a chunk edge of the feature frame (a block edge of `features_in_blocks`, or a
    filtered copy's) then costs one small buffer, not a fresh copy of every column
    (measured: ~9 ms of page faults and copies for 22 columns of a 65k-row window)."""
    scratch: np.ndarray | None = None
    for name in names:
        s = frame[name]
        if s.n_chunks() == 1:
            yield s.to_numpy()
            continue
        if scratch is None:
            scratch = np.empty(frame.height, dtype=np.float64)
        pos = 0
        for chunk in s.get_chunks():
            scratch[pos : pos + chunk.len()] = chunk.to_numpy()
            pos += chunk.len()
        yield scratch


def _covered(a: int, b: int, rows: Mapping[str, tuple[int, int]]) -> bool:
    return any(lo <= a and b <= hi for lo, hi in rows.values())


def publish_slices(
    plan: SlicePlan,
    validations: Mapping[str, Mapping[str, Any]],
    layout: DataLayout,
    event_partitions: Mapping[str, str],
    lookback_ns: int,
    instrument: Mapping[str, Any] | None = None,
) -> FoldIndex:
    """Publish every staged slice that passed validation, in three durable steps:
    segments and stats folders, then the manifests naming them, then folds.json. Raises
    SliceBuildError, before writing anything, when a slice has no successful validation
    or a staged segment it needs changed since staging.

    A segment already in the store is kept (its name is its sha256). A staged segment
    whose size and mtime are as staged is linked into place without re-reading it;
    one rewritten since is re-hashed and refused unless it holds the staged bytes.
    Stats, manifests and folds.json are rewritten only when their bytes change.

    `instrument`: the instrument contract the event partitions were ingested with
    (`partition_instrument`), recorded in every manifest so that training and
    evaluation can refuse to read these rows under another tick size, lot size or
    contract type."""
    folder = layout.slices(plan.spec_hash)
    for item in plan.slices:
        v = validations.get(item.slice_id)
        if not v or not v.get("success"):
            raise SliceBuildError(
                f"slice {item.slice_id} has no successful validation: not published"
            )
    needed = {p.sha256: p for item in plan.slices for p in item.parts}
    publish = [p for p in needed.values() if not (folder / p.file).exists()]
    for part in publish:
        _check_staged(plan, part)
    _link_segments(plan, publish, folder)
    publish_if_changed(
        [
            f
            for stats_id in sorted({i.stats_id for i in plan.slices})
            for f in plan.frozen_stats(stats_id).files(layout.stats(stats_id))
        ]
    )
    manifests: list[tuple[Path, bytes]] = []
    for item in plan.slices:
        path = manifest_path(layout, plan.spec_hash, item.slice_id)
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
            "format": SLICE_FORMAT,
            "parts": [p.model_dump() for p in item.parts],
            "event_partitions": partitions_for(window, lookback_ns, event_partitions),
            "validation": dict(validations[item.slice_id]),
            "stats_id": item.stats_id,
        }
        if instrument is not None:
            manifest["instrument"] = dict(instrument)
        manifests.append((path, json_bytes(manifest)))
    publish_if_changed(manifests)
    for item in plan.slices:
        # a slice file of the one-file-per-slice layout (before segments) is stale now
        (folder / f"{item.slice_id}.parquet").unlink(missing_ok=True)
    index = FoldIndex(
        spec_hash=plan.spec_hash,
        folds=plan.folds,
        stress=plan.stress,
        stress_stats_id=plan.stress_stats_id,
    )
    publish_if_changed([(folder / FOLDS_FILE, json_bytes(index.model_dump(mode="json")))])
    return index


def _check_staged(plan: SlicePlan, part: SlicePart) -> None:
    """Raise SliceBuildError unless the staged segment still holds the staged bytes."""
    path = plan.segment_path(part)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise SliceBuildError(f"staged segment {path} is gone: stage again") from None
    if (st.st_size, st.st_mtime_ns) == tuple(plan.segments.get(part.sha256, ())):
        return
    if sha256_file(path) != part.sha256:
        raise SliceBuildError(f"staged segment {path} changed after staging")


def _link_segments(plan: SlicePlan, parts: list[SlicePart], folder: Path) -> None:
    """Place each staged segment at its name in the store, then fsync the segments
    folder once. A hard link when staging and data share a file system: no copy, and
    no second fsync (the staged file was fsynced when written; a link is atomic). Else
    an atomic copy (temp file, fsync, rename). A name that appeared meanwhile holds the
    same bytes (it is their sha256) and is kept."""
    if not parts:
        return
    (folder / SEGMENTS_DIR).mkdir(parents=True, exist_ok=True)
    for part in parts:
        src, target = plan.segment_path(part), folder / part.file
        try:
            os.link(src, target)
        except FileExistsError:
            pass
        except OSError:  # another file system (EXDEV), or links not supported
            write_with_atomic(target, partial(shutil.copyfile, src))
    fsync_dir(folder / SEGMENTS_DIR)


def remove_staging(plan: SlicePlan) -> None:
    """Delete a plan's staging folder (published files are separate hard links/copies)."""
    shutil.rmtree(plan.staging_dir, ignore_errors=True)


def staging_dir_for(layout: DataLayout, cfg: FeaturesConfig, bars_sha256: str) -> Path:
    """Deterministic staging folder of (config, bars)."""
    key = fingerprint({"features": cfg.model_dump(mode="json"), "bars": bars_sha256})[:16]
    return layout.root / "staging" / "features" / key


def remove_leftovers(
    layout: DataLayout, spec_hash: str, symbol: str, min_age_s: float = STALE_AFTER_S
) -> list[str]:
    """Delete the temp files a crashed features run left (`core.leftovers`, at least
    `min_age_s` old; 0 only while holding the data folder's lock) in the spec's slices
    folder (segments included), bars/<symbol>/<spec12>, stats/ and staging/features/.
    Returns their paths relative to the data folder. Adapter (files only)."""
    folders = (
        layout.slices(spec_hash),
        layout.root / "bars" / symbol / layout.spec12(spec_hash),
        layout.root / "stats",
        layout.root / "staging" / "features",
    )
    removed = [p for f in folders for p in remove_stale_temps(f, min_age_s, recursive=True)]
    return [str(p.relative_to(layout.root)) for p in removed]


def event_partition_hashes(layout: DataLayout, symbol: str, days: list[str]) -> dict[str, str]:
    """day -> sha256 of `events/<symbol>/<day>/manifest.json`."""
    return {d: sha256_file(layout.events_day(symbol, d) / "manifest.json") for d in days}


def partition_instrument(layout: DataLayout, symbol: str, days: list[str]) -> dict[str, Any] | None:
    """The instrument contract (`InstrumentSpec.contract`: symbol, tick and lot size,
    inverse or linear, multiplier, settlement) the event partitions of `days` were
    ingested with, from their manifests; None when no manifest records one. Raises
    SliceBuildError when days disagree: prices in ticks and sizes in lots mean
    different things under another contract. Fees may differ between days (they are
    the account's, not the data's) and are not recorded."""
    from core.instrument import InstrumentSpec

    seen: dict[str, list[str]] = {}  # contract (canonical JSON) -> days
    for d in days:
        manifest = json.loads((layout.events_day(symbol, d) / "manifest.json").read_text())
        if manifest.get("instrument") is None:
            continue
        contract = InstrumentSpec.model_validate(manifest["instrument"]).contract()
        seen.setdefault(json.dumps(contract, sort_keys=True), []).append(d)
    if len(seen) > 1:
        detail = "; ".join(f"{ds[0]}..{ds[-1]} ({len(ds)} day(s)): {k}" for k, ds in seen.items())
        raise SliceBuildError(
            f"the event partitions of {symbol} were ingested under different instrument "
            f"contracts: {detail}. Re-ingest them with one instrument (ingest.instrument)."
        )
    return json.loads(next(iter(seen))) if seen else None


#: layout of a bars index and its day parts (part of every day key: a new layout
#: never reuses parts of an older one)
BARS_FORMAT = "chappie-bars/2 (day parts)"


def bar_day_keys(spec_hash: str, partitions: Mapping[str, str]) -> dict[str, str]:
    """day -> key of its bars part: a chain over the days in order (the spec, the
    day's event manifest hash, the previous day's key), since a day's bars depend on
    the book carried from every day before it. Appending a day keeps every earlier key."""
    keys: dict[str, str] = {}
    prev = fingerprint({"format": BARS_FORMAT, "spec": spec_hash})[:16]
    for day, sha in sorted(partitions.items()):
        prev = keys[day] = fingerprint({"prev": prev, "events": sha})[:16]
    return keys


def _read_day_events(
    layout: DataLayout, symbol: str, day: str
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """One event day's book and trades, the columns the sampler reads only: each file
    checked against its manifest sha256 (streamed), then parsed from its path (not
    from a copy of its bytes in memory)."""
    from ingest.events import PartitionError, partition_files, read_manifest

    m = read_manifest(layout, symbol, day)
    if m is None:
        raise FileNotFoundError(f"no published partition events/{symbol}/{day}")
    folder = layout.events_day(symbol, day)
    files = partition_files(m)
    out = []
    for kind, cols in (
        ("book", [S.TS_RECV, S.SIDE, S.PRICE_TICKS, S.SIZE, S.IS_SNAPSHOT]),
        ("trades", [S.TS_RECV, S.SIDE, S.PRICE_TICKS, S.SIZE]),
    ):
        path = folder / files[kind]
        if sha256_file(path) != m["outputs"][files[kind]]:
            raise PartitionError(
                f"events/{symbol}/{day}/{files[kind]} does not match its manifest sha256"
            )
        out.append(pl.read_parquet(path, columns=cols))
    return out[0], out[1]


def build_bars(cfg: FeaturesConfig, data_dir: str, symbol: str) -> dict[str, Any]:
    """Events of `symbol` -> bars (book.sampler), one event day at a time, as a
    bars index `bars/<symbol>/<spec12>/bars-<key>.json` naming one Arrow IPC part per
    day (`days/<day>-<daykey>.arrow`, the bars closed while that day's events were
    fed; `bar_day_keys`) and a tail (the last bar, closed after the last event). Beside
    each day part the sampler's state after it (`.state.npz`) and its record
    (`.json`, written last: the part is complete). Bit for bit the bars one
    `sample_bars` over every day gives (tested), holding one day of events at a time.

    Incremental: a day whose part exists is not sampled again; the first missing day
    resumes from the state of the day before (a nightly that adds a day samples that
    day only). Returns JSON-able {"bars_path" (the index), "bars_sha256" (its bytes),
    "event_partitions", "origin_ns", "instrument"} (`partition_instrument`); raises
    SliceBuildError when there are no events or the partitions disagree on the
    instrument. Idempotent."""
    from book.sampler import ResumableSampler
    from ingest.events import list_event_days, read_manifest

    layout = DataLayout(Path(data_dir))
    days = list_event_days(layout, symbol)
    if not days:
        raise SliceBuildError(
            f"no event partitions for {symbol} under {layout.events_symbol(symbol)}"
        )
    spec = cfg.spec
    parts = event_partition_hashes(layout, symbol, days)
    instrument = partition_instrument(layout, symbol, days)
    spans = {d: (read_manifest(layout, symbol, d) or {}).get("time_span", {}) for d in days}
    with_events = [d for d in days if spans[d].get("ts_recv_max") is not None]
    if not with_events:
        raise SliceBuildError(f"the event partitions of {symbol} hold no events")
    used = days[: days.index(with_events[-1]) + 1]  # trailing empty days add no bar
    keys = bar_day_keys(spec.spec_hash, {d: parts[d] for d in used})
    folder = layout.root / "bars" / symbol / layout.spec12(spec.spec_hash)
    path = folder / f"bars-{keys[used[-1]]}.json"
    if not path.exists():
        _write_bars_index(path, folder, spec, layout, symbol, used, keys, spans, ResumableSampler)
    return {
        "bars_path": str(path),
        "bars_sha256": sha256_file(path),
        "event_partitions": parts,
        "origin_ns": day_start_ns(days[0]),
        "instrument": instrument,
    }


def _write_bars_index(
    path: Path,
    folder: Path,
    spec: FeatureSpec,
    layout: DataLayout,
    symbol: str,
    days: list[str],
    keys: dict[str, str],
    spans: Mapping[str, Mapping[str, Any]],
    sampler_cls: Any,
) -> None:
    day_dir = folder / "days"
    day_dir.mkdir(parents=True, exist_ok=True)

    def name(day: str) -> str:
        return f"{day}-{keys[day]}"

    done = [(day_dir / f"{name(d)}.json").exists() for d in days]
    first = done.index(False) if False in done else len(days)
    if first == 0:
        sampler = sampler_cls(spec)
    else:
        with np.load(day_dir / f"{name(days[first - 1])}.state.npz") as z:
            sampler = sampler_cls.from_state(spec, {k: z[k] for k in z.files})
    for day in days[first:]:
        book, trades = _read_day_events(layout, symbol, day)
        bars = sampler.feed(book, trades, day_start_ns(day) + NS_PER_DAY - 1)
        del book, trades
        if bars.height:  # (the parts continue each other: `stage_slices` checks)
            check_grid(bars, spec)
        _, digest, _ = write_arrow_atomic(day_dir / f"{name(day)}.arrow", bars)
        state = sampler.state()
        with atomic_path(day_dir / f"{name(day)}.state.npz") as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **state)
        record = {
            "day": day,
            "file": f"days/{name(day)}.arrow",
            "sha256": digest,
            "rows": bars.height,
            "ts_first": int(bars[S.TS][0]) if bars.height else None,
            "ts_last": int(bars[S.TS][-1]) if bars.height else None,
        }
        write_json_atomic(day_dir / f"{name(day)}.json", record)
    records = [json.loads((day_dir / f"{name(d)}.json").read_text()) for d in days]
    # the last day: its part holds the bars up to midnight; one pass over these days
    # stops at the bar of the last event, closed after it (the tail)
    last_ts = int(spans[days[-1]]["ts_recv_max"])
    dt = spec.interval_ns
    close = -(-last_ts // dt) * dt
    last = records[-1]
    if last["rows"]:
        last["rows"] = max(0, min(last["rows"], (close - last["ts_first"]) // dt + 1))
        last["ts_last"] = last["ts_first"] + (last["rows"] - 1) * dt if last["rows"] else None
    with np.load(day_dir / f"{name(days[-1])}.state.npz") as z:
        tail = sampler_cls.from_state(spec, {k: z[k] for k in z.files}).finish(last_ts)
    if tail.height:
        tail_name = f"bars-{keys[days[-1]]}-tail.arrow"
        _, digest, _ = write_arrow_atomic(folder / tail_name, tail)
        records.append(
            {
                "day": days[-1],
                "file": tail_name,
                "sha256": digest,
                "rows": tail.height,
                "ts_first": int(tail[S.TS][0]),
                "ts_last": int(tail[S.TS][-1]),
            }
        )
    parts = [r for r in records if r["rows"]]
    write_json_atomic(path, {"format": BARS_FORMAT, "spec_hash": spec.spec_hash, "parts": parts})
