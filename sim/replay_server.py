"""A local websocket server speaking the BitMEX realtime protocol subset, replaying a market.

Adapter ring (a real server on 127.0.0.1, used by tests, `chappie live --feed replay` and
the fake exchange).

Protocol subset (https://www.bitmex.com/app/wsAPI):
- on connect: the welcome `{"info": "Welcome to the BitMEX Realtime API.", "timestamp": ...,
  "limit": {...}}` (its `timestamp` is the replay's current market time);
- `{"op": "subscribe", "args": ["orderBookL2:XBTUSD", "trade:XBTUSD", ...]}` -> one
  `{"success": true, "subscribe": topic, "request": ...}` per topic, then a `partial` per
  topic; `unsubscribe` likewise; unknown tables get `{"status": 400, "error": ...}`;
- text `"ping"` -> text `"pong"` (websocket ping frames are answered by the library);
- table messages `partial` / `insert` / `update` / `delete`, one symbol per message.

The market is ONE timeline shared by every connection, pumped at `speed` x real time
(`speed <= 0`: as fast as possible) from the first subscription. A subscriber that joins
before a topic's first recorded `partial` receives the recorded one; a subscriber that
joins later (a reconnect, a resubscribe) receives a `partial` synthesised from the current
table state, exactly as the exchange does.

Fault injection for tests (`sim.fake_exchange` builds on it): `reject_next_handshakes`
(HTTP 502/503 on the opening handshake), `go_silent()` (stop sending and stop answering
"ping" on the current connections), `inject(table, symbol, msg)` (send a crafted message).
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.server import serve

from core.clock import NS_PER_S, iso_ms

BOOK_TABLES = ("orderBookL2", "orderBookL2_25")
KEYED_TABLES = (*BOOK_TABLES, "quote", "instrument")
KNOWN_TABLES = (*KEYED_TABLES, "trade", "orderBook10")

# Header fields of a partial, per table (what BitMEX sends; clients may read `keys`).
_PARTIAL_HEADERS: dict[str, dict[str, Any]] = {
    "orderBookL2": {
        "keys": ["symbol", "id", "side"],
        "types": {
            "symbol": "symbol",
            "id": "long",
            "side": "symbol",
            "size": "long",
            "price": "float",
        },
        "foreignKeys": {"symbol": "instrument", "side": "side"},
        "attributes": {"symbol": "parted", "id": "sorted"},
    },
    "trade": {
        "keys": [],
        "types": {
            "timestamp": "timestamp",
            "symbol": "symbol",
            "side": "symbol",
            "size": "long",
            "price": "float",
        },
        "foreignKeys": {"symbol": "instrument", "side": "side"},
        "attributes": {"timestamp": "sorted", "symbol": "grouped"},
    },
    "quote": {"keys": [], "types": {}, "foreignKeys": {}, "attributes": {}},
    "instrument": {"keys": ["symbol"], "types": {}, "foreignKeys": {}, "attributes": {}},
}
_PARTIAL_HEADERS["orderBookL2_25"] = _PARTIAL_HEADERS["orderBookL2"]


def split_by_symbol(msg: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Split a table message into one message per symbol of its rows. Pure.

    Non-table messages (welcome, subscribe replies, errors) give []: a replay regenerates
    those itself. A partial with no rows keeps its `filter.symbol` when it has one.
    """
    table = msg.get("table")
    data = msg.get("data")
    if not isinstance(table, str) or not isinstance(data, list):
        return []
    by_symbol: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in data:
        if isinstance(row, dict) and isinstance(row.get("symbol"), str):
            by_symbol[row["symbol"]].append(row)
    if not by_symbol:
        sym = (msg.get("filter") or {}).get("symbol")
        if msg.get("action") == "partial" and isinstance(sym, str):
            by_symbol[sym] = []
    out = []
    for sym, rows in by_symbol.items():
        part = {k: v for k, v in msg.items() if k != "data"}
        part["data"] = rows
        if msg.get("action") == "partial":
            part["filter"] = {"symbol": sym}
        out.append((sym, part))
    return out


@dataclass
class TimelineEvent:
    ts_ns: int
    table: str
    symbol: str
    msg: dict[str, Any]
    text: str = ""


def build_timeline(messages: Iterable[tuple[int, dict[str, Any]]]) -> list[TimelineEvent]:
    """Table messages of a recording as a time-ordered timeline, one symbol per message.
    Pure. Receive times are kept; non-table messages are dropped (the server makes its own).
    """
    events: list[TimelineEvent] = []
    for ts, msg in messages:
        for sym, part in split_by_symbol(msg):
            events.append(TimelineEvent(int(ts), str(msg["table"]), sym, part))
    events.sort(key=lambda e: e.ts_ns)  # stable: equal times keep file order
    for e in events:
        e.text = json.dumps(e.msg, separators=(",", ":"))
    return events


def price_to_level_id(price_ticks: int, tick_size: float, base: int = 8_800_000_000) -> int:
    """A BitMEX-style orderBookL2 id for a price (XBTUSD: 8_800_000_000 - price * 100)."""
    return base - round(price_ticks * tick_size * 100)


def canonical_to_messages(
    book: Any,
    trades: Any,
    symbol: str,
    tick_size: float,
    table: str = "orderBookL2",
) -> list[tuple[int, dict[str, Any]]]:
    """Canonical events (DESIGN.md) as BitMEX websocket messages, keyed by their ts_recv. Pure.

    `book` / `trades` are data frames (polars or pandas) or mappings of column -> array with
    the columns of `core.schema.BOOK_COLUMNS` / `TRADE_COLUMNS`. A run of rows with equal
    `ts_recv` is one message: a snapshot run becomes a `partial`; other rows become
    `delete` (size 0), `update` (a known level) or `insert`. Trades become `trade` inserts
    with the exchange time as `timestamp`. At equal `ts_recv` a trade message goes first.
    """
    out: list[tuple[int, int, dict[str, Any]]] = []
    levels: dict[tuple[int, int], int] = {}  # (side, price_ticks) -> size

    def col(frame: Any, name: str) -> list[Any]:
        return [x.item() if hasattr(x, "item") else x for x in frame[name]]

    b_ts, b_side, b_px, b_sz, b_snap = (
        col(book, c) for c in ("ts_recv", "side", "price_ticks", "size", "is_snapshot")
    )
    i, n = 0, len(b_ts)
    while i < n:
        j = i
        while j < n and b_ts[j] == b_ts[i] and b_snap[j] == b_snap[i]:
            j += 1
        ts = int(b_ts[i])
        if b_snap[i]:
            levels.clear()
            rows = []
            for k in range(i, j):
                if b_sz[k] > 0:
                    levels[(b_side[k], b_px[k])] = b_sz[k]
            for (side, px), size in sorted(levels.items(), key=lambda kv: -kv[0][1]):
                rows.append(_level_row(symbol, side, px, size, tick_size))
            msg = {"table": table, "action": "partial", **_PARTIAL_HEADERS[table]}
            msg["filter"] = {"symbol": symbol}
            msg["data"] = rows
            out.append((ts, 1, msg))
        else:
            # consecutive rows of one action form one message, in the original order (a
            # level inserted and deleted within one receive time must stay in that order)
            runs: list[tuple[str, list[dict[str, Any]]]] = []
            for k in range(i, j):
                key = (b_side[k], b_px[k])
                row = _level_row(symbol, b_side[k], b_px[k], b_sz[k], tick_size)
                if b_sz[k] == 0:
                    if key not in levels:
                        continue
                    del levels[key]
                    action, row = "delete", {kk: row[kk] for kk in ("symbol", "id", "side")}
                elif key in levels:
                    levels[key] = b_sz[k]
                    action = "update"
                else:
                    levels[key] = b_sz[k]
                    action = "insert"
                if runs and runs[-1][0] == action:
                    runs[-1][1].append(row)
                else:
                    runs.append((action, [row]))
            for action, rows in runs:
                out.append((ts, 1, {"table": table, "action": action, "data": rows}))
        i = j
    if out or len(col(trades, "ts_recv")):
        # a trade partial (no history) opens the trade table, as the exchange sends on subscribe
        first = min([ts for ts, _, _ in out] + [int(x) for x in col(trades, "ts_recv")[:1]])
        trade_partial = {"table": "trade", "action": "partial", **_PARTIAL_HEADERS["trade"]}
        out.append((first, -1, {**trade_partial, "filter": {"symbol": symbol}, "data": []}))
    t_ts, t_ev, t_side, t_px, t_sz = (
        col(trades, c) for c in ("ts_recv", "ts_event", "side", "price_ticks", "size")
    )
    i, n = 0, len(t_ts)
    while i < n:
        j = i
        while j < n and t_ts[j] == t_ts[i]:
            j += 1
        rows = [
            {
                "timestamp": iso_ms(int(t_ev[k])),
                "symbol": symbol,
                "side": "Buy" if t_side[k] > 0 else "Sell",
                "size": int(t_sz[k]),
                "price": t_px[k] * tick_size,
            }
            for k in range(i, j)
        ]
        out.append((int(t_ts[i]), 0, {"table": "trade", "action": "insert", "data": rows}))
        i = j
    out.sort(key=lambda x: (x[0], x[1]))
    return [(ts, msg) for ts, _, msg in out]


def _level_row(symbol: str, side: int, px: int, size: int, tick_size: float) -> dict[str, Any]:
    return {
        "symbol": symbol,
        "id": price_to_level_id(int(px), tick_size),
        "side": "Buy" if side > 0 else "Sell",
        "size": int(size),
        "price": int(px) * tick_size,
    }


@dataclass
class _TableState:
    """Current rows of one (table, symbol), so a late subscriber gets a true partial."""

    header: dict[str, Any] = field(default_factory=dict)
    rows: dict[Any, dict[str, Any]] = field(default_factory=dict)
    seen_partial: bool = False

    def apply(self, table: str, msg: dict[str, Any]) -> None:
        action = msg.get("action")
        data = msg.get("data") or []
        if action == "partial":
            self.header = {k: v for k, v in msg.items() if k not in ("data", "action", "table")}
            self.rows = {}
            self.seen_partial = True
        if table == "trade":
            return
        for row in data:
            key = (row.get("id"), row.get("side")) if table in BOOK_TABLES else row.get("symbol")
            if action in ("partial", "insert"):
                self.rows[key] = dict(row)
            elif action == "update":
                self.rows.setdefault(key, {}).update(row)
            elif action == "delete":
                self.rows.pop(key, None)


class _Client:
    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.topics: set[tuple[str, str]] = set()
        self.ready: set[tuple[str, str]] = set()  # topics whose partial this client has
        self.silent = False


class ReplayServer:
    """BitMEX-protocol replay server on 127.0.0.1 (see module docstring).

    Use `async with ReplayServer(...) as srv: srv.url` in asyncio code, or
    `ReplayServerThread` from synchronous code. Counters (`messages_sent`, `connections`,
    `subscribe_requests`, `handshakes_rejected`) let tests assert on what happened.
    """

    def __init__(
        self,
        messages: Sequence[tuple[int, dict[str, Any]]],
        *,
        speed: float = 1.0,
        host: str = "127.0.0.1",
        port: int = 0,
        instrument: dict[str, Any] | None = None,
    ) -> None:
        self.timeline = build_timeline(messages)
        self._recorded_partials = {
            (e.table, e.symbol) for e in self.timeline if e.msg.get("action") == "partial"
        }
        self._recorded_tables = {e.table for e in self.timeline}
        self.speed = float(speed)
        self.host = host
        self.port = port
        self.instrument = instrument
        self.messages_sent = 0
        self.connections = 0
        self.subscribe_requests: list[list[str]] = []
        self.handshakes_rejected = 0
        self.reject_next_handshakes: list[int] = []
        self.pump_done = asyncio.Event()
        self._clients: list[_Client] = []
        self._state: dict[tuple[str, str], _TableState] = defaultdict(_TableState)
        self._started = asyncio.Event()
        self._cursor = 0
        self._server: Any = None
        self._pump_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/realtime"

    @property
    def market_ts_ns(self) -> int:
        """Receive time of the next timeline message (or the last one at the end)."""
        if not self.timeline:
            return time.time_ns()
        k = min(self._cursor, len(self.timeline) - 1)
        return self.timeline[k].ts_ns

    async def start(self) -> str:
        self._server = await serve(
            self._handle,
            self.host,
            self.port,
            process_request=self._process_request,
            max_size=None,
            ping_interval=None,
            compression=None,  # per-message deflate costs more CPU than loopback bandwidth
        )
        sock = next(iter(self._server.sockets))
        self.port = int(sock.getsockname()[1])
        self._pump_task = asyncio.create_task(self._pump())
        return self.url

    async def stop(self) -> None:
        if self._pump_task is not None:
            self._pump_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._pump_task
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    async def __aenter__(self) -> ReplayServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ fault injection
    def go_silent(self) -> None:
        """Current connections stop receiving anything (table data and pongs)."""
        for c in self._clients:
            c.silent = True

    async def inject(self, table: str, symbol: str, msg: dict[str, Any]) -> int:
        """Send a crafted table message to every subscriber of (table, symbol); count sent."""
        text = json.dumps(msg, separators=(",", ":"))
        sent = 0
        for c in list(self._clients):
            if (table, symbol) in c.ready and not c.silent:
                sent += await self._send(c, text)
        return sent

    async def drop_connections(self) -> None:
        """Close every current connection (as a load balancer restart does)."""
        for c in list(self._clients):
            with contextlib.suppress(Exception):
                await c.ws.close(code=1012, reason="service restart")

    # ------------------------------------------------------------------ protocol
    def _process_request(self, connection: Any, request: Any) -> Any:
        if self.reject_next_handshakes:
            status = self.reject_next_handshakes.pop(0)
            self.handshakes_rejected += 1
            return connection.respond(http.HTTPStatus(status), "replay server unavailable\n")
        return None

    async def _send(self, client: _Client, text: str) -> int:
        try:
            await client.ws.send(text)
        except Exception:
            return 0
        self.messages_sent += 1
        return 1

    async def _handle(self, ws: Any) -> None:
        client = _Client(ws)
        self._clients.append(client)
        self.connections += 1
        try:
            welcome = {
                "info": "Welcome to the BitMEX Realtime API.",
                "version": "chappie-replay",
                "timestamp": iso_ms(self.market_ts_ns),
                "docs": "https://www.bitmex.com/app/wsAPI",
                "limit": {"remaining": 40},
            }
            await ws.send(json.dumps(welcome))
            async for raw in ws:
                if client.silent:
                    continue
                await self._on_client_message(client, raw)
        except Exception:  # a dropped client is normal; the pump drops it too
            pass
        finally:
            if client in self._clients:
                self._clients.remove(client)

    async def _on_client_message(self, client: _Client, raw: str | bytes) -> None:
        text = raw.decode() if isinstance(raw, bytes) else raw
        if text == "ping":
            await client.ws.send("pong")
            return
        try:
            req = json.loads(text)
            op, args = req["op"], req.get("args", [])
            if isinstance(args, str):
                args = [args]
        except (json.JSONDecodeError, KeyError, TypeError):
            await client.ws.send(
                json.dumps({"status": 400, "error": f"Unable to parse request: {text[:200]}"})
            )
            return
        if op not in ("subscribe", "unsubscribe"):
            await client.ws.send(
                json.dumps(
                    {"status": 400, "error": f"Unknown or unsupported op: {op}", "request": req}
                )
            )
            return
        if op == "subscribe":
            self.subscribe_requests.append(list(args))
        for arg in args:
            table, _, symbol = str(arg).partition(":")
            if table not in KNOWN_TABLES or not symbol:
                await client.ws.send(
                    json.dumps(
                        {
                            "status": 400,
                            "error": f"Unknown table: {table}",
                            "meta": {},
                            "request": req,
                        }
                    )
                )
                continue
            topic = (table, symbol)
            if op == "unsubscribe":
                client.topics.discard(topic)
                client.ready.discard(topic)
                await client.ws.send(
                    json.dumps({"success": True, "unsubscribe": arg, "request": req})
                )
                continue
            client.topics.add(topic)
            await client.ws.send(json.dumps({"success": True, "subscribe": arg, "request": req}))
            await self._send_partial_if_due(client, topic)
        self._started.set()

    async def _send_partial_if_due(self, client: _Client, topic: tuple[str, str]) -> None:
        table, symbol = topic
        state = self._state.get(self._source_key(topic))
        # the recorded partial is waited for only when the timeline holds one and it has not
        # played yet; otherwise (a late joiner, or a table recorded without a partial) one is
        # synthesised from the current state now
        has_recorded = self._source_key(topic) in self._recorded_partials
        if (state is not None and state.seen_partial) or not has_recorded:
            rows = [] if state is None else [dict(r) for r in state.rows.values()]
            if table == "instrument" and not rows and self.instrument is not None:
                rows = [dict(self.instrument, symbol=symbol)]
            if table in BOOK_TABLES:
                rows.sort(key=lambda r: (0 if r.get("side") == "Sell" else 1, r.get("id", 0)))
            header = _PARTIAL_HEADERS.get(
                table, {"keys": [], "types": {}, "foreignKeys": {}, "attributes": {}}
            )
            msg = {
                "table": table,
                "action": "partial",
                **header,
                "filter": {"symbol": symbol},
                "data": rows,
            }
            client.ready.add(topic)
            await self._send(client, json.dumps(msg, separators=(",", ":")))

    def _source_key(self, topic: tuple[str, str]) -> tuple[str, str]:
        """orderBookL2_25 subscribers are served from an orderBookL2 recording when that is
        all there is (same rows and actions; the 25-level truncation is not simulated)."""
        table, symbol = topic
        if table == "orderBookL2_25" and table not in self._recorded_tables:
            return ("orderBookL2", symbol)
        return topic

    # ------------------------------------------------------------------ the timeline
    async def _pump(self) -> None:
        await self._started.wait()
        t0_wall = time.perf_counter()
        t0_mkt = self.timeline[0].ts_ns if self.timeline else 0
        fast = self.speed <= 0
        for k, ev in enumerate(self.timeline):
            self._cursor = k
            if fast:
                if k % 64 == 0:
                    await asyncio.sleep(0)
            else:
                due = t0_wall + (ev.ts_ns - t0_mkt) / NS_PER_S / self.speed
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            self._state[(ev.table, ev.symbol)].apply(ev.table, ev.msg)
            for c in list(self._clients):
                if c.silent:
                    continue
                for topic in c.topics:
                    if self._source_key(topic) != (ev.table, ev.symbol):
                        continue
                    if ev.msg.get("action") == "partial":
                        c.ready.add(topic)
                    if topic in c.ready:
                        text = (
                            ev.text
                            if topic[0] == ev.table
                            else ev.text.replace(ev.table, topic[0], 1)
                        )
                        await self._send(c, text)
        self._cursor = len(self.timeline)
        self.pump_done.set()


class ReplayServerThread:
    """Run a ReplayServer in its own thread and event loop (for synchronous callers).

    `with ReplayServerThread(messages, speed=...) as srv: srv.url`. `call(coro_fn)` runs a
    coroutine function on the server's loop (fault injection from a test thread).
    """

    def __init__(self, messages: Sequence[tuple[int, dict[str, Any]]], **kwargs: Any) -> None:
        self._messages = messages
        self._kwargs = kwargs
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="replay-server", daemon=True)
        self._ready = threading.Event()
        self.server: ReplayServer | None = None
        self._error: BaseException | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self.server = ReplayServer(self._messages, **self._kwargs)
            self._loop.run_until_complete(self.server.start())
        except BaseException as exc:  # surfaced to the starting thread
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self.server.stop())
        self._loop.close()

    def start(self) -> str:
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise RuntimeError(f"replay server failed to start: {self._error}") from self._error
        assert self.server is not None
        return self.server.url

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    def call(self, fn: Any, *args: Any) -> Any:
        """Run `fn(*args)` (a coroutine function or plain function) on the server loop."""

        async def _wrap() -> Any:
            res = fn(*args)
            if asyncio.iscoroutine(res):
                res = await res
            return res

        return asyncio.run_coroutine_threadsafe(_wrap(), self._loop).result(30)

    def finished(self) -> bool:
        """True once the whole timeline was sent (the replay of a recording is over)."""
        return self.server is not None and self.server.pump_done.is_set()

    def wait_pump_done(self, timeout: float) -> bool:
        assert self.server is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.server.pump_done.is_set():
                return True
            time.sleep(0.01)
        return False

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> ReplayServerThread:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
