"""Promotion gates and the promote / reject / retest decision. Pure.

Every gate returns a `GateResult` carrying its measured value, its threshold (from
`core.config.training.GatesConfig`) and a written definition, so a report says exactly
what was checked. Thresholds are only ever read from the config: nothing here adapts
them to make a model pass.

Decision rule (`decide`):
1. retest when the evidence is too thin to judge: fewer closed trades than
   `min_trades`, fewer test slices than `min_slices`, or a gate that could not be
   computed (an overfitting statistic over too few trials or periods, a paired test
   over fewer than 2 periods);
2. otherwise promote when every gate passed;
3. otherwise reject, naming every failed gate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.config.training import GatesConfig
from training.evaluation_record import DecisionKind
from training.metrics import SliceMetrics
from training.significance import paired_one_sided_test

DEFINITIONS: dict[str, str] = {
    "pass_majority_slices": (
        "share of test slices whose pnl_plus_fees (fraction of initial equity) is above "
        "min_slice_return; passes when the share is strictly above min_pass_fraction"
    ),
    "drawdown_under_cap": (
        "largest max drawdown (fraction of running peak equity) over the test slices; "
        "passes when it is at or below max_drawdown"
    ),
    "no_single_slice_dependency": (
        "sum of pnl_plus_fees over the test slices without the single best slice; passes "
        "when still strictly positive (the result does not hinge on one lucky slice)"
    ),
    "seed_stability": (
        "share of seeds of the same trial and timesteps whose model passes "
        "pass_majority_slices, drawdown_under_cap and no_single_slice_dependency; passes "
        "when at or above min_seed_pass_fraction"
    ),
    "pbo_under_cap": (
        "Probability of Backtest Overfitting by CSCV over every candidate of the sweep "
        "(Bailey, Borwein, Lopez de Prado, Zhu 2017); passes when strictly below max_pbo"
    ),
    "dsr_above_min": (
        "Deflated Sharpe Ratio of this candidate's non-overlapping test returns, deflated "
        "by the number of trials in the trial ledger (every candidate ever evaluated on the "
        "same FeatureSpec and test slices) and the variance of their Sharpe ratios (Bailey, "
        "Lopez de Prado 2014); passes when strictly above min_dsr"
    ),
    "beats_baselines": (
        "one-sided paired t-test over the non-overlapping test return periods of "
        "'candidate minus the best baseline' (the reference policy with the highest test "
        "pnl_plus_fees, run by the same backtest on the same slices at the same fee; the "
        "random baseline as its mean over seeds); H0: mean difference <= 0; standard error "
        "Newey-West (autocorrelation-robust), never below the iid one. Assumes weakly "
        "dependent, roughly normal period differences (their lag-1 autocorrelation is "
        "reported). Passes when p is strictly below max_baseline_p AND the candidate's "
        "test pnl without fees is strictly positive, so rebates alone cannot pass"
    ),
    "beats_champion": (
        "the current champion re-run by the same backtest on the same test slices at the "
        "same fee; passes when the candidate's total test pnl_plus_fees is strictly above "
        "the champion's. Absent when there is no champion, the champion is this very "
        "model, or it was trained on another FeatureSpec (a note says which)"
    ),
}


@dataclass(frozen=True)
class GateResult:
    name: str
    passed: bool
    value: float | None  # None: could not be computed
    threshold: float
    definition: str
    note: str | None = None  # why the value is None, or what was compared
    detail: Mapping[str, Any] = field(default_factory=dict)  # the test's own figures

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "passed": self.passed,
            "value": self.value,
            "threshold": self.threshold,
            "definition": self.definition,
        }
        if self.note:
            out["note"] = self.note
        if self.detail:
            out["detail"] = dict(self.detail)
        return out


@dataclass(frozen=True)
class Decision:
    decision: DecisionKind
    reasons: tuple[str, ...] = field(default_factory=tuple)


def _gate(
    name: str,
    passed: bool,
    value: float | None,
    threshold: float,
    note: str | None = None,
    detail: Mapping[str, Any] | None = None,
) -> GateResult:
    return GateResult(
        name, bool(passed), value, float(threshold), DEFINITIONS[name], note, dict(detail or {})
    )


def pass_majority_slices(slices: Sequence[SliceMetrics], g: GatesConfig) -> GateResult:
    """Share of slices with pnl_plus_fees > min_slice_return, strictly above
    min_pass_fraction. No slices: value 0, fails."""
    if not slices:
        return _gate("pass_majority_slices", False, 0.0, g.min_pass_fraction)
    share = sum(s.pnl_plus_fees > g.min_slice_return for s in slices) / len(slices)
    return _gate("pass_majority_slices", share > g.min_pass_fraction, share, g.min_pass_fraction)


def drawdown_under_cap(slices: Sequence[SliceMetrics], g: GatesConfig) -> GateResult:
    """Worst slice max drawdown <= max_drawdown. No slices: fails (nothing was shown)."""
    if not slices:
        return _gate("drawdown_under_cap", False, None, g.max_drawdown)
    worst = max(s.max_drawdown for s in slices)
    return _gate("drawdown_under_cap", worst <= g.max_drawdown, worst, g.max_drawdown)


def no_single_slice_dependency(slices: Sequence[SliceMetrics], g: GatesConfig) -> GateResult:
    """Total pnl_plus_fees without the best slice is strictly positive. Fewer than two
    slices: value 0, fails (one slice always depends on itself)."""
    del g  # the threshold is fixed at zero by definition
    if len(slices) < 2:
        return _gate("no_single_slice_dependency", False, 0.0, 0.0)
    pnls = sorted(s.pnl_plus_fees for s in slices)
    rest = float(sum(pnls[:-1]))
    return _gate("no_single_slice_dependency", rest > 0.0, rest, 0.0)


def slice_gates(slices: Sequence[SliceMetrics], g: GatesConfig) -> dict[str, GateResult]:
    """The three gates judged on one model's own test slices."""
    return {
        r.name: r
        for r in (
            pass_majority_slices(slices, g),
            drawdown_under_cap(slices, g),
            no_single_slice_dependency(slices, g),
        )
    }


def passes_slice_gates(slices: Sequence[SliceMetrics], g: GatesConfig) -> bool:
    return all(r.passed for r in slice_gates(slices, g).values())


def seed_stability(seed_passes: Sequence[bool], g: GatesConfig) -> GateResult:
    """Share of the seeds of one (trial, timesteps) whose model passes the slice gates,
    at or above min_seed_pass_fraction. No seeds: fails."""
    if not seed_passes:
        return _gate("seed_stability", False, 0.0, g.min_seed_pass_fraction)
    share = sum(bool(p) for p in seed_passes) / len(seed_passes)
    return _gate(
        "seed_stability", share >= g.min_seed_pass_fraction, share, g.min_seed_pass_fraction
    )


def pbo_under_cap(pbo: float | None, n_configs: int, g: GatesConfig) -> GateResult:
    """PBO strictly below max_pbo. Over fewer than `min_pbo_configs` distinct trial
    configs the value is None ("not enough trials": retest), whatever PBO came out: a
    selection among seeds of one config is not the selection PBO measures. None from the
    caller (too few periods) also fails as not computable."""
    if n_configs < g.min_pbo_configs:
        note = (
            f"not enough trials: {n_configs} distinct trial config(s) < min_pbo_configs "
            f"{g.min_pbo_configs}"
        )
        return _gate("pbo_under_cap", False, None, g.max_pbo, note, {"pbo": pbo})
    if pbo is None:
        return _gate("pbo_under_cap", False, None, g.max_pbo, "too few test return periods")
    return _gate(
        "pbo_under_cap", pbo < g.max_pbo, float(pbo), g.max_pbo, detail={"n_configs": n_configs}
    )


def dsr_above_min(dsr: float | None, g: GatesConfig) -> GateResult:
    """DSR strictly above min_dsr; None (fewer than 2 return periods): fails."""
    if dsr is None:
        return _gate("dsr_above_min", False, None, g.min_dsr)
    return _gate("dsr_above_min", dsr > g.min_dsr, float(dsr), g.min_dsr)


def beats_baselines(
    candidate_returns: np.ndarray,
    baseline_returns: np.ndarray | None,
    baseline_name: str,
    pnl_without_fees: float,
    g: GatesConfig,
) -> GateResult:
    """The paired test of DEFINITIONS["beats_baselines"] against the best baseline's
    returns over the same periods. Fewer than 2 periods, or no baseline panel
    (`baseline_returns` None): value None (retest)."""
    if baseline_returns is None:
        note = "no baseline panel was run for this candidate's env config"
        return _gate("beats_baselines", False, None, g.max_baseline_p, note)
    n = min(candidate_returns.size, baseline_returns.size)
    test = paired_one_sided_test(candidate_returns[:n], baseline_returns[:n])
    detail = {
        "baseline": baseline_name,
        "pnl_without_fees": float(pnl_without_fees),
        **test.as_dict(),
    }
    if test.p_value is None:
        note = f"only {test.n} paired return period(s): the test needs at least 2"
        return _gate("beats_baselines", False, None, g.max_baseline_p, note, detail)
    passed = test.p_value < g.max_baseline_p and pnl_without_fees > 0.0
    note = (
        f"vs {baseline_name}: mean difference {test.mean_difference:+.3g} per period over "
        f"{test.n} periods, p {test.p_value:.3g}; pnl without fees {pnl_without_fees:+.4g}"
    )
    return _gate("beats_baselines", passed, test.p_value, g.max_baseline_p, note, detail)


def beats_champion(candidate_total: float, champion_total: float, champion: str) -> GateResult:
    """Candidate's total test pnl_plus_fees strictly above the champion's, both from the
    same backtest on the same slices (threshold: the champion's total)."""
    note = f"champion {champion}: {champion_total:+.4g}; candidate {candidate_total:+.4g}"
    return _gate(
        "beats_champion", candidate_total > champion_total, candidate_total, champion_total, note
    )


def candidate_gates(
    slices: Sequence[SliceMetrics],
    seed_passes: Sequence[bool],
    pbo: GateResult,
    dsr: float | None,
    g: GatesConfig,
    extra: Sequence[GateResult] = (),
) -> dict[str, GateResult]:
    """Every gate of one candidate, in report order: the three slice gates, seed
    stability, PBO, DSR, then `extra` (beats_baselines, beats_champion)."""
    gates = slice_gates(slices, g)
    for r in (seed_stability(seed_passes, g), pbo, dsr_above_min(dsr, g), *extra):
        gates[r.name] = r
    return gates


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4g}"


def decide(
    gates: dict[str, GateResult],
    *,
    total_trades: int,
    n_slices: int,
    g: GatesConfig,
) -> Decision:
    """promote / reject / retest (module docstring) with human-readable reasons."""
    thin: list[str] = []
    if total_trades < g.min_trades:
        thin.append(f"too few trades: {total_trades} < min_trades {g.min_trades}")
    if n_slices < g.min_slices:
        thin.append(f"too few test slices: {n_slices} < min_slices {g.min_slices}")
    for r in gates.values():
        if r.value is None:
            thin.append(f"{r.name}: {r.note}" if r.note else f"{r.name} could not be computed")
    failed = [
        f"{r.name} failed: value {_fmt(r.value)} vs threshold {r.threshold:g}"
        for r in gates.values()
        if not r.passed and r.value is not None
    ]
    if thin:
        return Decision("retest", tuple(thin + failed))
    if not failed:
        return Decision("promote", ("all gates passed",))
    return Decision("reject", tuple(failed))
