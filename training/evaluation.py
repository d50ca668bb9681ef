"""Judging a sweep: per-candidate gates, seed stability, PBO and DSR over every candidate,
the decision of each candidate and the sweep's best and challenger. Pure: takes backtest
results, returns the JSON-able content of evaluation.json (contract in
/tmp/prompts/contracts.md, mirrored in DEVELOPERS.md).

Walk-forward: a candidate (trial, seed, timesteps) has one model per fold, each judged on
its own fold's test slice; the gates see those test slices only. Stress slices are
evaluated with the last-fold model and reported separately, never gated. The returns
behind PBO and DSR are each candidate's test-slice equity returns over
`EvaluationConfig.return_period_s`, concatenated in fold order: every candidate is
measured on the same periods, so the T x N matrix of CSCV is well formed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.config.training import EvaluationConfig, TrialConfig
from training.backtest import SliceResult
from training.gates import candidate_gates, decide, passes_slice_gates
from training.metrics import SliceMetrics, aggregate_totals
from training.overfitting import deflated_sharpe_ratio, overfitting_report, sharpe_per_period


@dataclass(eq=False)
class CandidateBacktest:
    """Everything evaluated for one candidate."""

    candidate_id: str
    trial: TrialConfig
    seed: int
    timesteps: int
    test: list[SliceResult]  # one per fold, the fold's own model, fold order
    stress: list[SliceResult] = field(default_factory=list)  # last-fold model
    validation: list[SliceResult] = field(default_factory=list)  # each fold's own model
    model_zip: str = ""
    stats_dir: str = ""
    run_id: str | None = None
    train_slices: list[dict[str, str]] = field(default_factory=list)
    test_slices: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def test_metrics(self) -> list[SliceMetrics]:
        return [r.metrics for r in self.test if r.metrics is not None]

    def returns(self, period_s: float) -> np.ndarray:
        parts = [r.returns(period_s) for r in self.test]
        return np.concatenate(parts) if parts else np.zeros(0)


def returns_matrix(
    cands: Sequence[CandidateBacktest], period_s: float
) -> tuple[np.ndarray, list[str]]:
    """T x N matrix of test returns (one column per candidate). Candidates are evaluated
    on the same slices, so their series have equal length; if not (a slice failed for
    one model), every series is cut to the shortest and a note says so."""
    series = [c.returns(period_s) for c in cands]
    notes: list[str] = []
    if not series:
        return np.zeros((0, 0)), notes
    t = min(s.size for s in series)
    if any(s.size != t for s in series):
        notes.append(f"test return series differ in length; all cut to the shortest ({t} periods)")
    return np.column_stack([s[:t] for s in series]) if t else np.zeros((0, len(series))), notes


def evaluate_sweep(
    cands: Sequence[CandidateBacktest], cfg: EvaluationConfig, n_trials: int | None = None
) -> dict[str, Any]:
    """Gates, overfitting statistics and decisions for every candidate. `n_trials`
    (default: the number of candidates) is what the DSR deflates by: pass every trial
    that was tried, including candidates whose training failed. Returns
    {"candidates": [...], "best", "challenger", "overfitting": {...}, "notes": [...]}
    in the evaluation.json shape (the caller adds sweep ids and fingerprints)."""
    g = cfg.gates
    notes: list[str] = []
    # seed stability: which seeds of the same (trial, timesteps) pass the slice gates
    groups: dict[tuple[str, int], list[bool]] = defaultdict(list)
    for c in cands:
        groups[(c.trial.name, c.timesteps)].append(passes_slice_gates(c.test_metrics(), g))

    m, cut_notes = returns_matrix(cands, cfg.return_period_s)
    notes += cut_notes
    pbo: float | None = None
    n_all = max(n_trials or 0, len(cands))
    over: dict[str, Any] = {"pbo": None, "dsr": None, "n_trials": n_all}
    trial_var = 0.0
    if m.shape[0] >= 2 and m.shape[1] >= 1:
        rep = overfitting_report(m, cfg.pbo_splits)
        pbo = rep.pbo
        trial_var = rep.trials_sharpe_variance
        over = {**rep.as_dict(), "best_candidate": cands[rep.best_trial].candidate_id}
        if n_all > len(cands):
            series = m[:, rep.best_trial]
            over.update(dsr=deflated_sharpe_ratio(series, n_all, trial_var), n_trials=n_all)
        if pbo is None:
            notes.append("PBO needs at least 2 candidates: not computed")
    else:
        notes.append(f"only {m.shape[0]} test return periods: PBO and DSR not computed")

    out_cands = []
    for j, c in enumerate(cands):
        test_m = c.test_metrics()
        dsr: float | None = None
        if m.shape[0] >= 2 and np.isfinite(sharpe_per_period(m[:, j])[0]):
            dsr = deflated_sharpe_ratio(m[:, j], n_all, trial_var)
        gates = candidate_gates(test_m, groups[(c.trial.name, c.timesteps)], pbo, dsr, g)
        totals = aggregate_totals(test_m)
        dec = decide(gates, total_trades=int(totals["trades"]), n_slices=len(test_m), g=g)
        cand_notes = list(c.notes) + stress_notes(c.stress, g.min_slice_return)
        out_cands.append(
            {
                "candidate_id": c.candidate_id,
                "trial": c.trial.name,
                "seed": c.seed,
                "timesteps": c.timesteps,
                "decision": dec.decision,
                "reasons": list(dec.reasons),
                "gates": {k: v.as_dict() for k, v in gates.items()},
                "test_totals": totals,
                "slices": [s.as_dict() for s in test_m],
                "stress_slices": [r.metrics.as_dict() for r in c.stress if r.metrics is not None],
                "validation_slices": [
                    r.metrics.as_dict() for r in c.validation if r.metrics is not None
                ],
                "dsr": dsr,
                "model_zip": c.model_zip,
                "stats_dir": c.stats_dir,
                "run_id": c.run_id,
                "env_config": c.trial.env.model_dump(mode="json"),
                "reward_config": c.trial.env.reward.model_dump(mode="json"),
                "ppo_config": c.trial.ppo.model_dump(mode="json"),
                "train_slices": c.train_slices,
                "test_slices": c.test_slices,
                "notes": cand_notes,
            }
        )
    return {
        "candidates": out_cands,
        "best": pick_best(out_cands, promoted=True),
        "challenger": pick_best(out_cands, promoted=False),
        "overfitting": over,
        "notes": notes,
    }


def stress_notes(stress: Sequence[SliceResult], min_return: float) -> list[str]:
    """One line per stress slice: a regime unlike training, expected to fail. A pass is
    flagged for inspection rather than counted: stress slices are never gated."""
    out = []
    for r in stress:
        m = r.metrics
        if m is None:
            continue
        verdict = (
            "passed although it is a regime unlike training: inspect before trusting it"
            if m.pnl_plus_fees > min_return
            else "failed, as expected for a regime unlike training"
        )
        out.append(
            f"stress slice {m.slice_id} (last-fold model, not gated): pnl_plus_fees {m.pnl_plus_fees:.6g}, "
            f"max_drawdown {m.max_drawdown:.4g}; {verdict}"
        )
    return out


def pick_best(cands: Sequence[dict[str, Any]], promoted: bool) -> str | None:
    """Highest test pnl_plus_fees among candidates that were promoted (promoted=True) or
    that were not (promoted=False); None when there is none. Ties: first in order."""
    pool = [c for c in cands if (c["decision"] == "promote") == promoted]
    if not pool:
        return None
    return max(pool, key=lambda c: c["test_totals"]["pnl_plus_fees"])["candidate_id"]
