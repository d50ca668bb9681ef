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
