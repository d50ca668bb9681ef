"""Canonical event partitions on disk (adapter): ``events/<symbol>/<day>/``.

A partition is a manifest and the data files it names (format 2):
``book-<sha16>.parquet``, ``trades-<sha16>.parquet`` and ``trade_ids-<sha16>.parquet``
(the exchange's id of each trade, row for row; null where the format has none), each
named by the sha256 of its bytes. Publishing writes the new data files beside the old
ones, then replaces ``manifest.json`` atomically: that rename is the one commit point.
Until it, the old manifest and the files it names are untouched and readable; a crash
anywhere leaves the day as it was (never removed). Files no manifest names any more are
deleted by a later publish of the day, once older than `READER_GRACE_S` (a reader that
read the old manifest has that long to open its files), as are temp files of a crashed
publish (the lock proves no writer uses them). Format 1 partitions (``book.parquet``,
``trades.parquet``, no ids) stay readable.

A partition is *current* when its manifest exists, its input fingerprint (the sha256s of
its raw inputs: the same content under another name is the same input) and code version
match, and the files hash to the recorded sha256: re-publishing a current partition does
no work and changes no byte. Publishing holds an exclusive ``flock`` on ``<day>/.lock``
so two concurrent runs on the same partition serialise instead of interleaving files.
Manifests hold no wall-clock time, so the same inputs always give the same manifest
bytes (features hash them).

`publish_merged` is ingest's entry: the files of one day may arrive in separate runs
(tardis ships trades and book as separate files). A run whose inputs include every
input of the published day rebuilds it from them; otherwise the rows of its new inputs
are merged into the day (existing rows first at equal ``ts_recv``) and inputs already
published are not added again. Trades are de-duplicated by exchange trade id.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

# typing_extensions': pydantic reads RawInput (in ingest.staged), and on Python 3.11 it
# refuses typing.TypedDict
from typing_extensions import TypedDict

from core import schema
from core.atomic import fsync_dir, write_content_named, write_json_atomic
from core.clock import NS_PER_DAY, parse_day
from core.hashing import fingerprint, sha256_bytes, sha256_file
from core.instrument import InstrumentSpec
from core.jsontypes import JsonObject
from core.leftovers import remove_stale_temps
from core.paths import DataLayout

if TYPE_CHECKING:  # ingest.synthetic imports numba: not at import time for a type
    from ingest.synthetic import MarketMetadata

BOOK_FILE = "book.parquet"  # format 1 names
TRADES_FILE = "trades.parquet"
MANIFEST_FILE = "manifest.json"
MANIFEST_VERSION = 2
TRADE_ID = "trade_id"
#: staged frames carry the index of each row's input in the day's input list
INPUT = "_input"
BOUNDARY_INPUT = -1  # rows derived from the previous day's book (`with_boundary_snapshot`)
#: seconds a superseded data file stays for readers of the previous manifest
READER_GRACE_S = 600.0
_DATA_KINDS = ("book", "trades", "trade_ids")


class PartitionError(ValueError):
    """Frames that do not satisfy the canonical event contract, or a damaged partition."""


class RawInput(TypedDict):
    """A raw input of a partition: the path it was read from and the sha256 of its bytes
    (generated data: "synthetic" and the config fingerprint)."""

    path: str | None
    sha256: str | None


class RowCounts(TypedDict):
    book: int
    trades: int


class TimeSpan(TypedDict):
    """First and last ``ts_recv`` of the day's rows (None: no row)."""

    ts_recv_min: int | None
    ts_recv_max: int | None


class ColumnNames(TypedDict):
    book: list[str]
    trades: list[str]


class BookCheck(TypedDict):
    """A day's book replayed through the one order book (`book.order_book.check_book`):
    messages, snapshots, the three desync counts and the first desynced row (-1: none).
    Every manifest that has a book check has all six keys (since format 1)."""

    messages: int
    snapshots: int
    unknown_level: int
    crossed: int
    bad_size: int
    first_desync_row: int


class PartitionExtra(TypedDict, total=False):
    """A manifest's ``extra``: what the publisher recorded beside the data. Ingest
    writes `book_check` for every day it publishes and `market` for a synthetic day;
    a manifest published without them (`publish_partition` with no `extra`) has ``{}``."""

    book_check: BookCheck
    market: MarketMetadata  # `ingest.synthetic.market_metadata` (synthetic days only)


class PartitionManifest(TypedDict, total=False):
    """``manifest.json`` of a published day: what it holds and came from, and its files.

    Typed as the JSON object it is (its bytes are hashed into every slice's lineage, and
    readers in ingest.run and features index it). Every key is optional to a reader: a
    manifest on disk may be of format 1 (no ``files``, no ``book_kind``) or damaged, so
    readers use ``.get`` or handle KeyError; `_manifest_body` and `_write_partition`
    write every key."""

    manifest_version: int
    symbol: str
    day: str
    source: str
    instrument: JsonObject  # InstrumentSpec JSON
    rows: RowCounts
    time_span: TimeSpan
    inputs: list[RawInput]  # one per sha256, sorted by (path, sha256)
    inputs_fingerprint: str
    book_kind: str | None  # format 2
    columns: ColumnNames
    code_version: str
    extra: PartitionExtra
    files: dict[str, str]  # format 2: kind -> file name
    outputs: dict[str, str]  # file name -> sha256


def _pl_dtype(name: str) -> pl.DataType:
    return {"int64": pl.Int64(), "int8": pl.Int8(), "bool": pl.Boolean()}[name]


def book_schema() -> pl.Schema:
    return pl.Schema({c: _pl_dtype(schema.EVENT_DTYPES[c]) for c in schema.BOOK_COLUMNS})


def trade_schema() -> pl.Schema:
    return pl.Schema({c: _pl_dtype(schema.EVENT_DTYPES[c]) for c in schema.TRADE_COLUMNS})


def empty_book() -> pl.DataFrame:
    return pl.DataFrame(schema=book_schema())


def empty_trades() -> pl.DataFrame:
    return pl.DataFrame(schema=trade_schema())


@lru_cache(maxsize=1)
def code_files() -> list[Path]:
    """The source files that decide partition content."""
    root = Path(__file__).resolve().parents[1]
    return sorted((root / "ingest").glob("*.py")) + [
        root / "book" / "order_book.py",  # ingest's book check replays the deltas with it
        root / "core" / "schema.py",
    ]


def code_version() -> str:
    """sha256 over `code_files` (a file named there that is not there is an error: a
    move must not silently drop it from the fingerprint)."""
    root = Path(__file__).resolve().parents[1]
    return fingerprint({str(p.relative_to(root)): sha256_file(p) for p in code_files()})[:16]


def _check_frame(df: pl.DataFrame, cols: Sequence[str], what: str, day: str) -> None:
    if list(df.columns) != list(cols):
        raise PartitionError(f"{what}: columns {df.columns} != {list(cols)}")
    for c in cols:
        want = _pl_dtype(schema.EVENT_DTYPES[c])
        if df.schema[c] != want:
            raise PartitionError(f"{what}: column {c} has dtype {df.schema[c]}, expected {want}")
    if df.height == 0:
        return
    if df.null_count().sum_horizontal().item() > 0:
        raise PartitionError(f"{what}: null values")
    ts = df[schema.TS_RECV]
    if not ts.is_sorted():
        raise PartitionError(f"{what}: rows are not in ts_recv order")
    t0 = parse_day(day)
    if int(ts.min()) < t0 or int(ts.max()) >= t0 + NS_PER_DAY:  # type: ignore[arg-type]
        raise PartitionError(f"{what}: ts_recv outside day {day}")
    if not df[schema.SIDE].is_in([1, -1]).all():
        raise PartitionError(f"{what}: side must be +1 or -1")


def _write_parquet(df: pl.DataFrame, path: Path) -> None:
    df.write_parquet(path, compression="zstd", compression_level=3, statistics=True)


@contextlib.contextmanager
def partition_lock(folder: Path) -> Iterator[None]:
    """Exclusive advisory lock on a partition folder (blocks until free)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


@dataclass(frozen=True)
class PublishResult:
    day: str
    path: str
    written: bool  # False when the partition was already current
    manifest: PartitionManifest


def read_manifest(layout: DataLayout, symbol: str, day: str) -> PartitionManifest | None:
    """The partition manifest, or None when the partition is absent/unpublished."""
    p = layout.events_day(symbol, day) / MANIFEST_FILE
    if not p.exists():
        return None
    return PartitionManifest(**json.loads(p.read_text()))  # TypeError: not a JSON object


def manifest_sha256(layout: DataLayout, symbol: str, day: str) -> str:
    """sha256 of a partition's manifest bytes (what slice manifests record)."""
    return sha256_file(layout.events_day(symbol, day) / MANIFEST_FILE)


def partition_files(m: PartitionManifest) -> dict[str, str]:
    """kind ("book", "trades", and "trade_ids" from format 2) -> file name in the
    partition folder, from its manifest."""
    files = m.get("files")
    if isinstance(files, dict):
        return {str(k): str(v) for k, v in files.items()}
    return {"book": BOOK_FILE, "trades": TRADES_FILE}


def _intact(folder: Path, m: PartitionManifest) -> bool:
    """Every output file of manifest `m` holds the bytes it records."""
    try:
        return all(sha256_file(folder / name) == sha for name, sha in m["outputs"].items())
    except (OSError, KeyError, TypeError, AttributeError):
        return False


def is_current(
    layout: DataLayout, symbol: str, day: str, inputs_fingerprint: str, verify: bool = True
) -> bool:
    """True when the published partition came from these inputs and this code, intact."""
    m = read_manifest(layout, symbol, day)
    if (
        m is None
        or m.get("inputs_fingerprint") != inputs_fingerprint
        or m.get("code_version") != code_version()
    ):
        return False
    return not verify or _intact(layout.events_day(symbol, day), m)


def inputs_fingerprint_of(inputs: Sequence[Mapping[str, object]], extra: Any = None) -> str:
    """Fingerprint of a set of raw inputs: their sha256s (not their names: the same
    content under another name is the same input) and `extra`."""
    return fingerprint(
        {"inputs": sorted({str(d.get("sha256", "")) for d in inputs}), "extra": extra}
    )


def _sorted_inputs(inputs: Sequence[Mapping[str, object]]) -> list[RawInput]:
    """One entry per sha256 (the first name given wins), sorted by (path, sha256)."""
    by_sha: dict[str, RawInput] = {}
    for d in inputs:
        path, sha = d.get("path"), d.get("sha256")
        by_sha.setdefault(
            str(d.get("sha256", "")),
            {"path": _text(path, "path"), "sha256": _text(sha, "sha256")},
        )
    return sorted(by_sha.values(), key=lambda d: (str(d["path"]), str(d["sha256"])))


def _text(value: object, what: str) -> str | None:
    """An input's path or sha256: text, or None when not given. Raises PartitionError."""
    if value is None or isinstance(value, str):
        return value
    raise PartitionError(f"an input's {what} must be text, got {value!r}"[:200])


def _fp_extra(source: str, symbol: str, instrument: InstrumentSpec) -> JsonObject:
    return {"source": source, "symbol": symbol, "instrument": instrument.model_dump(mode="json")}


def _data_name(kind: str, sha: str) -> str:
    return f"{kind}-{sha[:16]}.parquet"


def _trade_ids_frame(ids: pl.Series | None, n: int) -> pl.DataFrame:
    if ids is None:
        ids = pl.Series(TRADE_ID, [None] * n, dtype=pl.String)
    if ids.len() != n:
        raise PartitionError(f"trade ids: {ids.len()} rows for {n} trades")
    return pl.DataFrame({TRADE_ID: ids.cast(pl.String)})


def _write_partition(
    folder: Path,
    old: PartitionManifest | None,
    book: pl.DataFrame,
    trades: pl.DataFrame,
    trade_ids: pl.Series | None,
    body: PartitionManifest,
) -> PartitionManifest:
    """Write the data files (content-named; one already holding the bytes is kept), then
    the manifest (the commit point), then mark the superseded files (their mtime: the
    grace period starts now). Caller holds the partition lock. Each file is written
    straight to disk (a day's book held as Parquet bytes too took ~0.35 GB more, #19);
    until the manifest names it, a data file is nobody's (`_prune` removes it)."""
    frames = {
        "book": book,
        "trades": trades,
        "trade_ids": _trade_ids_frame(trade_ids, trades.height),
    }
    files: dict[str, str] = {}
    outputs: dict[str, str] = {}
    for kind, df in frames.items():
        name, sha = write_content_named(
            folder, partial(_data_name, kind), partial(_write_parquet, df)
        )
        files[kind], outputs[name] = name, sha
    fsync_dir(folder)  # the data files' names are durable before the manifest names them
    manifest: PartitionManifest = {**body, "files": files, "outputs": outputs}
    write_json_atomic(folder / MANIFEST_FILE, manifest)
    if old is not None:
        now = time.time()
        for name in set(partition_files(old).values()) - set(files.values()):
            with contextlib.suppress(OSError):
                os.utime(folder / name, (now, now))
    return manifest


def _prune(folder: Path, m: PartitionManifest | None, grace_s: float = READER_GRACE_S) -> list[str]:
    """Remove, under the partition lock, temp files of crashed publishes (any age: no
    writer can be using them) and data files the manifest `m` does not name that are
    older than `grace_s`. Returns the names removed."""
    removed = [p.name for p in remove_stale_temps(folder, min_age_s=0.0)]
    named = set(partition_files(m).values()) if m is not None else set()
    now = time.time()
    candidates = [folder / BOOK_FILE, folder / TRADES_FILE]
    for kind in _DATA_KINDS:
        candidates += sorted(folder.glob(f"{kind}-*.parquet"))
    for p in candidates:
        if p.name in named:
            continue
        with contextlib.suppress(FileNotFoundError):
            if now - p.stat().st_mtime >= grace_s:
                p.unlink()
                removed.append(p.name)
    return removed


def _manifest_body(
    symbol: str,
    day: str,
    book: pl.DataFrame,
    trades: pl.DataFrame,
    instrument: InstrumentSpec,
    source: str,
    inputs: list[RawInput],
    fp: str,
    book_kind: str | None,
    extra: PartitionExtra | None,
) -> PartitionManifest:
    ts_all = [
        int(x)  # type: ignore[arg-type]
        for df in (book, trades)
        if df.height
        for x in (df[schema.TS_RECV].min(), df[schema.TS_RECV].max())
    ]  # type: ignore[arg-type]
    return {
        "manifest_version": MANIFEST_VERSION,
        "symbol": symbol,
        "day": day,
        "source": source,
        "instrument": instrument.model_dump(mode="json"),
        "rows": {"book": book.height, "trades": trades.height},
        "time_span": {
            "ts_recv_min": min(ts_all) if ts_all else None,
            "ts_recv_max": max(ts_all) if ts_all else None,
        },
        "inputs": inputs,
        "inputs_fingerprint": fp,
        "book_kind": book_kind,
        "columns": {"book": list(schema.BOOK_COLUMNS), "trades": list(schema.TRADE_COLUMNS)},
        "code_version": code_version(),
        "extra": extra or {},
    }


def publish_partition(
    layout: DataLayout,
    symbol: str,
    day: str,
    book: pl.DataFrame,
    trades: pl.DataFrame,
    instrument: InstrumentSpec,
    source: str,
    inputs: Sequence[Mapping[str, object]],
    extra: PartitionExtra | None = None,
    *,
    trade_ids: pl.Series | None = None,
    book_kind: str | None = None,
) -> PublishResult:
    """Publish one day partition from exactly these frames (replacing the day), atomically:
    data files first, manifest last (see the module doc).

    `inputs`: ``[{"path", "sha256"}]`` of the raw inputs (or a config fingerprint for
    generated data). `extra` is recorded in the manifest (e.g. desync counts);
    `trade_ids` (String, one per trade row) and `book_kind` too. Raises PartitionError
    when a frame breaks the canonical contract.
    """
    _check_frame(book, schema.BOOK_COLUMNS, "book", day)
    _check_frame(trades, schema.TRADE_COLUMNS, "trades", day)
    fp = inputs_fingerprint_of(inputs, _fp_extra(source, symbol, instrument))
    folder = layout.events_day(symbol, day)
    with partition_lock(folder):
        old = read_manifest(layout, symbol, day)
        if is_current(layout, symbol, day, fp):
            assert old is not None
            _prune(folder, old)
            return PublishResult(day, str(folder), False, old)
        body = _manifest_body(
            symbol,
            day,
            book,
            trades,
            instrument,
            source,
            _sorted_inputs(inputs),
            fp,
            book_kind,
            extra,
        )
        manifest = _write_partition(folder, old, book, trades, trade_ids, body)
        _prune(folder, manifest)
    return PublishResult(day, str(folder), True, manifest)


@dataclass(frozen=True)
class MergeResult:
    """What `publish_merged` did to a day. ``mode``: "new" (no intact partition before),
    "rebuilt" (the run had every input of the day), "merged" (new inputs added to the
    day), "unchanged". ``duplicate_trades``: input sha256 -> trade rows dropped because
    their exchange trade id was already in the day. ``already``: sha256s of the run's
    inputs that the day held before (their rows were not added again)."""

    result: PublishResult
    mode: str
    book: int
    trades: int
    duplicate_trades: dict[str, int] = field(default_factory=dict)
    already: tuple[str, ...] = ()


def _drop_duplicate_trades(
    trades: pl.DataFrame, sha_of: dict[int, str]
) -> tuple[pl.DataFrame, dict[str, int]]:
    """Keep the first row of each non-null trade id (existing rows come first); count the
    dropped rows per input sha256 (`sha_of`: INPUT index -> sha256)."""
    ids = pl.col(TRADE_ID)
    dup = ids.is_not_null() & ~ids.is_first_distinct()
    dropped = trades.filter(dup)
    counts: dict[str, int] = {}
    for idx, n in dropped.group_by(INPUT).len().iter_rows():
        key = sha_of.get(int(idx), "existing")
        counts[key] = counts.get(key, 0) + int(n)
    return trades.filter(~dup), counts


def publish_merged(
    layout: DataLayout,
    symbol: str,
    day: str,
    book: pl.DataFrame,
    trades: pl.DataFrame,
    inputs: Sequence[Mapping[str, object]],
    instrument: InstrumentSpec,
    source: str,
    book_kind: str | None,
    extra_of: Callable[[pl.DataFrame], PartitionExtra] | None = None,
) -> MergeResult:
    """Publish one day of a run into its partition, keeping what other runs published.

    `book` / `trades`: the run's staged rows of the day in ``ts_recv`` order, with the
    canonical columns plus INPUT (Int32: index into `inputs`, BOUNDARY_INPUT for the
    day-start snapshot rows), trades also TRADE_ID (String, null where none). `inputs`:
    ``[{"path", "sha256"}]``. `extra_of(book)` gives the manifest's ``extra`` for the
    final book (e.g. the book check). Under the partition lock: a run holding every input
    of the day rebuilds it; otherwise the rows of inputs the day does not hold are merged
    in (none: unchanged). Trades are de-duplicated by trade id in both cases.

    Raises PartitionError when the merge would mix two book streams or two instrument
    contracts in one day (re-ingest the day's files together), or a frame breaks the
    contract.
    """
    folder = layout.events_day(symbol, day)
    fp_extra = _fp_extra(source, symbol, instrument)
    with partition_lock(folder):
        old = read_manifest(layout, symbol, day)
        intact = old is not None and _intact(folder, old)
        held = {str(i["sha256"]) for i in old["inputs"]} if intact and old else set()
        run = {str(i["sha256"]) for i in inputs}
        sha_of = {k: str(i["sha256"]) for k, i in enumerate(inputs)}
        if not intact or held <= run:
            mode = "new" if not intact else "rebuilt"
            base_inputs: list[RawInput] = []
            new_idx = list(range(len(inputs)))
            b_old, t_old = empty_book(), empty_trades()
            ids_old = pl.Series(TRADE_ID, [], dtype=pl.String)
        else:
            assert old is not None
            mode = "merged"
            base_inputs = list(old["inputs"])
            new_idx = [k for k, i in enumerate(inputs) if str(i["sha256"]) not in held]
            if not new_idx:
                _prune(folder, old)
                return MergeResult(
                    PublishResult(day, str(folder), False, old),
                    "unchanged",
                    int(old["rows"]["book"]),
                    int(old["rows"]["trades"]),
                    already=tuple(sorted(run & held)),
                )
            theirs = InstrumentSpec.model_validate(old["instrument"]).contract()
            if theirs != instrument.contract():
                raise PartitionError(
                    f"events/{symbol}/{day} was ingested under another instrument contract: "
                    "ingest all of the day's files together to rebuild it"
                )
            b_old, t_old = read_day(layout, symbol, day)
            ids_old = read_trade_ids(layout, symbol, day, old)
        keep = pl.col(INPUT).is_in(new_idx)
        b_keep = keep | (pl.col(INPUT) == BOUNDARY_INPUT) if b_old.height == 0 else keep
        # a new or rebuilt day keeps every staged row: no copy of a 20 M row book
        b_new = book if book.select(b_keep.all()).item() else book.filter(b_keep)
        if (
            mode == "merged"
            and b_old.height
            and b_new.height
            and old is not None
            and old.get("book_kind") not in (None, book_kind)
        ):
            raise PartitionError(
                f"events/{symbol}/{day} holds the book stream {old.get('book_kind')}, "
                f"this run brings {book_kind}: one book per day; ingest the day's files "
                "together to replace it"
            )
        old_tag = pl.lit(-2, dtype=pl.Int32).alias(INPUT)
        if b_old.height == 0 and b_new[schema.TS_RECV].is_sorted():
            # nothing to merge into (staged rows are in ts_recv order): the same rows the
            # concat and stable sort below give, without a copy of the day (the Parquet
            # bytes do not depend on the chunks; the book check reads it piece by piece)
            merged_book = b_new.select(schema.BOOK_COLUMNS)
        else:
            merged_book = (
                pl.concat([b_old.with_columns(old_tag), b_new.select(*schema.BOOK_COLUMNS, INPUT)])
                .sort(schema.TS_RECV, maintain_order=True)
                .drop(INPUT)
            )
        t_all = pl.concat(
            [
                t_old.with_columns(old_tag, ids_old.alias(TRADE_ID)),
                trades.filter(keep).select(*schema.TRADE_COLUMNS, INPUT, TRADE_ID),
            ]
        )
        t_all, dups = _drop_duplicate_trades(t_all, sha_of)
        t_all = t_all.sort(schema.TS_RECV, maintain_order=True)
        merged_trades = t_all.select(schema.TRADE_COLUMNS)
        _check_frame(merged_book, schema.BOOK_COLUMNS, "book", day)
        _check_frame(merged_trades, schema.TRADE_COLUMNS, "trades", day)
        out_inputs = _sorted_inputs([*base_inputs, *(inputs[k] for k in new_idx)])
        fp = inputs_fingerprint_of(out_inputs, fp_extra)
        res_kind = book_kind if b_new.height else old.get("book_kind") if old else None
        if mode == "rebuilt" and is_current(layout, symbol, day, fp):
            assert old is not None
            _prune(folder, old)
            return MergeResult(
                PublishResult(day, str(folder), False, old),
                "unchanged",
                merged_book.height,
                merged_trades.height,
                dups,
                tuple(sorted(run & held)),
            )
        body = _manifest_body(
            symbol,
            day,
            merged_book,
            merged_trades,
            instrument,
            source,
            out_inputs,
            fp,
            res_kind,
            extra_of(merged_book) if extra_of else None,
        )
        manifest = _write_partition(folder, old, merged_book, merged_trades, t_all[TRADE_ID], body)
        _prune(folder, manifest)
    return MergeResult(
        PublishResult(day, str(folder), True, manifest),
        mode,
        merged_book.height,
        merged_trades.height,
        dups,
        tuple(sorted(run & held)),
    )


def read_trade_ids(
    layout: DataLayout, symbol: str, day: str, m: PartitionManifest | None = None
) -> pl.Series:
    """The exchange trade ids of a published day, row for row with its trades (String;
    all null for a format 1 partition). Raises PartitionError on a sha256 mismatch."""
    m = m or read_manifest(layout, symbol, day)
    if m is None:
        raise FileNotFoundError(f"no published partition events/{symbol}/{day}")
    name = partition_files(m).get("trade_ids")
    if name is None:
        return pl.Series(TRADE_ID, [None] * int(m["rows"]["trades"]), dtype=pl.String)
    data = (layout.events_day(symbol, day) / name).read_bytes()
    if sha256_bytes(data) != m["outputs"][name]:
        raise PartitionError(f"events/{symbol}/{day}/{name} does not match its manifest sha256")
    return pl.read_parquet(io.BytesIO(data))[TRADE_ID]


def list_event_days(layout: DataLayout, symbol: str) -> list[str]:
    """Published days (a manifest exists), sorted."""
    root = layout.events_symbol(symbol)
    if not root.exists():
        return []
    return sorted(p.parent.name for p in root.glob(f"*/{MANIFEST_FILE}"))


def read_day(
    layout: DataLayout, symbol: str, day: str, verify: bool = True
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """One published day. Raises FileNotFoundError when absent, PartitionError when a
    file does not match its manifest sha256 (with verify)."""
    m = read_manifest(layout, symbol, day)
    if m is None:
        raise FileNotFoundError(f"no published partition events/{symbol}/{day}")
    folder = layout.events_day(symbol, day)
    files = partition_files(m)
    out = []
    for name in (files["book"], files["trades"]):
        data = (folder / name).read_bytes()
        if verify and sha256_bytes(data) != m["outputs"][name]:
            raise PartitionError(f"events/{symbol}/{day}/{name} does not match its manifest sha256")
        out.append(pl.read_parquet(io.BytesIO(data)))
    return out[0], out[1]


def read_events(
    layout: DataLayout, symbol: str, days: Sequence[str] | None = None, verify: bool = True
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Concatenated (book, trades) of the given (default: all published) days, in
    ts_recv order. Raises FileNotFoundError for a requested day that is absent."""
    days = list_event_days(layout, symbol) if days is None else sorted(days)
    books, trades = [empty_book()], [empty_trades()]
    for d in days:
        b, t = read_day(layout, symbol, d, verify=verify)
        books.append(b)
        trades.append(t)
    return pl.concat(books, how="vertical"), pl.concat(trades, how="vertical")
