"""No message can kill ingest or the live loop: the BitMEX decoder and the recording
line parser reject every malformed value with a reason (hand-made cases and a bounded
Hypothesis fuzz), and a recording with garbage lines quarantines them and ingests the
rest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.config.ingest import IngestConfig
from core.instrument import InstrumentSpec
from core.paths import DataLayout
from ingest.bitmex_ws import (
    BOOK_TABLES,
    INT64_END,
    BitmexWsDecoder,
    Decoded,
    RecordingFormatError,
    UnknownLevelError,
    message_units,
    parse_recording_line,
)
from ingest.events import read_events
from ingest.ws_recording import read_ws_recording
from tests.ingest_runs import run_ingest

XBT = InstrumentSpec()
TS = "2021-07-22T22:36:11.685Z"


def _trade(**kw: Any) -> dict[str, Any]:
    row = {"timestamp": TS, "symbol": "XBTUSD", "side": "Buy", "size": 100, "price": 32180.5}
    row.update(kw)
    return {k: v for k, v in row.items() if v is not ...}


def _valid(d: Decoded) -> None:
    """Everything a decoder emits fits the canonical int64 columns."""
    for side, px, q in d.book:
        assert side in (1, -1) and 0 < px < INT64_END and 0 <= q < INT64_END
    for side, px, q, te in d.trades:
        assert side in (1, -1) and 0 < px < INT64_END and 0 <= q < INT64_END
        assert 0 <= te < INT64_END
    assert len(d.trade_ids) == len(d.trades)


@pytest.mark.parametrize(
    "bad, reason",
    [
        ({"price": "abc"}, "bad price 'abc'"),
        ({"price": json.loads("1e400")}, "bad price inf"),
        ({"price": float("nan")}, "bad price nan"),
        ({"price": "1e400"}, "bad price '1e400'"),
        ({"price": -0.5}, "not a finite positive"),
        ({"price": 0}, "not a finite positive"),
        ({"price": 10**30}, "outside int64 ticks"),
        ({"size": -1}, "bad size -1"),
        ({"size": 2**70}, "bad size"),
        ({"size": 1.5}, "bad size 1.5"),
        ({"size": True}, "bad size True"),
        ({"side": None}, "bad side None"),
        ({"timestamp": 12}, "timestamp is not text"),
        ({"timestamp": "9999-12-31T23:59:59Z"}, "outside int64 ns"),
        ({"timestamp": "yesterday"}, "bad timestamp"),
        ({"price": ...}, "'price'"),
        ({"timestamp": ...}, "'timestamp'"),
    ],
)
def test_trade_with_a_malformed_value_is_rejected_with_its_reason(
    bad: dict[str, Any], reason: str
) -> None:
    d = BitmexWsDecoder("XBTUSD", XBT)
    d.decode({"table": "trade", "action": "partial", "filter": {"symbol": "XBTUSD"}, "data": []}, 1)
    out = d.decode({"table": "trade", "action": "insert", "data": [_trade(**bad), _trade()]}, 2)
    assert len(out.trades) == 1  # the good row of the same message is kept
    assert d.rows_rejected == 1
    (got,) = d.row_reasons
    assert got.startswith("malformed trade row") and reason in got, got


@pytest.mark.parametrize(
    "table, row",
    [
        (
            "orderBookL2",
            {"symbol": "XBTUSD", "id": float("inf"), "side": "Buy", "size": 1, "price": 1},
        ),
        ("orderBookL2", {"symbol": "XBTUSD", "id": "7", "side": "Buy", "size": 1, "price": 1}),
        ("orderBookL2", {"symbol": "XBTUSD", "id": 7, "side": "Buy", "size": 1, "price": [1]}),
        ("orderBook10", {"symbol": "XBTUSD", "bids": [[1, 2, 3]], "asks": []}),
        ("orderBook10", {"symbol": "XBTUSD", "bids": 5, "asks": []}),
        ("orderBook10", {"symbol": "XBTUSD", "bids": [["abc", 1]], "asks": []}),
        ("quote", {"symbol": "XBTUSD", "bidSize": "x", "bidPrice": 1, "timestamp": TS}),
        ("quote", {"symbol": "XBTUSD", "askSize": 1, "askPrice": 1e400, "timestamp": TS}),
    ],
)
def test_book_row_with_a_malformed_value_is_rejected_not_raised(
    table: str, row: dict[str, Any]
) -> None:
    d = BitmexWsDecoder("XBTUSD", XBT, book_table=table)
    out = d.decode({"table": table, "action": "partial", "data": [row]}, 1)
    _valid(out)
    assert d.rows_rejected == 1 and out.book == []


@pytest.mark.parametrize(
    "msg, filtered",
    [
        ([1, 2], 0),  # not an object: rejected
        ({"info": "Welcome"}, 1),
        ({"success": True, "subscribe": "trade"}, 1),
        ({"table": "instrument", "action": "update", "data": [{}, {}]}, 2),
        ({"table": "trade", "action": "insert", "data": "x"}, 1),
        ({"table": "trade", "action": "insert", "data": [1, {"symbol": "ETHUSD"}]}, 1),
        ({"table": "orderBookL2", "action": "partial", "filter": [1], "data": []}, 1),
    ],
)
def test_messages_without_rows_count_once_and_never_raise(msg: Any, filtered: int) -> None:
    d = BitmexWsDecoder("XBTUSD", XBT)
    d.decode(msg, 1)
    assert d.rows_filtered == filtered
    assert d.rows_in + d.rows_filtered == message_units(msg)


# ---------------------------------------------------------------- the fuzz
_junk = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["abc", "1e400", "NaN", "-1", "", "Buy", "Sell", TS, "2300-01-01T00:00:00Z"]),
    lambda kids: (
        st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids, max_size=3)
    ),
    max_leaves=8,
)
_price = st.sampled_from([100, 100.5, 32180.5, "100.5"]) | _junk
_size = st.integers(0, 1000) | _junk


@st.composite
def _rows(draw: st.DrawFn) -> dict[str, Any]:
    keys = {
        "symbol": st.sampled_from(["XBTUSD", "ETHUSD"]) | _junk,
        "id": st.integers(1, 5) | _junk,
        "side": st.sampled_from(["Buy", "Sell"]) | _junk,
        "size": _size,
        "price": _price,
        "timestamp": st.just(TS) | _junk,
        "trdMatchID": st.text(max_size=4) | _junk,
        "bids": st.lists(st.lists(_price | _size, max_size=3), max_size=3) | _junk,
        "asks": st.lists(st.lists(_price | _size, max_size=3), max_size=3) | _junk,
        "bidSize": _size,
        "bidPrice": _price,
        "askSize": _size,
        "askPrice": _price,
    }
    chosen = draw(st.lists(st.sampled_from(sorted(keys)), unique=True))
    return {k: draw(keys[k]) for k in chosen}


_messages = (
    st.fixed_dictionaries(
        {
            "table": st.sampled_from([*BOOK_TABLES, "trade", "instrument"]) | _junk,
            "action": st.sampled_from(["partial", "insert", "update", "delete"]) | _junk,
            "data": st.lists(_rows() | _junk, max_size=4) | _junk,
        },
        optional={"filter": st.just({"symbol": "XBTUSD"}) | _junk},
    )
    | _junk
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(msgs=st.lists(_messages, min_size=1, max_size=6), table=st.sampled_from(BOOK_TABLES))
def test_fuzzed_messages_never_escape_the_decoder(msgs: list[Any], table: str) -> None:
    lenient = BitmexWsDecoder("XBTUSD", XBT, book_table=table, strict=False)
    strict = BitmexWsDecoder("XBTUSD", XBT, book_table=table, strict=True)
    units = 0
    for n, m in enumerate(msgs):
        units += message_units(m)
        _valid(lenient.decode(m, n + 1))  # ingest: nothing may raise
        try:
            _valid(strict.decode(m, n + 1))  # live: only the deliberate desync signal
        except UnknownLevelError:
            strict.reset()
    assert units == lenient.rows_in + lenient.rows_filtered
    assert lenient.rows_rejected <= lenient.rows_in


@settings(max_examples=120, deadline=None)
@given(
    line=st.text(max_size=40)
    | st.builds(lambda h, b: f"{h}: {b}", st.text(max_size=12), st.text(max_size=20))
    | st.builds(
        lambda t, m: json.dumps({"ts_recv": t, "msg": m}),
        st.integers(-(2**70), 2**70) | st.floats(allow_nan=True),
        _junk,
    )
    | st.sampled_from(["inf: {}", "nan: {}", "1e400: {}", "-5: {}", "1: " + "[" * 5000])
)
def test_fuzzed_recording_lines_parse_or_raise_only_the_format_error(line: str) -> None:
    try:
        out = parse_recording_line(line)
    except RecordingFormatError:
        return
    assert out is None or (0 <= out[0] < INT64_END and isinstance(out[1], dict))


def test_recording_with_garbage_lines_quarantines_them_and_ingests_the_rest(
    tmp_path: Path, ws_capture: Path, prefect_harness: None
) -> None:
    lines = ws_capture.read_text().splitlines()[:1500]  # partials, book and trades
    src = tmp_path / "capture.txt"
    src.write_text("\n".join(lines) + "\n")
    garbage = [
        "oops",
        "1626993368.1: {broken",
        '1626993368.2: {"table":"trade","action":"insert","data":[{"symbol":"XBTUSD","side":"Buy","size":1,"price":"abc","timestamp":"2021-07-22T22:36:11Z"}]}',
        '1626993368.3: {"table":"trade","action":"insert","data":[{"symbol":"XBTUSD","side":"Buy","size":1,"price":1e400,"timestamp":"2021-07-22T22:36:11Z"}]}',
        '1626993368.4: {"table":"trade","action":"insert","data":[{"symbol":"XBTUSD","side":"Buy","size":-3,"price":100,"timestamp":"2021-07-22T22:36:11Z"}]}',
        '1626993368.5: {"table":"orderBookL2","action":"update","data":[{"symbol":"XBTUSD","id":"x","side":"Buy","size":1}]}',
        "inf: {}",
        "",
        "1: " + "[" * 3000,
        '{"ts_recv": 99999999999999999999999, "msg": {}}',
    ]
    mixed = [*lines[:300], *garbage, *lines[300:]]
    bad = tmp_path / "raw" / "capture_with_garbage.txt"
    bad.parent.mkdir()
    bad.write_text("\n".join(mixed) + "\n")
    clean = read_ws_recording(src, "XBTUSD", XBT)
    dirty = read_ws_recording(bad, "XBTUSD", XBT)
    assert dirty.ok and dirty.book.equals(clean.book) and dirty.trades.equals(clean.trades)
    assert clean.trades.height and clean.book.height
    assert dirty.rows_rejected - clean.rows_rejected == 9  # the blank line is filtered
    assert dirty.rows_filtered - clean.rows_filtered == 1
    layout = DataLayout(tmp_path / "data")
    rep = run_ingest(IngestConfig(source="ws-recording", paths=(str(bad),)), layout.root)
    assert rep.files_ok == 1 and rep.partitions_written == ["2021-07-22"]
    assert rep.rows_in == rep.rows_out + rep.rows_rejected + rep.rows_filtered
    assert rep.rows_in == len(mixed) - len(lines) + clean.rows_in
    reasons = json.loads(
        next((layout.quarantine("ws-recording")).glob("*/reason.json")).read_text()
    )
    assert reasons["rows_rejected"] == dirty.rows_rejected and reasons["rejected_rows_sample"]
    book, trades = read_events(layout, "XBTUSD")
    assert book.height == clean.book.height and trades.height == clean.trades.height
