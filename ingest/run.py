"""Ingest orchestration without Prefect: read a source, stage per day, publish, report.

The steps are separate functions so the Prefect flow (`flows/ingest.py`) can wrap each
one as a task: `stage_source` (read every raw file, quarantine the bad ones, write
one staged Parquet pair per day) then `publish_staged_day` per day, then
`build_report`. `ingest` runs the three in sequence.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import polars as pl

from core import schema
from core.atomic import write_json_atomic, write_with_atomic
from core.clock import NS_PER_DAY, iso_day, parse_day
from core.config.ingest import IngestConfig
from core.hashing import fingerprint, sha256_bytes
from core.paths import DataLayout
from features.book import OrderBook, check_book
from ingest.events import (
    book_schema,
    empty_book,
    empty_trades,
    inputs_fingerprint_of,
    is_current,
    publish_partition,
    trade_schema,
)
from ingest.report import FileRead, IngestReport, QuarantineEntry, set_aside_poorer_books

STAGED_INDEX = "staged.json"


# ------------------------------------------------------------------ reading
def _synthetic_reads(
    cfg: IngestConfig, layout: DataLayout
) -> tuple[list[FileRead], dict[str, list[dict[str, Any]]], list[str]]:
    """Generate the synthetic market unless every day is already published from it."""
    from ingest.synthetic import generate_market

    syn = cfg.synthetic
    inputs = [{"path": "synthetic", "sha256": fingerprint(syn)}]
    days = [iso_day(parse_day(syn.start_day) + d * NS_PER_DAY) for d in range(syn.days)]
    fp = inputs_fingerprint_of(
        inputs,
        {
            "source": "synthetic",
            "symbol": cfg.symbol,
            "instrument": cfg.instrument.model_dump(mode="json"),
        },
    )
    if all(is_current(layout, cfg.symbol, d, fp) for d in days):
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


def stage_source(
    cfg: IngestConfig,
    data_dir: str,
    staging_dir: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Read the source, quarantine bad input, write staged per-day Parquet.

    `progress` shows a tqdm bar over the raw files (stderr; TQDM_DISABLE turns it off).

    Returns a JSON-able index: ``{"days": {day: {"book", "trades", "inputs"}},
    "current": [days already published from these inputs], "files": [...], "quarantine": [...]}``.
    """
    layout = DataLayout(Path(data_dir))
    if staging_dir:
        stage = Path(staging_dir)
        stage.mkdir(parents=True, exist_ok=True)
    else:
        (layout.root / "staging").mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix="ingest-", dir=layout.root / "staging"))
    if cfg.source == "synthetic":
        reads, day_inputs, current = _synthetic_reads(cfg, layout)
    else:
        from tqdm import tqdm

        from ingest.sources import read_source_file

        files = expand_paths(cfg.paths)
        reads, current = [], []
        for p in tqdm(
            files, desc=f"ingest {cfg.source}", unit="file", disable=not progress or None
        ):
            reads.append(read_source_file(cfg.source, p, cfg.symbol, cfg.instrument))
        day_inputs = {}
    quarantine: list[dict[str, Any]] = []
    books: dict[str, list[pl.DataFrame]] = {}
    trades: dict[str, list[pl.DataFrame]] = {}
    set_aside_poorer_books(reads)
    for fr in reads:
        quarantine += [q.model_dump() for q in quarantine_file_read(layout, cfg.source, fr)]
        if not fr.ok:
            continue
        for day, part in _split_days(fr.book).items():
            books.setdefault(day, []).append(part)
            if fr.sha256:
                day_inputs.setdefault(day, []).append(
                    {"path": str(Path(fr.path).resolve()), "sha256": fr.sha256}
                )
        for day, part in _split_days(fr.trades).items():
            trades.setdefault(day, []).append(part)
            if fr.sha256:
                day_inputs.setdefault(day, []).append(
                    {"path": str(Path(fr.path).resolve()), "sha256": fr.sha256}
                )
    days: dict[str, dict[str, Any]] = {}
    running = OrderBook()  # the book across day boundaries of this run's input
    for day in sorted(set(books) | set(trades)):
        b = (
            pl.concat([empty_book(), *books.get(day, [])])
            .sort(schema.TS_RECV, maintain_order=True)
            .cast(book_schema())
        )  # type: ignore[arg-type]
        b = with_boundary_snapshot(running, b, parse_day(day))
        running.replay(*(b[c].to_numpy() for c in BOOK_REPLAY_COLUMNS))
        t = (
            pl.concat([empty_trades(), *trades.get(day, [])])
            .sort(schema.TS_RECV, maintain_order=True)
            .cast(trade_schema())
        )  # type: ignore[arg-type]
        bp, tp = stage / f"{day}.book.parquet", stage / f"{day}.trades.parquet"
        write_with_atomic(bp, b.write_parquet)
        write_with_atomic(tp, t.write_parquet)
        uniq = {(i["path"], i["sha256"]): i for i in day_inputs.get(day, [])}
        days[day] = {"book": str(bp), "trades": str(tp), "inputs": list(uniq.values())}
    file_rows = [
        {
            "path": fr.path,
            "sha256": fr.sha256,
            "ok": fr.ok,
            "rows_in": fr.rows_in,
            "rows_rejected": fr.rows_rejected,
            "is_file": not fr.path.startswith("synthetic:"),
        }
        for fr in reads
    ]
    index = {
        "staging_dir": str(stage),
        "source": cfg.source,
        "symbol": cfg.symbol,
        "days": days,
        "current": current,
        "files": file_rows,
        "quarantine": quarantine,
    }
    write_json_atomic(stage / STAGED_INDEX, index)
    return index


BOOK_REPLAY_COLUMNS = (
    schema.TS_RECV,
    schema.SIDE,
    schema.PRICE_TICKS,
    schema.SIZE,
    schema.IS_SNAPSHOT,
)


def with_boundary_snapshot(
    running: OrderBook, day_book: pl.DataFrame, day_start_ns: int
) -> pl.DataFrame:
    """Make a day partition self-contained: when the day does not open with a snapshot
    but the same input carried a good book across midnight, prepend that book as
    snapshot rows at 00:00 (ts_event = ts_recv = day start). Replaying the days in a row
    gives the same book; replaying the day alone no longer starts from nothing. Pure
    apart from reading `running`."""
    if day_book.height and bool(day_book[schema.IS_SNAPSHOT][0]):
        return day_book
    if not running.is_ok:
        return day_book
    rows = [
        (day_start_ns, day_start_ns, s, p, q, True) for s in (1, -1) for p, q in running.levels(s)
    ]
    snap = pl.DataFrame(rows, schema=book_schema(), orient="row")
    return pl.concat([snap, day_book])


def publish_staged_day(
    cfg: IngestConfig, data_dir: str, day: str, staged: dict[str, Any]
) -> dict[str, Any]:
    """Check one staged day through the order book and publish it as a partition."""
    layout = DataLayout(Path(data_dir))
    book = pl.read_parquet(staged["book"])
    trades = pl.read_parquet(staged["trades"])
    chk = check_book(
        *(
            book[c].to_numpy()
            for c in (
                schema.TS_RECV,
                schema.SIDE,
                schema.PRICE_TICKS,
                schema.SIZE,
                schema.IS_SNAPSHOT,
            )
        )
    )
    extra = {
        "book_check": {
            "messages": chk.n_messages,
            "snapshots": chk.n_snapshots,
            "unknown_level": chk.n_unknown_level,
            "crossed": chk.n_crossed,
            "bad_size": chk.n_bad_size,
            "first_desync_row": chk.first_desync_row,
        }
    }
    res = publish_partition(
        layout, cfg.symbol, day, book, trades, cfg.instrument, cfg.source, staged["inputs"], extra
    )
    return {
        "day": day,
        "written": res.written,
        "path": res.path,
        "book_rows": book.height,
        "trades_rows": trades.height,
        "desyncs": chk.n_desyncs,
    }


def build_report(
    cfg: IngestConfig, index: dict[str, Any], published: list[dict[str, Any]]
) -> IngestReport:
    """The run report; raises ValueError when a balance equation does not hold."""
    files = [f for f in index["files"] if f["is_file"]]
    quarantine = [QuarantineEntry(**q) for q in index["quarantine"]]
    reasons: Counter[str] = Counter()
    for q in quarantine:
        reasons[q.reason] += q.rows if q.level == "row" else 1
    rows_in = sum(f["rows_in"] for f in index["files"])
    rows_rejected = sum(f["rows_rejected"] for f in index["files"])
    return IngestReport(
        source=cfg.source,
        symbol=cfg.symbol,
        files_in=len(files),
        files_ok=sum(1 for f in files if f["ok"]),
        files_quarantined=sum(1 for f in files if not f["ok"]),
        rows_in=rows_in,
        rows_out=rows_in - rows_rejected,
        rows_rejected=rows_rejected,
        events_out={
            "book": sum(p["book_rows"] for p in published),
            "trades": sum(p["trades_rows"] for p in published),
        },
        partitions_written=sorted(p["day"] for p in published if p["written"]),
        partitions_unchanged=sorted(
            [p["day"] for p in published if not p["written"]] + list(index["current"])
        ),
        desyncs={p["day"]: p["desyncs"] for p in published if p["desyncs"]},
        quarantine=quarantine,
        reasons=dict(sorted(reasons.items())),
    )


def ingest(cfg: IngestConfig, layout: DataLayout, progress: bool = False) -> IngestReport:
    """Read `cfg.source`, quarantine bad input, publish every day; return the report.

    Never raises for bad input (it is quarantined and counted); raises only when the
    run itself cannot proceed (unknown source, unwritable data folder).
    """
    index = stage_source(cfg, str(layout.root), progress=progress)
    published = [
        publish_staged_day(cfg, str(layout.root), day, staged)
        for day, staged in sorted(index["days"].items())
    ]
    report = build_report(cfg, index, published)
    shutil.rmtree(index["staging_dir"], ignore_errors=True)
    return report


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


def staged_files_exist(index: dict[str, Any]) -> bool:
    """True when every staged Parquet file of `index` is still on disk."""
    return all(Path(s[k]).exists() for s in index["days"].values() for k in ("book", "trades"))


def report_table(report: IngestReport) -> list[dict[str, Any]]:
    """Rows of the run-summary table (Prefect artifact, CLI)."""
    rows: list[dict[str, Any]] = [
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
    import time

    root = Path(data_dir) / "staging" / "ingest"
    removed = []
    if root.exists():
        for d in root.iterdir():
            if d.is_dir() and d.name != keep and time.time() - d.stat().st_mtime >= min_age_s:
                shutil.rmtree(d, ignore_errors=True)
                removed.append(d.name)
    return sorted(removed)
