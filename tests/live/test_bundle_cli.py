"""`chappie live --bundle DIR` runs a real, verified, pickle-free model bundle end to end:
an SB3 PPO zip exported by the registry, the frozen stats fitted on the capture, the
capture replayed on 127.0.0.1. Nothing is unpickled while the loop runs. The bundles are
tests/live/conftest.py's (`bundle_dir`, `target_bundle_dir`)."""

from __future__ import annotations

import json
import os
import pickle
import sys
from pathlib import Path

import pytest

from core import schema as S
from flows.cli import main
from tests.live.support import SMALL_SPEC, redumped_decisions, replay_cli


def test_cli_replays_a_target_mode_bundle_in_its_own_action_mode(
    target_bundle_dir: Path, ws_capture: Path, tmp_path: Path
) -> None:
    """The loop reads a target-mode model's actions as the resting orders wanted: the
    decisions are named in that mode, and the paper orders follow them (an order rests
    at a decision only on a side the previous decision wanted)."""
    out = tmp_path / "d.jsonl"
    rc = main(
        replay_cli(ws_capture, "--bundle", str(target_bundle_dir), "--decisions-out", str(out))
    )
    assert rc == 0
    recs = [json.loads(s) for s in out.read_text().splitlines()]
    assert len(recs) >= 5
    names = S.ACTION_NAMES["target"]
    assert all(
        r["action_mode"] == "target" and r["action_name"] == names[r["action"]] for r in recs
    )
    for prev, rec in zip(recs, recs[1:], strict=False):
        wanted_bid, wanted_ask = prev["action"] & 1, prev["action"] & 2
        assert rec["state"]["long_state"] <= wanted_bid and rec["state"]["short_state"] <= (
            wanted_ask >> 1
        ), (prev, rec)
    assert any(r["state"]["long_state"] or r["state"]["short_state"] for r in recs)


def test_cli_runs_a_verified_bundle_without_unpickling(
    bundle_dir: Path,
    ws_capture: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    real_load, real_loads = pickle.load, pickle.loads

    def guard(real):  # type: ignore[no-untyped-def]
        def call(*a, **k):  # type: ignore[no-untyped-def]
            caller = sys._getframe(1).f_code.co_filename
            if f"{os.sep}numba{os.sep}" not in caller:  # numba's own compiled-kernel cache
                raise AssertionError(f"the live loop unpickled something (from {caller})")
            return real(*a, **k)

        return call

    monkeypatch.setattr(pickle, "load", guard(real_load))
    monkeypatch.setattr(pickle, "loads", guard(real_loads))
    out = tmp_path / "d.jsonl"
    rc = main(replay_cli(ws_capture, "--bundle", str(bundle_dir), "--decisions-out", str(out)))
    assert rc == 0
    stdout = capsys.readouterr().out
    assert (
        f"model=bundle:{bundle_dir.name}" in stdout
        and f"spec={SMALL_SPEC.spec_hash[:12]}" in stdout
    )
    recs = [json.loads(s) for s in out.read_text().splitlines()]
    assert len(recs) >= 5, stdout
    assert all(
        r["action"] in (0, 1, 2) and r["model_version"] == f"bundle:{bundle_dir.name}" for r in recs
    )
    assert all(r["mode"] == "observe" for r in recs)


def test_cli_trades_on_the_fake_exchange_and_never_shows_the_keys(
    bundle_dir: Path,
    ws_capture: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging

    from live.journal import read_journal, unresolved_intents
    from sim.fake_exchange import FakeBitmexRest

    key, secret = "KEY-live-test-9f8e7d", "SECRET-live-test-0a1b2c3d4e5f"
    monkeypatch.setenv("CHAPPIE_BITMEX_API_KEY", key)
    monkeypatch.setenv("CHAPPIE_BITMEX_API_SECRET", secret)
    monkeypatch.setenv("CHAPPIE_DATA_DIR", str(tmp_path / "data"))
    caplog.set_level(logging.DEBUG)
    out = tmp_path / "d.jsonl"
    with FakeBitmexRest(key, secret) as fake:
        rc = main(
            replay_cli(
                ws_capture,
                "--bundle",
                str(bundle_dir),
                "--decisions-out",
                str(out),
                "--allow-trade",
                "--rest-url",
                fake.url,
            )
        )
        open_after = fake.open_orders()
        creates = [r for r in fake.requests if r[:2] == ("POST", "/order")]
        auth_failures = fake.auth_failures
    assert rc == 0
    captured = capsys.readouterr()
    recs = [json.loads(s) for s in out.read_text().splitlines()]
    assert recs and all(r["mode"] == "trade" and "order" in r for r in recs)
    assert len(creates) >= 1, {r["order"] for r in recs}
    assert redumped_decisions(out) == out.read_text().splitlines()  # the record round-trips
    assert auth_failures == 0 and open_after == []  # own orders cancelled on the way out
    journals = list((tmp_path / "data" / "live").glob("journal-*.jsonl"))
    assert len(journals) == 1
    entries = read_journal(journals[0])
    assert unresolved_intents(entries) == []
    assert len([e for e in entries if e["kind"] == "intent" and e.get("op") == "create"]) == len(
        creates
    )
    everything = (
        captured.out + captured.err + caplog.text + out.read_text() + journals[0].read_text()
    )
    assert key not in everything and secret not in everything
