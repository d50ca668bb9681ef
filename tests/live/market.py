"""A seeded stand-in market speaking BitMEX websocket messages (orderBookL2 + trade), one bar
at a time, with feed faults a test can switch on: clock skew on the exchange timestamps,
a desync (an update of a level the client never saw) and malformed messages.

Deterministic from its seed; no I/O. The book is `depth` levels a side around a mid that
walks by one tick, spread one tick, so it is never crossed: a move deletes the level that
would cross before inserting the new one.
"""

from __future__ import annotations

import random
from typing import Any

from core.clock import NS_PER_S, iso_ms
from sim.replay_server import price_to_level_id

TICK = 0.5  # XBTUSD


def _key(side: int, px: int, ts_ns: int | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "symbol": "XBTUSD",
        "id": price_to_level_id(px, TICK),
        "side": "Buy" if side > 0 else "Sell",
    }
    if ts_ns is not None:  # BitMEX stamps L2 changes with the exchange's time
        row["timestamp"] = iso_ms(ts_ns)
    return row


def _row(side: int, px: int, size: int, ts_ns: int | None = None) -> dict[str, Any]:
    return {**_key(side, px, ts_ns), "size": size, "price": px * TICK}


def _trade_msg(price: Any, timestamp: str = "2021-07-22T00:00:00.000Z") -> dict[str, Any]:
    row = {"symbol": "XBTUSD", "side": "Buy", "size": 1, "price": price, "timestamp": timestamp}
    return {"table": "trade", "action": "insert", "data": [row]}


# Malformed messages the live boundary must count and drop (values the decoder cannot take).
GARBAGE: tuple[Any, ...] = (
    _trade_msg("abc"),
    _trade_msg(float("inf")),  # what JSON's 1e400 decodes to
    _trade_msg(32000.0, timestamp="not a time"),
    {
        "table": "orderBookL2",
        "action": "update",
        "data": [{"symbol": "XBTUSD", "id": "x", "side": "Buy", "size": -5, "price": "1e400"}],
    },
    {
        "table": "orderBookL2",
        "action": "insert",
        "data": [{"symbol": "XBTUSD", "id": 5, "side": "Buy", "size": 100, "price": 1e300}],
    },
    {"table": "orderBookL2", "action": "insert", "data": "not a list"},
    {"table": "instrument", "action": "update", "data": 7},
    [1, 2, 3],
    "abc",
)


class StandInMarket:
    """The market (see module docstring). `mid` in ticks; `skew_ns` is added to every
    exchange timestamp (a clock-skewed feed)."""

    def __init__(self, seed: int, mid: int = 64_000, depth: int = 12) -> None:
        self.rng = random.Random(seed)
        self.mid = mid  # best bid = mid, best ask = mid + 1
        self.depth = depth
        self.skew_ns = 0
        self.sizes: dict[tuple[int, int], int] = {}
        self._reset_levels()

    def _reset_levels(self) -> None:
        self.sizes = {}
        for k in range(self.depth):
            self.sizes[(1, self.mid - k)] = self.rng.randint(1, 50) * 100
            self.sizes[(-1, self.mid + 1 + k)] = self.rng.randint(1, 50) * 100

    @property
    def best_bid(self) -> int:
        return self.mid

    @property
    def best_ask(self) -> int:
        return self.mid + 1

    def partials(self) -> list[dict[str, Any]]:
        """What the exchange sends after a (re)subscription: a book and a trade partial."""
        rows = [
            _row(s, px, q) for (s, px), q in sorted(self.sizes.items(), key=lambda kv: -kv[0][1])
        ]
        book = {
            "table": "orderBookL2",
            "action": "partial",
            "filter": {"symbol": "XBTUSD"},
            "data": rows,
        }
        trade = {"table": "trade", "action": "partial", "filter": {"symbol": "XBTUSD"}, "data": []}
        return [book, trade]

    def bar(self, t0_ns: int, n: int = 4) -> list[tuple[int, dict[str, Any]]]:
        """`n` messages spread over the bar (t0, t0 + 1 s): size updates, maybe a one-tick
        move of the mid, and a trade stamped with the exchange's (possibly skewed) time."""
        out: list[tuple[int, dict[str, Any]]] = []
        step = NS_PER_S // (n + 1)
        for i in range(1, n + 1):
            ts = t0_ns + i * step
            kind = self.rng.random()
            if kind < 0.3:
                out += [(ts, m) for m in self._move(self.rng.choice((-1, 1)), ts + self.skew_ns)]
            elif kind < 0.7:
                s = self.rng.choice((1, -1))
                px = (
                    (self.best_bid - self.rng.randrange(self.depth))
                    if s > 0
                    else (self.best_ask + self.rng.randrange(self.depth))
                )
                self.sizes[(s, px)] = self.rng.randint(1, 50) * 100
                out.append(
                    (
                        ts,
                        {
                            "table": "orderBookL2",
                            "action": "update",
                            "data": [_row(s, px, self.sizes[(s, px)], ts + self.skew_ns)],
                        },
                    )
                )
            else:
                side = self.rng.choice((1, -1))
                px = self.best_ask if side > 0 else self.best_bid
                trade = {
                    "timestamp": iso_ms(ts + self.skew_ns),
                    "symbol": "XBTUSD",
                    "side": "Buy" if side > 0 else "Sell",
                    "size": self.rng.randint(1, 20) * 100,
                    "price": px * TICK,
                }
                out.append((ts, {"table": "trade", "action": "insert", "data": [trade]}))
        return out

    def _move(self, d: int, ts_ex: int) -> list[dict[str, Any]]:
        """Shift the book one tick up (d=+1) or down: delete what would cross, then insert."""
        if d > 0:
            gone = [(-1, self.best_ask), (1, self.best_bid - self.depth + 1)]
            self.mid += 1
            new = [(1, self.best_bid), (-1, self.best_ask + self.depth - 1)]
        else:
            gone = [(1, self.best_bid), (-1, self.best_ask + self.depth - 1)]
            self.mid -= 1
            new = [(-1, self.best_ask), (1, self.best_bid - self.depth + 1)]
        for key in gone:
            self.sizes.pop(key, None)
        for key in new:
            self.sizes[key] = self.rng.randint(1, 50) * 100
        return [
            {
                "table": "orderBookL2",
                "action": "delete",
                "data": [_key(s, px, ts_ex) for s, px in gone],
            },
            {
                "table": "orderBookL2",
                "action": "insert",
                "data": [_row(s, px, self.sizes[(s, px)], ts_ex) for s, px in new],
            },
        ]

    def desync(self) -> dict[str, Any]:
        """An update of a level id the client never saw (a message lost on the way)."""
        return {
            "table": "orderBookL2",
            "action": "update",
            "data": [{"symbol": "XBTUSD", "id": 1, "side": "Buy", "size": 100}],
        }

    def garbage(self) -> Any:
        return self.rng.choice(GARBAGE)
