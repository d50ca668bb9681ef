"""What the evaluate flow backtests, and what it logs, as pure functions of typed values.

`plan_evaluation` reads a sweep's result (`training.sweep_record.SweepResult`) against
the slice catalogue it is to be judged on: it refuses a sweep trained on another feature
spec or on slices that changed since, and turns every candidate (trial, seed,
timesteps) whose folds all trained into a `CandidatePlan` (its model per fold); a
candidate with a failed fold becomes a `retest` entry (`failed_candidate`).

`run_metrics` / `slice_metrics` / `touch_bound_metrics` name the figures every evaluated
MLflow run carries, `execution_tags` the execution it was judged under, and
`drift_summary` the headline of a slice's drift report. No I/O beyond hashing the models
named in the plans.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from core.config.training import EvaluationConfig
from core.hashing import sha256_file
from features.slices import DriftReport
from training.candidates import CandidatePlan, SliceCatalog
from training.evaluation import failed_candidate
from training.evaluation_record import (
    CandidateEvaluation,
    DriftSummary,
    Execution,
    ExecutionBound,
    FeeScenario,
    SliceFigures,
    TestTotals,
)
from training.sweep_record import SweepResult


@dataclass(frozen=True)
class EvaluationPlan:
    """The candidates to backtest, the MLflow runs their figures go to, and the candidates
    that cannot be backtested (a fold failed in training)."""

    plans: list[CandidatePlan]
    run_ids: dict[str, str | None]  # candidate -> its last fold's training run
    fold_runs: dict[str, dict[int, str]]  # candidate -> fold -> that fold's training run
    failed: list[CandidateEvaluation] = field(default_factory=list)
    n_candidates: int = 0  # every candidate of the sweep, failed ones included (trials)


def check_sweep(sweep: SweepResult, catalog: SliceCatalog, spec_hash: str) -> None:
    """Refuse a sweep trained on another feature spec, or on train slices that are not
    the catalogue's any more (other ids, or other bytes). Raises ValueError."""
    sid = sweep.sweep_run_id
    if sweep.spec_hash != spec_hash:
        raise ValueError(f"sweep {sid} used spec {sweep.spec_hash}, the config has {spec_hash}")
    trained_on = sweep.trained_on()
    current = {f.train.slice_id: f.train.sha256 for f in catalog.folds}
    if trained_on != current:
        raise ValueError(
            f"the slices changed since sweep {sid} was trained (train slices then "
            f"{sorted(trained_on)}, now {sorted(current)}, or their sha256 differ): train again"
        )


def plan_evaluation(
    sweep: SweepResult,
    catalog: SliceCatalog,
    spec_hash: str,
    evaluation: EvaluationConfig,
    reports: Path,
) -> EvaluationPlan:
    """The evaluation of `sweep` on `catalog` (see the module docstring); each candidate's
    backtest writes under reports/<candidate_id>/. Raises ValueError (`check_sweep`)."""
    check_sweep(sweep, catalog, spec_hash)
    plans: list[CandidatePlan] = []
    run_ids: dict[str, str | None] = {}
    fold_runs: dict[str, dict[int, str]] = {}
    failed: list[CandidateEvaluation] = []
    by_cid = sweep.by_candidate()
    for cid, rows in by_cid.items():
        t = rows[0].task
        if not all(r.ok for r in rows) or len(rows) != len(catalog.folds):
            errors = [f"fold {r.fold}: {r.error}" for r in rows if not r.ok]
            trial = t.trial.model_dump(mode="json")
            failed.append(failed_candidate(cid, trial, t.seed, t.timesteps, errors))
            continue
        zips = tuple(str(r.model_zip) for r in rows)
        plans.append(
            CandidatePlan(
                candidate_id=cid,
                trial=t.trial,
                seed=t.seed,
                timesteps=t.timesteps,
                model_zips=zips,
                folds=catalog.folds,
                stress_paths=catalog.stress_paths,
                stress_ids=catalog.stress_ids,
                evaluation=evaluation,
                out_dir=str(reports / cid),
                model_sha256=tuple(sha256_file(z) for z in zips),
            )
        )
        run_ids[cid] = rows[-1].run_id
        fold_runs[cid] = {r.fold: r.run_id for r in rows if r.run_id}
    return EvaluationPlan(plans, run_ids, fold_runs, failed, len(by_cid))


def drift_summary(drift: DriftReport) -> DriftSummary:
    """The headline of a slice's drift report (its manifest keeps the per-feature table)."""
    return DriftSummary.model_validate(drift.model_dump(include=set(DriftSummary.model_fields)))


def run_metrics(
    totals: TestTotals | None,
    stress: Sequence[SliceFigures],
    fee_sensitivity: Sequence[FeeScenario] | None,
    dsr: float | None,
) -> dict[str, float]:
    """The candidate-level keys every evaluated run carries (every fold run of a candidate
    and every baseline run): totals over the test slices, fee sensitivity, DSR, and the
    stress slices (the last-fold model's, so the same on every fold run)."""
    by_key = totals.model_dump() if totals is not None else {}
    metrics = {f"total_test_{k}": float(v) for k, v in by_key.items()}
    for s in stress:
        for k in ("pnl_plus_fees", "max_drawdown", "sharpe", "trades"):
            metrics[f"{s.slice_id}_{k}"] = float(getattr(s, k))
    for row in fee_sensitivity or []:
        # MLflow metric names take no "+": maker_-2.5bp, maker_0bp, maker_2bp
        metrics[f"total_test_pnl_plus_fees_maker_{row.maker_fee * 1e4:g}bp"] = row.pnl_plus_fees
    if dsr is not None:
        metrics["dsr"] = float(dsr)
    return metrics


def slice_metrics(prefix: str, s: SliceFigures | None) -> dict[str, float]:
    """One slice's figures under `<prefix>_<name>` (no slice id in the key)."""
    if s is None:
        return {}
    keys = ("pnl", "fees", "pnl_plus_fees", "max_drawdown", "sharpe", "trades")
    return {f"{prefix}_{k}": float(getattr(s, k)) for k in keys}


def touch_bound_metrics(bound: ExecutionBound | None) -> dict[str, float]:
    """The touch bound's totals over the test slices, `touch_bound_total_test_<name>`
    (none when the candidate has no bound)."""
    if bound is None:
        return {}
    return {
        f"touch_bound_total_test_{k}": float(v) for k, v in bound.test_totals.model_dump().items()
    }


def execution_tags(execution: Execution | None) -> dict[str, str]:
    """The MLflow tags of the execution a run was judged under: `execution` (the report's
    line) and its parts, `execution_fill_model`, `execution_entry_latency_ms`,
    `execution_cancel_latency_ms`, `execution_fees` (the schedule and the maker / taker
    rates in force, fractions) and `execution_funding` (off, constant <rate> or table
    <path>). None: no tags."""
    if execution is None:
        return {}
    e = execution
    rates = "; ".join(f"maker {r.maker:g}, taker {r.taker:g}" for r in e.fee_rates)
    funding = (
        "off"
        if not e.funding
        else (
            f"table {e.funding_rates_path}"
            if e.funding_rates_path
            else f"constant {e.funding_rate:g}"
        )
    )
    return {
        "execution": e.describe(),
        "execution_fill_model": e.fill_model,
        "execution_entry_latency_ms": "n/a"
        if e.entry_latency_ms is None
        else f"{e.entry_latency_ms:g}",
        "execution_cancel_latency_ms": "n/a"
        if e.cancel_latency_ms is None
        else f"{e.cancel_latency_ms:g}",
        "execution_fees": f"{e.fees}: {rates}" if rates else e.fees,
        "execution_funding": funding,
    }
