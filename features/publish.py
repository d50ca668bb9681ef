"""Staging and publishing slices. Adapter.

`stage_slices`: bars -> features part by part (`features.slicing.ready_parts`) ->
warm-up rows dropped -> walk-forward folds and stress windows -> segments in a staging
folder (each row written once, however many windows hold it) and frozen stats fitted on
each fold's train slice only. The features flow then validates every staged slice
(`expectations.runner.validate_staged_slice`), and only then `publish_slices` publishes:
segment files, the stats folders, one manifest per slice and finally `folds.json`; it
refuses a slice without a successful validation.

Memory is flat in the number of days (#19): one day of events, one bars part, the
rows of one segment or train window, and 17 bytes a bar of times and flags.

Publishing is idempotent: the same events and config give byte-identical segments
(same sha256, hence the same slice digests); an existing segment is left untouched.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from functools import partial
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from core import schema as S
from core.atomic import fsync_dir, json_bytes, publish_if_changed, write_with_atomic
from core.clock import NS_PER_DAY
from core.config.features import FeaturesConfig
from core.hashing import fingerprint, sha256_file
from core.jsontypes import JsonObject
from core.leftovers import STALE_AFTER_S, remove_stale_temps
from core.paths import DataLayout
from features.bars import iter_bars
from features.instrument_days import check_windows, price_factors, slice_contract, to_day_ticks
from features.slices import (
    FOLDS_FILE,
    FoldEntry,
    FoldIndex,
    SliceBuildError,
    SliceManifest,
    SlicePart,
    SlicePlan,
    SliceValidation,
    StagedSlice,
    manifest_path,
)
from features.slicing import check_grid, partitions_for, ready_parts, segment_bounds
from features.stats import FrozenStats, StatsRecord
from features.store import (
    SEGMENTS_DIR,
    SLICE_FORMAT,
    as_frame,
    segment_file,
    slice_digest,
    write_arrow,
    write_segment,
)
from features.walk_forward import (
    WalkForwardError,
    Window,
    make_folds,
    make_stress_windows,
    quiet_spans,
    windows_over_gaps,
)


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


def stage_slices(
    bars_path: str,
    cfg: FeaturesConfig,
    staging_dir: str,
    origin_ns: int | None = None,
    day_instruments: Mapping[str, JsonObject] | None = None,
) -> SlicePlan:
    """Bars file -> features -> warm-up dropped -> walk-forward windows -> staged segments
    under `staging_dir` (each row written once, however many windows hold it) and
    per-fold frozen stats (fitted on the train slice only; kept in the plan).

    `origin_ns` is the walk-forward origin (default 00:00 UTC of the first bar's day).
    `day_instruments` (`BuiltBars.day_instruments`: the days' contracts when they
    differ, the bars then on one price grid): no window may hold a contract change, nor
    a fold a tick change with tick-bound features (`features.instrument_days.
    check_windows`), and the slice rows are put back in the ticks of their day.
    Raises SliceBuildError (gaps, empty slices, all warm-up, a contract change inside a
    window), WalkForwardError.
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
    contracts = day_instruments or {}
    if contracts:
        symbol = str(next(iter(contracts.values())).get("symbol", ""))
        check_windows(spec, folds, stress, contracts, symbol)
    factors = price_factors(contracts)
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
        ready.append(to_day_ticks(frame, factors))
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
    fitted: dict[str, StatsRecord] = {}
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
    validations: Mapping[str, SliceValidation],
    layout: DataLayout,
    event_partitions: Mapping[str, str],
    lookback_ns: int,
    instrument: JsonObject | None = None,
    day_instruments: Mapping[str, JsonObject] | None = None,
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
    contract type. `day_instruments` (the days' contracts when they differ): each
    manifest records its own day's instead (a slice holds one, `stage_slices`)."""
    folder = layout.slices(plan.spec_hash)
    for item in plan.slices:
        v = validations.get(item.slice_id)
        if v is None or not v.success:
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
        manifest = SliceManifest(
            slice_id=item.slice_id,
            kind=item.kind,
            fold=item.fold,
            spec_hash=plan.spec_hash,
            t_start_ns=item.t_start_ns,
            t_end_ns=item.t_end_ns,
            rows=item.rows,
            sha256=item.sha256,
            path=str(path.resolve()),
            format=SLICE_FORMAT,
            parts=item.parts,
            event_partitions=partitions_for(window, lookback_ns, event_partitions),
            validation=validations[item.slice_id],
            stats_id=item.stats_id,
            instrument=slice_contract(item.t_start_ns, day_instruments)
            if day_instruments
            else instrument,
        )
        manifests.append((path, json_bytes(manifest.to_json())))
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


def staging_dir_for(layout: DataLayout, cfg: FeaturesConfig, bars_sha256: str) -> Path:
    """Deterministic staging folder of (config, bars)."""
    key = fingerprint({"features": cfg.model_dump(mode="json"), "bars": bars_sha256})[:16]
    return layout.root / "staging" / "features" / key


def remove_staging(plan: SlicePlan) -> None:
    """Delete a plan's staging folder (published files are separate hard links/copies)."""
    shutil.rmtree(plan.staging_dir, ignore_errors=True)


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
