"""`chappie audit overfitting`: recompute PBO and DSR of a finished sweep from the saved
backtest curves (reports/<sweep_run_id>/<candidate_id>/backtest.npz), independently of
the numbers recorded in evaluation.json, and show both side by side. Adapter (reads
files) around the pure statistics."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pydantic import JsonValue

from core.config.training import EvaluationConfig, TrialConfig
from training.candidates import load_results
from training.evaluation import CandidateBacktest, LedgerTrial, overfitting_statistics
from training.evaluation_record import Evaluation, Record
from training.overfitting import sharpe_per_period


class CandidateAudit(Record):
    """One candidate: its Sharpe per return period on the test slices, its DSR as
    recomputed, and as evaluation.json recorded it."""

    candidate_id: str
    sharpe_per_period: float
    dsr: float | None
    recorded_dsr: float | None


class OverfittingAudit(Record):
    """What `chappie audit overfitting` prints (`--json`: this record's dump)."""

    sweep_run_id: str
    recomputed: dict[str, JsonValue]  # the sweep's overfitting statistics, recomputed
    recorded: dict[str, JsonValue]  # ... and as evaluation.json recorded them
    candidates: list[CandidateAudit]
    agree: bool
    notes: list[str]


def audit_overfitting(
    reports_dir: str | Path, cfg: EvaluationConfig | None = None
) -> OverfittingAudit:
    """Recompute the sweep's PBO/DSR with the evaluation settings and the trial ledger
    recorded in evaluation.json (or `cfg`), through the same statistics the evaluation
    ran. `reports_dir` is reports/<sweep_run_id>. Raises FileNotFoundError when
    evaluation.json or a candidate's backtest is missing."""
    d = Path(reports_dir)
    evaluation = Evaluation.read(d / "evaluation.json")
    if cfg is None:
        cfg = EvaluationConfig.model_validate(evaluation.evaluation_config or {})
    evaluated = [c for c in evaluation.candidates if c.slices]
    cands = [
        CandidateBacktest(
            c.candidate_id,
            TrialConfig(name=c.trial),
            c.seed,
            c.timesteps,
            [r for r in load_results(d / c.candidate_id) if r.slice.kind == "test"],
            model_key=c.model_key or "",
            config_key=c.config_key or "",  # recorded from the full trial config
        )
        for c in evaluated
    ]
    ledger = [LedgerTrial(t.model_key, t.config_key, tuple(t.returns)) for t in evaluation.ledger]
    n_failed = len(evaluation.candidates) - len(evaluated)
    recomputed, _, dsrs, notes = overfitting_statistics(cands, ledger, cfg, n_failed)
    over = recomputed.to_json()
    recorded_dsr = {c.candidate_id: c.dsr for c in evaluated}
    per_candidate: list[CandidateAudit] = []
    for c, dsr in zip(cands, dsrs, strict=True):
        series = c.returns(cfg.return_period_s)[: recomputed.n_periods or 0]
        sr = float(sharpe_per_period(series)[0]) if series.size >= 2 else math.nan
        per_candidate.append(
            CandidateAudit(
                candidate_id=c.candidate_id,
                sharpe_per_period=sr,
                dsr=dsr,
                recorded_dsr=recorded_dsr.get(c.candidate_id),
            )
        )
    recorded = evaluation.overfitting.to_json() if evaluation.overfitting is not None else {}
    agree = all(_close(over.get(k), recorded.get(k)) for k in ("pbo", "dsr")) and all(
        _close(r.dsr, r.recorded_dsr) for r in per_candidate
    )
    return OverfittingAudit(
        sweep_run_id=evaluation.sweep_run_id,
        recomputed=over,
        recorded=recorded,
        candidates=per_candidate,
        agree=agree,
        notes=list(notes),
    )


def _close(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)


def render_audit(audit: OverfittingAudit) -> str:
    """Plain-text table of an audit (pure)."""
    r, rec = audit.recomputed, audit.recorded
    lines = [
        f"sweep {audit.sweep_run_id}: {r['n_trials']} trials, {r['n_periods']} test return periods",
        f"PBO  recomputed {r.get('pbo')}  recorded {rec.get('pbo')}",
        f"DSR  recomputed {r.get('dsr')}  recorded {rec.get('dsr')}  (best: {r.get('best_candidate')})",
        "",
        f"{'candidate':<28} {'sharpe/period':>14} {'dsr':>10} {'recorded':>10}",
    ]
    for c in audit.candidates:
        lines.append(
            f"{c.candidate_id:<28} {c.sharpe_per_period:>14.6g} {_num(c.dsr):>10} {_num(c.recorded_dsr):>10}"
        )
    lines += [
        "",
        "recomputed values match the record"
        if audit.agree
        else "MISMATCH with the recorded values",
    ]
    return "\n".join(lines + [f"note: {n}" for n in audit.notes])


def _num(v: Any) -> str:
    return "n/a" if v is None else f"{v:.4f}"
