"""Streaming ingest (#19): tardis files read in blocks give the same rows, counts and
reasons as one pass; a staged run spills each file by day and publishes the same
partitions; a short row is counted in and rejected before any symbol filter (#20)."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import polars as pl
import pytest

from bench.tardis_days import generate_days, write_day
from core.config.ingest import IngestConfig
from core.instrument import InstrumentSpec
from core.paths import DataLayout
from ingest import run as ingest_run
from ingest.events import list_event_days, read_day, read_manifest
from ingest.tardis import read_tardis
from tests.ingest_runs import run_ingest

XBT = InstrumentSpec()
INC_HEAD = "exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount\n"
TRADES_HEAD = "exchange,symbol,timestamp,local_timestamp,id,side,price,amount\n"
T = 1_626_912_000_000_000  # 2021-07-22 00:00 UTC in us


def _messy(path: Path) -> Path:
    """A generated tardis book day with bad lines spread through it: updates before
    the first snapshot, another symbol, a short row of another symbol, a long row,
    an off-tick price, a blank line."""
    lines = gzip.decompress(path.read_bytes()).decode().split("\n")
    head, body = lines[0], [x for x in lines[1:] if x]
    t0 = body[0].split(",")[3]
    bad = {
        0: [f"bitmex,XBTUSD,{t0},{t0},false,bid,100.0,5"],  # before the snapshot
        500: ["bitmex,ETHUSD,1,2,false,bid,7.5,3"],
        1500: ["bitmex,ETHUSD,1"],  # short, another symbol: rejected, not filtered
        2500: ["bitmex,XBTUSD,1,2,false,bid,7.5,3,9"],  # long
        3500: [f"bitmex,XBTUSD,{t0},{t0},false,bid,100.25,5"],  # off-tick
        4500: [""],  # blank
    }
    out = [head]
    for i, line in enumerate(body):
        out += bad.get(i, [])
        out.append(line)
    p = path.with_name("messy-" + path.name)
    p.write_bytes(gzip.compress(("\n".join(out) + "\n").encode()))
    return p


@pytest.fixture(scope="module")
def day_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tardis")
    (day,) = generate_days(1, "2021-07-22", seed=11, book_rows=8_000, trades=600)
    book, trades = write_day(day, folder)
    return _messy(book), trades


@pytest.mark.parametrize("block", [4096, 50_000, 1 << 27])
def test_blocks_give_the_rows_counts_and_reasons_of_one_pass(
    day_files: tuple[Path, Path], block: int
) -> None:
    for path in day_files:
        one = read_tardis(path, "XBTUSD", XBT, block_bytes=1 << 30)
        many = read_tardis(path, "XBTUSD", XBT, block_bytes=block)
        assert many.book.equals(one.book) and many.trades.equals(one.trades)
        assert (many.trade_ids is None) == (one.trade_ids is None)
        if one.trade_ids is not None:
            assert many.trade_ids is not None and many.trade_ids.equals(one.trade_ids)
        for attr in ("sha256", "rows_in", "rows_rejected", "rows_filtered", "book_kind"):
            assert getattr(many, attr) == getattr(one, attr), attr
        assert many.row_reasons == one.row_reasons
        assert many.filtered_reasons == one.filtered_reasons
        rows = [(r["reason"], r["row"]["line_no"]) for r in many.rejected_rows]
        assert rows == [(r["reason"], r["row"]["line_no"]) for r in one.rejected_rows]
    book = read_tardis(day_files[0], "XBTUSD", XBT, block_bytes=block)
    assert book.row_reasons == {
        "update before the first snapshot": 1,
        "malformed row: 3 fields, expected 8": 1,
        "malformed row: 9 fields, expected 8": 1,
        "off-tick price (tick 0.5)": 1,
    }
    assert book.filtered_reasons == {"row of another symbol": 1, "blank line": 1}


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("block", [7, 64, 1 << 20])
def test_raw_blocks_are_whole_lines_that_join_to_the_file(
    tmp_path: Path, gz: bool, block: int
) -> None:
    """Blocks end at a line end and join back to the text after the header line, for
    reads shorter than the header line, than a line, and longer than the file; a file
    without any line end is all header."""
    from ingest.rawfile import RawStream, iter_raw_blocks

    lines = [f"r{i},{'x' * (i % 23)}" for i in range(300)]
    for text in (INC_HEAD + "\n".join(lines) + "\n", INC_HEAD + "\n".join(lines), "no,newline"):
        p = tmp_path / ("f.csv.gz" if gz else "f.csv")
        p.write_bytes(gzip.compress(text.encode()) if gz else text.encode())
        stream = RawStream(str(p))
        blocks = list(iter_raw_blocks(p, stream, block))
        heads = {h for h, _ in blocks}
        body = b"".join(b for _, b in blocks)
        if "\n" in text:
            assert heads == {INC_HEAD.encode()}
            assert body == text.encode()[len(INC_HEAD) :]
            assert all(b.endswith(b"\n") for _, b in blocks[:-1])
            assert len(blocks) > 1 or block >= len(text)
        else:
            assert blocks == [(text.encode(), b"")]
        assert stream.sha256 == hashlib.sha256(p.read_bytes()).hexdigest()


def test_a_short_row_is_counted_and_rejected_before_the_symbol_filter(
    tmp_path: Path, prefect_harness: None
) -> None:
    p = tmp_path / "bitmex_incremental_book_L2_2021-07-22_XBTUSD.csv"
    p.write_text(
        INC_HEAD + f"bitmex,XBTUSD,{T + 10},{T + 11},true,bid,100.0,500\n"
        f"bitmex,XBTUSD,{T + 10},{T + 11},true,ask,100.5,300\n"
        f"bitmex,ETHUSD,{T + 12}\n"  # short: 3 fields of another symbol
        f"bitmex,XBTUSD,{T + 20},{T + 21},false,ask,101.0,100\n"
    )
    fr = read_tardis(p, "XBTUSD", XBT)
    assert fr.rows_in == 4 and fr.rows_out == 3 and fr.rows_filtered == 0
    assert fr.row_reasons == {"malformed row: 3 fields, expected 8": 1}
    report = run_ingest(IngestConfig(source="tardis", paths=(str(p),)), tmp_path / "data")
    assert report.rows_in == 4 and report.rows_rejected == 1 and report.rows_filtered == 0
    assert [(q.level, q.reason, q.rows) for q in report.quarantine] == [
        ("row", "malformed row: 3 fields, expected 8", 1)
    ]
    assert report.events_out == {"book": 3, "trades": 0}


def test_staged_run_publishes_what_whole_files_would(
    tmp_path: Path,
    day_files: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    prefect_harness: None,
) -> None:
    """Blocks of 4 KiB spilled by day give byte-identical partitions and the same
    report as reading each file in one block."""
    paths = tuple(str(p) for p in day_files)
    cfg = IngestConfig(source="tardis", paths=paths)
    outs = []
    for block in (1 << 30, 4096):
        monkeypatch.setattr(ingest_run, "READ_BLOCK_BYTES", block)
        layout = DataLayout(tmp_path / f"data-{block}")
        report = run_ingest(cfg, layout.root)
        days = list_event_days(layout, "XBTUSD")
        frames = [read_day(layout, "XBTUSD", d) for d in days]
        manifests = [read_manifest(layout, "XBTUSD", d) for d in days]
        for m in manifests:
            assert m is not None
            m.pop("inputs")  # the data folder's paths are the same files here
        dump = report.model_dump()
        for q in dump["quarantine"]:
            q.pop("where")  # the data folder's quarantine
        outs.append((dump, days, frames, manifests))
    (r1, d1, f1, m1), (r2, d2, f2, m2) = outs
    assert d1 == d2 == ["2021-07-22"] and m1 == m2 and r1 == r2
    for (b1, t1), (b2, t2) in zip(f1, f2, strict=True):
        assert b1.equals(b2) and t1.equals(t2)
    assert r1["rows_in"] == sum(
        len(gzip.decompress(p.read_bytes()).splitlines()) - 1 for p in day_files
    )
    assert isinstance(f1[0][0], pl.DataFrame) and f1[0][0].height > 7_000


def test_a_day_opens_with_the_book_of_the_day_before_only_when_that_book_is_known(
    tmp_path: Path,
) -> None:
    """Staging replays the day before only for a day that does not open with a snapshot
    (`book_at_end`); its book is carried only when that day holds a snapshot row (its own
    or one carried into it), and is good."""
    from core.clock import parse_day
    from ingest.events import BOUNDARY_INPUT, INPUT, book_schema

    t0 = parse_day("2021-07-22")
    t1 = parse_day("2021-07-23")
    staged = pl.Schema({**book_schema(), INPUT: pl.Int32()})

    def frame(rows: list[tuple[int, int, int, int, bool]]) -> pl.DataFrame:
        data = [(ts, ts, s, p, q, snap, 0) for ts, s, p, q, snap in rows]
        return pl.DataFrame(data, schema=staged, orient="row")

    known = frame(
        [(t0 + 5, 1, 200, 5, True), (t0 + 5, -1, 201, 3, True), (t0 + 9, 1, 199, 7, False)]
    )
    unknown = frame([(t0 + 9, 1, 199, 7, False), (t0 + 9, -1, 202, 2, False)])
    desynced = frame(
        [(t0 + 5, 1, 200, 5, True), (t0 + 5, -1, 201, 3, True), (t0 + 9, -1, 300, 0, False)]
    )
    next_day = frame([(t1 + 7, 1, 200, 6, False)])
    next_snap = frame([(t1 + 7, 1, 100, 1, True), (t1 + 7, -1, 101, 1, True)])
    for name, df in (("known", known), ("unknown", unknown), ("desynced", desynced)):
        df.write_parquet(tmp_path / f"{name}.parquet")
    book = ingest_run.book_at_end(tmp_path / "known.parquet")
    assert book is not None and book.levels(1) == [(200, 5), (199, 7)]
    out = ingest_run.with_boundary_snapshot(book, next_day, t1)
    head = out.head(3)
    assert head.select("side", "price_ticks", "size").rows() == [
        (1, 200, 5),
        (1, 199, 7),
        (-1, 201, 3),
    ]
    assert head["is_snapshot"].all() and (head["ts_recv"] == t1).all()
    assert (head[INPUT] == BOUNDARY_INPUT).all() and out.tail(1).equals(next_day)
    assert ingest_run.with_boundary_snapshot(book, next_snap, t1).equals(next_snap)
    assert ingest_run.book_at_end(tmp_path / "unknown.parquet") is None
    assert ingest_run.with_boundary_snapshot(None, next_day, t1).equals(next_day)
    bad = ingest_run.book_at_end(tmp_path / "desynced.parquet")  # delete of an unknown level
    assert bad is not None and ingest_run.with_boundary_snapshot(bad, next_day, t1).equals(next_day)
