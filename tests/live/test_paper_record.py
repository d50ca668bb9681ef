"""Paper trading as a dry run: `chappie live` (observe mode) prints each simulated fill and
records the paper account's bars, fills and decisions (`--paper-out`); `chappie audit
paper` replays the record through ManagementEnv and agrees exactly, or says where not."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from core.instrument import XBTUSD
from envs.broker import BrokerAccount, BrokerRules
from envs.position import open_account
from flows.cli import main
from live.decision import Decision
from live.funding import FundingAnnouncements, paper_on_bar
from live.paper_log import PaperLog
from live.paper_record import BarInputs, PaperTotals, parse_line
from live.paper_replay import PaperRecordError, replay_paper_record
from tests.envs.conftest import random_market
from tests.live.bundles import BundleFactory
from tests.live.support import replay_cli

S = 1_000_000_000
T_0350 = 1_626_925_800 * S  # 2021-07-22T03:50:00Z: 10 minutes before a funding time


def _paper_session(
    path: Path,
    mode: str,
    n: int = 900,
    seed: int = 9,
    t0: int = T_0350,
    announced: FundingAnnouncements | None = None,
) -> tuple[str, PaperTotals]:
    """The loop's order of calls (open at the decision bar, act; each later bar: on_bar at
    the funding rate due, then maybe a decision) over a random market from `t0` (across
    04:00 UTC), with funding on at the constant 0.0005 unless `announced` has a rate."""
    m = random_market(n, seed=seed)
    bid, ask, hi, lo = m["bid"], m["ask"], m["buy_hi"], m["sell_lo"]
    ts = t0 + np.arange(n, dtype=np.int64) * S
    rules = BrokerRules(action_mode=mode, funding=True, funding_rate=0.0005, stake_fraction=0.25)
    out = io.StringIO()
    log = PaperLog(out, path)
    paper = BrokerAccount(rules, XBTUSD, open_account(1.0, int(ts[0])))
    mid = (bid + ask) / 2.0
    bars = [
        BarInputs(
            ts=int(ts[t]),
            bid=int(bid[t]),
            ask=int(ask[t]),
            buy_hi=int(hi[t]),
            sell_lo=int(lo[t]),
            mid=float(mid[t]),
        )
        for t in range(n)
    ]
    log.start(paper, bars[0])
    rng = np.random.default_rng(seed)
    for t in range(n):
        if t:
            log.bar(paper, bars[t], paper_on_bar(paper, bars[t], announced))
        if t % 4 != 3:  # some bars without a decision (a gap in readiness)
            a = int(rng.integers(0, 3 if mode == "toggle" else 4))
            paper.act(a, int(bid[t]), int(ask[t]))
            rec = Decision.of(int(ts[t]), a, np.zeros(7), "v", "observe", mid[t], 0.0, mode)
            log.decision(paper, rec)  # the paper record keeps its ts, action and name
    summary = log.close()
    assert summary is not None and summary.fills == paper.fills
    return out.getvalue(), summary


@pytest.mark.parametrize("mode", ["toggle", "target"])
def test_a_paper_record_replays_through_the_env_to_the_same_fills_and_equity(
    tmp_path: Path, mode: str
) -> None:
    rec = tmp_path / "paper.jsonl"
    printed, summary = _paper_session(rec, mode)
    assert summary.fills > 20 and summary.funding != 0.0  # fills, and 04:00 settled
    assert printed.count(" paper fill: ") == summary.fills
    rep = replay_paper_record(rec)
    assert rep.agree, rep.mismatches
    assert rep.fills_env == rep.fills_record == summary.fills
    assert rep.equity_env == rep.equity_record == summary.equity
    assert rep.bars == 899
    raw = rec.read_text().splitlines()  # every line reads back to a row of the same bytes
    assert [_redump(s) for s in raw] == raw


def _redump(line: str) -> str:
    """A record line read back as its typed row and dumped as PaperLog writes it."""
    return json.dumps(parse_line(json.loads(line)).to_json(), separators=(",", ":"))


def _tamper(rec: Path, out: Path, kind: str, edit: dict) -> None:
    """Copy `rec` to `out`, changing the first line of `kind` (after the start) by `edit`
    (a bar: the first one that filled; "quiet bar": the first one that did not fill while
    a buy order rested)."""
    lines = [json.loads(s) for s in rec.read_text().splitlines()]
    orders = [0, 0]
    for obj in lines[1:]:
        quiet = kind == "quiet bar" and obj["kind"] == "bar" and not obj["fills"] and orders[0]
        orders = obj.get("orders", orders)
        if quiet or (obj["kind"] == kind and (kind != "bar" or obj["fills"])):
            for key, value in edit.items():
                if isinstance(obj[key], dict):
                    obj[key] = {**obj[key], **value}
                else:
                    obj[key] = value
            break
    out.write_text("".join(json.dumps(o) + "\n" for o in lines))


@pytest.mark.parametrize(
    ("kind", "edit", "says"),
    [
        ("fill", {"fee": -1e-5}, "record fills 1"),  # a kinder fee than the schedule's
        ("quiet bar", {"sell_lo": 1}, "the record did not"),  # a trade through the bid
        ("bar", {"account": {"balance": 1.01}}, "balance record 1.01"),
        ("decision", {"action": 0}, ""),  # another action than the model's
    ],
)
def test_a_tampered_paper_record_is_detected(
    tmp_path: Path, kind: str, edit: dict, says: str
) -> None:
    rec = tmp_path / "paper.jsonl"
    _paper_session(rec, "target", n=200)
    bad = tmp_path / "bad.jsonl"
    _tamper(rec, bad, kind, edit)
    rep = replay_paper_record(bad)
    assert not rep.agree and says in " ".join(rep.mismatches)
    assert main(["audit", "paper", str(bad)]) == 1


def test_audit_paper_refuses_unreadable_and_unreplayable_records(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rec = tmp_path / "paper.jsonl"
    _paper_session(rec, "toggle", n=50)
    broken = tmp_path / "broken.jsonl"
    broken.write_text(rec.read_text() + "{not json\n")
    assert main(["audit", "paper", str(broken)]) == 2
    assert "broken.jsonl:" in capsys.readouterr().err
    swapped = tmp_path / "swapped.jsonl"
    lines = rec.read_text().splitlines()
    rules = json.loads(lines[0])["rules"]
    lines.insert(5, json.dumps({"kind": "rules", "ts": json.loads(lines[4])["ts"], "rules": rules}))
    swapped.write_text("\n".join(lines) + "\n")
    with pytest.raises(PaperRecordError, match="not replayable"):
        replay_paper_record(swapped)
    assert main(["audit", "paper", str(tmp_path / "missing.jsonl")]) == 2


def test_two_sessions_appended_to_one_record_replay_each(tmp_path: Path) -> None:
    rec = tmp_path / "paper.jsonl"
    _paper_session(rec, "toggle", n=120, seed=1)
    _paper_session(rec, "toggle", n=120, seed=2)  # a restarted chappie live appends
    rep = replay_paper_record(rec)
    assert rep.agree and rep.sessions == 2 and rep.bars == 2 * 119


def test_live_dry_run_prints_fills_and_its_record_replays_to_the_same_numbers(
    model_bundle: BundleFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`chappie live` on the replayed synthetic market (3 minutes at 50x) with a model that
    trades (target mode, always quoting both sides: the paper orders rest and fill): every
    simulated fill is printed, the record replays through the env to the same fills and
    equity, and a record whose fill was altered fails the audit."""
    cfg = tmp_path / "small.yaml"
    cfg.write_text(
        "ingest:\n  synthetic: {seed: 5, day_hours: 0.05}\n"
        "live:\n  risk: {stale_after_s: 600}\n"  # the wiring is tested, not staleness
    )
    target_bundle = model_bundle("target", fixed_action=3)
    rec = tmp_path / "paper.jsonl"
    decisions = tmp_path / "d.jsonl"
    args = ("--bundle", str(target_bundle), "--paper-out", str(rec), "--config", str(cfg))
    rc = main(replay_cli("synthetic", *args, "--decisions-out", str(decisions), speed=50))
    assert rc == 0
    stdout = capsys.readouterr().out
    lines = [json.loads(s) for s in rec.read_text().splitlines()]
    fills = [o for o in lines if o["kind"] == "fill"]
    assert [_redump(s) for s in rec.read_text().splitlines()] == rec.read_text().splitlines()
    assert len(fills) >= 2, stdout  # the model trades
    assert stdout.count(" paper fill: ") == len(fills)
    end = lines[-1]
    assert end["kind"] == "end" and end["fills"] == len(fills)
    assert f"chappie live: paper: {len(fills)} fills" in stdout and str(rec) in stdout
    # the paper record's decisions are the loop's decisions
    made = [json.loads(s) for s in decisions.read_text().splitlines()]
    assert [(o["ts"], o["action"]) for o in lines if o["kind"] == "decision"] == [
        (d["ts"], d["action"]) for d in made
    ]
    assert main(["audit", "paper", str(rec), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["agree"] and rep["fills_env"] == rep["fills_record"] == len(fills)
    assert rep["equity_env"] == rep["equity_record"] == end["equity"]
    bad = tmp_path / "bad.jsonl"
    _tamper(rec, bad, "fill", {"price_ticks": fills[0]["price_ticks"] + 1, "notional": 1.0})
    assert main(["audit", "paper", str(bad)]) == 1
    assert "DISAGREE" in capsys.readouterr().out
