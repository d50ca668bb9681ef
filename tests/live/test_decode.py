"""The live loop decodes through ingest's decoder in strict mode (desync -> exception)."""

from __future__ import annotations

import pytest

from core.instrument import XBTUSD
from live.decode import UnknownLevelError, make_decoder


def _book(action: str, rows: list[dict]) -> dict:
    return {"table": "orderBookL2", "action": action, "data": rows}


def test_partial_insert_update_delete_give_absolute_sizes_in_ticks() -> None:
    d = make_decoder("XBTUSD", XBTUSD)
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
    assert d.decode(
        _book("update", [{"symbol": "XBTUSD", "id": 2, "side": "Buy", "size": 3}]), 11
    ).book == [(1, 200, 3)]
    assert d.decode(_book("delete", [{"symbol": "XBTUSD", "id": 1, "side": "Sell"}]), 13).book == [
        (-1, 201, 0)
    ]


@pytest.mark.parametrize("action", ["update", "delete"])
def test_update_or_delete_of_unknown_level_raises_desync_in_the_live_loop(action: str) -> None:
    d = make_decoder("XBTUSD", XBTUSD)
    d.decode(
        _book(
            "partial", [{"symbol": "XBTUSD", "id": 1, "side": "Sell", "size": 5, "price": 100.5}]
        ),
        1,
    )
    with pytest.raises(UnknownLevelError):
        d.decode(_book(action, [{"symbol": "XBTUSD", "id": 99, "side": "Buy", "size": 1}]), 2)


def test_partial_of_another_symbol_does_not_reset_this_symbols_levels() -> None:
    d = make_decoder("XBTUSD", XBTUSD)
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
    assert d.decode(other, 2).book == []
    assert d.decode(
        _book("update", [{"symbol": "XBTUSD", "id": 1, "side": "Sell", "size": 2}]), 3
    ).book == [(-1, 201, 2)]
