"""The websocket feed against a real local server: heartbeat, reconnect, backoff, partials."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from live.feed import BitmexFeed, FeedMessage, FeedStatus, backoff_delay
from live.recording import load_recording
from sim.replay_server import ReplayServer


@given(
    st.integers(0, 100),
    st.floats(0.01, 10),
    st.floats(10, 120),
    st.booleans(),
    st.integers(0, 2**32),
)
def test_backoff_is_jittered_exponential_capped_and_at_least_5s_when_busy(
    attempt: int, base: float, cap: float, busy: bool, seed: int
) -> None:
    d = backoff_delay(attempt, base, cap, random.Random(seed), busy=busy, busy_min_s=5.0)
    nominal = min(cap, base * 2.0 ** min(attempt, 30))
    if busy:
        assert d >= 5.0
        assert d <= max(nominal, 5.0)
    else:
        assert 0.5 * nominal <= d <= nominal


def test_silent_socket_is_replaced_and_a_fresh_partial_is_required(ws_capture: Path) -> None:
    msgs = load_recording(ws_capture)
    hb = 0.3

    async def main() -> None:
        async with ReplayServer(msgs, speed=5) as srv:
            feed = BitmexFeed(
                srv.url,
                "XBTUSD",
                tables=("orderBookL2", "trade"),
                heartbeat_s=hb,
                pong_timeout_s=hb,
                backoff_base_s=0.05,
            )
            events: list = []
            silent_at = None
            async for ev in feed.events():
                events.append((time.monotonic(), ev))
                if (
                    isinstance(ev, FeedMessage)
                    and ev.msg.get("table") == "orderBookL2"
                    and silent_at is None
                ):
                    srv.go_silent()
                    silent_at = time.monotonic()
                if (
                    isinstance(ev, FeedStatus)
                    and ev.kind == "connected"
                    and feed.stats.connects == 2
                ):
                    replaced_after = time.monotonic() - silent_at
                if (
                    feed.stats.connects == 2
                    and isinstance(ev, FeedMessage)
                    and ev.msg.get("table") == "orderBookL2"
                ):
                    break
            await feed.close()
            assert feed.stats.pings_sent >= 1
            assert replaced_after < 2 * hb + 1.0  # 5 s + 5 s with the defaults: within 10 s
            statuses = [ev.kind for _, ev in events if isinstance(ev, FeedStatus)]
            assert statuses == ["connected", "disconnected", "connected"]
            first_book_after_reconnect = ev.msg
            assert first_book_after_reconnect["action"] == "partial"

    asyncio.run(asyncio.wait_for(main(), 30))


def test_http_503_on_handshake_backs_off_at_least_the_busy_floor() -> None:
    async def main() -> None:
        async with ReplayServer([], speed=0) as srv:
            srv.reject_next_handshakes = [503, 502]
            feed = BitmexFeed(srv.url, "XBTUSD", backoff_base_s=0.01, busy_backoff_s=0.2)
            t0 = time.monotonic()
            async for ev in feed.events():
                if isinstance(ev, FeedStatus) and ev.kind == "connected":
                    break
            elapsed = time.monotonic() - t0
            await feed.close()
            assert feed.stats.handshake_failures == 2
            assert feed.stats.backoffs_s[:2] == [max(b, 0.2) for b in feed.stats.backoffs_s[:2]]
            assert all(b >= 0.2 for b in feed.stats.backoffs_s[:2])
            assert elapsed >= 0.4
            assert feed.stats.errors[:2] == ["handshake HTTP 503", "handshake HTTP 502"]

    asyncio.run(asyncio.wait_for(main(), 30))


def test_resubscribe_drops_messages_until_the_new_partial(ws_capture: Path) -> None:
    msgs = load_recording(ws_capture)

    async def main() -> None:
        async with ReplayServer(msgs, speed=2) as srv:
            feed = BitmexFeed(srv.url, "XBTUSD", tables=("orderBookL2",))
            seen = []
            async for ev in feed.events():
                if not isinstance(ev, FeedMessage) or ev.msg.get("table") != "orderBookL2":
                    continue
                seen.append(ev.msg["action"])
                if len(seen) == 5:
                    await feed.resubscribe(["orderBookL2"])
                if len(seen) == 8:
                    break
            await feed.close()
            assert seen[0] == "partial"
            assert seen[5] == "partial"  # nothing between the resubscribe and the fresh partial
            assert srv.subscribe_requests == [["orderBookL2:XBTUSD"], ["orderBookL2:XBTUSD"]]

    asyncio.run(asyncio.wait_for(main(), 30))


@pytest.mark.slow
def test_silent_socket_with_default_heartbeat_is_replaced_within_10s(ws_capture: Path) -> None:
    msgs = load_recording(ws_capture)

    async def main() -> float:
        async with ReplayServer(msgs, speed=1) as srv:
            feed = BitmexFeed(
                srv.url, "XBTUSD", tables=("orderBookL2", "trade")
            )  # defaults: 5 s + 4.5 s
            last_frame = None
            async for ev in feed.events():
                if (
                    isinstance(ev, FeedMessage)
                    and ev.msg.get("table") == "orderBookL2"
                    and last_frame is None
                ):
                    srv.go_silent()
                    last_frame = time.monotonic()
                if (
                    isinstance(ev, FeedStatus)
                    and ev.kind == "connected"
                    and feed.stats.connects == 2
                ):
                    break
            await feed.close()
            assert last_frame is not None
            return time.monotonic() - last_frame

    replaced_after = asyncio.run(asyncio.wait_for(main(), 30))
    assert 9.0 < replaced_after < 10.0
