"""Trading against the fake BitMEX (REST + websocket on 127.0.0.1): orders only when allowed,
reconciliation, exactly-once creates, SIGTERM cancels own orders."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from core.config.live import LiveConfig
from flows.cli import main
from live.exchange import cl_ord_id
from live.journal import read_journal, unresolved_intents
from live.loop import LiveRun, ScaledClock, run_live
from live.model_watch import LoadedChampion
from live.orders import OrderManager
from live.predictor import Predictor
from live.recording import load_recording
from sim.fake_exchange import FakeBitmexRest, FaultPlan
from sim.replay_server import ReplayServerThread
from tests.live.support import (
    KEY,
    SECRET,
    SMALL_SPEC,
    ClipStats,
    CyclePolicy,
    SimClock,
    make_manager,
    replay_cli,
    trade_risk,
)

SPEC = SMALL_SPEC
RISK = trade_risk()


@pytest.fixture
def fake() -> Iterator[FakeBitmexRest]:
    with FakeBitmexRest(KEY, SECRET) as f:
        yield f


def _manager(
    fake: FakeBitmexRest,
    tmp_path: Path,
    session: str = "sess0001",
    mono: Callable[[], float] = time.monotonic,
) -> OrderManager:
    return make_manager(fake.url, tmp_path / "journal.jsonl", session=session, risk=RISK, mono=mono)


def test_observe_only_cli_sends_zero_orders(
    fake: FakeBitmexRest, ws_capture: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHAPPIE_BITMEX_API_KEY", KEY)
    monkeypatch.setenv("CHAPPIE_BITMEX_API_SECRET", SECRET)
    monkeypatch.setenv("CHAPPIE_DATA_DIR", str(tmp_path))
    rc = main(replay_cli(ws_capture, "--rest-url", fake.url, "--no-model", speed=30))
    assert rc == 0
    assert fake.requests == [] and fake.creates_committed == 0


def test_order_manager_adopts_a_previous_sessions_orders_and_leaves_foreign_ones(
    fake: FakeBitmexRest, tmp_path: Path
) -> None:
    m = _manager(fake, tmp_path)
    rest = m.rest
    own = cl_ord_id("oldsess9", 1, 1)  # left by the session before a restart
    rest.place_post_only("XBTUSD", 1, 100, 32000.0, own)
    rest.place_post_only("XBTUSD", 1, 100, 31999.5, cl_ord_id("oldsess9", 2, 1))  # a second own buy
    rest.place_post_only("XBTUSD", -1, 100, 32010.0, "someone-else")
    fake.position_qty["XBTUSD"] = 200
    summary = m.reconcile(0)
    assert summary.position == 200 and summary.own == 1 and summary.foreign == 1
    assert len(summary.cancelled_extra) == 1
    assert m.long_order and not m.short_order
    assert sorted(o["clOrdID"] for o in fake.open_orders()) == sorted([own, "someone-else"])
    m.shutdown(1)
    assert [o["clOrdID"] for o in fake.open_orders()] == [
        "someone-else"
    ]  # foreign orders untouched
    m.journal.close()


def test_toggle_places_post_only_at_best_price_and_503_still_leaves_one_order(
    fake: FakeBitmexRest, tmp_path: Path
) -> None:
    m = _manager(fake, tmp_path)
    m.reconcile(0)
    fake.fail_creates_after_commit = [503]
    S = 1_000_000_000
    out = m.on_decision(1, 10 * S, 64000, 64001, 64000.5, now_ns=10 * S, last_data_ns=10 * S)
    assert out.startswith("placed") and "after a lookup" in out
    opened = fake.open_orders()
    assert len(opened) == 1 and opened[0]["price"] == 32000.0 and opened[0]["side"] == "Buy"
    assert opened[0]["execInst"] == "ParticipateDoNotInitiate"
    # stale data: no new order, but the toggle-off cancel still goes through
    assert m.on_decision(
        2, 11 * S, 64000, 64001, 64000.5, now_ns=1000 * S, last_data_ns=10 * S
    ).startswith("refused")
    assert m.on_decision(
        1, 12 * S, 64000, 64001, 64000.5, now_ns=1000 * S, last_data_ns=10 * S
    ).startswith("cancelled")
    assert fake.open_orders() == []
    m.journal.close()
    entries = read_journal(tmp_path / "journal.jsonl")
    assert unresolved_intents(entries) == []
    assert [e["kind"] for e in entries if e.get("cl_ord_id") == opened[0]["clOrdID"]].count(
        "intent"
    ) == 2


def test_trading_loop_sigterm_cancels_own_orders_and_flushes(
    fake: FakeBitmexRest, ws_capture: Path, tmp_path: Path
) -> None:
    msgs = load_recording(ws_capture)
    with ReplayServerThread(msgs, speed=10) as srv:
        m = _manager(fake, tmp_path)
        cfg = LiveConfig(
            feed="replay", ws_url=srv.url, rest_url=fake.url, allow_trade=True, risk=RISK
        )
        policy = CyclePolicy([1, 0, 2, 0, 0])  # ends with both orders toggled on, then holds

        def terminate_once_orders_rest() -> None:  # SIGTERM while own orders rest
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and len(fake.open_orders()) < 2:
                time.sleep(0.05)
            os.kill(os.getpid(), signal.SIGTERM)

        timer = threading.Thread(target=terminate_once_orders_rest, daemon=True)
        timer.start()
        try:
            summary = run_live(
                LiveRun(
                    cfg,
                    spec=SPEC,
                    duration_s=30,
                    decisions_out=tmp_path / "d.jsonl",
                    max_skew_s=None,
                ),
                LoadedChampion(Predictor(policy, "test@v1"), SPEC, ClipStats()),
                orders=m,
                clock=ScaledClock(msgs[0][0], 10),
                out=None,
            )
        finally:
            timer.join(20)
    assert summary.stopped == "SIGTERM" and summary.mode == "trade"
    assert summary.orders_sent >= 2
    assert fake.open_orders() == []  # own orders cancelled on the way out
    assert fake.dead_man_calls >= 2 and fake.dead_man_timeout_ms == 0  # armed, then disarmed
    entries = read_journal(tmp_path / "journal.jsonl")
    assert entries[-1]["what"] == "shutdown"
    assert unresolved_intents(entries) == []
    assert fake.auth_failures == 0


def test_run_live_refuses_trading_without_a_model(fake: FakeBitmexRest, tmp_path: Path) -> None:
    m = _manager(fake, tmp_path)
    cfg = LiveConfig(allow_trade=True)
    with pytest.raises(ValueError, match="loaded, verified model"):
        run_live(
            LiveRun(cfg, spec=SPEC),
            orders=m,
            out=None,
        )
    with pytest.raises(ValueError, match="observe-only sends no order"):
        run_live(
            LiveRun(LiveConfig(), spec=SPEC),
            orders=m,
            out=None,
        )
    assert fake.requests == []


@pytest.mark.parametrize(
    ("updates", "reason"),
    [
        ({"rest_url": "https://www.bitmex.com/api/v1"}, "mainnet URL without --mainnet"),
        ({"ws_url": "wss://ws.bitmex.com/realtime"}, "mainnet URL without --mainnet"),
        ({"stake_contracts": 200}, "exceeds max order size"),
        ({}, ""),
        (
            {
                "rest_url": "https://www.bitmex.com/api/v1",
                "ws_url": "wss://ws.bitmex.com/realtime",
                "mainnet": True,
            },
            "",
        ),
    ],
)
def test_trade_refusal_rules(updates: dict, reason: str) -> None:
    from live.app import trade_refusal

    cfg = LiveConfig(allow_trade=True, **updates)
    assert (trade_refusal(cfg) == "") if not reason else (reason in trade_refusal(cfg))


def test_cli_allow_trade_refuses_mainnet_without_flag_and_without_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHAPPIE_DATA_DIR", str(tmp_path))
    assert (
        main(["live", "--allow-trade", "--rest-url", "https://www.bitmex.com/api/v1", "--no-model"])
        == 2
    )
    assert "mainnet URL without --mainnet" in capsys.readouterr().out
    assert main(["live", "--allow-trade", "--no-model", "--duration", "1"]) == 2
    assert "without a verified model" in capsys.readouterr().out


def test_reconnect_triggers_reconciliation(
    fake: FakeBitmexRest, ws_capture: Path, tmp_path: Path
) -> None:
    msgs = load_recording(ws_capture)
    with ReplayServerThread(msgs, speed=10) as srv:
        m = _manager(fake, tmp_path)
        cfg = LiveConfig(
            feed="replay", ws_url=srv.url, rest_url=fake.url, allow_trade=True, risk=RISK
        )
        timer = threading.Timer(1.0, lambda: srv.call(srv.server.drop_connections))
        timer.start()
        try:
            summary = run_live(
                LiveRun(cfg, spec=SPEC, duration_s=60, max_skew_s=None, backoff_base_s=0.05),
                LoadedChampion(Predictor(CyclePolicy([0]), "t@v1"), SPEC, ClipStats()),
                orders=m,
                clock=ScaledClock(msgs[0][0], 10),
                source_done=srv.finished,
                out=None,
            )
        finally:
            timer.cancel()
    assert summary.connects >= 2
    reconciles = [
        e for e in read_journal(tmp_path / "journal.jsonl") if e.get("what") == "reconcile"
    ]
    assert len(reconciles) == summary.connects  # on start, then after every reconnect


def test_instrument_not_open_blocks_new_orders(
    fake: FakeBitmexRest, ws_capture: Path, tmp_path: Path
) -> None:
    from live.loop import LiveSession

    m = _manager(fake, tmp_path)
    m.reconcile(0)
    s = LiveSession(
        SPEC,
        ClipStats(),
        Predictor(CyclePolicy([1, 1]), "t@v1"),
        max_skew_s=None,
        stale_after_s=600,
        orders=m,
        mode="trade",
    )
    s.keep_history = True
    s.on_message(
        0,
        {
            "table": "instrument",
            "action": "partial",
            "data": [{"symbol": "XBTUSD", "state": "Closed"}],
        },
    )
    for ts, msg in load_recording(ws_capture):
        s.on_message(ts, msg)
    assert s.decisions and all(d.order == "refused: instrument state Closed" for d in s.decisions)
    assert fake.creates_committed == 0
    s.on_message(
        0,
        {
            "table": "instrument",
            "action": "update",
            "data": [{"symbol": "XBTUSD", "state": "Open"}],
        },
    )
    assert s.instrument_state == "Open"
    m.journal.close()


def test_dead_mans_switch_is_refreshed_while_trading_and_disarmed_on_shutdown(
    fake: FakeBitmexRest, tmp_path: Path
) -> None:
    m = _manager(fake, tmp_path)
    assert m.refresh_dead_man(100.0) and fake.dead_man_timeout_ms == 60_000
    assert not m.refresh_dead_man(114.9)  # still well inside the 60 s timeout
    assert m.refresh_dead_man(115.0)
    assert fake.dead_man_calls == 2
    m.shutdown(0)
    assert fake.dead_man_timeout_ms == 0 and fake.dead_man_calls == 3
    m.journal.close()


def test_fills_are_polled_at_most_every_fill_poll_interval(
    fake: FakeBitmexRest, tmp_path: Path
) -> None:
    clock = SimClock()
    m = _manager(fake, tmp_path, mono=clock)
    m.reconcile(0)
    S = 1_000_000_000
    m.on_decision(
        2, 1 * S, 64000, 64001, 64000.5, now_ns=1 * S, last_data_ns=1 * S
    )  # sell at the ask
    cid = m.resting[-1].cl_ord_id
    assert m.poll_fills(2 * S) == []  # first poll: still resting
    fake.fill(cid)
    polls = len(fake.requests)
    clock.t += 1.0
    assert m.poll_fills(3 * S) == []  # within 2 s of the last poll: no REST call
    assert len(fake.requests) == polls
    clock.t += 1.0
    fills = m.poll_fills(4 * S)
    assert [(f.side, f.price_ticks, f.qty) for f in fills] == [(-1, 64001, 100)]
    assert m.position == -100 and not m.short_order and m.risk.position == -100
    m.journal.close()


def test_refused_keys_end_run_live_cleanly_with_a_fatal_reason(
    fake: FakeBitmexRest, tmp_path: Path
) -> None:
    m = make_manager(fake.url, tmp_path / "journal.jsonl", secret="wrong-secret", risk=RISK)
    cfg = LiveConfig(feed="replay", ws_url="ws://127.0.0.1:9/none", allow_trade=True, risk=RISK)
    summary = run_live(
        LiveRun(cfg, spec=SPEC, duration_s=5),
        LoadedChampion(Predictor(CyclePolicy([0]), "t@v1"), SPEC, ClipStats()),
        orders=m,
        out=None,
    )
    assert summary.stopped.startswith("fatal:") and "refused the keys" in summary.stopped
    assert read_journal(tmp_path / "journal.jsonl")[-1]["what"] == "shutdown"


@pytest.mark.slow
def test_a_silent_feed_takes_quotes_down_over_the_real_socket_and_a_rest_outage_is_fatal(
    fake: FakeBitmexRest, ws_capture: Path, tmp_path: Path
) -> None:
    """run_live end to end: once both own orders rest the replay goes silent; the ticker
    sees stale data and cancels them. Then every REST request fails: beyond the outage
    bound the run stops with a fatal reason, cleanly (no exception)."""
    msgs = load_recording(ws_capture)
    risk = trade_risk(stale_after_s=2)  # market seconds: 0.2 s of wall time at 10x
    with ReplayServerThread(msgs, speed=10) as srv:
        m = make_manager(
            fake.url, tmp_path / "journal.jsonl", risk=risk, rest_outage_s=1.0, timeout_s=0.5
        )
        cfg = LiveConfig(
            feed="replay", ws_url=srv.url, rest_url=fake.url, allow_trade=True, risk=risk
        )
        seen: dict[str, float] = {}

        def script() -> None:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and len(fake.open_orders()) < 2:
                time.sleep(0.02)
            srv.call(srv.server.go_silent)
            seen["silent_at"] = time.monotonic()
            while time.monotonic() < deadline and fake.open_orders():
                time.sleep(0.02)
            seen["down_after_s"] = time.monotonic() - seen["silent_at"]
            fake.faults = FaultPlan.uniform(0, rate=1.0, timeout_rate=0.0, delay_s=0.0)

        driver = threading.Thread(target=script, daemon=True)
        driver.start()
        summary = run_live(
            LiveRun(cfg, spec=SPEC, duration_s=30, max_skew_s=None),
            LoadedChampion(Predictor(CyclePolicy([1, 2] + [0] * 1000), "t@v1"), SPEC, ClipStats()),
            orders=m,
            clock=ScaledClock(msgs[0][0], 10),
            out=None,
        )
        driver.join(5)
    assert seen["down_after_s"] < 2.0  # stale after 0.2 s of wall time, cancelled at once
    assert summary.quotes_pulled >= 1
    assert summary.stopped.startswith("fatal:") and "failing for" in summary.stopped
    fake.faults = None
    assert fake.open_orders() == []
