"""The trial ledger on a real MLflow store (SQLite): tags written on runs, read back per
(spec, data), one trial per model key."""

from __future__ import annotations

import numpy as np
import pytest

from registry import ledger, tracking


def _run(experiment: str) -> str:
    return tracking.start_parent_run(experiment, "cand", {}, {})


def test_ledger_round_trip_groups_by_spec_and_data_and_dedupes_models(sqlite_uri: str) -> None:
    tracking.configure(sqlite_uri)
    rng = np.random.default_rng(0)
    returns = [rng.normal(0, 1e-3, 24) for _ in range(3)]
    ids = [_run("exp") for _ in range(5)]
    ledger.record_trial(ids[0], ledger.ledger_tags("spec", "data", "m0", "cfgA", returns[0]))
    ledger.record_trial(ids[1], ledger.ledger_tags("spec", "data", "m1", "cfgB", returns[1]))
    # the same models evaluated again (a re-run): one trial
    ledger.record_trial(ids[2], ledger.ledger_tags("spec", "data", "m1", "cfgB", returns[1]))
    # other data, other spec: not counted
    ledger.record_trial(ids[3], ledger.ledger_tags("spec", "other", "m2", "cfgA", returns[2]))
    ledger.record_trial(ids[4], ledger.ledger_tags("other", "data", "m3", "cfgA", returns[2]))
    trials = ledger.read_ledger("exp", "spec", "data")
    assert sorted(t.model_key for t in trials) == ["m0", "m1"]
    m0 = next(t for t in trials if t.model_key == "m0")
    assert m0.config_key == "cfgA" and len(m0.returns) == 24
    np.testing.assert_allclose(m0.returns, returns[0], rtol=1e-5)  # 6 significant digits
    assert ledger.read_ledger("no-such-experiment", "spec", "data") == []


def test_a_series_too_long_for_a_tag_still_counts_through_its_sharpe(sqlite_uri: str) -> None:
    from training.overfitting import sharpe_per_period

    tracking.configure(sqlite_uri)
    long = np.random.default_rng(1).normal(1e-4, 1e-3, 5000)
    tags = ledger.ledger_tags("spec", "data", "m9", "cfg", long)
    assert tags[ledger.RETURNS] == ""
    ledger.record_trial(_run("exp"), tags)
    (trial,) = ledger.read_ledger("exp", "spec", "data")
    recovered = float(sharpe_per_period(np.asarray(trial.returns))[0])
    assert recovered == pytest.approx(float(tags[ledger.SHARPE]), rel=1e-12)
