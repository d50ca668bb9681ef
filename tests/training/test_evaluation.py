"""Judging a sweep from hand-built backtest results (no env, no model)."""

from __future__ import annotations

import numpy as np

from core.clock import NS_PER_S
from core.config.training import EvaluationConfig, GatesConfig, TrialConfig
from training.backtest import SliceInput, SliceResult
from training.evaluation import (
    CandidateBacktest,
    LedgerTrial,
    ReferenceBacktest,
    env_key,
    evaluate_sweep,
    pick_best,
)
from training.evaluation_record import CandidateEvaluation, DecisionKind, TestTotals
from training.gates import DEFINITIONS
from training.metrics import compute_slice_metrics

# 64-minute hand-made test slices: minute returns (the default period is an hour)
CFG = EvaluationConfig(return_period_s=60.0)


def result(
    slice_id: str, kind: str, fold: int | None, rets: np.ndarray, trades: int = 8
) -> SliceResult:
    eq = np.concatenate(([1.0], np.cumprod(1.0 + rets)))
    ts = np.arange(eq.size, dtype=np.int64) * 60 * NS_PER_S
    m = compute_slice_metrics(
        slice_id=slice_id,
        kind=kind,
        fold=fold,
        ts_ns=ts,
        equity=eq,
        pnl_without_fees=eq[-1] - 1.0,
        fees=0.0,
        trade_pnls=np.full(trades, 1e-4),
        return_period_ns=60 * NS_PER_S,
        periods_per_year=CFG.annualisation,
    )
    return SliceResult(
        SliceInput(f"/x/{slice_id}.parquet", slice_id, kind, fold),
        ts,
        eq,
        np.zeros(eq.size),
        np.zeros(eq.size - 1, dtype=np.int64),
        metrics=m,
    )


def candidate(
    seed: int,
    drift: float,
    rng: np.random.Generator,
    n_folds: int = 4,
    t: int = 64,
    trial: str | None = None,
) -> CandidateBacktest:
    """One candidate; each gets its own trial config (name) unless `trial` is shared."""
    test = [
        result(f"fold{k:02d}-test", "test", k, rng.normal(drift, 1e-3, t)) for k in range(n_folds)
    ]
    stress = [result("stress00", "stress", None, rng.normal(-5e-3, 5e-3, t))]
    name = trial or f"cfg{seed}"
    return CandidateBacktest(
        f"{name}-s{seed}-t100",
        TrialConfig(name=name),
        seed,
        100,
        test,
        stress,
        model_zip=f"/m/{seed}.zip",
        stats_dir="/s",
        run_id=f"r{seed}",
        model_key=f"model-{seed}",
    )


def flat_reference(n_folds: int = 4, t: int = 64) -> ReferenceBacktest:
    """The flat baseline on the same slices: equity never moves."""
    test = [result(f"fold{k:02d}-test", "test", k, np.zeros(t), 0) for k in range(n_folds)]
    return ReferenceBacktest("flat", 0, env_key(TrialConfig()), test)


def test_candidate_returns_concatenate_its_folds_in_order() -> None:
    rng = np.random.default_rng(0)
    cands = [candidate(s, 0.0, rng) for s in range(3)]
    r = cands[1].returns(60.0)
    assert r.shape == (4 * 64,)
    np.testing.assert_allclose(r[:64], cands[1].test[0].returns(60.0))


def test_a_skilled_family_is_promoted_and_a_losing_one_rejected() -> None:
    rng = np.random.default_rng(1)
    skilled = [candidate(s, 1e-3, rng) for s in range(3)]
    losing = [candidate(10 + s, -1e-3, rng) for s in range(3)]
    # This family is bimodal on purpose (Sharpe ~ +1 and ~ -1), so the cross-trial Sharpe
    # variance makes the Deflated Sharpe bar (expected max Sharpe under the null) ~1.3 and
    # the DSR gate fails everyone; that gate has its own tests. Here: slices, seeds, PBO.
    cfg = EvaluationConfig(return_period_s=60.0, gates=GatesConfig(min_dsr=0.0))
    out = evaluate_sweep(skilled + losing, cfg, references=[flat_reference()])
    dec = {c.candidate_id: c.decision for c in out.candidates}
    assert all(dec[c.candidate_id] == "promote" for c in skilled), out.candidates[0].reasons
    assert all(dec[c.candidate_id] == "reject" for c in losing)
    assert out.overfitting.n_trials == 6 and out.overfitting.pbo is not None
    assert out.overfitting.pbo < 0.1
    best = max(skilled, key=lambda c: sum(r.metrics.pnl_plus_fees for r in c.test))
    assert out.best == best.candidate_id
    assert out.challenger in {c.candidate_id for c in losing}
    first = out.candidates[0]
    assert set(first.gates) == set(DEFINITIONS) - {"beats_champion"}  # no champion yet
    assert first.gates["beats_baselines"].passed and first.best_baseline == "flat"
    assert out.overfitting.n_configs == 6
    assert [s.slice_id for s in first.stress_slices] == ["stress00"]  # reported, not gated
    assert (
        first.test_totals is not None and first.test_totals.trades == 32
    )  # 4 test slices x 8 trades
    assert any("stress slice stress00" in n and "failed, as expected" in n for n in first.notes)


def test_noise_family_is_not_promoted_on_luck() -> None:
    rng = np.random.default_rng(2)
    out = evaluate_sweep(
        [candidate(s, 0.0, rng) for s in range(8)], CFG, references=[flat_reference()]
    )
    promoted = [c for c in out.candidates if c.decision == "promote"]
    # pure noise: the PBO gate, the DSR gate or the slice gates stop (almost) everyone
    assert len(promoted) <= 1


def test_too_few_trades_means_retest() -> None:
    rng = np.random.default_rng(3)
    cands = [candidate(s, 1e-3, rng) for s in range(3)]
    out = evaluate_sweep(
        cands,
        EvaluationConfig(return_period_s=60.0, gates=GatesConfig(min_trades=1000)),
        references=[flat_reference()],
    )
    assert {c.decision for c in out.candidates} == {"retest"}
    assert out.best is None


def test_pick_best_and_challenger() -> None:
    def cand(cid: str, decision: DecisionKind, pnl_plus_fees: float) -> CandidateEvaluation:
        totals = TestTotals(
            pnl=pnl_plus_fees, fees=0.0, pnl_plus_fees=pnl_plus_fees, trades=1, max_drawdown=0.0
        )
        return CandidateEvaluation(candidate_id=cid, decision=decision, test_totals=totals)

    cands = [cand("a", "promote", 0.1), cand("b", "promote", 0.3)]
    cands += [cand("c", "reject", 0.5), cand("d", "retest", 0.6)]
    assert pick_best(cands, promoted=True) == "b"
    assert pick_best(cands, promoted=False) == "d"
    assert pick_best([], promoted=True) is None


def test_seeds_of_one_config_are_not_enough_trials_for_pbo() -> None:
    rng = np.random.default_rng(4)
    cands = [candidate(s, 1e-3, rng, trial="base") for s in range(4)]
    out = evaluate_sweep(cands, CFG, references=[flat_reference()])
    assert out.overfitting.n_configs == 1 and out.overfitting.n_trials == 4
    assert "not enough trials" in (out.overfitting.pbo_note or "")
    assert {c.decision for c in out.candidates} == {"retest"}


def test_without_a_baseline_panel_nothing_is_promoted() -> None:
    rng = np.random.default_rng(5)
    out = evaluate_sweep([candidate(s, 1e-3, rng) for s in range(4)], CFG)
    gate = out.candidates[0].gates["beats_baselines"]
    assert gate.value is None and out.best is None


def test_the_ledger_deflates_the_sharpe_as_earlier_trials_accumulate() -> None:
    rng = np.random.default_rng(6)
    cand = candidate(0, 1.5e-4, rng)
    # earlier trials on the same data: noise, of several configs, their Sharpes spread
    earlier = [
        LedgerTrial(f"old-{i}", f"cfg-{i % 7}", tuple(rng.normal(0.0, 1e-3, 256)))
        for i in range(500)
    ]
    dsrs = []
    for n_earlier in (0, 5, 50, 500):
        ledger = earlier[:n_earlier]
        out = evaluate_sweep([cand], CFG, references=[flat_reference()], ledger=ledger)
        assert out.overfitting.n_trials_ledger == n_earlier + 1
        dsrs.append(out.candidates[0].dsr)
    assert dsrs == sorted(dsrs, reverse=True) and dsrs[0] > dsrs[-1] + 0.1, dsrs


def test_a_rerun_of_the_same_models_is_one_trial_in_the_ledger() -> None:
    rng = np.random.default_rng(7)
    cand = candidate(0, 1e-3, rng)
    same = LedgerTrial(cand.model_key, cand.config_key, tuple(cand.returns(60.0)))
    out = evaluate_sweep([cand], CFG, references=[flat_reference()], ledger=[same, same])
    assert out.overfitting.n_trials_ledger == 1


def test_champion_gate_judges_only_slices_after_its_training_and_skips_itself() -> None:
    rng = np.random.default_rng(8)
    cand = candidate(0, 1e-3, rng)
    champ_test = [result(f"fold{k:02d}-test", "test", k, np.full(64, 2e-3)) for k in range(4)]
    # trained up to the start of fold02's test: judged on folds 2 and 3 only
    end = int(champ_test[2].ts_ns[0]) - 1
    for r, k in zip(champ_test, range(4), strict=True):
        r.ts_ns[:] += k * 10**13  # slices follow each other in time
    for r, k in zip(cand.test, range(4), strict=True):
        r.ts_ns[:] += k * 10**13
    end = int(champ_test[2].ts_ns[0]) - 1
    champ = ReferenceBacktest(
        "champion",
        0,
        env_key(TrialConfig()),
        champ_test,
        model_key="other",
        label="m v1",
        train_end_ns=end,
    )
    out = evaluate_sweep([cand], CFG, references=[flat_reference(), champ])
    gate = out.candidates[0].gates["beats_champion"]
    assert not gate.passed  # the champion earned more on the slices it had not seen
    assert any("fold02-test', 'fold03-test']" in n for n in out.candidates[0].notes)
    itself = ReferenceBacktest(
        "champion", 0, env_key(TrialConfig()), champ_test, model_key=cand.model_key, label="m v1"
    )
    out = evaluate_sweep([cand], CFG, references=[flat_reference(), itself])
    assert "beats_champion" not in out.candidates[0].gates
    assert any("is the current champion" in n for n in out.candidates[0].notes)
