"""tardis and BitMEX dump readers, instrument specs, and the corrupt-file corpus."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import polars as pl
import pytest

from core.config.ingest import IngestConfig
from core.instrument import InstrumentSpec
from core.paths import DataLayout
from ingest.bitmex_dump import read_bitmex_dump
from ingest.events import list_event_days, read_events
from ingest.instruments import load_instrument
from ingest.tardis import read_tardis
from tests.ingest_runs import run_ingest

XBT = InstrumentSpec()
INC_HEAD = "exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount\n"
TRADES_HEAD = "exchange,symbol,timestamp,local_timestamp,id,side,price,amount\n"
DUMP_TRADE_HEAD = "timestamp,symbol,side,size,price,tickDirection,trdMatchID,grossValue,homeNotional,foreignNotional\n"
DUMP_QUOTE_HEAD = "timestamp,symbol,bidSize,bidPrice,askPrice,askSize\n"
T = 1_626_912_000_000_000  # 2021-07-22 00:00 UTC in us


def _inc_rows() -> str:
    return (
        f"bitmex,XBTUSD,{T + 1},{T + 2},false,bid,100.0,5\n"  # before snapshot: dropped
        f"bitmex,XBTUSD,{T + 10},{T + 11},true,bid,100.0,500\n"
        f"bitmex,XBTUSD,{T + 10},{T + 11},true,ask,100.5,300\n"
        f"bitmex,ETHUSD,{T + 10},{T + 11},true,ask,7.5,300\n"  # other symbol: ignored
        f"bitmex,XBTUSD,{T + 20},{T + 21},false,ask,100.5,0\n"
        f"bitmex,XBTUSD,{T + 20},{T + 21},false,ask,101.0,100\n"
    )


def test_tardis_incremental_drops_pre_snapshot_updates_and_converts_units(tmp_path: Path) -> None:
    p = tmp_path / "inc.csv.gz"
    p.write_bytes(gzip.compress((INC_HEAD + _inc_rows()).encode()))
    fr = read_tardis(p, "XBTUSD", XBT)
    assert fr.ok and fr.rows_in == 6 and fr.rows_rejected == 1 and fr.rows_filtered == 1
    assert fr.row_reasons == {"update before the first snapshot": 1}
    assert (
        fr.book["ts_event"].to_list()[0] == (T + 10) * 1000
        and fr.book["ts_recv"].to_list()[0] == (T + 11) * 1000
    )
    assert fr.book.select("side", "price_ticks", "size", "is_snapshot").rows() == [
        (1, 200, 500, True),
        (-1, 201, 300, True),
        (-1, 201, 0, False),
        (-1, 202, 100, False),
    ]
    assert fr.sha256 == hashlib.sha256(p.read_bytes()).hexdigest()


def test_tardis_book_snapshot_25_becomes_deltas(tmp_path: Path) -> None:
    head = "exchange,symbol,timestamp,local_timestamp," + ",".join(
        f"asks[{i}].price,asks[{i}].amount,bids[{i}].price,bids[{i}].amount" for i in range(25)
    )
    lvl = lambda a, b: ",".join(f"{a + i * 0.5},{10 + i},{b - i * 0.5},{20 + i}" for i in range(25))  # noqa: E731
    rows = [
        f"bitmex,XBTUSD,{T},{T + 1},{lvl(100.5, 100.0)}",
        f"bitmex,XBTUSD,{T + 5},{T + 6},{lvl(101.0, 100.5)}",
    ]
    p = tmp_path / "snap.csv"
    p.write_text(head + "\n" + "\n".join(rows) + "\n")
    fr = read_tardis(p, "XBTUSD", XBT)
    snap = fr.book.filter(pl.col("is_snapshot"))
    assert fr.ok and snap.height == 50
    upd = fr.book.filter(~pl.col("is_snapshot"))
    # the whole book moved up one tick: every level changes size or appears/disappears
    assert upd.filter(pl.col("size") == 0).height == 2  # ask 100.5 and bid 88.0 left the top 25
    assert upd.filter(pl.col("side") == 1).sort("price_ticks")["price_ticks"].to_list()[-1] == 201


def test_tardis_trades_and_quotes(tmp_path: Path) -> None:
    p = tmp_path / "trades.csv"
    p.write_text(
        TRADES_HEAD
        + f"bitmex,XBTUSD,{T},{T + 1},a,buy,100.5,100\nbitmex,XBTUSD,{T},{T + 1},b,unknown,100.5,100\n"
    )
    fr = read_tardis(p, "XBTUSD", XBT)
    assert fr.trades.rows() == [(T * 1000, (T + 1) * 1000, 1, 201, 100)] and fr.rows_rejected == 1
    q = tmp_path / "quotes.csv"
    q.write_text(
        "exchange,symbol,timestamp,local_timestamp,ask_amount,ask_price,bid_price,bid_amount\n"
        + f"bitmex,XBTUSD,{T},{T + 1},10,100.5,100,5\n"
    )
    assert read_tardis(q, "XBTUSD", XBT).book.select("side", "price_ticks", "size").rows() == [
        (1, 200, 5),
        (-1, 201, 10),
    ]


def test_bitmex_dump_trades_and_quotes_with_symbol_filter(tmp_path: Path) -> None:
    p = tmp_path / "20190101.csv.gz"
    body = (
        "2019-01-01D00:00:03.367608000,XBTUSD,Buy,100,3700.5,PlusTick,a,1,0.1,100\n"
        "2019-01-01D00:00:04.000000000,.BXBT,Buy,0,3700.33,PlusTick,b,0,0,0\n"
        "2019-01-01D00:00:05.000000000,XBTUSD,Sell,30,3700.25,MinusTick,c,1,0.1,30\n"
    )
    p.write_bytes(gzip.compress((DUMP_TRADE_HEAD + body).encode()))
    fr = read_bitmex_dump(p, "XBTUSD", XBT)
    assert (
        fr.rows_in == 3
        and fr.rows_filtered == 1
        and fr.trades.rows() == [(1546300803367608000, 1546300803367608000, 1, 7401, 100)]
    )
    assert list(fr.row_reasons) == ["off-tick price (tick 0.5)"]
    q = tmp_path / "quote.csv.gz"
    q.write_bytes(
        gzip.compress(
            (
                DUMP_QUOTE_HEAD
                + "2019-01-01D00:00:03.367608000,XBTUSD,100,3700,3700.5,200\n2019-01-01D00:00:04.0,XBTUSD,100,3700.5,3701,200\n"
            ).encode()
        )
    )
    book = read_bitmex_dump(q, "XBTUSD", XBT).book
    assert book.select("side", "price_ticks", "size", "is_snapshot").rows() == [
        (1, 7400, 100, True),
        (-1, 7401, 200, True),
        (1, 7400, 0, False),
        (1, 7401, 100, False),
        (-1, 7401, 0, False),
        (-1, 7402, 200, False),
    ]


def test_instrument_from_bitmex_json_and_config(instruments_json: Path, tmp_path: Path) -> None:
    spec = load_instrument(instruments_json, "XBTUSD")
    assert (
        spec.tick_size,
        spec.lot_size,
        spec.is_inverse,
        spec.maker_fee,
        spec.taker_fee,
        spec.funding_interval_hours,
    ) == (0.5, 100, True, -0.00025, 0.00075, 8.0)
    cfg = tmp_path / "inst.yaml"
    cfg.write_text("instrument: {symbol: XBTUSD, tick_size: 1.0, lot_size: 1}\n")
    assert load_instrument(cfg, "XBTUSD").tick_size == 1.0
    with pytest.raises(ValueError, match="not found"):
        load_instrument(instruments_json, "NOPE")


# ------------------------------------------------------------------ corrupt corpus
def _corpus(folder: Path) -> dict[str, str]:
    """name -> expected reason fragment (file level)."""
    good = INC_HEAD + _inc_rows()
    files = {
        "good.csv": (good.encode(), None),
        "truncated.csv.gz": (gzip.compress(good.encode() * 50)[:-40], "truncated or corrupt gzip"),
        "wrong_header.csv": (b"a,b,c\n1,2,3\n", "wrong header"),
        "empty.csv": (b"", "empty file"),
        "header_only.csv": (INC_HEAD.encode(), "no rows for symbol"),
        "other_symbol.csv": (
            (INC_HEAD + f"bitmex,ETHUSD,{T},{T},true,bid,1,1\n").encode(),
            "no rows for symbol",
        ),
        "all_bad.csv": (
            (INC_HEAD + f"bitmex,XBTUSD,{T},{T},true,bid,100.25,1\nbitmex,XBTUSD,x,y\n").encode(),
            "no valid rows",
        ),
        "not_gzip.csv.gz": (good.encode(), "not gzip"),
    }
    for name, (data, _) in files.items():
        (folder / name).write_bytes(data)
    return {n: r for n, (_, r) in files.items() if r}


def test_corrupt_corpus_is_quarantined_with_reasons_and_balances(
    tmp_path: Path, prefect_harness: None
) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    expected = _corpus(raw)
    before = {p.name: p.read_bytes() for p in raw.iterdir()}
    layout = DataLayout(tmp_path / "data")
    rep = run_ingest(IngestConfig(source="tardis", paths=(str(raw),)), layout.root)
    assert rep.files_in == 8 and rep.files_ok == 1 and rep.files_quarantined == 7
    assert rep.rows_in == rep.rows_out + rep.rows_rejected + rep.rows_filtered
    by_file = {Path(q.path).name: q.reason for q in rep.quarantine if q.level == "file"}
    assert set(by_file) == set(expected)
    for name, frag in expected.items():
        assert frag in by_file[name], (name, by_file[name])
    assert {p.name: p.read_bytes() for p in raw.iterdir()} == before  # raw input untouched
    qdirs = list((layout.quarantine("tardis")).iterdir())
    reasons = [json.loads((d / "reason.json").read_text()) for d in qdirs]
    assert any(r["file_reason"] and "truncated" in r["file_reason"] for r in reasons)
    assert any((d / "truncated.csv.gz").exists() for d in qdirs)  # a copy, the raw stays
    assert list_event_days(layout, "XBTUSD") == ["2021-07-22"]
    book, _ = read_events(layout, "XBTUSD")
    assert book.height == 4


def test_malformed_rows_are_rejected_with_row_reasons_and_the_rest_kept(
    tmp_path: Path, prefect_harness: None
) -> None:
    p = tmp_path / "rows.csv"
    p.write_text(
        INC_HEAD
        + _inc_rows()
        + f"bitmex,XBTUSD,{T + 30},{T + 31},false,ask,101.25,100\n"  # off tick
        + f"bitmex,XBTUSD,{T + 30},{T + 31},false,ask,101.0,100,extra\n"  # ragged
        + f"bitmex,XBTUSD,{T + 30},{T + 31},false,up,101.0,100\n"  # bad side
        + f"bitmex,XBTUSD,{T + 30},{T + 31},false,ask,101.0,1.5\n"  # fractional size
        + f"bitmex,XBTUSD,never,{T + 31},false,ask,101.0,1\n"  # bad timestamp
    )
    rep = run_ingest(IngestConfig(source="tardis", paths=(str(p),)), tmp_path / "d")
    assert rep.files_ok == 1 and rep.rows_in == 11 and rep.rows_rejected == 6 and rep.rows_out == 4
    assert rep.rows_filtered == 1 and rep.filtered == {"row of another symbol": 1}
    assert {q.level for q in rep.quarantine} == {"row"}
    assert len(rep.reasons) == 6


def test_typed_fast_path_and_line_path_agree_on_good_rows(tmp_path: Path) -> None:
    clean = tmp_path / "clean.csv"
    clean.write_text(INC_HEAD + _inc_rows())
    dirty = tmp_path / "dirty.csv"
    dirty.write_text(
        INC_HEAD + _inc_rows() + f"bitmex,XBTUSD,{T + 30},{T + 31},false,ask,101.0,1,ragged\n"
    )
    a, b = read_tardis(clean, "XBTUSD", XBT), read_tardis(dirty, "XBTUSD", XBT)
    assert a.book.equals(b.book) and a.row_reasons == {"update before the first snapshot": 1}
    assert b.row_reasons == {
        "update before the first snapshot": 1,
        "malformed row: 9 fields, expected 8": 1,
    }
    assert b.rejected_rows[-1]["row"]["line_no"] == 8


@pytest.mark.parametrize("blank", ["", "   ", "\t\r", "\r"])
def test_a_blank_line_in_a_clean_file_is_counted_as_filtered(tmp_path: Path, blank: str) -> None:
    """The typed path looks for blank lines only when its parse left a last field null:
    a blank or white-space line (first, middle or last) still leaves the fast path and
    is counted, and the other rows are the clean file's."""
    from ingest.csvtable import read_typed

    clean = tmp_path / "clean.csv"
    clean.write_text(INC_HEAD + _inc_rows())
    lines = _inc_rows().splitlines(keepends=True)
    for at in (0, 3, len(lines)):
        p = tmp_path / f"blank{at}.csv"
        p.write_text(INC_HEAD + "".join([*lines[:at], blank + "\n", *lines[at:]]))
        data = p.read_bytes()
        assert read_typed(data, INC_HEAD.strip().split(","), {}) is None
        a, b = read_tardis(clean, "XBTUSD", XBT), read_tardis(p, "XBTUSD", XBT)
        assert b.filtered_reasons == {**a.filtered_reasons, "blank line": 1}
        assert b.rows_in == a.rows_in + 1 and b.book.equals(a.book)
    assert read_typed(clean.read_bytes(), INC_HEAD.strip().split(","), {}) is not None


def test_ws_and_dump_corrupt_files_are_quarantined_with_reasons(
    tmp_path: Path, ws_capture: Path
) -> None:
    from ingest.ws_recording import read_ws_recording

    good = ws_capture.read_bytes()
    cases = {
        "empty.txt": (b"", "empty file"),
        "trunc.txt.gz": (gzip.compress(good)[:-100], "truncated or corrupt gzip"),
        "garbage.txt": (b"hello\nworld\n", "no parseable websocket messages"),
        "eth_only.txt": (
            b'1626993368.1: {"table":"trade","action":"insert","data":[{"symbol":"ETHUSD","side":"Buy","size":1,"price":1,"timestamp":"2021-07-22T00:00:00Z"}]}\n',
            "no rows for symbol",
        ),
    }
    for name, (data, frag) in cases.items():
        (tmp_path / name).write_bytes(data)
        fr = read_ws_recording(tmp_path / name, "XBTUSD", XBT)
        assert not fr.ok and frag in str(fr.file_reason), (name, fr.file_reason)
        assert fr.rows_in == fr.rows_rejected + fr.rows_filtered
    lines = good.decode().splitlines()
    (tmp_path / "some_bad_lines.txt").write_text(
        "\n".join([*lines[:200], "oops not a line", "17: {broken", *lines[200:]]) + "\n"
    )
    fr = read_ws_recording(tmp_path / "some_bad_lines.txt", "XBTUSD", XBT)
    assert (
        fr.ok and sum(n for r, n in fr.row_reasons.items() if r.startswith("malformed line")) == 2
    )
    dump = tmp_path / "trade.csv.gz"
    dump.write_bytes(
        gzip.compress(
            (
                DUMP_TRADE_HEAD + "2019-01-01D00:00:03.3,.BXBT,Buy,0,3700.33,PlusTick,a,0,0,0\n"
            ).encode()
        )
    )
    assert "no rows for symbol" in str(read_bitmex_dump(dump, "XBTUSD", XBT).file_reason)
    hdr = tmp_path / "quote.csv"
    hdr.write_text("timestamp,symbol,bid,ask\n")
    assert "wrong header" in str(read_bitmex_dump(hdr, "XBTUSD", XBT).file_reason)


@pytest.mark.parametrize("chunk", [7, 64, 1 << 20])
@pytest.mark.parametrize("gz", [False, True])
def test_read_symbol_lines_streams_and_keeps_only_the_symbol(
    tmp_path: Path, chunk: int, gz: bool
) -> None:
    from ingest.rawfile import RawFileError, read_symbol_lines

    rows = [
        f"2019-01-01D00:00:{i:02d}.000000000,{sym},Buy,{i + 1},3700.5,PlusTick,x,1,0.1,1"
        for i, sym in enumerate(["XBTUSD", ".BXBT", "XBTUSDX", "XBTUSD", "ETHUSD"] * 5)
    ]
    text = (DUMP_TRADE_HEAD + "\n".join(rows)).encode()  # no final newline on purpose
    p = tmp_path / ("d.csv.gz" if gz else "d.csv")
    p.write_bytes(
        gzip.compress(text[:40]) + gzip.compress(text[40:]) if gz else text
    )  # two gzip members
    data, digest = read_symbol_lines(p, "XBTUSD", chunk=chunk)
    assert digest == hashlib.sha256(p.read_bytes()).hexdigest()
    want = DUMP_TRADE_HEAD + "".join(r + "\n" for r in rows if ",XBTUSD," in r)
    assert data.decode() == want
    if gz:
        p.write_bytes(gzip.compress(text)[:-30])
        with pytest.raises(RawFileError, match="truncated"):
            read_symbol_lines(p, "XBTUSD", chunk=chunk)


def test_one_book_per_run_poorer_book_files_are_set_aside(
    tmp_path: Path, prefect_harness: None
) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "inc.csv").write_text(INC_HEAD + _inc_rows())
    (raw / "quotes.csv").write_text(
        "exchange,symbol,timestamp,local_timestamp,ask_amount,ask_price,bid_price,bid_amount\n"
        + f"bitmex,XBTUSD,{T + 15},{T + 16},10,100.5,100,5\n"
    )
    (raw / "trades.csv").write_text(
        TRADES_HEAD + f"bitmex,XBTUSD,{T + 12},{T + 13},a,buy,100.5,100\n"
    )
    rep = run_ingest(IngestConfig(source="tardis", paths=(str(raw),)), tmp_path / "d")
    assert rep.files_ok == 2 and rep.files_quarantined == 1
    (q,) = [q for q in rep.quarantine if q.level == "file"]
    assert q.path.endswith("quotes.csv") and "tardis:incremental_book_L2" in q.reason
    assert rep.events_out == {"book": 4, "trades": 1} and rep.desyncs == {}
