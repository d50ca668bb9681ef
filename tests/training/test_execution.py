"""The execution every evaluation report states (fill model, latency, fee, funding) and
the touch bound beside the judged figures, which the gates never read (#17). Pure: hand-
built backtest results, no env."""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from core.clock import NS_PER_S
from core.config.env import EnvConfig
from core.config.training import EvaluationConfig, GatesConfig, TrialConfig
from core.fees import FeeConfig, since_ns
from flows.evaluate import _summary_markdown
from tests.training.test_evaluation import CFG, candidate, flat_reference, result
from training.evaluation import (
    CandidateBacktest,
    evaluate_sweep,
    execution_of,
    fee_rates_in_force,
    touch_bound_env,
)
from training.evaluation_plan import execution_tags, touch_bound_metrics
from training.evaluation_record import Evaluation
from training.report import render_markdown

TOUCH = EnvConfig(fill_model="touch")
REALISTIC = EnvConfig(
    fill_model="risk_averse", entry_latency_ms=40.0, cancel_latency_ms=25.0, funding=True
)


def _with_env(c: CandidateBacktest, env: EnvConfig, name: str) -> CandidateBacktest:
    return dataclasses.replace(c, trial=TrialConfig(name=name, env=env), config_key="")


def _shifted(r, start_ns: int):
    """`r` with its bars moved to start at `start_ns` (same spacing)."""
    return dataclasses.replace(r, ts_ns=r.ts_ns - r.ts_ns[0] + start_ns)


def test_touch_bound_env_is_touch_without_latency_and_keeps_everything_else() -> None:
    bound = touch_bound_env(REALISTIC)
    assert (bound.fill_model, bound.entry_latency_ms, bound.cancel_latency_ms) == ("touch", 0, 0)
    assert bound.model_dump(exclude={"fill_model", "entry_latency_ms", "cancel_latency_ms"}) == (
        REALISTIC.model_dump(exclude={"fill_model", "entry_latency_ms", "cancel_latency_ms"})
    )
    assert touch_bound_env(TOUCH) == TOUCH  # already the bound: the backtest reuses it


def test_fee_rates_in_force_follow_the_dated_schedule_over_the_test_slices() -> None:
    rng = np.random.default_rng(0)
    change = since_ns("2023-01-17")
    # fold 1 crosses BitMEX's 2023-01-17 change (its first bar 30 min before it); fold 0,
    # given second, lies a day earlier: the rates are read in time order
    late = _shifted(
        result("fold01-test", "test", 1, rng.normal(0, 1e-3, 64)), change - 1800 * NS_PER_S
    )
    early = _shifted(
        result("fold00-test", "test", 0, rng.normal(0, 1e-3, 64)), change - 86400 * NS_PER_S
    )
    rates = fee_rates_in_force(EnvConfig(), [late, early])
    assert [(r.maker, r.taker) for r in rates] == [(-0.0001, 0.0005), (0.0002, 0.00075)]
    assert rates[0].from_ns == int(early.ts_ns[0])
    assert rates[1].from_ns == change  # the first bar at or after the change (1 min bars)
    # an override of one side holds at every date; the other side still follows the dates
    rates = fee_rates_in_force(EnvConfig(fees=FeeConfig(maker=0.0)), [late, early])
    assert [(r.maker, r.taker) for r in rates] == [(0.0, 0.0005), (0.0, 0.00075)]
    assert fee_rates_in_force(EnvConfig(), []) == []


def test_each_config_states_its_own_fill_model_latency_fee_and_funding() -> None:
    rng = np.random.default_rng(1)
    cands = [
        _with_env(candidate(0, 1e-3, rng), TOUCH, "touchy"),
        _with_env(candidate(1, 1e-3, rng), REALISTIC, "realistic"),
        _with_env(
            candidate(2, 1e-3, rng),
            EnvConfig(fill_model="trade_through", funding=True, funding_rates_path="/f/X.parquet"),
            "tabled",
        ),
    ]
    out = evaluate_sweep(cands, CFG, references=[flat_reference()])
    touch, real, tabled = (c.execution for c in out.candidates)
    assert touch is not None and real is not None and tabled is not None
    assert (touch.fill_model, touch.entry_latency_ms, touch.cancel_latency_ms) == ("touch", 0, 0)
    assert (real.fill_model, real.entry_latency_ms, real.cancel_latency_ms) == (
        "risk_averse",
        40.0,
        25.0,
    )
    # the hand-made slices start at 1970: the schedule's first (launch) rates
    assert [(r.maker, r.taker) for r in touch.fee_rates] == [(-0.00025, 0.00075)]
    line = touch.describe()
    assert line.startswith("fill model touch, entry latency 0 ms, cancel latency 0 ms;")
    assert "bitmex-xbtusd" in line and "maker -0.0250% / taker +0.0750%" in line
    assert line.endswith("funding off")
    line = real.describe()
    assert "fill model risk_averse, entry latency 40 ms, cancel latency 25 ms" in line
    assert "funding on: constant +0.0100% per interval" in line
    assert "funding on: table /f/X.parquet" in tabled.describe()
    assert "fill model trade_through," in tabled.describe()
    tags = execution_tags(real)
    assert tags["execution_fill_model"] == "risk_averse"
    assert (tags["execution_entry_latency_ms"], tags["execution_cancel_latency_ms"]) == ("40", "25")
    assert tags["execution_funding"] == "constant 0.0001" and tags["execution"] == real.describe()
    assert execution_tags(tabled)["execution_funding"] == "table /f/X.parquet"
    assert execution_tags(None) == {}


def test_the_mean_funding_rate_is_weighted_by_the_funding_times_settled() -> None:
    rng = np.random.default_rng(2)
    test = [result(f"fold{k:02d}-test", "test", k, rng.normal(0, 1e-3, 8)) for k in range(3)]
    figures = [(1e-4, 3), (-2e-4, 1), (None, 0)]
    test = [
        dataclasses.replace(
            r,
            metrics=dataclasses.replace(r.metrics, funding_rate_mean=rate, funding_times=n),
        )
        for r, (rate, n) in zip(test, figures, strict=True)
    ]
    e = execution_of(REALISTIC, test)
    assert e.funding and e.funding_rate == 1e-4
    assert abs(e.funding_rate_mean - (3 * 1e-4 - 2e-4) / 4) < 1e-15
    assert execution_of(EnvConfig(), test).funding_rate_mean is None  # funding off


def _bound(c: CandidateBacktest, drift: float, rng: np.random.Generator) -> CandidateBacktest:
    """`c` with a touch bound: its test slices again with returns of `drift`."""
    bound = [
        result(r.slice.slice_id, "test", r.slice.fold, rng.normal(drift, 1e-3, r.actions.size))
        for r in c.test
    ]
    return dataclasses.replace(c, touch_bound=bound)


def test_the_gates_never_read_the_touch_bound() -> None:
    rng = np.random.default_rng(3)
    # a skilled family and a losing one (as test_evaluation's promote / reject test)
    cands = [candidate(s, 1e-3, rng) for s in range(3)]
    cands += [candidate(10 + s, -1e-3, rng) for s in range(3)]
    cfg = EvaluationConfig(return_period_s=60.0, gates=GatesConfig(min_dsr=0.0))
    verdicts = []
    for drift in (None, -5e-2, 5e-2):  # no bound, a ruinous one, a wonderful one
        judged = cands if drift is None else [_bound(c, drift, rng) for c in cands]
        verdicts.append(evaluate_sweep(judged, cfg, references=[flat_reference()]))
    none, low, high = verdicts
    assert all(c.touch_bound is None for c in none.candidates)
    lo, hi = (v.candidates[0].touch_bound for v in (low, high))
    assert lo is not None and hi is not None
    assert lo.test_totals.pnl_plus_fees < 0 < hi.test_totals.pnl_plus_fees
    assert (lo.fill_model, lo.entry_latency_ms, lo.cancel_latency_ms) == ("touch", 0, 0)

    def judged(v):
        return [c.model_dump(exclude={"touch_bound"}) for c in v.candidates], (
            v.best,
            v.challenger,
            v.overfitting,
            v.notes,
        )

    assert judged(none) == judged(low) == judged(high)
    assert {c.decision for c in none.candidates} >= {"promote", "reject"}  # decisions to keep


def test_the_bound_round_trips_and_every_report_states_it() -> None:
    rng = np.random.default_rng(4)
    cands = [
        _bound(_with_env(candidate(s, 1e-3, rng), REALISTIC, f"cfg{s}"), 2e-3, rng)
        for s in range(2)
    ] + [_with_env(candidate(9, 1e-3, rng), REALISTIC, "cfg9")]  # a backtest saved without
    v = evaluate_sweep(cands, CFG, references=[flat_reference()])
    ev = Evaluation(
        sweep_run_id="s",
        candidates=v.candidates,
        best=v.best,
        challenger=v.challenger,
        overfitting=v.overfitting,
        baselines=v.baselines,
    )
    raw = ev.dumps()
    assert Evaluation.parse(raw) == ev and Evaluation.parse(raw).dumps() == raw
    doc = json.loads(raw)["candidates"]
    assert doc[0]["execution"]["fill_model"] == "risk_averse"
    assert doc[0]["touch_bound"]["fill_model"] == "touch" and "touch_bound" not in doc[2]
    c = v.candidates[0]
    assert c.touch_bound is not None
    expected = sum(float(r.metrics.pnl_plus_fees) for r in cands[0].touch_bound)
    assert c.touch_bound.test_totals.pnl_plus_fees == expected
    assert touch_bound_metrics(c.touch_bound)["touch_bound_total_test_pnl_plus_fees"] == expected
    assert touch_bound_metrics(None) == {}
    md = render_markdown(c.to_json())
    assert "## Execution" in md
    assert f"- Judged under: {c.execution.describe()}." in md
    assert f"- touch bound: pnl+fees {expected:+.4f}," in md and "not gated" in md
    md = render_markdown(v.candidates[2].to_json())
    assert "touch bound: not computed" in md
    # a report of an evaluation written before #17 says nothing it does not know
    old = v.candidates[0].model_copy(update={"execution": None, "touch_bound": None})
    assert "Execution" not in render_markdown(old.to_json())
    summary = _summary_markdown(ev)
    assert f"Judged under: {c.execution.describe()}." in summary
    assert f"| {expected:.6f} |" in summary and "| n/a |" in summary
    assert "the gates never read it" in summary
