"""BitMEX realtime websocket client: subscribe, heartbeat, reconnect, partials, recording.

Adapter ring (network I/O only; no business rules).

- Subscribes `<table>:<symbol>` for the configured tables (default `orderBookL2`, `trade`,
  `instrument`).
- Heartbeat (BitMEX's recommendation): when no frame arrived for `heartbeat_s`, send the
  text `"ping"`; when nothing (the `"pong"` or any other frame) arrives within
  `pong_timeout_s` after that, the socket is considered dead and replaced.
- Reconnect: a connection that delivered data and then died is replaced at once; every
  further failed attempt k waits `min(backoff_max_s, backoff_base_s * 2**k) * U(0.5, 1)`
  (jittered exponential backoff), and at least `busy_backoff_s` (5 s) after an HTTP 502 or
  503 on the handshake. With the defaults (ping after 5 s of silence, 4.5 s for the pong)
  a silent socket is replaced within 10 s.
- A fresh `partial` is required per table after every (re)connect and every
  `resubscribe(table)`: table messages before it are dropped (counted in
  `stats.dropped_before_partial`).
- With a `RecordingWriter`, every received JSON message is written with its receive time
  (`{"ts_recv": ns, "msg": {...}}`), the format `ingest` reads.

The consumer iterates `events()` and gets `FeedMessage` (a table message with its receive
time) and `FeedStatus` (connected / disconnected / partial) items in receive order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from core.clock import Clock, SystemClock
from core.jsontypes import JsonObject
from live.recording import RecordingWriter

DEFAULT_TABLES: tuple[str, ...] = ("orderBookL2", "trade", "instrument")


@dataclass(frozen=True)
class FeedMessage:
    ts_recv: int
    msg: JsonObject  # the exchange's message as received


@dataclass(frozen=True)
class FeedStatus:
    kind: Literal["connected", "disconnected", "resubscribing"]
    ts_recv: int
    reason: str = ""


@dataclass
class FeedStats:
    connects: int = 0
    disconnects: int = 0
    handshake_failures: int = 0
    pings_sent: int = 0
    pongs: int = 0
    resubscribes: int = 0
    messages: int = 0
    dropped_before_partial: int = 0
    errors: list[str] = field(default_factory=list)
    backoffs_s: list[float] = field(default_factory=list)


def backoff_delay(
    attempt: int,
    base_s: float,
    max_s: float,
    rng: random.Random,
    busy: bool = False,
    busy_min_s: float = 5.0,
) -> float:
    """Jittered exponential backoff (seconds) before reconnect attempt `attempt` (0-based).

    `min(max_s, base_s * 2**attempt) * U(0.5, 1)`, at least `busy_min_s` when the last
    handshake was answered 502/503 (the exchange is overloaded: hammering it makes it worse).
    Pure apart from the given RNG.
    """
    if attempt < 0:
        raise ValueError("attempt must be >= 0")
    d = min(max_s, base_s * (2.0 ** min(attempt, 30))) * rng.uniform(0.5, 1.0)
    return max(d, busy_min_s) if busy else d


class BitmexFeed:
    """One logical feed over as many websocket connections as it takes (see module doc)."""

    def __init__(
        self,
        url: str,
        symbol: str,
        *,
        tables: Sequence[str] = DEFAULT_TABLES,
        clock: Clock | None = None,
        heartbeat_s: float = 5.0,
        pong_timeout_s: float = 4.5,
        backoff_base_s: float = 1.0,
        backoff_max_s: float = 60.0,
        busy_backoff_s: float = 5.0,
        open_timeout_s: float = 10.0,
        recorder: RecordingWriter | None = None,
        seed: int | None = None,
    ) -> None:
        self.url = url
        self.symbol = symbol
        self.tables = tuple(tables)
        self.clock = clock or SystemClock()
        self.heartbeat_s = heartbeat_s
        self.pong_timeout_s = pong_timeout_s
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.busy_backoff_s = busy_backoff_s
        self.open_timeout_s = open_timeout_s
        self.recorder = recorder
        self.stats = FeedStats()
        self._rng = random.Random(seed)
        self._ws: Any = None
        self._need_partial: set[str] = set()
        self._closed = False
        self.last_frame_at = time.monotonic()  # wall (monotonic) time of the last frame

    # ------------------------------------------------------------------ control
    @property
    def connected(self) -> bool:
        return self._ws is not None

    def topics(self, tables: Sequence[str] | None = None) -> list[str]:
        return [f"{t}:{self.symbol}" for t in (tables or self.tables)]

    async def resubscribe(self, tables: Sequence[str] | None = None) -> None:
        """Unsubscribe and subscribe `tables` (default: all) again: the exchange answers
        with fresh partials, and each table's messages are dropped until its partial
        arrives (desync recovery)."""
        tables = tuple(tables or self.tables)
        self.stats.resubscribes += 1
        self._need_partial.update(tables)
        ws = self._ws
        if ws is None:
            return  # the next connection subscribes afresh anyway
        topic = self.topics(tables)
        with contextlib.suppress(Exception):
            await ws.send(json.dumps({"op": "unsubscribe", "args": topic}))
            await ws.send(json.dumps({"op": "subscribe", "args": topic}))

    async def close(self) -> None:
        """Stop: the current socket is closed and `events()` ends."""
        self._closed = True
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()

    async def send_text(self, text: str) -> None:
        """Send a raw text frame on the current connection (tests and diagnostics)."""
        if self._ws is None:
            raise ConnectionError("feed is not connected")
        await self._ws.send(text)

    # ------------------------------------------------------------------ the stream
    async def events(self) -> AsyncIterator[FeedMessage | FeedStatus]:
        """Messages and status changes until `close()`; reconnects forever on failure."""
        attempt = 0
        while not self._closed:
            busy = False
            try:
                ws = await connect(
                    self.url,
                    open_timeout=self.open_timeout_s,
                    ping_interval=None,  # our own text heartbeat, as BitMEX documents
                    max_size=None,
                    close_timeout=2,
                )
            except InvalidStatus as exc:
                status = exc.response.status_code
                busy = status in (502, 503)
                self.stats.handshake_failures += 1
                self.stats.errors.append(f"handshake HTTP {status}")
            except (OSError, TimeoutError, Exception) as exc:  # noqa: BLE001
                self.stats.handshake_failures += 1
                self.stats.errors.append(f"connect: {type(exc).__name__}: {exc}")
            else:
                self._ws = ws
                self.stats.connects += 1
                self._need_partial = set(self.tables)
                yield FeedStatus("connected", self.clock.now_ns(), self.url)
                got_data = False
                reason = "closed"
                try:
                    await ws.send(json.dumps({"op": "subscribe", "args": self.topics()}))
                    async for item in self._read(ws):
                        if isinstance(item, FeedMessage) and "table" in item.msg:
                            got_data = True
                        yield item
                    reason = "heartbeat timeout"
                except Exception as exc:  # noqa: BLE001 - any socket failure means reconnect
                    reason = f"{type(exc).__name__}: {exc}"
                finally:
                    self._ws = None
                    with contextlib.suppress(Exception):
                        await ws.close()
                self.stats.disconnects += 1
                if self._closed:
                    return
                self.stats.errors.append(f"disconnected: {reason}")
                yield FeedStatus("disconnected", self.clock.now_ns(), reason)
                if got_data:
                    attempt = -1  # a healthy connection died: replace it at once, back off after
            if self._closed:
                return
            delay = (
                0.0
                if attempt < 0
                else backoff_delay(
                    attempt,
                    self.backoff_base_s,
                    self.backoff_max_s,
                    self._rng,
                    busy,
                    self.busy_backoff_s,
                )
            )
            self.stats.backoffs_s.append(delay)
            attempt += 1
            await asyncio.sleep(delay)

    async def _read(self, ws: Any) -> AsyncIterator[FeedMessage | FeedStatus]:
        """Frames of one connection; returns normally on a heartbeat timeout."""
        while not self._closed:
            try:
                async with asyncio.timeout(self.heartbeat_s):  # no task per frame, unlike wait_for
                    raw = await ws.recv()
            except TimeoutError:
                await ws.send("ping")
                self.stats.pings_sent += 1
                try:
                    async with asyncio.timeout(self.pong_timeout_s):
                        raw = await ws.recv()
                except TimeoutError:
                    return
            except ConnectionClosed:
                if self._closed:
                    return
                raise
            ts = self.clock.now_ns()
            self.last_frame_at = time.monotonic()
            if raw == "pong":
                self.stats.pongs += 1
                continue
            try:
                msg = json.loads(raw)
            except (json.JSONDecodeError, TypeError):
                self.stats.errors.append(f"non-JSON frame: {str(raw)[:80]}")
                continue
            if not isinstance(msg, dict):
                continue
            if self.recorder is not None:
                self.recorder.write(ts, msg)
            self.stats.messages += 1
            table = msg.get("table")
            if isinstance(table, str):
                if table in self._need_partial:
                    if msg.get("action") != "partial":
                        self.stats.dropped_before_partial += 1
                        continue
                    self._need_partial.discard(table)
            elif "error" in msg:
                self.stats.errors.append(f"exchange error: {msg.get('error')}")
            yield FeedMessage(ts, msg)
