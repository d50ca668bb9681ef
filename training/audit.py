"""`chappie audit overfitting`: recompute PBO and DSR of a finished sweep from the saved
backtest curves (reports/<sweep_run_id>/<candidate_id>/backtest.npz), independently of
the numbers recorded in evaluation.json, and show both side by side. Adapter (reads
files) around the pure statistics."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from core.config.training import EvaluationConfig, TrialConfig
from training.candidates import load_results
from training.evaluation import CandidateBacktest, returns_matrix
from training.overfitting import deflated_sharpe_ratio, overfitting_report, sharpe_per_period


def audit_overfitting(
    reports_dir: str | Path, cfg: EvaluationConfig | None = None
) -> dict[str, Any]:
    """Recompute the sweep's PBO/DSR with the evaluation settings recorded in
    evaluation.json (or `cfg`). `reports_dir` is reports/<sweep_run_id>. Raises
    FileNotFoundError when evaluation.json or a candidate's backtest is missing."""
    d = Path(reports_dir)
    evaluation = json.loads((d / "evaluation.json").read_text())
    if cfg is None:
        cfg = EvaluationConfig.model_validate(evaluation.get("evaluation_config", {}))
    evaluated = [c for c in evaluation["candidates"] if c.get("slices")]
    cands = [
        CandidateBacktest(
            c["candidate_id"],
            TrialConfig(name=c["trial"]),
            c["seed"],
            c["timesteps"],
            [r for r in load_results(d / c["candidate_id"]) if r.slice.kind == "test"],
        )
        for c in evaluated
    ]
    n_trials = len(evaluation["candidates"])
    m, notes = returns_matrix(cands, cfg.return_period_s)
    recomputed: dict[str, Any] = {
        "pbo": None,
        "dsr": None,
        "n_trials": n_trials,
        "n_periods": int(m.shape[0]),
    }
    per_candidate = []
    if m.shape[0] >= 2 and m.shape[1] >= 1:
        rep = overfitting_report(m, cfg.pbo_splits)
        var = rep.trials_sharpe_variance
        best = m[:, rep.best_trial]
        recomputed.update(
            pbo=rep.pbo,
            dsr=deflated_sharpe_ratio(best, n_trials, var),
            n_splits=rep.n_splits,
            best_candidate=cands[rep.best_trial].candidate_id,
            trials_sharpe_variance=var,
        )
        for j, c in enumerate(cands):
            series = m[:, j]
            sr = float(sharpe_per_period(series)[0])
            dsr = deflated_sharpe_ratio(series, n_trials, var) if math.isfinite(sr) else None
            per_candidate.append(
                {"candidate_id": c.candidate_id, "sharpe_per_period": sr, "dsr": dsr}
            )
    recorded = evaluation.get("overfitting", {})
    recorded_dsr = {c["candidate_id"]: c.get("dsr") for c in evaluated}
    for row in per_candidate:
        row["recorded_dsr"] = recorded_dsr.get(row["candidate_id"])
    agree = all(_close(recomputed.get(k), recorded.get(k)) for k in ("pbo", "dsr")) and all(
        _close(r["dsr"], r["recorded_dsr"]) for r in per_candidate
    )
    return {
        "sweep_run_id": evaluation["sweep_run_id"],
        "recomputed": recomputed,
        "recorded": recorded,
        "candidates": per_candidate,
        "agree": agree,
        "notes": notes,
    }


def _close(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)


def render_audit(audit: dict[str, Any]) -> str:
    """Plain-text table of an audit (pure)."""
    r, rec = audit["recomputed"], audit["recorded"]
    lines = [
        f"sweep {audit['sweep_run_id']}: {r['n_trials']} trials, {r['n_periods']} test return periods",
        f"PBO  recomputed {r.get('pbo')}  recorded {rec.get('pbo')}",
        f"DSR  recomputed {r.get('dsr')}  recorded {rec.get('dsr')}  (best: {r.get('best_candidate')})",
        "",
        f"{'candidate':<28} {'sharpe/period':>14} {'dsr':>10} {'recorded':>10}",
    ]
    for c in audit["candidates"]:
        lines.append(
            f"{c['candidate_id']:<28} {c['sharpe_per_period']:>14.6g} {_num(c['dsr']):>10} {_num(c['recorded_dsr']):>10}"
        )
    lines += [
        "",
        "recomputed values match the record"
        if audit["agree"]
        else "MISMATCH with the recorded values",
    ]
    return "\n".join(lines + [f"note: {n}" for n in audit["notes"]])


def _num(v: Any) -> str:
    return "n/a" if v is None else f"{v:.4f}"
