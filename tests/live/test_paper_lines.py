"""The paper record's lines as typed rows (`live.paper_record`): every kind of line that
`chappie live --paper-out` wrote while the rows were dicts reads back to a row that
dumps to the same bytes; malformed lines are refused naming the file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from live.paper_record import PaperBar, PaperEnd, PaperStart, parse_line
from live.paper_replay import PaperRecordError, read_paper_record

RECORDED = [  # lines chappie live --paper-out wrote before the rows were typed
    '{"kind":"start","version":1,"ts":1626925800000000000,"time":"2021-07-22T03:50:00.000Z","rules":{"action_mode":"toggle","stake_fraction":0.25,"max_exposure":1.0,"fill_model":"trade_through","roll_orders":true,"hours_clip":24.0,"pct_clip":100.0,"initial_equity_xbt":1.0,"obs_clip":10.0,"funding":true,"funding_rate":0.0005,"fees":{"schedule":"bitmex-xbtusd","maker":null,"taker":null}},"instrument":{"symbol":"XBTUSD","tick_size":0.5,"lot_size":100,"is_inverse":true,"multiplier":1.0,"maker_fee":null,"taker_fee":null,"funding_interval_hours":8.0,"funding_offset_hours":4.0,"settle_currency":"XBT"},"bar":{"ts":1626925800000000000,"bid":80000,"ask":80001,"buy_hi":80002,"sell_lo":0,"mid":80000.5},"account":{"balance":1.0,"flat_since_ns":1626925800000000000,"realized_pnl":0.0,"fees":0.0,"funding":0.0,"maker_volume":0.0,"taker_volume":0.0,"maker_fees":0.0,"taker_fees":0.0},"equity":1.0}',
    '{"kind":"decision","ts":1626925800000000000,"action":1,"action_name":"toggle_long","orders":[80000,0]}',
    '{"ts":1626925801000000000,"bid":80002,"ask":80003,"buy_hi":0,"sell_lo":0,"mid":80002.5,"kind":"bar","fills":0,"funding":0.0,"orders":[80002,0],"account":{"balance":1.0,"flat_since_ns":1626925800000000000,"realized_pnl":0.0,"fees":0.0,"funding":0.0,"maker_volume":0.0,"taker_volume":0.0,"maker_fees":0.0,"taker_fees":0.0},"equity":1.0}',
    '{"kind":"fill","ts":1626925802000000000,"side":"sell","price_ticks":80003,"stake":0.25,"contracts":10000.375,"notional":0.25,"fee":-6.25e-05,"fee_rate":-0.00025,"liquidity":"maker"}',
    '{"ts":1626925802000000000,"bid":80004,"ask":80005,"buy_hi":0,"sell_lo":80004,"mid":80004.5,"kind":"bar","fills":1,"funding":0.0,"orders":[80004,0],"account":{"balance":1.0000625,"flat_since_ns":1626925800000000000,"realized_pnl":0.0,"fees":-6.25e-05,"funding":0.0,"maker_volume":0.25,"taker_volume":0.0,"maker_fees":-6.25e-05,"taker_fees":0.0},"equity":1.0000578127636572,"lots":[[-1,80003,1626925802000000000,0.25,10000.375,-6.25e-05]]}',
    '{"kind":"end","initial_equity":1.0,"fills":267,"buys":132,"sells":135,"bars":899,"decisions":675,"fees":-0.016819344485637745,"funding":-0.00025254377075527686,"equity":1.016350410122032,"peak":1.016350410122032,"max_drawdown":0.00016239176440357994,"position":-0.75,"pnl":0.016350410122031978}',
]
FLAT_END = (  # a session that never filled: the flat position's exposure is the int 0
    '{"kind":"end","initial_equity":1.0,"fills":0,"buys":0,"sells":0,"bars":3,"decisions":4,'
    '"fees":0.0,"funding":0.0,"equity":1.0,"peak":1.0,"max_drawdown":0.0,"position":0,'
    '"pnl":0.0}'
)
NO_MODEL_DECISION = (
    '{"kind":"decision","ts":1626925800000000000,"action":null,"action_name":null,"orders":[0,0]}'
)


def _dump(line: str) -> str:
    return json.dumps(parse_line(json.loads(line)).to_json(), separators=(",", ":"))


@pytest.mark.parametrize("line", [*RECORDED, FLAT_END, NO_MODEL_DECISION])
def test_a_recorded_paper_line_reads_back_and_dumps_to_the_same_bytes(line: str) -> None:
    row = parse_line(json.loads(line))
    assert _dump(line) == line
    assert parse_line(row.to_json()) == row


def test_paper_rows_are_their_kinds_and_keep_lots_only_when_the_bar_filled() -> None:
    start, _, quiet, _, filled, end = (parse_line(json.loads(s)) for s in RECORDED)
    assert isinstance(start, PaperStart) and start.bar.mid == 80000.5
    assert isinstance(quiet, PaperBar) and quiet.lots is None and "lots" not in quiet.to_json()
    assert isinstance(filled, PaperBar) and filled.lots == [
        [-1, 80003, 1626925802000000000, 0.25, 10000.375, -6.25e-05]
    ]
    assert isinstance(end, PaperEnd) and end.fills == 267


@pytest.mark.parametrize(
    "edit",
    [{"kind": "tick"}, {"surprise": 1}, {"bid": "80002"}, {"orders": None}],
)
def test_a_malformed_paper_line_is_refused(edit: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        parse_line({**json.loads(RECORDED[2]), **edit})


def test_read_paper_record_names_the_line_it_cannot_read(tmp_path: Path) -> None:
    rec = tmp_path / "paper.jsonl"
    bad = {**json.loads(RECORDED[2]), "bid": "80002"}
    rec.write_text("\n".join([RECORDED[0], RECORDED[1], json.dumps(bad)]) + "\n")
    with pytest.raises(PaperRecordError, match=r"paper.jsonl:3: not a paper record line \(bar.bid"):
        read_paper_record(rec)
