"""`chappie live --feed replay` end to end against the replay server on 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.config.features import FeatureSpec
from core.config.live import LiveConfig
from core.schema import MANAGEMENT_STATE
from flows.cli import main
from live.loop import LiveRun, LiveSession, run_live
from live.predictor import Predictor
from live.recording import load_recording
from sim.replay_server import ReplayServerThread
from tests.live.support import after_lines, redumped_decisions, replay_cli

SMALL_YAML = """
features:
  spec: {windows_s: [2, 5], return_horizons_s: [1, 2], window: 4}
  walk_forward: {embargo_s: 10}
sweep:
  trials:
    - name: base
      env: {window: 4}
live:
  risk: {stale_after_s: 600}   # this test checks the wiring, not staleness under CPU load
"""
SMALL_SPEC = FeatureSpec(windows_s=(2, 5), return_horizons_s=(1, 2), window=4)


def test_cli_replay_without_model_writes_one_decision_line_per_bar(
    tmp_path: Path, ws_capture: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "small.yaml"
    cfg.write_text(SMALL_YAML)
    out = tmp_path / "decisions.jsonl"
    rec = tmp_path / "rec.jsonl"
    rc = main(
        replay_cli(
            ws_capture,
            "--decisions-out",
            str(out),
            "--record",
            str(rec),
            "--config",
            str(cfg),
            "--no-model",
        )
    )
    assert rc == 0
    stdout = capsys.readouterr().out
    assert "model=none (--no-model); observe-only" in stdout
    assert "stopped (replay finished)" in stdout  # the run ends with the replay, well before 60 s
    lines = [json.loads(s) for s in out.read_text().splitlines()]
    assert len(lines) >= 10
    ts = [d["ts"] for d in lines]
    assert ts == sorted(ts) and len(set(ts)) == len(ts)
    assert all(t % SMALL_SPEC.interval_ns == 0 for t in ts)
    for d in lines:
        assert d["action"] is None and d["model_version"] is None and d["mode"] == "observe"
        assert list(d["state"]) == list(MANAGEMENT_STATE)
    assert redumped_decisions(out) == out.read_text().splitlines()  # the record round-trips
    # stdout carries the same decisions as human lines
    assert sum(1 for s in stdout.splitlines() if " action=none " in s) == len(lines)
    # the recording holds every received message in the format ingest reads
    from core.instrument import XBTUSD
    from ingest.ws_recording import read_ws_recording

    fr = read_ws_recording(rec, "XBTUSD", XBTUSD)  # ingest reads what --record wrote
    assert fr.ok and fr.book.height > 1000 and fr.trades.height > 0
    recorded = load_recording(rec)
    assert recorded[0][1]["info"].startswith("Welcome")
    assert sum(1 for _, m in recorded if m.get("table") == "orderBookL2") > 1000


def test_cli_refuses_replay_feed_without_a_source(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["live", "--feed", "replay", "--no-model", "--duration", "1"]) == 2
    assert "--replay PATH or --ws-url" in capsys.readouterr().out


def test_desync_leads_to_resubscribe_and_decisions_resume(tmp_path: Path) -> None:
    from core.config.market import SyntheticMarketConfig
    from core.instrument import XBTUSD
    from ingest.synthetic import generate_market
    from live.loop import ScaledClock
    from sim.replay_server import canonical_to_messages

    _day, book, trades = next(
        iter(generate_market(SyntheticMarketConfig(seed=2, days=1, day_hours=0.1)))
    )
    msgs = canonical_to_messages(book, trades, "XBTUSD", XBTUSD.tick_size)
    bad = {  # an update of a level id the book never had: a desync
        "table": "orderBookL2",
        "action": "update",
        "data": [{"symbol": "XBTUSD", "id": 1, "side": "Buy", "size": 5}],
    }
    out = tmp_path / "d.jsonl"
    with ReplayServerThread(msgs, speed=100) as srv:
        after_lines(out, 3, lambda: srv.call(srv.server.inject, "orderBookL2", "XBTUSD", bad))
        cfg = LiveConfig(feed="replay", ws_url=srv.url, risk={"stale_after_s": 600})
        summary = run_live(
            LiveRun(cfg, spec=SMALL_SPEC, duration_s=60, decisions_out=out, max_skew_s=None),
            clock=ScaledClock(msgs[0][0], 100),
            source_done=srv.finished,
            out=None,
        )
        requests = srv.server.subscribe_requests
    assert summary.desyncs == 1 and summary.resubscribes == 1
    assert requests[-1] == [
        "orderBookL2:XBTUSD",
        "trade:XBTUSD",
        "instrument:XBTUSD",
    ]  # fresh partials
    ts = [json.loads(s)["ts"] for s in out.read_text().splitlines()]
    gaps = [b - a for a, b in zip(ts, ts[1:], strict=False)]
    assert max(gaps) > SMALL_SPEC.interval_ns  # decisions paused for the partials and the warm-up
    assert sum(1 for t in ts if t > ts[2] + max(gaps)) > 0  # and resumed
    assert summary.orders_sent == 0


def test_session_without_stats_gives_no_observation_and_no_action(ws_capture: Path) -> None:
    s = LiveSession(SMALL_SPEC, None, Predictor(None, None, "none"), max_skew_s=None)
    s.keep_history = True
    for ts, m in load_recording(ws_capture):
        s.on_message(ts, m)
    assert s.decisions and all(d.action is None for d in s.decisions)
    assert s.observations == []


def test_cli_replays_the_synthetic_market(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "small.yaml"
    cfg.write_text(SMALL_YAML + "ingest:\n  synthetic: {seed: 5, day_hours: 0.05}\n")
    out = tmp_path / "d.jsonl"
    rc = main(
        replay_cli(
            "synthetic", "--decisions-out", str(out), "--config", str(cfg), "--no-model", speed=50
        )
    )
    assert rc == 0
    recs = [json.loads(s) for s in out.read_text().splitlines()]
    assert len(recs) >= 10 and recs[0]["time"].startswith("2024-01-01T00:0")


def test_crossed_book_is_a_desync_that_asks_for_fresh_partials() -> None:
    s = LiveSession(SMALL_SPEC, None, Predictor(None, None, "none"), max_skew_s=None)
    S = 1_000_000_000
    rows = [
        {"symbol": "XBTUSD", "id": 1, "side": "Sell", "size": 5, "price": 100.5},
        {"symbol": "XBTUSD", "id": 2, "side": "Buy", "size": 7, "price": 100.0},
    ]
    s.on_message(
        1 * S, {"table": "trade", "action": "partial", "filter": {"symbol": "XBTUSD"}, "data": []}
    )
    s.on_message(
        1 * S,
        {"table": "orderBookL2", "action": "partial", "filter": {"symbol": "XBTUSD"}, "data": rows},
    )
    s.on_tick(2 * S)
    assert s.desyncs == 0 and not s.pending_resubscribe
    cross = {
        "symbol": "XBTUSD",
        "id": 3,
        "side": "Buy",
        "size": 1,
        "price": 101.0,
    }  # bid above the ask
    s.on_message(int(2.5 * S), {"table": "orderBookL2", "action": "insert", "data": [cross]})
    s.on_tick(3 * S)
    assert s.desyncs == 1 and s.pending_resubscribe
    # after the reset, an update of a level from before is an unknown level, not a silent error
    s.pending_resubscribe = False
    s.on_message(
        4 * S, {"table": "orderBookL2", "action": "update", "data": [{**rows[0], "size": 1}]}
    )
    assert s.bars >= 1 and s.desyncs == 1  # dropped: the decoder waits for a fresh partial


def test_session_says_what_it_waits_for_and_when_it_will_decide(ws_capture: Path) -> None:
    """#20: warm-up is announced with the bars left and the time of the first decision,
    and that time is when the first decision comes."""
    said: list[str] = []
    s = LiveSession(
        SMALL_SPEC, None, Predictor(None, None, "none"), max_skew_s=None, on_status=said.append
    )
    s.keep_history = True
    for ts, m in load_recording(ws_capture):
        s.on_message(ts, m)
    waits = [x for x in said if "waiting: feature warm-up" in x]
    assert waits and "bars left, first decision near" in waits[0] and "no model" in waits[0]
    promised = waits[0].split("first decision near ")[1].split(" ")[0]
    assert s.decisions and s.decisions[0].time == promised
    assert any("deciding from this bar on" in x for x in said)
    assert len(said) < 20  # announced when the wait changes, not on every bar
