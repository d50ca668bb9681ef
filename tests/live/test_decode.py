"""The live decoder: BitMEX table messages to canonical rows (hand-computed cases)."""

from __future__ import annotations

import pytest

from core.instrument import XBTUSD, OffTickError
from live.decode import LiveDecoder, UnknownLevelError, parse_timestamp_ns


def _book(action: str, rows: list[dict]) -> dict:
    return {"table": "orderBookL2", "action": action, "data": rows}


def test_partial_insert_update_delete_give_absolute_sizes_in_ticks() -> None:
    d = LiveDecoder("XBTUSD", XBTUSD)
    p = d.decode(
        _book(
            "partial",
            [
                {"symbol": "XBTUSD", "id": 1, "side": "Sell", "size": 5, "price": 100.5},
                {"symbol": "XBTUSD", "id": 2, "side": "Buy", "size": 7, "price": 100.0},
                {"symbol": "ETHUSD", "id": 3, "side": "Buy", "size": 9, "price": 1.0},
            ],
        ),
        10,
    )
    assert p.is_snapshot and p.book == [(-1, 201, 5), (1, 200, 7)]
    u = d.decode(_book("update", [{"symbol": "XBTUSD", "id": 2, "side": "Buy", "size": 3}]), 11)
    assert not u.is_snapshot and u.book == [(1, 200, 3)]
    i = d.decode(
        _book("insert", [{"symbol": "XBTUSD", "id": 4, "side": "Buy", "size": 1, "price": 99.5}]),
        12,
    )
    assert i.book == [(1, 199, 1)]
    x = d.decode(_book("delete", [{"symbol": "XBTUSD", "id": 1, "side": "Sell"}]), 13)
    assert x.book == [(-1, 201, 0)]


@pytest.mark.parametrize("action", ["update", "delete"])
def test_update_or_delete_of_unknown_level_raises_desync(action: str) -> None:
    d = LiveDecoder("XBTUSD", XBTUSD)
    d.decode(
        _book(
            "partial", [{"symbol": "XBTUSD", "id": 1, "side": "Sell", "size": 5, "price": 100.5}]
        ),
        1,
    )
    with pytest.raises(UnknownLevelError):
        d.decode(_book(action, [{"symbol": "XBTUSD", "id": 99, "side": "Buy", "size": 1}]), 2)


def test_price_off_tick_grid_is_rejected() -> None:
    d = LiveDecoder("XBTUSD", XBTUSD)
    with pytest.raises(OffTickError):
        d.decode(
            _book(
                "partial",
                [{"symbol": "XBTUSD", "id": 1, "side": "Sell", "size": 5, "price": 100.3}],
            ),
            1,
        )


def test_trade_insert_gives_side_ticks_size_and_exchange_time() -> None:
    d = LiveDecoder("XBTUSD", XBTUSD)
    msg = {
        "table": "trade",
        "action": "insert",
        "data": [
            {
                "timestamp": "2021-07-22T22:36:09.757Z",
                "symbol": "XBTUSD",
                "side": "Sell",
                "size": 100,
                "price": 32186.5,
            },
            {
                "timestamp": "2021-07-22T22:36:09.758Z",
                "symbol": "XBTUSD",
                "side": "Buy",
                "size": 2,
                "price": 32187,
            },
        ],
    }
    out = d.decode(msg, 5)
    t0 = parse_timestamp_ns("2021-07-22T22:36:09.757Z")
    assert t0 == 1_626_993_369_757_000_000
    assert out.trades == [(-1, 64373, 100, t0), (1, 64374, 2, t0 + 1_000_000)]
    assert d.decode({**msg, "action": "partial"}, 6).trades == []


def test_partial_of_another_symbol_does_not_reset_this_symbols_levels() -> None:
    d = LiveDecoder("XBTUSD", XBTUSD)
    d.decode(
        _book(
            "partial", [{"symbol": "XBTUSD", "id": 1, "side": "Sell", "size": 5, "price": 100.5}]
        ),
        1,
    )
    other = {
        "table": "orderBookL2",
        "action": "partial",
        "filter": {"symbol": "ETHUSD"},
        "data": [{"symbol": "ETHUSD", "id": 7, "side": "Buy", "size": 1, "price": 2.0}],
    }
    assert d.decode(other, 2).book == [] and not d.decode(other, 2).is_snapshot
    assert d.decode(
        _book("update", [{"symbol": "XBTUSD", "id": 1, "side": "Sell", "size": 2}]), 3
    ).book == [(-1, 201, 2)]
