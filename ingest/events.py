"""Canonical event partitions on disk (adapter): ``events/<symbol>/<day>/``.

``book.parquet`` and ``trades.parquet`` are published atomically (`core.atomic`),
then ``manifest.json`` last. A partition is *current* when its manifest exists, its
input fingerprint and code version match, and the files hash to the recorded sha256:
re-publishing a current partition does no work and changes no byte. Publishing holds
an exclusive ``flock`` on ``<day>/.lock`` so two concurrent runs on the same partition
serialise instead of interleaving files. Manifests hold no wall-clock time, so the
same inputs always give the same manifest bytes (features hash them).
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import polars as pl

from core import schema
from core.atomic import write_bytes_atomic, write_json_atomic
from core.clock import NS_PER_DAY, parse_day
from core.hashing import fingerprint, sha256_bytes, sha256_file
from core.instrument import InstrumentSpec
from core.paths import DataLayout

BOOK_FILE = "book.parquet"
TRADES_FILE = "trades.parquet"
MANIFEST_FILE = "manifest.json"
MANIFEST_VERSION = 1


class PartitionError(ValueError):
    """Frames that do not satisfy the canonical event contract, or a damaged partition."""


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
def code_version() -> str:
    """sha256 over the source of the modules that decide partition content."""
    root = Path(__file__).resolve().parents[1]
    files = sorted((root / "ingest").glob("*.py")) + [
        root / "features" / "book.py",
        root / "core" / "schema.py",
    ]
    return fingerprint({str(p.relative_to(root)): sha256_file(p) for p in files if p.exists()})[:16]


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


def _parquet_bytes(df: pl.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.write_parquet(buf, compression="zstd", compression_level=3, statistics=True)
    return buf.getvalue()


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
    manifest: dict[str, Any]


def read_manifest(layout: DataLayout, symbol: str, day: str) -> dict[str, Any] | None:
    """The partition manifest, or None when the partition is absent/unpublished."""
    p = layout.events_day(symbol, day) / MANIFEST_FILE
    if not p.exists():
        return None
    return dict(json.loads(p.read_text()))


def manifest_sha256(layout: DataLayout, symbol: str, day: str) -> str:
    """sha256 of a partition's manifest bytes (what slice manifests record)."""
    return sha256_file(layout.events_day(symbol, day) / MANIFEST_FILE)


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
    if not verify:
        return True
    folder = layout.events_day(symbol, day)
    try:
        return all(sha256_file(folder / name) == sha for name, sha in m["outputs"].items())
    except OSError:
        return False


def inputs_fingerprint_of(inputs: Sequence[dict[str, Any]], extra: Any = None) -> str:
    return fingerprint(
        {
            "inputs": sorted(inputs, key=lambda d: (d.get("path", ""), d.get("sha256", ""))),
            "extra": extra,
        }
    )


def publish_partition(
    layout: DataLayout,
    symbol: str,
    day: str,
    book: pl.DataFrame,
    trades: pl.DataFrame,
    instrument: InstrumentSpec,
    source: str,
    inputs: Sequence[dict[str, Any]],
    extra: dict[str, Any] | None = None,
) -> PublishResult:
    """Publish one day partition atomically; manifest last.

    `inputs`: ``[{"path", "sha256"}]`` of the raw inputs (or a config fingerprint for
    generated data). `extra` is recorded in the manifest (e.g. desync counts).
    Raises PartitionError when a frame breaks the canonical contract.
    """
    _check_frame(book, schema.BOOK_COLUMNS, "book", day)
    _check_frame(trades, schema.TRADE_COLUMNS, "trades", day)
    fp = inputs_fingerprint_of(
        inputs,
        {"source": source, "symbol": symbol, "instrument": instrument.model_dump(mode="json")},
    )
    folder = layout.events_day(symbol, day)
    with partition_lock(folder):
        if is_current(layout, symbol, day, fp):
            m = read_manifest(layout, symbol, day)
            assert m is not None
            return PublishResult(day, str(folder), False, m)
        book_b = _parquet_bytes(book)
        trades_b = _parquet_bytes(trades)
        ts_all = [
            int(x)  # type: ignore[arg-type]
            for df in (book, trades)
            if df.height
            for x in (df[schema.TS_RECV].min(), df[schema.TS_RECV].max())
        ]  # type: ignore[arg-type]
        manifest = {
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
            "inputs": sorted(inputs, key=lambda d: (d.get("path", ""), d.get("sha256", ""))),
            "inputs_fingerprint": fp,
            "outputs": {BOOK_FILE: sha256_bytes(book_b), TRADES_FILE: sha256_bytes(trades_b)},
            "columns": {"book": list(schema.BOOK_COLUMNS), "trades": list(schema.TRADE_COLUMNS)},
            "code_version": code_version(),
            "extra": extra or {},
        }
        # never leave an old manifest pointing at new files: remove it first
        (folder / MANIFEST_FILE).unlink(missing_ok=True)
        write_bytes_atomic(folder / BOOK_FILE, book_b)
        write_bytes_atomic(folder / TRADES_FILE, trades_b)
        write_json_atomic(folder / MANIFEST_FILE, manifest)
    return PublishResult(day, str(folder), True, manifest)


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
    out = []
    for name in (BOOK_FILE, TRADES_FILE):
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
