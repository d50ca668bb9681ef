"""Promotion gates and the promote / reject / retest decision. Pure.

Every gate returns a `GateResult` carrying its measured value, its threshold (from
`core.config.training.GatesConfig`) and a written definition, so a report says exactly
what was checked. Thresholds are only ever read from the config: nothing here adapts
them to make a model pass.

Decision rule (`decide`):
1. retest when the evidence is too thin to judge: fewer closed trades than
   `min_trades`, fewer test slices than `min_slices`, or an overfitting statistic that
   could not be computed;
2. otherwise promote when every gate passed;
3. otherwise reject, naming every failed gate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from core.config.training import GatesConfig
from training.metrics import SliceMetrics

DecisionKind = Literal["promote", "reject", "retest"]

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
        "Deflated Sharpe Ratio of this candidate's test returns, deflated by the number "
        "of candidates and the variance of their Sharpe ratios (Bailey, Lopez de Prado "
        "2014); passes when strictly above min_dsr"
    ),
}


@dataclass(frozen=True)
class GateResult:
    name: str
    passed: bool
    value: float | None  # None: could not be computed
    threshold: float
    definition: str

    def as_dict(self) -> dict[str, object]:
        return {
            "passed": self.passed,
            "value": self.value,
            "threshold": self.threshold,
            "definition": self.definition,
        }


@dataclass(frozen=True)
class Decision:
    decision: DecisionKind
    reasons: tuple[str, ...] = field(default_factory=tuple)


def _gate(name: str, passed: bool, value: float | None, threshold: float) -> GateResult:
    return GateResult(name, bool(passed), value, float(threshold), DEFINITIONS[name])


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


def pbo_under_cap(pbo: float | None, g: GatesConfig) -> GateResult:
    """PBO strictly below max_pbo; None (fewer than 2 candidates or periods): fails."""
    if pbo is None:
        return _gate("pbo_under_cap", False, None, g.max_pbo)
    return _gate("pbo_under_cap", pbo < g.max_pbo, float(pbo), g.max_pbo)


def dsr_above_min(dsr: float | None, g: GatesConfig) -> GateResult:
    """DSR strictly above min_dsr; None (fewer than 2 return periods): fails."""
    if dsr is None:
        return _gate("dsr_above_min", False, None, g.min_dsr)
    return _gate("dsr_above_min", dsr > g.min_dsr, float(dsr), g.min_dsr)


def candidate_gates(
    slices: Sequence[SliceMetrics],
    seed_passes: Sequence[bool],
    pbo: float | None,
    dsr: float | None,
    g: GatesConfig,
) -> dict[str, GateResult]:
    """All six gates of one candidate, in report order."""
    gates = slice_gates(slices, g)
    for r in (seed_stability(seed_passes, g), pbo_under_cap(pbo, g), dsr_above_min(dsr, g)):
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
            thin.append(f"{r.name} could not be computed")
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
