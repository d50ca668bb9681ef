"""Funding that really moves, in paper (#17): the paper account settles each funding time at
the rate BitMEX announced for it on the websocket `instrument` table, else at the rules'
constant, says which in the record (`funding` lines), and `chappie audit paper` replays
the record through the env to the same numbers, funding included."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from core.clock import NS_PER_S
from core.instrument import XBTUSD
from envs.broker import BrokerRules
from flows.cli import main
from live.funding import FundingAnnouncements, FundingDue
from live.loop import LiveSession
from live.paper_log import PaperLog
from live.paper_replay import replay_paper_record
from live.predictor import Predictor
from tests.conftest import INSTRUMENTS
from tests.live.market import StandInMarket
from tests.live.support import SMALL_SPEC, ClipStats, CyclePolicy
from tests.live.test_paper_record import _paper_session

T_0400 = 1_627_012_800 * NS_PER_S  # 2021-07-23T04:00Z: the capture's fundingTimestamp
CONSTANT = 0.0005  # the rules' funding_rate in these tests (the capture announces 0.0001)


def _xbtusd_row() -> dict[str, Any]:
    """BitMEX's XBTUSD instrument row of 2021-07-22 22:36 UTC (the REST capture; the
    websocket `instrument` table's partial carries the same fields)."""
    rows = json.loads(INSTRUMENTS.read_text())
    return next(r for r in rows if r["symbol"] == "XBTUSD")


def _partial(*rows: dict[str, Any]) -> dict[str, Any]:
    return {"table": "instrument", "action": "partial", "data": list(rows)}


def test_the_instrument_partial_announces_the_rate_of_its_funding_time() -> None:
    row = _xbtusd_row()
    assert (row["fundingTimestamp"], row["fundingRate"]) == ("2021-07-23T04:00:00.000Z", 0.0001)
    fa = FundingAnnouncements("XBTUSD", XBTUSD)
    fa.on_rows(_partial({**row, "symbol": "ETHUSD", "fundingRate": 0.003}, row)["data"])
    assert fa.refused == 0
    assert fa.due(T_0400, CONSTANT) == FundingDue(T_0400, 0.0001, "exchange")
    nxt = T_0400 + 8 * 3600 * NS_PER_S  # nothing announced for 12:00 yet
    assert fa.due(nxt, CONSTANT) == FundingDue(nxt, CONSTANT, "config")


def test_an_update_without_a_time_re_announces_the_rate_of_the_last_funding_time() -> None:
    fa = FundingAnnouncements("XBTUSD", XBTUSD)
    fa.on_rows([_xbtusd_row()])
    fa.on_rows([{"symbol": "XBTUSD", "fundingRate": -0.00025}])  # the last announcement wins
    fa.on_rows([{"symbol": "XBTUSD", "fundingTimestamp": "2021-07-23T12:00:00.000Z"}])
    fa.on_rows([{"symbol": "XBTUSD", "fundingRate": 0.0003}])  # for 12:00, not 04:00
    assert fa.due(T_0400, CONSTANT).rate == -0.00025
    assert fa.due(T_0400 + 8 * 3600 * NS_PER_S, CONSTANT).rate == 0.0003
    assert fa.due(T_0400, CONSTANT).source == "config"  # settled once: forgotten


@pytest.mark.parametrize(
    "update",
    [
        {"fundingRate": "0.0001"},  # a string
        {"fundingRate": True},
        {"fundingRate": math.nan},
        {"fundingRate": 0.5},  # beyond any exchange's cap: a unit error
        {"fundingTimestamp": "2021-07-23T05:00:00.000Z", "fundingRate": 0.0002},  # not 04/12/20
        {"fundingTimestamp": "tomorrow", "fundingRate": 0.0002},
    ],
)
def test_an_unusable_announcement_is_refused_and_the_constant_settles(
    update: dict[str, Any],
) -> None:
    fa = FundingAnnouncements("XBTUSD", XBTUSD)
    fa.on_rows([{"symbol": "XBTUSD", "fundingTimestamp": "2021-07-23T04:00:00.000Z", **update}])
    assert fa.refused >= 1
    assert fa.due(T_0400, CONSTANT) == FundingDue(T_0400, CONSTANT, "config")


def _funding_lines(rec: Path) -> list[dict[str, Any]]:
    return [o for o in map(json.loads, rec.read_text().splitlines()) if o["kind"] == "funding"]


def _paid_at(rec: Path, ts: int) -> float:
    bars = [o for o in map(json.loads, rec.read_text().splitlines()) if o["kind"] == "bar"]
    return float(next(o["funding"] for o in bars if o["ts"] == ts))


def test_the_paper_account_settles_at_the_announced_rate_and_the_replay_agrees(
    tmp_path: Path,
) -> None:
    """The same session across 04:00 with and without the announcement: the rate, its
    source and the amount paid follow the announcement; both records replay exactly."""
    fa = FundingAnnouncements("XBTUSD", XBTUSD)
    fa.on_rows([_xbtusd_row()])
    t0 = T_0400 - 600 * NS_PER_S
    announced, constant = tmp_path / "announced.jsonl", tmp_path / "constant.jsonl"
    printed, with_rate = _paper_session(announced, "target", t0=t0, announced=fa)
    printed_c, without = _paper_session(constant, "target", t0=t0)
    said = [s for s in printed.splitlines() if " paper funding: " in s]
    assert said == [s for s in said if "+1.00 bp (announced by the exchange)" in s] != []
    assert "paper funding: rate +5.00 bp (configured constant)" in printed_c
    (a,), (c,) = _funding_lines(announced), _funding_lines(constant)
    assert (a["funding_time"], a["rate"], a["source"]) == (T_0400, 0.0001, "exchange")
    assert (c["funding_time"], c["rate"], c["source"]) == (T_0400, CONSTANT, "config")
    assert a["ts"] == c["ts"] == T_0400  # the bar whose (previous close, close] holds 04:00
    paid_a, paid_c = _paid_at(announced, a["ts"]), _paid_at(constant, c["ts"])
    assert paid_c != 0.0 and math.isclose(paid_a / paid_c, 0.0001 / CONSTANT, rel_tol=1e-9)
    assert with_rate.funding != without.funding
    for rec, exchange in ((announced, 1), (constant, 0)):
        rep = replay_paper_record(rec)
        assert rep.agree, rep.mismatches
        assert (rep.settlements, rep.settlements_exchange) == (1, exchange)


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        # the env settles the record's rate: the amount paid differs
        ({"rate": 0.0002}, "account differs: balance record"),
        ({"source": "config"}, "funding record 0.0001 (config), env 0.0005 (config)"),
        (None, "funding record none, env 0.0005 (config)"),  # the line removed
    ],
)
def test_a_tampered_funding_line_is_detected(
    tmp_path: Path, edit: dict[str, Any] | None, says: str
) -> None:
    fa = FundingAnnouncements("XBTUSD", XBTUSD)
    fa.on_rows([_xbtusd_row()])
    rec = tmp_path / "paper.jsonl"
    _paper_session(rec, "toggle", n=700, t0=T_0400 - 300 * NS_PER_S, announced=fa)
    lines = [json.loads(s) for s in rec.read_text().splitlines()]
    i = next(k for k, o in enumerate(lines) if o["kind"] == "funding")
    if edit is None:
        del lines[i]
    else:
        lines[i] = {**lines[i], **edit}
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps(o) + "\n" for o in lines))
    rep = replay_paper_record(bad)
    assert not rep.agree and any(says in m for m in rep.mismatches), rep.mismatches
    assert main(["audit", "paper", str(bad)]) == 1


def observe_across_0400(
    rec: Path,
    instrument_msgs: list[dict[str, Any]],
    rules: BrokerRules | None = None,
    actions: tuple[int, ...] = (1,),
) -> LiveSession:
    """An observe-mode session on a stand-in market from 03:59:00 to 04:01:00 under `rules`
    (target mode, funding on at the constant), whose policy cycles through `actions` (by
    default it always wants a bid: longs build up), recording the paper account;
    `instrument_msgs` arrive before the market's partials."""
    rules = rules or BrokerRules(action_mode="target", funding=True, funding_rate=CONSTANT)
    s = LiveSession(
        SMALL_SPEC,
        ClipStats(),
        Predictor(CyclePolicy([*actions]), "t@v1", action_mode="target"),  # type: ignore[arg-type]
        rules=rules,
        max_skew_s=None,
        stale_after_s=600,
        paper_log=PaperLog(None, rec),
    )
    market = StandInMarket(4)
    t = T_0400 - 60 * NS_PER_S
    for msg in [*instrument_msgs, *market.partials()]:
        s.on_message(t, msg)
    for _ in range(120):
        for ts, msg in market.bar(t):
            s.on_message(ts, msg)
        t += NS_PER_S
        s.on_timer(t)
    assert s.paper_log is not None and s.paper_log.close() is not None
    return s


def test_the_live_loop_settles_paper_funding_at_the_rate_the_instrument_table_announced(
    tmp_path: Path,
) -> None:
    rec, plain = tmp_path / "paper.jsonl", tmp_path / "plain.jsonl"
    s = observe_across_0400(rec, [_partial(_xbtusd_row())])
    observe_across_0400(plain, [])  # no instrument message: the constant, said so
    (a,), (c,) = _funding_lines(rec), _funding_lines(plain)
    assert (a["rate"], a["source"], c["rate"], c["source"]) == (
        0.0001,
        "exchange",
        CONSTANT,
        "config",
    )
    assert s.instrument_state == "Open" and s.funding.refused == 0
    paid = _paid_at(rec, a["ts"])
    assert paid != 0.0 and math.isclose(paid / _paid_at(plain, c["ts"]), 0.2, rel_tol=1e-9)
    for r in (rec, plain):
        rep = replay_paper_record(r)
        assert rep.agree and rep.settlements == 1, rep.mismatches
