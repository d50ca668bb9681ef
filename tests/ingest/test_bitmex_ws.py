"""BitMEX websocket decoder and recordings: unit cases and golden tests on the real capture."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from book.order_book import OrderBook, check_book
from core.instrument import InstrumentSpec
from ingest.bitmex_ws import (
    BitmexWsDecoder,
    RecordingFormatError,
    UnknownLevelError,
    parse_recording_line,
    parse_timestamp_ns,
)
from ingest.ws_recording import detect_book_table, read_ws_recording

XBT = InstrumentSpec()


def _msg(table: str, action: str, data: list[dict], **kw: object) -> dict:
    return {"table": table, "action": action, "data": data, **kw}


def _row(
    i: int, side: str, size: int | None = None, price: float | None = None, sym: str = "XBTUSD"
) -> dict:
    r: dict = {"symbol": sym, "id": i, "side": side}
    if size is not None:
        r["size"] = size
    if price is not None:
        r["price"] = price
    return r


def test_decoder_l2_partial_insert_update_without_price_delete() -> None:
    d = BitmexWsDecoder("XBTUSD", XBT)
    assert (
        d.decode(_msg("orderBookL2", "update", [_row(1, "Buy", 5)]), 1).book == []
    )  # before partial: dropped
    out = d.decode(
        _msg("orderBookL2", "partial", [_row(1, "Buy", 10, 100.0), _row(2, "Sell", 20, 100.5)]), 2
    )
    assert out.is_snapshot and out.book == [(1, 200, 10), (-1, 201, 20)]
    assert d.decode(_msg("orderBookL2", "insert", [_row(3, "Buy", 7, 99.5)]), 3).book == [
        (1, 199, 7)
    ]
    assert d.decode(_msg("orderBookL2", "update", [_row(3, "Buy", 8)]), 4).book == [(1, 199, 8)]
    assert d.decode(_msg("orderBookL2", "delete", [_row(1, "Buy")]), 5).book == [(1, 200, 0)]
    assert (
        d.decode(_msg("orderBookL2", "insert", [_row(9, "Buy", 1, 1.0, sym="ETHUSD")]), 6).book
        == []
    )
    assert d.row_reasons == {"orderBookL2 message before its first partial": 1}
    assert d.rows_in == 6


def test_decoder_strict_unknown_id_raises_and_lenient_counts() -> None:
    d = BitmexWsDecoder("XBTUSD", XBT)
    d.decode(_msg("orderBookL2", "partial", [_row(1, "Buy", 10, 100.0)]), 1)
    with pytest.raises(UnknownLevelError):
        d.decode(_msg("orderBookL2", "delete", [_row(5, "Sell")]), 2)
    lenient = BitmexWsDecoder("XBTUSD", XBT, strict=False)
    lenient.decode(_msg("orderBookL2", "partial", [_row(1, "Buy", 10, 100.0)]), 1)
    assert lenient.decode(_msg("orderBookL2", "update", [_row(5, "Sell", 3)]), 2).book == []
    assert lenient.row_reasons == {"update of unknown level id": 1}


def test_decoder_rejects_off_tick_and_malformed_rows_with_reasons() -> None:
    d = BitmexWsDecoder("XBTUSD", XBT)
    d.decode(
        _msg(
            "orderBookL2",
            "partial",
            [_row(1, "Buy", 10, 100.25), _row(2, "Up", 1, 100.0), _row(3, "Sell", 1, 101.0)],
        ),
        1,
    )
    assert set(d.row_reasons) == {
        "off-tick price: price 100.25 is not a multiple of tick size 0.5",
        "malformed book row: bad side 'Up'",
    }


def test_decoder_trades_quote_and_orderbook10() -> None:
    d = BitmexWsDecoder("XBTUSD", XBT, book_table="quote")
    t = {
        "timestamp": "2021-07-22T22:36:11.685Z",
        "symbol": "XBTUSD",
        "side": "Sell",
        "size": 100,
        "price": 32180.5,
    }
    assert d.decode(_msg("trade", "partial", [t]), 1).trades == []
    assert d.decode(_msg("trade", "insert", [t]), 2).trades == [
        (-1, 64361, 100, parse_timestamp_ns(t["timestamp"]))
    ]
    q = {
        "timestamp": "2021-07-22T22:36:10.087Z",
        "symbol": "XBTUSD",
        "bidSize": 5,
        "bidPrice": 100,
        "askPrice": 100.5,
        "askSize": 6,
    }
    out = d.decode(_msg("quote", "partial", [q]), 3)
    assert out.is_snapshot and out.book == [(1, 200, 5), (-1, 201, 6)]
    out = d.decode(
        _msg("quote", "insert", [{**q, "bidPrice": 100.5, "askPrice": 101, "bidSize": 7}]), 4
    )
    assert not out.is_snapshot and out.book == [
        (1, 200, 0),
        (1, 201, 7),
        (-1, 201, 0),
        (-1, 202, 6),
    ]
    b10 = BitmexWsDecoder("XBTUSD", XBT, book_table="orderBook10")
    row = {
        "symbol": "XBTUSD",
        "bids": [[100, 5], [99.5, 3]],
        "asks": [[100.5, 2]],
        "timestamp": "2021-07-22T22:36:10Z",
    }
    assert b10.decode(_msg("orderBook10", "partial", [row]), 1).book == [
        (1, 200, 5),
        (1, 199, 3),
        (-1, 201, 2),
    ]
    out = b10.decode(_msg("orderBook10", "update", [{**row, "bids": [[100, 4]]}]), 2)
    assert out.book == [(1, 199, 0), (1, 200, 4)]


def test_parse_recording_line_both_formats_and_errors() -> None:
    assert parse_recording_line("wss://www.bitmex.com/realtime <-> 1626993367.388005") is None
    assert parse_recording_line("") is None
    ts, msg = parse_recording_line('1626993367.875267: {"info": "x"}')  # type: ignore[misc]
    assert ts == 1626993367875267000 and msg == {"info": "x"}
    assert parse_recording_line(json.dumps({"ts_recv": 5, "msg": {"a": 1}})) == (5, {"a": 1})
    for bad in ("garbage", '{"ts_recv": 1.5, "msg": {}}', "12: [1]", "12: {oops"):
        with pytest.raises(RecordingFormatError):
            parse_recording_line(bad)


def test_book_table_detection_reads_partials_of_any_json_shape_without_raising(
    tmp_path: Path,
) -> None:
    """A partial whose `data` is not a list or whose `filter` is not an object names no
    symbol (it used to raise TypeError / AttributeError and stop the whole read)."""

    def line(ts: int, table: str, **msg: object) -> str:
        return json.dumps({"ts_recv": ts, "msg": {"table": table, "action": "partial", **msg}})

    odd = [line(1, "orderBookL2", data=5), line(2, "orderBookL2", data=[], filter=[1])]
    ours = line(3, "quote", data=[], filter={"symbol": "XBTUSD"})
    assert detect_book_table(odd, "XBTUSD") is None
    assert detect_book_table([*odd, ours], "XBTUSD") == "quote"
    path = tmp_path / "odd.jsonl"
    path.write_text("\n".join(odd) + "\n")
    fr = read_ws_recording(path, "XBTUSD", XBT)
    assert fr.file_reason is not None and fr.rows_in == 2  # quarantined, counted


def test_real_capture_golden_book_after_partial_and_after_last_message(ws_capture: Path) -> None:
    fr = read_ws_recording(ws_capture, "XBTUSD", XBT)
    assert fr.ok and fr.rows_in == fr.rows_out + fr.rows_rejected + fr.rows_filtered
    assert fr.trades.height == 15
    # every line counted: 1 header, info + subscribe answers and other tables filtered
    assert fr.rows_filtered > 0 and fr.rows_in >= len(ws_capture.read_text().splitlines())
    assert fr.row_reasons == {"trade partial (history before the subscription)": 1}
    book = fr.book
    res = check_book(
        *(book[c].to_numpy() for c in ("ts_recv", "side", "price_ticks", "size", "is_snapshot"))
    )
    assert res.ok and res.n_snapshots == 1
    snap = book.filter(pl.col("is_snapshot"))
    ob = OrderBook(strict=True)
    ob.apply_message(
        snap["side"].to_numpy(), snap["price_ticks"].to_numpy(), snap["size"].to_numpy(), True
    )
    assert (len(ob.levels(1)), len(ob.levels(-1))) == (5542, 3804)
    assert ob.levels(1)[:3] == [(64360, 1046200), (64357, 269200), (64353, 55000)]
    assert ob.levels(-1)[:3] == [(64361, 161000), (64365, 100), (64368, 100)]
    rest = book.filter(~pl.col("is_snapshot"))
    for (_,), msg in rest.group_by(["ts_recv"], maintain_order=True):
        ob.apply_message(
            msg["side"].to_numpy(), msg["price_ticks"].to_numpy(), msg["size"].to_numpy(), False
        )
    assert (len(ob.levels(1)), len(ob.levels(-1))) == (5557, 3795)
    assert ob.best_bid() == (64373, 1407700) and ob.best_ask() == (64374, 36000)


def test_real_capture_as_project_json_lines_decodes_identically(
    ws_capture: Path, tmp_path: Path
) -> None:
    out = tmp_path / "rec.jsonl"
    with out.open("w") as fh:
        for line in ws_capture.read_text().splitlines():
            parsed = parse_recording_line(line)
            if parsed:
                fh.write(json.dumps({"ts_recv": parsed[0], "msg": parsed[1]}) + "\n")
    a = read_ws_recording(ws_capture, "XBTUSD", XBT)
    b = read_ws_recording(out, "XBTUSD", XBT)
    assert a.book.equals(b.book) and a.trades.equals(b.trades)


def test_real_capture_quote_table_gives_a_depth_one_book(ws_capture: Path) -> None:
    fr = read_ws_recording(ws_capture, "XBTUSD", XBT, book_table="quote")
    res = check_book(
        *(fr.book[c].to_numpy() for c in ("ts_recv", "side", "price_ticks", "size", "is_snapshot"))
    )
    assert fr.ok and res.ok and fr.book.filter(pl.col("is_snapshot")).height == 2


def test_ingest_real_capture_publishes_one_day_and_rerun_is_a_no_op(
    ws_capture: Path, tmp_path: Path, prefect_harness: None
) -> None:
    from core.config.ingest import IngestConfig
    from core.paths import DataLayout
    from ingest.events import read_manifest
    from tests.ingest_runs import run_ingest

    cfg = IngestConfig(source="ws-recording", paths=(str(ws_capture),))
    layout = DataLayout(tmp_path)
    rep = run_ingest(cfg, tmp_path)
    assert rep.files_in == rep.files_ok == 1 and rep.partitions_written == ["2021-07-22"]
    assert rep.events_out == {"book": 11058, "trades": 15} and rep.desyncs == {}
    m = read_manifest(layout, "XBTUSD", "2021-07-22")
    assert m is not None and m["inputs"][0]["sha256"] and m["source"] == "ws-recording"
    again = run_ingest(cfg, tmp_path)
    assert again.partitions_written == [] and again.partitions_unchanged == ["2021-07-22"]


def test_live_path_decoder_plus_bar_sampler_equals_batch_on_real_capture(ws_capture: Path) -> None:
    """Message by message (as the live loop does) == ingest events -> sample_bars."""
    from book.sampler import BarSampler, sample_bars
    from core.config.features import FeatureSpec

    spec = FeatureSpec(interval_ms=1000)
    fr = read_ws_recording(ws_capture, "XBTUSD", XBT)
    batch = sample_bars(fr.book, fr.trades, spec)
    dec = BitmexWsDecoder("XBTUSD", XBT, book_table="orderBookL2", strict=True)
    sampler = BarSampler(spec)
    rows: list[dict] = []
    last = 0
    for line in ws_capture.read_text().splitlines():
        parsed = parse_recording_line(line)
        if parsed is None:
            continue
        ts, msg = parsed
        rows += sampler.advance(ts - 1)  # the clock ticks before each message arrives
        d = dec.decode(msg, ts)
        for side, px, size, _ in d.trades:
            sampler.on_trade(ts, side, px, size)
        if d.book:
            sampler.on_message(
                ts,
                [r[0] for r in d.book],
                [r[1] for r in d.book],
                [r[2] for r in d.book],
                d.is_snapshot,
            )
        last = ts
    rows += sampler.advance(-(-last // spec.interval_ns) * spec.interval_ns)
    assert batch.height > 20
    assert pl.DataFrame(rows, schema=batch.schema).equals(batch)


def test_recording_across_midnight_gives_self_contained_day_partitions(
    tmp_path: Path, prefect_harness: None
) -> None:
    from core.clock import parse_day
    from core.config.ingest import IngestConfig
    from core.paths import DataLayout
    from ingest.events import read_events, read_manifest
    from tests.ingest_runs import run_ingest

    t0 = parse_day("2021-07-23") - 2_000_000_000  # 2 s before midnight
    msgs = [
        (
            t0,
            _msg(
                "orderBookL2",
                "partial",
                [_row(1, "Buy", 10, 100.0), _row(2, "Sell", 20, 100.5), _row(3, "Sell", 5, 101.0)],
            ),
        ),
        (t0 + 1_000_000_000, _msg("orderBookL2", "update", [_row(1, "Buy", 11)])),
        (t0 + 3_000_000_000, _msg("orderBookL2", "delete", [_row(2, "Sell")])),  # after midnight
        (t0 + 4_000_000_000, _msg("orderBookL2", "insert", [_row(4, "Buy", 7, 100.5)])),
    ]
    rec = tmp_path / "rec.jsonl"
    rec.write_text("".join(json.dumps({"ts_recv": ts, "msg": m}) + "\n" for ts, m in msgs))
    layout = DataLayout(tmp_path / "data")
    rep = run_ingest(IngestConfig(source="ws-recording", paths=(str(rec),)), tmp_path / "data")
    assert rep.partitions_written == ["2021-07-22", "2021-07-23"] and rep.desyncs == {}
    day2, _ = read_events(layout, "XBTUSD", ["2021-07-23"])
    head = day2.filter(pl.col("is_snapshot"))
    assert head.select("side", "price_ticks", "size").rows() == [
        (1, 200, 11),
        (-1, 201, 20),
        (-1, 202, 5),
    ]
    assert head["ts_recv"].to_list() == [parse_day("2021-07-23")] * 3
    m = read_manifest(layout, "XBTUSD", "2021-07-23")
    assert m is not None and m["extra"]["book_check"]["unknown_level"] == 0
    both, _ = read_events(layout, "XBTUSD")
    ob = OrderBook(strict=True)
    ob.replay(
        *(both[c].to_numpy() for c in ("ts_recv", "side", "price_ticks", "size", "is_snapshot"))
    )
    assert ob.levels(1) == [(201, 7), (200, 11)] and ob.levels(-1) == [(202, 5)]


@st.composite
def l2_sessions(draw: st.DrawFn) -> list[dict]:
    """A partial then random valid insert/update/delete messages, BitMEX style (ids
    encode the price; updates carry no price)."""
    live: dict[tuple[int, str], int] = {}  # (id, side) -> price ticks

    def row(i: int, side: str, size: int | None, px: int | None) -> dict:
        r: dict = {"symbol": "XBTUSD", "id": i, "side": side}
        if size is not None:
            r["size"] = size
        if px is not None:
            r["price"] = px / 2
        return r

    part = []
    for px in range(190, 200):
        live[(10_000 - px, "Buy")] = px
        part.append(row(10_000 - px, "Buy", draw(st.integers(1, 50)), px))
    for px in range(201, 211):
        live[(10_000 - px, "Sell")] = px
        part.append(row(10_000 - px, "Sell", draw(st.integers(1, 50)), px))
    msgs = [_msg("orderBookL2", "partial", part, filter={"symbol": "XBTUSD"})]
    for _ in range(draw(st.integers(0, 40))):
        action = draw(st.sampled_from(["insert", "update", "delete"]))
        if action == "insert":
            side = draw(st.sampled_from(["Buy", "Sell"]))
            best_ask = min((p for (_, s), p in live.items() if s == "Sell"), default=400)
            best_bid = max((p for (_, s), p in live.items() if s == "Buy"), default=0)
            px = draw(
                st.integers(150, best_ask - 1) if side == "Buy" else st.integers(best_bid + 1, 250)
            )
            key = (10_000 - px, side)
            if key in live or (10_000 - px, "Buy" if side == "Sell" else "Sell") in live:
                continue
            live[key] = px
            msgs.append(
                _msg("orderBookL2", "insert", [row(key[0], side, draw(st.integers(1, 50)), px)])
            )
        elif live:
            key = draw(st.sampled_from(sorted(live)))
            if action == "update":
                msgs.append(
                    _msg(
                        "orderBookL2",
                        "update",
                        [row(key[0], key[1], draw(st.integers(1, 50)), None)],
                    )
                )
            else:
                del live[key]
                msgs.append(_msg("orderBookL2", "delete", [row(key[0], key[1], None, None)]))
    return msgs


@settings(max_examples=40, deadline=None)
@given(msgs=l2_sessions())
def test_decoder_stream_rebuilds_the_reference_book_and_never_crosses(msgs: list[dict]) -> None:
    dec = BitmexWsDecoder("XBTUSD", XBT)
    ob = OrderBook(strict=True)
    ref: dict[tuple[int, str], tuple[int, int]] = {}
    for n, m in enumerate(msgs):
        d = dec.decode(m, n + 1)
        ob.apply_message(
            [r[0] for r in d.book], [r[1] for r in d.book], [r[2] for r in d.book], d.is_snapshot
        )
        for r in m["data"]:
            key = (r["id"], r["side"])
            if m["action"] == "delete":
                ref.pop(key)
            else:
                px = int(r["price"] * 2) if "price" in r else ref[key][0]
                ref[key] = (px, r["size"])
        bb, ba = ob.best_bid(), ob.best_ask()
        assert bb is None or ba is None or bb[0] < ba[0]
    assert ob.levels(1) == sorted(
        ((p, q) for (_, s), (p, q) in ref.items() if s == "Buy"), reverse=True
    )
    assert ob.levels(-1) == sorted((p, q) for (_, s), (p, q) in ref.items() if s == "Sell")
