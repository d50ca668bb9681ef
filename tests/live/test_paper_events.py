"""The live bar's #17 fields (the sizes at the best bid and ask, the taker volume at and the
times of the prints through the previous close's best) reach the paper account and its
record, and `chappie audit paper` feeds the env the same bars: under a queue model or a
latency the record replays to the same fills only with them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from envs.broker import BrokerRules
from live.paper_record import BAR_EVENTS
from live.paper_replay import replay_paper_record
from tests.live.test_paper_funding import _partial, _xbtusd_row, observe_across_0400


def _lines(rec: Path) -> list[dict[str, Any]]:
    return [json.loads(s) for s in rec.read_text().splitlines()]


@pytest.mark.parametrize(
    ("fill_model", "latency_ms"),
    [("risk_averse", 0.0), ("power_prob", 0.0), ("risk_averse", 250.0)],
)
def test_the_paper_record_carries_the_live_bars_queue_fields_and_replays_with_them(
    tmp_path: Path, fill_model: str, latency_ms: float
) -> None:
    rules = BrokerRules(
        action_mode="target",
        fill_model=fill_model,
        entry_latency_ms=latency_ms,
        cancel_latency_ms=latency_ms,
        stake_fraction=0.25,
    )
    rec = tmp_path / "paper.jsonl"
    observe_across_0400(rec, [], rules, actions=(3, 3, 3, 0, 1, 2))  # quote, and move quotes
    lines = _lines(rec)
    bars = [o["bar"] if o["kind"] == "start" else o for o in lines if o["kind"] in ("start", "bar")]
    assert len(bars) > 90 and all(set(BAR_EVENTS) <= o.keys() for o in bars)
    assert all(o["bid_size"] > 0 and o["ask_size"] > 0 for o in bars)  # the book's, at the close
    assert sum(o["sell_at_vol"] > 0 for o in bars) and sum(o["buy_at_vol"] > 0 for o in bars)
    fills = sum(o["kind"] == "fill" for o in lines)
    assert fills > 0
    rep = replay_paper_record(rec)
    assert rep.agree and rep.fills_env == rep.fills_record == fills, rep.mismatches
    # the replay reads them: without the at-price volume (a record written before the
    # sampler had it: the broker took none) the env fills otherwise
    stripped = tmp_path / "stripped.jsonl"
    for o in bars:
        o.pop("sell_at_vol")
        o.pop("buy_at_vol")
    stripped.write_text("".join(json.dumps(o) + "\n" for o in lines))
    assert not replay_paper_record(stripped).agree


def test_an_announced_funding_rate_under_a_queue_model_and_latency_replays_exactly(
    tmp_path: Path,
) -> None:
    """Settling at the announced rate keeps the orders' queue places and latencies (the
    paper account's rules carry the rate for that one bar): the env, which settles it from
    its funding table, agrees on every bar."""
    rules = BrokerRules(
        action_mode="target",
        fill_model="power_prob",
        entry_latency_ms=400.0,
        cancel_latency_ms=400.0,
        stake_fraction=0.25,
        funding=True,
        funding_rate=0.0005,
    )
    rec = tmp_path / "paper.jsonl"
    observe_across_0400(rec, [_partial(_xbtusd_row())], rules, actions=(3, 3, 3, 0, 1, 2, 1, 1))
    (due,) = [o for o in _lines(rec) if o["kind"] == "funding"]
    paid = next(o["funding"] for o in _lines(rec) if o["kind"] == "bar" and o["ts"] == due["ts"])
    assert (due["rate"], due["source"]) == (0.0001, "exchange") and paid != 0.0
    rep = replay_paper_record(rec)
    assert rep.agree and rep.fills_record > 0 and rep.settlements_exchange == 1, rep.mismatches
