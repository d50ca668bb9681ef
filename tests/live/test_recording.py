"""Recording formats: the real capture, the project's JSON lines, malformed lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from live.recording import (
    RecordingError,
    RecordingWriter,
    iter_recording,
    load_recording,
    parse_recording_line,
    seconds_text_to_ns,
)


def test_seconds_text_to_ns_is_exact_for_microsecond_epoch_times() -> None:
    assert seconds_text_to_ns("1626993367.875267") == 1_626_993_367_875_267_000
    assert seconds_text_to_ns("1626993368.0018098") == 1_626_993_368_001_809_800


def test_parse_capture_line_and_header_lines() -> None:
    assert parse_recording_line("wss://www.bitmex.com/realtime <-> 1626993367.388005") is None
    assert parse_recording_line('wss://x <- 1626993367.874177: {"op":"subscribe"}') is None
    assert parse_recording_line("   ") is None
    ts, msg = parse_recording_line('1626993370.5: {"table":"trade","action":"insert","data":[]}')  # type: ignore[misc]
    assert ts == 1_626_993_370_500_000_000
    assert msg == {"table": "trade", "action": "insert", "data": []}


@pytest.mark.parametrize(
    "line",
    [
        "not a line",
        "123.4: {broken",
        "abc: {}",
        '123: ["list"]',
        '{"ts_recv": 1.5, "msg": {}}',
        '{"ts_recv": 1, "msg": 3}',
        '{"msg": {}}',
    ],
)
def test_parse_malformed_line_raises(line: str) -> None:
    with pytest.raises(RecordingError):
        parse_recording_line(line)


def test_iter_recording_names_file_and_line_of_bad_line(tmp_path: Path) -> None:
    p = tmp_path / "rec.jsonl"
    p.write_text('{"ts_recv": 1, "msg": {"a": 1}}\n\nnot json\n')
    with pytest.raises(RecordingError, match=r"rec\.jsonl:3"):
        list(iter_recording(p))


def test_real_capture_loads_every_received_message(ws_capture: Path) -> None:
    msgs = load_recording(ws_capture)
    lines = [
        ln
        for ln in ws_capture.read_text().splitlines()
        if ln.strip() and not ln.startswith("wss://")
    ]
    assert len(msgs) == len(lines) == 2120
    assert msgs[0][1]["info"].startswith("Welcome")
    times = [t for t, _ in msgs]
    assert times == sorted(times)
    xbt_partial = [
        m
        for _, m in msgs
        if m.get("table") == "orderBookL2"
        and m.get("action") == "partial"
        and m["filter"]["symbol"] == "XBTUSD"
    ]
    assert len(xbt_partial) == 1 and len(xbt_partial[0]["data"]) > 100


@given(
    st.lists(
        st.tuples(
            st.integers(0, 2**62),
            st.dictionaries(
                st.text(max_size=5), st.one_of(st.integers(), st.text(max_size=5)), max_size=4
            ),
        ),
        max_size=20,
    )
)
def test_writer_then_reader_round_trips_any_messages(
    tmp_path_factory: pytest.TempPathFactory, items: list
) -> None:
    p = tmp_path_factory.mktemp("rec") / "r.jsonl"
    with RecordingWriter(p) as w:
        for ts, msg in items:
            w.write(ts, msg)
    assert load_recording(p) == items
    for line in p.read_text().splitlines():
        assert set(json.loads(line)) == {"ts_recv", "msg"}
