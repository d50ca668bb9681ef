"""Ingest steps: read a source, stage per day, publish, report.

The Prefect flow (`flows/ingest.py`, the only orchestration) wraps each one as a task:
`stage_source` (read every raw file, quarantine the bad ones, write one staged Parquet
pair per day) then `publish_staged_day` per day, then `build_report`.

Idempotent and additive: a file whose sha256 an earlier file of the run had is
counted as filtered (same content); each day is published with `publish_merged`, which
merges the run's new inputs into what earlier runs published (trades then book in two
runs keep every trade) and drops trades whose exchange id the day already holds.
`build_report` checks ``rows_in = rows_out + rows_rejected + rows_filtered`` per file
and in total (`ingest.report`). Leftover temp files of a crashed run are removed when
the stage starts again (`remove_leftovers`).

On an object store (`storage`, the config's `storage:`): the partitions live under
`<storage.url>/events/<symbol>/<day>/` in the local layout. Staging reads their
manifests from a verified view (`events_view`); each day is published into a scratch
partition under the run's staging folder (the day's partition pulled from the store
first, every file checked against its sha256), pushed (data files, then the manifest:
a partial upload is never seen as published) and removed, so the data folder holds none
of it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from pathlib import Path
from typing import TypedDict

import numpy as np
import polars as pl
from tqdm import tqdm

from book.order_book import PIECE_ROWS, OrderBook, check_book_pieces, message_bounds
from core import schema
from core.atomic import write_json_atomic, write_with_atomic
from core.clock import NS_PER_DAY, iso_day, parse_day
from core.config.ingest import IngestConfig
from core.config.storage import StorageConfig
from core.hashing import fingerprint, sha256_bytes
from core.leftovers import STALE_AFTER_S, remove_stale_temps
from core.locks import hold_store_lock, lock_wait_seconds, store_day_lock
from core.objectstore import (
    ObjectStoreError,
    fetch_root,
    join,
    link_into,
    list_names,
    pull,
    push,
    view_root,
)
from core.paths import DataLayout
from ingest.events import (
    BOUNDARY_INPUT,
    INPUT,
    MANIFEST_FILE,
    TRADE_ID,
    BookCheck,
    PartitionExtra,
    PartitionManifest,
    RawInput,
    book_schema,
    empty_book,
    empty_trades,
    inputs_fingerprint_of,
    is_current,
    partition_files,
    publish_merged,
    read_manifest,
    trade_schema,
)
from ingest.rawfile import BLOCK_BYTES
from ingest.report import FileRead, IngestReport, QuarantineEntry, set_aside_poorer_books
from ingest.sources import read_source_file
from ingest.staged import PublishedDay, StagedDay, StagedFile, StagedIndex
from ingest.synthetic import generate_market, market_metadata
from ingest.tardis import read_tardis

STAGED_INDEX = "staged.json"
#: the staged files' layout (INPUT and TRADE_ID columns, per-file counts): part of the
#: flow's staging cache key, so a staging folder of another layout is never reused
STAGING_FORMAT = 2


# ------------------------------------------------------------------ reading
def _synthetic_reads(
    cfg: IngestConfig, layout: DataLayout, verify: bool = True
) -> tuple[list[FileRead], dict[str, list[RawInput]], list[str]]:
    """Generate the synthetic market unless every day is already published from it
    (`verify`: its files checked too; a store's view holds manifests only)."""
    syn = cfg.synthetic
    inputs: list[RawInput] = [{"path": "synthetic", "sha256": fingerprint(syn)}]
    days = [iso_day(parse_day(syn.start_day) + d * NS_PER_DAY) for d in range(syn.days)]
    fp = inputs_fingerprint_of(
        inputs,
        {
            "source": "synthetic",
            "symbol": cfg.symbol,
            "instrument": cfg.instrument.model_dump(mode="json"),
        },
    )
    if all(is_current(layout, cfg.symbol, d, fp, verify) for d in days):
        return [], {d: inputs for d in days}, days
    reads = []
    for day, book, trades in generate_market(syn, cfg.instrument):
        n = book.height + trades.height
        reads.append(
            FileRead(path=f"synthetic:{day}", sha256=None, book=book, trades=trades, rows_in=n)
        )
    return reads, {d: inputs for d in days}, []


def expand_paths(paths: Iterable[str]) -> list[Path]:
    """Files of `paths` (folders walked recursively, hidden files skipped), sorted."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
        else:
            out.append(p)
    return out


# ------------------------------------------------------------------ quarantine
def quarantine_file_read(layout: DataLayout, source: str, fr: FileRead) -> list[QuarantineEntry]:
    """Copy a bad raw file (never moved or modified) and/or its rejected rows to
    ``quarantine/<source>/<digest>/`` with ``reason.json``."""
    entries: list[QuarantineEntry] = []
    if fr.ok and fr.rows_rejected == 0:
        return entries
    digest = (fr.sha256 or sha256_bytes(fr.path.encode()))[:16]
    folder = layout.quarantine(source) / digest
    folder.mkdir(parents=True, exist_ok=True)
    src = Path(fr.path)
    if not fr.ok and src.is_file():
        dst = folder / src.name
        if not dst.exists():
            shutil.copy2(src, dst)
    reason = {
        "path": fr.path,
        "sha256": fr.sha256,
        "file_reason": fr.file_reason,
        "rows_in": fr.rows_in,
        "rows_rejected": fr.rows_rejected,
        "row_reasons": dict(sorted(fr.row_reasons.items())),
        "rejected_rows_sample": fr.rejected_rows,
    }
    write_json_atomic(folder / "reason.json", reason)
    if not fr.ok:
        entries.append(
            QuarantineEntry(
                path=fr.path,
                level="file",
                reason=str(fr.file_reason),
                rows=fr.rows_rejected,
                where=str(folder),
            )
        )
    else:
        for r, n in sorted(fr.row_reasons.items()):
            entries.append(
                QuarantineEntry(path=fr.path, level="row", reason=r, rows=n, where=str(folder))
            )
    return entries


# ------------------------------------------------------------------ staging
def _split_days(df: pl.DataFrame) -> dict[str, pl.DataFrame]:
    if df.height == 0:
        return {}
    day_ns = pl.col(schema.TS_RECV) // NS_PER_DAY
    out = {}
    for (d,), part in (
        df.with_columns(day_ns.alias("_d"))
        .partition_by("_d", as_dict=True, maintain_order=True)
        .items()
    ):
        out[iso_day(int(d) * NS_PER_DAY)] = part.drop("_d")  # type: ignore[arg-type]
    return out


def filter_duplicate_files(reads: list[FileRead]) -> None:
    """A readable file whose sha256 an earlier file of the run had (the same content
    under another name): its rows are counted as filtered and it is not staged."""
    first: dict[str, str] = {}
    for fr in reads:
        if not fr.ok or fr.sha256 is None:
            continue
        if fr.sha256 in first:
            fr.filter(f"same content as {Path(first[fr.sha256]).name} (sha256)", fr.rows_out)
            fr.book, fr.trades, fr.trade_ids = fr.book.clear(), fr.trades.clear(), None
            fr.spill = []
        else:
            first[fr.sha256] = fr.path


def set_aside_other_published_books(reads: list[FileRead], layout: DataLayout, symbol: str) -> None:
    """Quarantine a file whose book stream differs from the one a published day it
    touches holds, unless the run has every input of that day (it rebuilds the day).
    One book per day: mixing a full L2 book and a depth-1 quote book corrupts both."""
    day_shas: dict[str, set[str]] = {}
    for fr in reads:
        if fr.ok and fr.sha256:
            for kind in ("book", "trades"):
                for day in _days_of(fr, kind):
                    day_shas.setdefault(day, set()).add(fr.sha256)
    for fr in reads:
        if not (fr.ok and fr.book_kind and fr.n_book):
            continue
        for day in _days_of(fr, "book"):
            m = read_manifest(layout, symbol, day)
            if (
                m is None
                or not m.get("rows", {}).get("book")
                or m.get("book_kind")
                in (
                    None,
                    fr.book_kind,
                )
            ):
                continue
            if {str(i["sha256"]) for i in m.get("inputs", [])} <= day_shas.get(day, set()):
                continue  # the run rebuilds the day from all its inputs
            fr.quarantine_file(
                f"book stream {fr.book_kind} set aside: events/{symbol}/{day} holds "
                f"{m['book_kind']} (one book per day; ingest the day's files together to "
                "replace it)"
            )
            break


def _days_of(fr: FileRead, kind: str) -> list[str]:
    """Days of a file's kept rows of `kind` (spilled, then in memory)."""
    df = fr.book if kind == "book" else fr.trades
    return list(dict.fromkeys([*fr.spilled_days(kind), *_split_days(df.select(schema.TS_RECV))]))


#: text bytes per block of a streamed raw file (`ingest.tardis.read_tardis`)
READ_BLOCK_BYTES = BLOCK_BYTES


class _Spill:
    """Writes a run's kept rows to ``<stage>/spill/`` as one Arrow IPC file per (file
    block, day) as they are read, so that no command holds every parsed file in
    memory: staging then reads back one day at a time. Trades carry TRADE_ID."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.n = 0

    def write(self, fr: FileRead, kind: str, df: pl.DataFrame) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        for day, part in _split_days(df).items():
            path = self.folder / f"{self.n:07d}.{kind}.arrow"
            self.n += 1
            part.write_ipc(path, compression="uncompressed")
            fr.spill.append((kind, day, str(path), part.height))

    def sink(self, fr: FileRead) -> Callable[[str, pl.DataFrame, pl.Series | None], None]:
        """A reader's sink (`ingest.tardis.Sink`) spilling into `fr`."""

        def put(kind: str, df: pl.DataFrame, ids: pl.Series | None) -> None:
            if kind == "trades":
                df = df.with_columns(_ids(ids, df.height))
            self.write(fr, kind, df)

        return put

    def frames(self, fr: FileRead) -> None:
        """Spill what a whole-file reader left in `fr` and free its frames."""
        if fr.ok:
            self.write(fr, "book", fr.book)
            self.write(fr, "trades", fr.trades.with_columns(_ids(fr.trade_ids, fr.trades.height)))
        fr.book, fr.trades, fr.trade_ids = fr.book.clear(), fr.trades.clear(), None

    def drop(self, fr: FileRead) -> None:
        """Forget (and delete) the spilled rows of a file that will not be staged."""
        for _, _, path, _ in fr.spill:
            Path(path).unlink(missing_ok=True)
        fr.spill = []


def _ids(ids: pl.Series | None, n: int) -> pl.Series:
    out = ids if ids is not None else pl.repeat(None, n, dtype=pl.String, eager=True)
    return out.cast(pl.String).alias(TRADE_ID)


def remove_leftovers(layout: DataLayout, min_age_s: float = STALE_AFTER_S) -> list[str]:
    """Temp files of a crashed ingest older than `min_age_s` under quarantine/ and the
    event partitions (a partition's own publish also removes its temp files under its
    lock, at any age). Returns the paths removed, relative to the data folder."""
    removed = remove_stale_temps(layout.root / "quarantine", min_age_s, recursive=True)
    removed += remove_stale_temps(layout.root / "events", min_age_s, recursive=True)
    return sorted(str(p.relative_to(layout.root)) for p in removed)


def _tag(df: pl.DataFrame, idx: int) -> pl.DataFrame:
    return df.with_columns(pl.lit(idx, dtype=pl.Int32).alias(INPUT))


def stage_source(
    cfg: IngestConfig,
    data_dir: str,
    staging_dir: str | None = None,
    progress: bool = False,
    storage: StorageConfig | None = None,
) -> StagedIndex:
    """Read the source, quarantine bad input, write staged per-day Parquet.

    `progress` shows a tqdm bar over the raw files (stderr; TQDM_DISABLE turns it off).
    `storage`: the published days are the store's (`events_view`), not the data folder's.

    Returns the `StagedIndex` (its dump is ``<stage>/staged.json``): the staged days,
    the days already published from these inputs, every file read, the quarantine and
    the leftovers removed. Staged frames carry INPUT (index into the day's ``inputs``)
    and the trades TRADE_ID.
    """
    layout = DataLayout(Path(data_dir))
    published = layout if storage is None else events_view(storage, cfg.symbol, strict=False)
    leftovers = remove_leftovers(layout)
    if staging_dir:
        stage = Path(staging_dir)
        stage.mkdir(parents=True, exist_ok=True)
    else:
        (layout.root / "staging").mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix="ingest-", dir=layout.root / "staging"))
    spill = _Spill(stage / "spill")
    if cfg.source == "synthetic":
        reads, day_inputs, current = _synthetic_reads(cfg, published, storage is None)
        for fr in reads:
            spill.frames(fr)
    else:
        files = expand_paths(cfg.paths)
        reads, current = [], []
        for p in tqdm(
            files, desc=f"ingest {cfg.source}", unit="file", disable=not progress or None
        ):
            fr = _read_file(cfg, p, spill)
            reads.append(fr)
        day_inputs = {}
    quarantine: list[QuarantineEntry] = []
    books: dict[str, list[tuple[str, int]]] = {}
    trades: dict[str, list[tuple[str, int]]] = {}
    kinds: dict[str, str] = {}
    filter_duplicate_files(reads)
    set_aside_poorer_books(reads)
    set_aside_other_published_books(reads, published, cfg.symbol)
    for fr in reads:
        quarantine += quarantine_file_read(layout, cfg.source, fr)
        if not fr.ok:
            spill.drop(fr)
            continue
        entry: RawInput = {"path": str(Path(fr.path).resolve()), "sha256": fr.sha256}
        for kind, into in (("book", books), ("trades", trades)):
            for k, day, path, _ in fr.spill:
                if k != kind:
                    continue
                inputs = day_inputs.setdefault(day, [])
                if fr.sha256:
                    if entry not in inputs:
                        inputs.append(entry)
                    idx = inputs.index(entry)
                else:
                    idx = 0  # synthetic: one input per day, given by _synthetic_reads
                into.setdefault(day, []).append((path, idx))
                if kind == "book" and fr.book_kind:
                    kinds[day] = fr.book_kind
    days: dict[str, StagedDay] = {}
    before: Path | None = None  # the staged book of the day before (its end opens a day)
    staged_book = pl.Schema({**book_schema(), INPUT: pl.Int32()})
    staged_trades = pl.Schema({**trade_schema(), INPUT: pl.Int32(), TRADE_ID: pl.String()})
    for day in sorted(set(books) | set(trades)):
        b = _day_frame(books.get(day, []), staged_book)
        if before is not None and not _opens_with_snapshot(b):  # replayed only then
            b = with_boundary_snapshot(book_at_end(before), b, parse_day(day))
        bp, tp = stage / f"{day}.book.parquet", stage / f"{day}.trades.parquet"
        write_with_atomic(bp, partial(b.write_parquet, compression="lz4"))
        del b
        t = _day_frame(trades.get(day, []), staged_trades)
        write_with_atomic(tp, partial(t.write_parquet, compression="lz4"))
        del t
        for path, _ in [*books.get(day, []), *trades.get(day, [])]:
            Path(path).unlink(missing_ok=True)
        before = bp
        days[day] = StagedDay(
            book=str(bp),
            trades=str(tp),
            inputs=list(day_inputs.get(day, [])),
            book_kind=kinds.get(day),
        )
    shutil.rmtree(spill.folder, ignore_errors=True)
    file_rows = [
        StagedFile(
            path=fr.path,
            sha256=fr.sha256,
            ok=fr.ok,
            rows_in=fr.rows_in,
            rows_out=fr.rows_out,
            rows_rejected=fr.rows_rejected,
            rows_filtered=fr.rows_filtered,
            filtered=dict(sorted(fr.filtered_reasons.items())),
            is_file=not fr.path.startswith("synthetic:"),
        )
        for fr in reads
    ]
    index = StagedIndex(
        staging_dir=str(stage),
        source=cfg.source,
        symbol=cfg.symbol,
        days=days,
        current=current,
        files=file_rows,
        quarantine=quarantine,
        leftovers=leftovers,
    )
    write_json_atomic(stage / STAGED_INDEX, index.to_json())
    return index


def _read_file(cfg: IngestConfig, path: Path, spill: _Spill) -> FileRead:
    """Read one raw file, its kept rows spilled to disk by day (tardis as it streams,
    the other readers once the file is read)."""
    if cfg.source == "tardis":
        holder = FileRead(path=str(path), sha256=None, book=empty_book(), trades=empty_trades())
        fr = read_tardis(
            path, cfg.symbol, cfg.instrument, sink=spill.sink(holder), block_bytes=READ_BLOCK_BYTES
        )
        fr.spill = holder.spill  # what the sink wrote (dropped later if fr is not ok)
    else:
        fr = read_source_file(cfg.source, path, cfg.symbol, cfg.instrument)
    spill.frames(fr)  # a whole-file read (or a tardis kind read whole)
    return fr


def _day_frame(parts: list[tuple[str, int]], staged: pl.Schema) -> pl.DataFrame:
    """One day's spilled parts (in run order), tagged with their input index, in
    ts_recv order (stable: rows of equal ts_recv keep the run's order)."""
    frames = [
        pl.read_ipc(path).with_columns(pl.lit(idx, dtype=pl.Int32).alias(INPUT))
        for path, idx in parts
    ]
    df = pl.concat([pl.DataFrame(schema=staged), *(f.select(staged.names()) for f in frames)])
    del frames
    if not df[schema.TS_RECV].is_sorted():  # a tardis day file is (one pass to check)
        df = df.sort(schema.TS_RECV, maintain_order=True)
    return df.cast(staged)  # type: ignore[arg-type]


BOOK_REPLAY_COLUMNS = (
    schema.TS_RECV,
    schema.SIDE,
    schema.PRICE_TICKS,
    schema.SIZE,
    schema.IS_SNAPSHOT,
)


def _opens_with_snapshot(day_book: pl.DataFrame) -> bool:
    return bool(day_book.height and day_book[schema.IS_SNAPSHOT][0])


def book_at_end(staged_book: Path) -> OrderBook | None:
    """The book at the end of a staged day (its file replayed alone, the day's book
    check replays it again when it is published); None when the day holds no snapshot
    row: the book it started from is not known (a staged day that had one to start from
    opens with it, `with_boundary_snapshot`)."""
    day = pl.read_parquet(staged_book, columns=list(BOOK_REPLAY_COLUMNS))
    if not day[schema.IS_SNAPSHOT].any():
        return None
    book = OrderBook()
    for piece in message_pieces(day):
        book.replay(*piece)
    return book


def message_pieces(book: pl.DataFrame, rows: int = PIECE_ROWS) -> Iterator[tuple[np.ndarray, ...]]:
    """The BOOK_REPLAY_COLUMNS of `book` (sorted by ts_recv) as numpy, a piece of whole
    messages at a time (`book.order_book.message_bounds`), for `check_book_pieces` and
    `OrderBook.replay`."""
    for start, end in message_bounds(book[schema.TS_RECV], rows):
        piece = book.slice(start, end - start)
        yield tuple(piece[c].to_numpy() for c in BOOK_REPLAY_COLUMNS)


def with_boundary_snapshot(
    running: OrderBook | None, day_book: pl.DataFrame, day_start_ns: int
) -> pl.DataFrame:
    """Make a day partition self-contained: when the day does not open with a snapshot
    but the same input carried a good book across midnight (`running`, the book at the
    end of the day before: `book_at_end`), prepend that book as snapshot rows at 00:00
    (ts_event = ts_recv = day start). Replaying the days in a row gives the same book;
    replaying the day alone no longer starts from nothing. Pure apart from reading
    `running`."""
    if _opens_with_snapshot(day_book):
        return day_book
    if running is None or not running.is_ok:
        return day_book
    rows = [
        (day_start_ns, day_start_ns, s, p, q, True) for s in (1, -1) for p, q in running.levels(s)
    ]
    snap = pl.DataFrame(rows, schema=book_schema(), orient="row")
    if INPUT in day_book.columns:  # staged rows: these come from no input of the day
        snap = snap.with_columns(pl.lit(BOUNDARY_INPUT, dtype=pl.Int32).alias(INPUT))
    return pl.concat([snap, day_book.select(snap.columns)])


def book_check(book: pl.DataFrame) -> BookCheck:
    """A day's book replayed through the one order book (the manifest's
    ``extra["book_check"]``)."""
    chk = check_book_pieces(message_pieces(book))
    return {
        "messages": chk.n_messages,
        "snapshots": chk.n_snapshots,
        "unknown_level": chk.n_unknown_level,
        "crossed": chk.n_crossed,
        "bad_size": chk.n_bad_size,
        "first_desync_row": chk.first_desync_row,
    }


def desyncs_of(chk: BookCheck | None) -> int:
    """Book desyncs a book check counted (unknown level + crossed + bad size); 0 for a
    manifest without one. Pure."""
    return 0 if chk is None else chk["unknown_level"] + chk["crossed"] + chk["bad_size"]


def publish_staged_day(
    cfg: IngestConfig,
    data_dir: str,
    day: str,
    staged: StagedDay,
    storage: StorageConfig | None = None,
) -> PublishedDay:
    """Check one staged day through the order book and publish (merge) it into its
    partition (`ingest.events.publish_merged`). Returns what it did (`PublishedDay`:
    mode, rows of the published day, desyncs, duplicate trades). The manifest's
    ``extra["book_check"]`` is `book_check` of the day's book; a synthetic day's also
    carries ``extra["market"]`` (`ingest.synthetic.market_metadata`: model, seed,
    fingerprint, the planted edge), which `chappie audit market EVENTS` prints.

    `storage`: the day is published to the object store (see the module docstring);
    raises ObjectStoreError naming the object when the day's partition there does not
    match its sha256 (nothing of the day is published then)."""
    with _PUBLISH_ONE_DAY:
        if storage is None:
            return _publish_staged_day(cfg, DataLayout(Path(data_dir)), day, staged)
        return _publish_day_to_store(cfg, day, staged, storage)


#: one day published at a time per process: a day of 20 M book rows takes ~2 GB to check
#: and write, so concurrent days multiplied the peak memory by the days of the run (#19).
#: The ingest flow publishes its days one after another on its own thread; this also
#: holds for two flows run by threads of one process
_PUBLISH_ONE_DAY = threading.Lock()
#: how long a day's publish to the object store waits for another machine publishing the
#: same day (its pull-merge-push of one day takes seconds) before refusing in one line
STORE_DAY_WAIT_S = 120.0


def _publish_staged_day(
    cfg: IngestConfig, layout: DataLayout, day: str, staged: StagedDay
) -> PublishedDay:
    market = None
    if cfg.source == "synthetic":
        market = market_metadata(cfg.synthetic)

    def extra_of(book: pl.DataFrame) -> PartitionExtra:
        extra: PartitionExtra = {"book_check": book_check(book)}
        if market is not None:
            extra["market"] = market
        return extra

    res = publish_merged(
        layout,
        cfg.symbol,
        day,
        pl.read_parquet(staged.book),
        pl.read_parquet(staged.trades),
        staged.inputs,
        cfg.instrument,
        cfg.source,
        staged.book_kind,
        extra_of,
    )
    # the day's manifest after the publish: an unchanged day's is an earlier run's
    chk = res.result.manifest.get("extra", {}).get("book_check")
    return PublishedDay(
        day=day,
        written=res.result.written,
        mode=res.mode,
        path=res.result.path,
        book_rows=res.book,
        trades_rows=res.trades,
        desyncs=desyncs_of(chk),
        duplicate_trades=res.duplicate_trades,
    )


# ------------------------------------------------------------------ object store
def events_url(storage: StorageConfig, symbol: str, day: str | None = None) -> str:
    """`<storage.url>/events/<symbol>[/<day>]`: the local layout's keys."""
    return join(storage.url, "events", symbol, *([day] if day else []))


def events_view(storage: StorageConfig, symbol: str, strict: bool = True) -> DataLayout:
    """The published days of `symbol` on the store as a local layout holding their
    manifests only (each checked against the sha256 its object records; a day whose
    manifest is not there yet is not published), in the store's view folder
    (`core.objectstore.view_root`): `list_event_days`, `read_manifest`,
    `is_current(verify=False)`, `event_partition_hashes` read it unchanged. Data files
    are pulled day by day (`pull_partition`). Raises ObjectStoreError naming a damaged
    manifest; not `strict`: that day is left out (ingest: its publish then fails alone,
    naming it)."""
    layout = DataLayout(view_root(storage))
    days = set()
    for day in list_names(events_url(storage, symbol), storage):
        try:
            manifest = fetch_root(join(events_url(storage, symbol, day), MANIFEST_FILE), storage)
        except ObjectStoreError:
            if strict:
                raise
            continue
        if manifest is not None:
            link_into(manifest, layout.events_day(symbol, day) / MANIFEST_FILE)
            days.add(day)
    for gone in layout.events_symbol(symbol).glob(f"*/{MANIFEST_FILE}"):
        if gone.parent.name not in days:  # removed from the store since
            gone.unlink(missing_ok=True)
    return layout


def pull_partition(
    storage: StorageConfig,
    symbol: str,
    day: str,
    folder: Path,
    fetch_dir: Path,
    kinds: Iterable[str] | None = None,
) -> PartitionManifest | None:
    """Lay the store's partition of `day` out in `folder`: its manifest (checked against
    the sha256 its object records) and the data files of `kinds` (default: all), each
    checked against the manifest's sha256. `fetch_dir` is where the bytes land first
    (the caller removes it: event files stay out of the shared cache). None when the
    store holds no such day. Raises ObjectStoreError naming a damaged object."""
    url = events_url(storage, symbol, day)
    manifest = fetch_root(join(url, MANIFEST_FILE), storage)
    if manifest is None:
        return None
    link_into(manifest, folder / MANIFEST_FILE)
    try:
        m = PartitionManifest(**json.loads(manifest.read_bytes()))
        names = partition_files(m)
        wanted = names.values() if kinds is None else [names[k] for k in kinds]
        files = {name: str(m["outputs"][name]) for name in wanted}
    except (ValueError, TypeError, KeyError) as exc:
        raise ObjectStoreError(f"{url}/{MANIFEST_FILE}: not a partition manifest: {exc}") from exc
    pull(files, url, folder, storage, fetch_dir)
    return m


def push_partition(storage: StorageConfig, layout: DataLayout, symbol: str, day: str) -> None:
    """Publish the partition of `day` in `layout` to the store: the data files its
    manifest names (each checked against its sha256), then the manifest. Data files
    are named by their content, so a reader of the manifest before this one still finds
    its files."""
    m = read_manifest(layout, symbol, day)
    if m is None:
        raise FileNotFoundError(f"no partition events/{symbol}/{day} in {layout.root}")
    outputs: dict[str, str | None] = {str(k): str(v) for k, v in m["outputs"].items()}
    push(
        layout.events_day(symbol, day),
        events_url(storage, symbol, day),
        outputs,
        storage,
        MANIFEST_FILE,
    )


def _publish_day_to_store(
    cfg: IngestConfig, day: str, staged: StagedDay, storage: StorageConfig
) -> PublishedDay:
    """Publish a staged day into a scratch partition beside the staged files holding what
    the store has of the day (merged like a local one), push it when it changed, remove
    the scratch. The pull, merge and push hold the day's store lock (`events/<symbol>/
    <day>`, `core.locks.hold_store_lock`): a second machine publishing the same day waits
    up to `STORE_DAY_WAIT_S` (or CHAPPIE_LOCK_WAIT_S when longer), then gets StoreBusy
    naming the holder, instead of one merge overwriting the other's rows."""
    scratch = DataLayout(Path(staged.book).parent / "publish")
    folder = scratch.events_day(cfg.symbol, day)
    fetch_dir = scratch.root / ".fetch" / day
    shutil.rmtree(folder, ignore_errors=True)
    lock = store_day_lock("events", cfg.symbol, day)
    try:
        wait = max(STORE_DAY_WAIT_S, lock_wait_seconds())
        with hold_store_lock(storage, lock, "ingest", wait_s=wait):
            pull_partition(storage, cfg.symbol, day, folder, fetch_dir)
            shutil.rmtree(fetch_dir, ignore_errors=True)
            out = _publish_staged_day(cfg, scratch, day, staged)
            if out.written:
                push_partition(storage, scratch, cfg.symbol, day)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(fetch_dir, ignore_errors=True)
    return out.model_copy(update={"path": events_url(storage, cfg.symbol, day)})


def build_report(
    cfg: IngestConfig, index: StagedIndex, published: list[PublishedDay]
) -> IngestReport:
    """The run report. Trades a publish dropped as duplicates (trade id already in the
    day) move from a file's out to its filtered rows. Raises ValueError when a file's or
    the run's ``rows_in = rows_out + rows_rejected + rows_filtered`` does not hold."""
    files = [f for f in index.files if f.is_file]
    quarantine = index.quarantine
    reasons: Counter[str] = Counter()
    for q in quarantine:
        reasons[q.reason] += q.rows if q.level == "row" else 1
    dups: Counter[str] = Counter()
    for p in published:
        dups.update(p.duplicate_trades)
    filtered: Counter[str] = Counter()
    rows_in = rows_out = rows_rejected = rows_filtered = 0
    for f in index.files:
        out, filt, freasons = f.rows_out, f.rows_filtered, Counter(f.filtered)
        d = dups.pop(f.sha256, 0) if f.ok and f.sha256 else 0
        if d:
            out, filt = out - d, filt + d
            freasons["duplicate trade id (already in the day)"] += d
        if f.rows_in != out + f.rows_rejected + filt or sum(freasons.values()) != filt:
            raise ValueError(
                f"{f.path}: rows_in {f.rows_in} != out {out} + rejected "
                f"{f.rows_rejected} + filtered {filt}"
            )
        rows_in += f.rows_in
        rows_out += out
        rows_rejected += f.rows_rejected
        rows_filtered += filt
        filtered.update(freasons)
    if sum(v for k, v in dups.items() if k != "existing"):
        raise ValueError(f"duplicate trades counted for inputs not in this run: {dict(dups)}")
    return IngestReport(
        source=cfg.source,
        symbol=cfg.symbol,
        files_in=len(files),
        files_ok=sum(1 for f in files if f.ok),
        files_quarantined=sum(1 for f in files if not f.ok),
        rows_in=rows_in,
        rows_out=rows_out,
        rows_rejected=rows_rejected,
        rows_filtered=rows_filtered,
        filtered=dict(sorted(filtered.items())),
        events_out={
            "book": sum(p.book_rows for p in published),
            "trades": sum(p.trades_rows for p in published),
        },
        partitions_written=sorted(p.day for p in published if p.written),
        partitions_unchanged=sorted(
            [p.day for p in published if not p.written] + list(index.current)
        ),
        desyncs={p.day: p.desyncs for p in published if p.desyncs},
        quarantine=quarantine,
        reasons=dict(sorted(reasons.items())),
    )


def source_fingerprint(cfg: IngestConfig) -> str:
    """Cache key of a source's raw input: the config plus (path, size, mtime_ns) of every
    file. A changed file changes the key; an unchanged one lets Prefect reuse staging."""
    files = []
    for p in expand_paths(cfg.paths):
        try:
            s = p.stat()
            files.append([str(p.resolve()), s.st_size, s.st_mtime_ns])
        except OSError:
            files.append([str(p), None, None])
    return fingerprint({"cfg": cfg.model_dump(mode="json"), "files": files})


def staged_files_exist(index: StagedIndex) -> bool:
    """True when every staged Parquet file of `index` is still on disk."""
    return all(Path(p).exists() for s in index.days.values() for p in (s.book, s.trades))


#: a row of the run-summary table (its columns: "in" is a keyword, hence this form)
ReportRow = TypedDict(
    "ReportRow", {"item": str, "in": int, "ok": int, "quarantined": int, "detail": str}
)


def report_table(report: IngestReport) -> list[ReportRow]:
    """Rows of the run-summary table (Prefect artifact, CLI)."""
    rows: list[ReportRow] = [
        {
            "item": "files",
            "in": report.files_in,
            "ok": report.files_ok,
            "quarantined": report.files_quarantined,
            "detail": "",
        },
        {
            "item": "rows",
            "in": report.rows_in,
            "ok": report.rows_out,
            "quarantined": report.rows_rejected,
            "detail": f"events out: {report.events_out}",
        },
        {
            "item": "partitions",
            "in": len(report.partitions_written) + len(report.partitions_unchanged),
            "ok": len(report.partitions_written),
            "quarantined": 0,
            "detail": f"written {report.partitions_written}; unchanged {report.partitions_unchanged}; desyncs {report.desyncs}",
        },
    ]
    for q in report.quarantine:
        rows.append(
            {
                "item": f"quarantine ({q.level})",
                "in": q.rows,
                "ok": 0,
                "quarantined": q.rows,
                "detail": f"{q.path}: {q.reason}",
            }
        )
    return rows


def claim_staging(staging_dir: str) -> None:
    """Mark a staging folder as in use now (its mtime), before a run reuses it from the
    cache: a concurrent run's `prune_staging` spares folders touched within the hour.
    A folder already pruned is left missing (the caller's existence check re-stages)."""
    with contextlib.suppress(FileNotFoundError):
        os.utime(staging_dir)


def prune_staging(data_dir: str, keep: str, min_age_s: float = 3600.0) -> list[str]:
    """Remove staged ingest folders other than `keep` (the current run's) untouched for
    `min_age_s` (so a concurrent run's staging survives); returns their names.

    Staging exists so a cached re-run of the same input skips reading; older inputs'
    staging only costs disk (a cache hit on a pruned one re-stages, see the flow)."""
    root = Path(data_dir) / "staging" / "ingest"
    removed = []
    if root.exists():
        for d in root.iterdir():
            if d.is_dir() and d.name != keep and time.time() - d.stat().st_mtime >= min_age_s:
                shutil.rmtree(d, ignore_errors=True)
                removed.append(d.name)
    return sorted(removed)
