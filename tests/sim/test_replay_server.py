"""The replay server on 127.0.0.1: BitMEX protocol subset, partials, faults."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from live.recording import load_recording
from sim.replay_server import ReplayServer, build_timeline, canonical_to_messages, split_by_symbol


async def _recv_json(ws: Any, timeout: float = 5.0) -> Any:
    raw = await asyncio.wait_for(ws.recv(), timeout)
    return raw if raw == "pong" else json.loads(raw)


def _xbt_book_messages(msgs: list) -> list[dict]:
    return [m for _, part in msgs for m in [part] if m["table"] == "orderBookL2"]


def test_split_by_symbol_gives_one_message_per_symbol() -> None:
    msg = {
        "table": "orderBookL2",
        "action": "update",
        "data": [
            {"symbol": "A", "id": 1, "side": "Buy", "size": 1},
            {"symbol": "B", "id": 2, "side": "Buy", "size": 2},
            {"symbol": "A", "id": 3, "side": "Sell", "size": 3},
        ],
    }
    parts = dict(split_by_symbol(msg))
    assert [r["id"] for r in parts["A"]["data"]] == [1, 3]
    assert [r["id"] for r in parts["B"]["data"]] == [2]
    assert split_by_symbol({"info": "welcome"}) == []


def test_real_capture_is_served_in_order_with_its_recorded_partial(ws_capture: Path) -> None:
    msgs = load_recording(ws_capture)
    expected = [
        e.msg
        for e in build_timeline(msgs)
        if e.symbol == "XBTUSD" and e.table in ("orderBookL2", "trade")
    ]

    async def main() -> list[dict]:
        from websockets.asyncio.client import connect

        async with ReplayServer(msgs, speed=0) as srv, connect(srv.url) as ws:
            welcome = await _recv_json(ws)
            assert welcome["info"].startswith("Welcome") and "limit" in welcome
            await ws.send(
                json.dumps({"op": "subscribe", "args": ["orderBookL2:XBTUSD", "trade:XBTUSD"]})
            )
            acks = [await _recv_json(ws), await _recv_json(ws)]
            assert [a["subscribe"] for a in acks] == ["orderBookL2:XBTUSD", "trade:XBTUSD"]
            got = []
            while len(got) < len(expected):
                got.append(await _recv_json(ws))
            await ws.send("ping")
            assert await _recv_json(ws) == "pong"
            return got

    got = asyncio.run(main())
    assert got == expected
    assert got[0]["action"] == "partial" or got[1]["action"] == "partial"


def test_late_subscriber_gets_partial_of_current_state_and_unknown_table_is_an_error(
    ws_capture: Path,
) -> None:
    msgs = load_recording(ws_capture)

    async def main() -> None:
        from websockets.asyncio.client import connect

        async with ReplayServer(msgs, speed=0) as srv:
            async with connect(srv.url) as ws1:
                await _recv_json(ws1)
                await ws1.send(json.dumps({"op": "subscribe", "args": ["trade:XBTUSD"]}))
                await _recv_json(ws1)
                await asyncio.wait_for(srv.pump_done.wait(), 10)
            # the whole market has played: a new subscriber gets the final book as a partial
            book: dict[tuple[int, str], dict] = {}
            for m in _xbt_book_messages(
                [(0, e.msg) for e in build_timeline(msgs) if e.symbol == "XBTUSD"]
            ):
                for r in m["data"]:
                    key = (r["id"], r["side"])
                    if m["action"] == "partial":
                        pass
                    if m["action"] in ("partial", "insert"):
                        book[key] = dict(r)
                    elif m["action"] == "update":
                        book[key].update(r)
                    else:
                        book.pop(key)
            async with connect(srv.url) as ws2:
                await _recv_json(ws2)
                await ws2.send(
                    json.dumps({"op": "subscribe", "args": ["orderBookL2:XBTUSD", "nosuch:XBTUSD"]})
                )
                ack = await _recv_json(ws2)
                assert ack["success"] is True
                partial = await _recv_json(ws2)
                assert partial["action"] == "partial" and partial["filter"] == {"symbol": "XBTUSD"}
                assert {(r["id"], r["side"]): r for r in partial["data"]} == book
                err = await _recv_json(ws2)
                assert err["status"] == 400 and "nosuch" in err["error"]

    asyncio.run(main())


def test_handshake_rejection_answers_http_503() -> None:
    async def main() -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidStatus

        async with ReplayServer([], speed=0) as srv:
            srv.reject_next_handshakes = [503]
            with pytest.raises(InvalidStatus) as exc:
                async with connect(srv.url):
                    pass
            assert exc.value.response.status_code == 503
            async with connect(srv.url) as ws:  # the next one is accepted
                assert "info" in await _recv_json(ws)
            assert srv.handshakes_rejected == 1

    asyncio.run(main())


def test_canonical_events_become_partial_insert_update_delete_and_trades() -> None:
    book = {
        "ts_recv": [10, 10, 20, 20, 30],
        "side": [1, -1, 1, 1, -1],
        "price_ticks": [200, 201, 200, 199, 201],
        "size": [5, 6, 7, 1, 0],
        "is_snapshot": [True, True, False, False, False],
    }
    trades = {
        "ts_recv": [20],
        "ts_event": [19_000_000],
        "side": [-1],
        "price_ticks": [200],
        "size": [3],
    }
    msgs = canonical_to_messages(book, trades, "XBTUSD", 0.5)
    kinds = [(ts, m["table"], m["action"]) for ts, m in msgs]
    assert kinds == [
        (10, "trade", "partial"),
        (10, "orderBookL2", "partial"),
        (20, "trade", "insert"),
        (20, "orderBookL2", "update"),
        (20, "orderBookL2", "insert"),
        (30, "orderBookL2", "delete"),
    ]
    assert msgs[0][1]["data"] == [] and msgs[0][1]["filter"] == {"symbol": "XBTUSD"}
    msgs = msgs[1:]
    partial = msgs[0][1]["data"]
    assert [(r["side"], r["price"], r["size"]) for r in partial] == [
        ("Sell", 100.5, 6),
        ("Buy", 100.0, 5),
    ]
    assert msgs[1][1]["data"][0] == {
        "timestamp": "1970-01-01T00:00:00.019Z",
        "symbol": "XBTUSD",
        "side": "Sell",
        "size": 3,
        "price": 100.0,
    }
    assert msgs[4][1]["data"] == [{"symbol": "XBTUSD", "id": partial[0]["id"], "side": "Sell"}]


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from core.instrument import XBTUSD  # noqa: E402
from live.decode import make_decoder  # noqa: E402


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.lists(
            st.tuples(st.sampled_from([1, -1]), st.integers(100, 110), st.integers(0, 3)),
            min_size=1,
            max_size=6,
        ),
        min_size=1,
        max_size=30,
    )
)
def test_canonical_to_messages_then_decode_reproduces_the_book(msgs: list) -> None:
    """Any canonical delta stream (a level may change twice within one receive time)
    survives the trip to BitMEX messages and back through the decoder."""
    rows = [(0, 1, 100, 5, True), (0, -1, 111, 5, True)]
    for t, msg in enumerate(msgs, start=1):
        rows += [(t, s, p, q, False) for s, p, q in msg]
    book = {
        c: [r[i] for r in rows]
        for i, c in enumerate(("ts_recv", "side", "price_ticks", "size", "is_snapshot"))
    }
    trades = {c: [] for c in ("ts_recv", "ts_event", "side", "price_ticks", "size")}
    expected: dict[tuple[int, int], int] = {}
    for _, s, p, q, _snap in rows:
        if q == 0:
            expected.pop((s, p), None)
        else:
            expected[(s, p)] = q
    dec = make_decoder("XBTUSD", XBTUSD)
    got: dict[tuple[int, int], int] = {}
    for ts, m in canonical_to_messages(book, trades, "XBTUSD", XBTUSD.tick_size):
        d = dec.decode(m, ts)
        if d.is_snapshot:
            got.clear()
        for s, p, q in d.book:
            if q == 0:
                got.pop((s, p), None)
            else:
                got[(s, p)] = q
    assert got == expected
