"""Bars on disk: sampled from the canonical events one day at a time, read back whole,
part by part or by time window. Adapter.

`build_bars` samples with the one sampler (`book.sampler.ResumableSampler`), its state
carried from day to day, into a bars index naming one part per day (kept, so a new day
samples that day only); `read_bars`, `iter_bars`, `read_bars_window` read an index or a
single file. `event_partition_hashes` and `partition_instrument` are the lineage of the
event partitions the bars came from.
"""

from __future__ import annotations

import contextlib
import functools
import json
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict

from core import schema as S
from core.atomic import atomic_path, write_json_atomic
from core.clock import NS_PER_DAY, parse_day
from core.config.features import FeaturesConfig, FeatureSpec
from core.config.storage import StorageConfig
from core.hashing import fingerprint, sha256_file
from core.instrument import InstrumentSpec
from core.jsontypes import JsonObject
from core.objectstore import ObjectStoreError, fetch_root, join, link_into, list_names, pull, push
from core.paths import DataLayout
from features.instrument_days import day_contracts, grid_contract, price_factors, scale_events
from features.slices import SliceBuildError
from features.slicing import FEATURE_BLOCK_ROWS, check_grid
from features.store import as_frame, read_arrow, write_arrow_atomic
from ingest.events import PartitionError, list_event_days, partition_files, read_manifest


class BuiltBars(BaseModel):
    """What `build_bars` made: the bars index (`bars_path`) and the sha256 of its bytes,
    the event partitions it was sampled from (day -> sha256 of the day's manifest), the
    walk-forward origin (00:00 UTC of the first event day, ns) and the instrument
    contract the events were ingested under (None: no manifest records one).
    `day_instruments`: day -> contract, when the days were ingested under different
    contracts (then the bars' prices are on the grid of `features.instrument_days` and
    `instrument` is `grid_contract`'s); None when they share one."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bars_path: str
    bars_sha256: str
    event_partitions: dict[str, str]
    origin_ns: int
    instrument: JsonObject | None
    day_instruments: dict[str, JsonObject] | None = None


def write_bars(target: str | Path, bars: pl.DataFrame) -> str:
    """Publish bars atomically as Arrow IPC; returns the file's sha256."""
    return write_arrow_atomic(target, bars)[1]


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


def _cut(frame: pl.LazyFrame, start_ns: int, end_ns: int) -> pl.LazyFrame:
    return frame.filter((pl.col(S.TS) >= start_ns) & (pl.col(S.TS) < end_ns))


#: layout of a bars index and its day parts (part of every day key: a new layout
#: never reuses parts of an older one)
BARS_FORMAT = "chappie-bars/2 (day parts)"


@functools.lru_cache(maxsize=1)
def bars_code_version() -> str:
    """sha256 over the code that decides a bar's content (the book and the sampler
    sources) and the bar columns: part of every day key, so bars (and the sampler
    states saved beside them) sampled by other code are never reused."""
    root = Path(__file__).resolve().parents[1]
    files = {f: sha256_file(root / f) for f in ("book/order_book.py", "book/sampler.py")}
    return fingerprint({"files": files, "columns": S.bar_columns(1)})[:16]


def bar_day_keys(
    spec_hash: str, partitions: Mapping[str, str], factors: Mapping[str, int] | None = None
) -> dict[str, str]:
    """day -> key of its bars part: a chain over the days in order (the spec, the
    sampler's code (`bars_code_version`), the day's event manifest hash, the previous
    day's key), since a day's bars depend on the book carried from every day before
    it. Appending a day keeps every earlier key. `factors` (across a tick change,
    `features.instrument_days.price_factors`) are part of the seed: bars on another
    price grid are never reused."""
    keys: dict[str, str] = {}
    seed: dict[str, object] = {
        "format": BARS_FORMAT,
        "spec": spec_hash,
        "code": bars_code_version(),
    }
    if factors:
        seed["price_factors"] = dict(sorted(factors.items()))
    prev = fingerprint(seed)[:16]
    for day, sha in sorted(partitions.items()):
        prev = keys[day] = fingerprint({"prev": prev, "events": sha})[:16]
    return keys


def event_partition_hashes(layout: DataLayout, symbol: str, days: list[str]) -> dict[str, str]:
    """day -> sha256 of `events/<symbol>/<day>/manifest.json`."""
    return {d: sha256_file(layout.events_day(symbol, d) / "manifest.json") for d in days}


def partition_instrument(layout: DataLayout, symbol: str, days: list[str]) -> JsonObject | None:
    """The instrument contract (`InstrumentSpec.contract`: symbol, tick and lot size,
    inverse or linear, multiplier, settlement) the event partitions of `days` were
    ingested with, from their manifests; None when no manifest records one. Raises
    SliceBuildError when days disagree: prices in ticks and sizes in lots mean
    different things under another contract. Fees may differ between days (they are
    the account's, not the data's) and are not recorded."""
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


@contextlib.contextmanager
def _day_event_files(
    layout: DataLayout, symbol: str, day: str, storage: StorageConfig | None = None
) -> Iterator[tuple[Path, Path]]:
    """The book and trades files of one event day, each checked against its manifest
    sha256 (streamed). `storage`: pulled from the object store (checked against the
    manifest of `layout`, the store's view) into a temporary folder removed on exit;
    ObjectStoreError names a damaged one."""
    m = read_manifest(layout, symbol, day)
    if storage is None:
        if m is None:
            raise FileNotFoundError(f"no published partition events/{symbol}/{day}")
        folder, files = layout.events_day(symbol, day), partition_files(m)
        for kind in ("book", "trades"):
            if sha256_file(folder / files[kind]) != m["outputs"][files[kind]]:
                raise PartitionError(
                    f"events/{symbol}/{day}/{files[kind]} does not match its manifest sha256"
                )
        yield folder / files["book"], folder / files["trades"]
        return
    # slow: ingest.run loads numba (~0.15 s), needed only on the object-store path
    from ingest.run import events_url

    if m is None:
        raise FileNotFoundError(f"no published partition {events_url(storage, symbol, day)}")
    files = partition_files(m)
    tmp = Path(tempfile.mkdtemp(prefix=f".events-{day}.", dir=layout.root))
    try:
        names = {files[k]: str(m["outputs"][files[k]]) for k in ("book", "trades")}
        pull(names, events_url(storage, symbol, day), tmp, storage, tmp / ".fetch")
        yield tmp / files["book"], tmp / files["trades"]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _sample_day(
    sampler: Any, book_path: Path, trades_path: Path, factor: int, close_until: int
) -> pl.DataFrame:
    """One event day through the sampler (`ResumableSampler.feed_stream`), its book read
    a batch of row groups at a time (the whole day's book took ~0.5 GB, #19), prices
    onto the grid by `factor` (`scale_events`); the bars closed up to `close_until`."""
    trades = scale_events(pl.read_parquet(trades_path, columns=_TRADE_COLUMNS), factor)
    batches = pq.ParquetFile(book_path).iter_batches(
        batch_size=_BOOK_BATCH_ROWS, columns=_BOOK_COLUMNS
    )
    pieces = (scale_events(pl.DataFrame(pl.from_arrow(b)), factor) for b in batches)
    return sampler.feed_stream(pieces, trades, close_until)  # type: ignore[no-any-return]


#: rows of a day's book file read at a time (`_sample_day`): ~26 MB of the sampler's columns
_BOOK_BATCH_ROWS = 1 << 20
#: the event columns the sampler reads
_BOOK_COLUMNS = [S.TS_RECV, S.SIDE, S.PRICE_TICKS, S.SIZE, S.IS_SNAPSHOT]
_TRADE_COLUMNS = [S.TS_RECV, S.SIDE, S.PRICE_TICKS, S.SIZE]


def _store_url(storage: StorageConfig, layout: DataLayout, path: Path) -> str:
    return join(storage.url, layout.key(path))


def _pull_bars(storage: StorageConfig, view: DataLayout, path: Path, names: list[str]) -> None:
    """Lay out in the view what the store holds of the bars index `path`: the index and
    every part it names when it is there; else the day parts the store has of `names`
    (a day's record is its commit point) and the sampler state the next day resumes
    from. Each file checked against its sha256 (the index's or record's, else the one
    its object records)."""

    def root(p: Path) -> bytes | None:
        got = fetch_root(_store_url(storage, view, p), storage)
        return None if got is None else link_into(got, p).read_bytes()

    index = root(path)
    if index is not None:
        parts = json.loads(index)["parts"]
        pull(
            {e["file"]: e["sha256"] for e in parts},
            _store_url(storage, view, path.parent),
            path.parent,
            storage,
        )
        return
    day_dir = path.parent / "days"
    day_url = _store_url(storage, view, day_dir)
    on_store = set(list_names(day_url, storage))
    done = 0
    for name in names:
        if not (day_dir / f"{name}.json").exists():
            record = root(day_dir / f"{name}.json") if f"{name}.json" in on_store else None
            if record is None:
                break
            r = json.loads(record)
            pull({Path(r["file"]).name: r["sha256"]}, day_url, day_dir, storage)
        done += 1
    state = day_dir / f"{names[done - 1]}.state.npz" if done else None
    if state is not None and not state.exists() and root(state) is None:
        raise ObjectStoreError(f"{join(day_url, names[done - 1])}.state.npz is missing")


def _push_bars(storage: StorageConfig, view: DataLayout, path: Path, names: list[str]) -> None:
    """Publish the bars index `path` of the view: each day part of `names` the view
    holds and the store lacks (its bars, its sampler state, then its record), then,
    when the index was written, the tail and the index (last: a reader never finds an
    index whose parts are not all there)."""
    day_dir = path.parent / "days"
    day_url = _store_url(storage, view, day_dir)
    on_store = set(list_names(day_url, storage))
    for name in names:
        if f"{name}.json" in on_store or not (day_dir / f"{name}.json").exists():
            continue
        r = json.loads((day_dir / f"{name}.json").read_text())
        files = {Path(r["file"]).name: r["sha256"], f"{name}.state.npz": None}
        push(day_dir, day_url, files, storage, f"{name}.json")
    if not path.exists():
        return
    parts = json.loads(path.read_text())["parts"]
    tails = {e["file"]: e["sha256"] for e in parts if not e["file"].startswith("days/")}
    push(path.parent, _store_url(storage, view, path.parent), tails, storage, path.name)


def _prune_view(path: Path, names: list[str]) -> list[Path]:
    """Keep in the store's view of a spec's bars only the index `path` (what the slices
    are cut from), its parts and the day parts of `names` with their sampler states (a
    nightly resumes from the last): the view stays one copy of the current bars, not
    every index ever built (the rest is on the store). Returns the files removed."""
    folder = path.parent
    keep = {path.name, *(str(e["file"]) for e in json.loads(path.read_text())["parts"])}
    keep |= {f"days/{n}{sfx}" for n in names for sfx in (".arrow", ".state.npz", ".json")}
    removed = [
        f for f in folder.rglob("*") if f.is_file() and f.relative_to(folder).as_posix() not in keep
    ]
    for f in removed:
        f.unlink(missing_ok=True)
    return removed


def build_bars(
    cfg: FeaturesConfig, data_dir: str, symbol: str, storage: StorageConfig | None = None
) -> BuiltBars:
    """Events of `symbol` -> bars (book.sampler), one event day at a time, as a
    bars index `bars/<symbol>/<spec12>/bars-<key>.json` naming one Arrow IPC part per
    day (`days/<day>-<daykey>.arrow`, the bars closed while that day's events were
    fed; `bar_day_keys`) and a tail (the last bar, closed after the last event). Beside
    each day part the sampler's state after it (`.state.npz`) and its record
    (`.json`, written last: the part is complete). Bit for bit the bars one
    `sample_bars` over every day gives (tested), holding one day of events at a time.

    Incremental: a day whose part exists is not sampled again; the first missing day
    resumes from the state of the day before (a nightly that adds a day samples that
    day only). Returns the index and its lineage (`BuiltBars`; its instrument is
    `partition_instrument`'s); raises
    SliceBuildError when there are no events or the partitions disagree on the
    instrument. Idempotent.

    `storage`: the events are the object store's (`ingest.run.events_view`, read day by
    day) and the bars are published there (`_push_bars`); `bars_path` is then the index
    in the store's view folder (`core.objectstore.view_root`), laid out as locally, which
    every reader of a bars index reads unchanged. Nothing is written to `data_dir`."""
    # slow: book.sampler loads numba (~0.15 s), needed only when bars are sampled
    from book.sampler import ResumableSampler

    if storage is None:
        layout = DataLayout(Path(data_dir))
        where = str(layout.events_symbol(symbol))
    else:
        # slow: ingest.run loads numba (~0.15 s), needed only on the object-store path
        from ingest.run import events_url, events_view

        layout, where = events_view(storage, symbol), events_url(storage, symbol)
    days = list_event_days(layout, symbol)
    if not days:
        raise SliceBuildError(f"no event partitions for {symbol} under {where}")
    spec = cfg.spec
    parts = event_partition_hashes(layout, symbol, days)
    # the contract of each day (ingest.instrument_history); across a tick change the
    # events are sampled on one price grid (features.instrument_days)
    contracts = day_contracts(layout, symbol, days)
    instrument = grid_contract(contracts)
    factors = price_factors(contracts)
    last_event: dict[str, int] = {}  # day -> its last event's ts_recv (days with events)
    for d in days:
        span = (read_manifest(layout, symbol, d) or {}).get("time_span")
        if span is not None and span["ts_recv_max"] is not None:
            last_event[d] = span["ts_recv_max"]
    with_events = [d for d in days if d in last_event]
    if not with_events:
        raise SliceBuildError(f"the event partitions of {symbol} hold no events")
    used = days[: days.index(with_events[-1]) + 1]  # trailing empty days add no bar
    factors = {d: f for d, f in factors.items() if d in used}
    keys = bar_day_keys(spec.spec_hash, {d: parts[d] for d in used}, factors)
    folder = layout.bars_spec(symbol, spec.spec_hash)
    path = folder / f"bars-{keys[used[-1]]}.json"
    names = [f"{d}-{keys[d]}" for d in used]
    if storage is not None:
        _pull_bars(storage, layout, path, names)
    try:
        if not path.exists():
            _write_bars_index(
                path,
                folder,
                spec,
                layout,
                symbol,
                used,
                keys,
                last_event[used[-1]],
                ResumableSampler,
                storage,
                factors,
            )
    finally:  # the days sampled before a failure are kept (a re-run resumes from them)
        if storage is not None:
            _push_bars(storage, layout, path, names)
    if storage is not None:
        _prune_view(path, names)
    return BuiltBars(
        bars_path=str(path),
        bars_sha256=sha256_file(path),
        event_partitions=parts,
        origin_ns=parse_day(days[0]),
        instrument=instrument,
        day_instruments=None if len({str(c) for c in contracts.values()}) < 2 else contracts,
    )


def _write_bars_index(
    path: Path,
    folder: Path,
    spec: FeatureSpec,
    layout: DataLayout,
    symbol: str,
    days: list[str],
    keys: dict[str, str],
    last_ts: int,
    sampler_cls: Any,
    storage: StorageConfig | None = None,
    factors: Mapping[str, int] | None = None,
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
        with _day_event_files(layout, symbol, day, storage) as (book_path, trades_path):
            factor = factors.get(day, 1) if factors else 1  # onto the grid of a tick change
            bars = _sample_day(
                sampler, book_path, trades_path, factor, parse_day(day) + NS_PER_DAY - 1
            )
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
    # stops at the bar of the last event (`last_ts`), closed after it (the tail)
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
