"""The nightly summary a user reads at the end of `make run` (pure formatting)."""

from __future__ import annotations

from flows.nightly import summary_markdown


def _candidate(cid: str, decision: str, pnl: float, fees: float) -> dict:
    return {
        "candidate_id": cid,
        "decision": decision,
        "gates": {
            "pass_majority_slices": {"passed": decision == "promote"},
            "drawdown_under_cap": {"passed": True},
        },
        "test_totals": {
            "pnl": pnl,
            "fees": fees,
            "pnl_plus_fees": pnl + fees,
            "trades": 40,
            "max_drawdown": 0.01,
        },
        "stress_slices": [{"slice_id": "stress00", "pnl_plus_fees": -0.02}],
    }


def _outcome(**kw) -> dict:
    base = {
        "status": "completed",
        "data_dir": "/d",
        "tracking_uri": "sqlite:////d/mlflow.db",
        "evaluation": {
            "candidates": [
                _candidate("base-s0-t100", "promote", 0.004, 0.03),
                _candidate("base-s1-t100", "reject", 0.02, 0.001),
            ],
            "overfitting": {"pbo": 0.25, "dsr": 0.97, "n_trials": 2},
        },
        "promotion": {"model_name": "m", "version": "3", "decision": "promote", "aliases": {}},
    }
    return {**base, **kw}


def test_summary_shows_pnl_without_fees_fees_and_stress_for_every_model():
    text = summary_markdown(_outcome())
    row = next(line for line in text.splitlines() if line.startswith("| base-s0-t100"))
    assert "**promote**" in row and "+0.0340" in row and "+0.0040" in row and "+0.0300" in row
    assert "-0.0200" in row  # the stress slice, reported
    assert "pass_majority_slices ✓" in row
    assert "PBO 0.250 over" in text and "Deflated Sharpe 0.970" in text
    assert "chappie ui" in text and "chappie live" in text and "/d" in text


def test_summary_flags_models_whose_pnl_is_mostly_maker_rebates():
    text = summary_markdown(_outcome())
    note = next(line for line in text.splitlines() if line.startswith("Note:"))
    assert "base-s0-t100" in note and "base-s1-t100" not in note


def test_summary_of_a_failed_run_names_the_step():
    text = summary_markdown(
        _outcome(status="failed", failed_step="features", error="SliceValidationError: x")
    )
    assert text.startswith("# Chappie nightly: failed")
    assert "**Failed step:** `features` — SliceValidationError: x" in text


def test_summary_shows_baselines_fee_sensitivity_and_trial_counts():
    ev = _outcome()["evaluation"]
    ev["baselines"] = {
        "flat": {
            "pnl_plus_fees": 0.0,
            "pnl_without_fees": 0.0,
            "fees": 0.0,
            "trades": 0,
            "max_drawdown": 0.0,
            "fee_sensitivity": [{"maker_fee": -0.00025, "pnl_plus_fees": 0.0}],
        },
        "random": {
            "pnl_plus_fees": -0.08,
            "pnl_without_fees": -0.01,
            "fees": -0.07,
            "trades": 1700,
            "max_drawdown": 0.03,
            "seeds": [0, 1, 2, 3, 4],
            "spread": {"pnl_plus_fees_std": 0.0064},
            "fee_sensitivity": [{"maker_fee": -0.00025, "pnl_plus_fees": 0.07}],
        },
    }
    ev["evaluation_config"] = {"fee_sensitivity": [-0.00025]}
    ev["overfitting"] |= {"n_trials_ledger": 7, "n_trials_sweep": 2, "n_configs": 1}
    text = summary_markdown(_outcome(evaluation=ev))
    assert "| baseline: flat | - | +0.0000" in text
    assert "baseline: random (mean of 5 seeds, sd 0.0064)" in text
    assert "maker -2.5 bp" in text and "- baseline random: +0.0700" in text
    assert "7 trials in the ledger (2 in this sweep)" in text


def test_summary_says_when_a_rerun_changed_nothing():
    promo = {
        "model_name": "m",
        "version": "3",
        "decision": "promote",
        "aliases": {"champion": "3"},
        "unchanged": True,
        "reasons": ["x: ... version 3 under alias 'champion': nothing registered, no alias moved"],
    }
    assert "nothing registered, no alias moved" in summary_markdown(_outcome(promotion=promo))


def test_summary_reports_drift_of_the_judged_slices():
    ev = _outcome()["evaluation"] | {
        "drift": {
            "fold02-test": {
                "clip": 10.0,
                "max_beyond_clip_share": 0.0139,
                "max_beyond_clip_feature": "spread_bps",
                "max_mean_shift": 0.8,
                "max_mean_shift_feature": "realized_vol_60s",
                "flagged": ["spread_bps"],
            }
        }
    }
    text = summary_markdown(_outcome(evaluation=ev))
    assert "never a refusal" in text
    assert "fold02-test 1.39 % beyond ±10 σ (spread_bps), mean shift +0.80 σ" in text


def test_summary_states_the_execution_and_every_candidates_touch_bound():
    from training.evaluation_record import Execution, ExecutionBound, FeeRates, TestTotals

    judged = Execution(
        fill_model="risk_averse",
        entry_latency_ms=40.0,
        cancel_latency_ms=25.0,
        fees="the dated bitmex-xbtusd schedule (core.fees)",
        fee_rates=[FeeRates(maker=0.0002, taker=0.00075, from_ns=0)],
        funding=False,
    )
    bound = ExecutionBound(
        fill_model="touch",
        entry_latency_ms=0.0,
        cancel_latency_ms=0.0,
        test_totals=TestTotals(
            pnl=0.05, fees=-0.01, pnl_plus_fees=0.04, trades=90, max_drawdown=0.02
        ),
    )
    ev = _outcome()["evaluation"]
    a, b = ev["candidates"]
    ev["candidates"] = [
        {**a, "execution": judged.to_json(), "touch_bound": bound.to_json()},
        {**b, "execution": judged.to_json()},  # its backtest was saved before the bound
    ]
    text = summary_markdown(_outcome(evaluation=ev))
    assert (
        "Judged under (candidates and baselines): fill model risk_averse, entry latency 40 ms, "
        "cancel latency 25 ms; fees the dated bitmex-xbtusd schedule (core.fees): maker "
        "+0.0200% / taker +0.0750% over the test slices; funding off." in text
    )
    assert "- base-s0-t100 touch bound: +0.0400, trades 90 (judged +0.0340)" in text
    assert "- base-s1-t100 touch bound: not computed" in text
    # an evaluation written before #17 (no execution): no such lines
    assert "touch bound" not in summary_markdown(_outcome())
    assert "Judged under" not in summary_markdown(_outcome())
