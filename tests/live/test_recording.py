"""Recordings: the real capture, the project's JSON lines (written by --record), bad lines.

Line parsing itself is ingest's (`ingest.bitmex_ws.parse_recording_line`, tested there)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from live.recording import RecordingError, RecordingWriter, iter_recording, load_recording


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
