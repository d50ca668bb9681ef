"""The live decision record: built once, dumped exactly as the decision log wrote it when
it was a dict (recorded lines below), read back to an equal value."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError

from live.decision import Decision

# written by the loop's decision sink before the record was typed (trade mode with an
# order, observe mode without a model)
TRADE_LINE = (
    '{"ts":1704067276000000000,"time":"2024-01-01T00:01:16.000Z","action":3,'
    '"action_name":"both","action_mode":"target","state":{"long_state":1.0,'
    '"short_state":0.0,"position_size":0.25,"unrealized_pct":-0.0123456789,'
    '"avg_open_position_hours":0.5,"last_open_position_hours":1.25,"hours_since_close":0.0},'
    '"model_version":"chappie-xbtusd@v2","mode":"trade","mid_ticks":84211.5,'
    '"latency_us":123.5,"order":"placed: bid 84211 (chp-abc-1)"}'
)
OBSERVE_LINE = (
    '{"ts":1704067277000000000,"time":"2024-01-01T00:01:17.000Z","action":null,'
    '"action_name":null,"action_mode":"toggle","state":{"long_state":0.0,"short_state":0.0,'
    '"position_size":0.0,"unrealized_pct":0.0,"avg_open_position_hours":0.0,'
    '"last_open_position_hours":0.0,"hours_since_close":0.0},"model_version":null,'
    '"mode":"observe","mid_ticks":84212.0,"latency_us":7.0}'
)


def _line(d: Decision) -> str:
    return json.dumps(d.to_json(), separators=(",", ":"), allow_nan=False)


def test_decision_of_loop_values_dumps_the_recorded_lines() -> None:
    trade = Decision.of(
        1704067276000000000,
        3,
        np.array([1.0, 0.0, 0.25, -0.0123456789, 0.5, 1.25, 0.0]),
        "chappie-xbtusd@v2",
        "trade",
        84211.5,
        123.456,
        "target",
        "placed: bid 84211 (chp-abc-1)",
    )
    observe = Decision.of(1704067277000000000, None, np.zeros(7), None, "observe", 84212.0, 7.04)
    assert _line(trade) == TRADE_LINE
    assert _line(observe) == OBSERVE_LINE  # no order key outside trade mode


@pytest.mark.parametrize("line", [TRADE_LINE, OBSERVE_LINE])
def test_decision_line_reads_back_to_an_equal_record_and_the_same_bytes(line: str) -> None:
    d = Decision.from_json(json.loads(line))
    assert _line(d) == line
    assert Decision.from_json(d.to_json()) == d


def test_decision_is_frozen_and_refuses_unknown_keys() -> None:
    d = Decision.from_json(json.loads(OBSERVE_LINE))
    with pytest.raises(ValidationError):
        d.order = "placed"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        Decision.from_json({**json.loads(OBSERVE_LINE), "extra": 1})


def test_decision_human_line_names_action_position_and_model() -> None:
    d = Decision.from_json(json.loads(TRADE_LINE))
    assert d.line() == (
        "2024-01-01T00:01:16.000Z action=both pos=+0.250 long_order=1 short_order=0 "
        "model=chappie-xbtusd@v2 mode=trade"
    )
