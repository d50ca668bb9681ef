"""Prefect flow `evaluate-policies`: walk-forward backtests, gates, overfitting statistics,
reports and evaluation.json for one sweep. Control flow only.

Every candidate (trial, seed, timesteps) is backtested with each fold's own model on that
fold's test (and validation) slice, and with its last-fold model on the stress slices
(reported separately, never gated): one cached task per candidate (INPUTS + TASK_SOURCE,
the models' sha256 in the inputs). Then `training.evaluation.evaluate_sweep` applies the
gates, seed stability, PBO and DSR over all candidates (failed trainings count as trials),
reports are written under reports/<sweep_run_id>/<candidate_id>/, evaluation.json under
reports/<sweep_run_id>/, and metrics, reports and decisions go to MLflow.

The backtests run in this process one candidate at a time: a few seconds each, less than
starting a pool of workers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import INPUTS, TASK_SOURCE
from prefect.task_runners import ThreadPoolTaskRunner

from core.atomic import write_json_atomic
from core.config.experiment import ExperimentConfig
from core.hashing import sha256_file
from core.paths import DataLayout
from flows.common import post_markdown_artifact
from training.candidates import (
    CandidatePlan,
    backtest_candidate,
    candidate_backtest,
    check_instrument,
    load_catalog,
    load_results,
)
from training.evaluation import evaluate_sweep
from training.report import write_report

EVALUATION_JSON = "evaluation.json"


@task(name="backtest-candidate", cache_policy=INPUTS + TASK_SOURCE, persist_result=True)
def backtest_candidate_task(plan: CandidatePlan) -> str:
    """training.candidates.backtest_candidate: returns the folder holding the results."""
    return backtest_candidate(plan)


def _summary_markdown(evaluation: dict[str, Any]) -> str:
    lines = [
        "# Evaluation",
        "",
        "| candidate | decision | pnl+fees | trades | max dd | failed gates |",
        "|---|---|---|---|---|---|",
    ]
    for c in evaluation["candidates"]:
        failed = ", ".join(k for k, g in c.get("gates", {}).items() if not g["passed"]) or "-"
        t = c["test_totals"]
        lines.append(
            f"| {c['candidate_id']} | {c['decision']} | {t['pnl_plus_fees']:.6f} | {t['trades']} | {t['max_drawdown']:.4f} | {failed} |"
        )
    o = evaluation["overfitting"]
    lines += [
        "",
        f"PBO {o.get('pbo')}, DSR {o.get('dsr')}, trials {o.get('n_trials')}; best {evaluation['best']}, "
        f"challenger {evaluation['challenger']}",
    ]
    return "\n".join(lines)


def _failed_candidate(cid: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The evaluation entry of a candidate whose training failed on some fold: retest."""
    first = rows[0]["task"]
    errors = [f"fold {r['fold']}: {r['error']}" for r in rows if not r["ok"]]
    return {
        "candidate_id": cid,
        "trial": first["trial"]["name"],
        "seed": first["seed"],
        "timesteps": first["timesteps"],
        "decision": "retest",
        "reasons": [f"training failed after retries: {e}" for e in errors],
        "gates": {},
        "test_totals": {
            "pnl": 0.0,
            "fees": 0.0,
            "pnl_plus_fees": 0.0,
            "trades": 0,
            "max_drawdown": 0.0,
        },
        "slices": [],
        "stress_slices": [],
        "validation_slices": [],
        "dsr": None,
        "model_zip": None,
        "stats_dir": None,
        "run_id": None,
        "env_config": first["trial"]["env"],
        "reward_config": first["trial"]["env"]["reward"],
        "ppo_config": first["trial"]["ppo"],
        "train_slices": [],
        "test_slices": [],
        "notes": [],
    }


@flow(name="evaluate-policies", task_runner=ThreadPoolTaskRunner(max_workers=1))  # type: ignore[arg-type]
def evaluate_policies_flow(
    cfg: ExperimentConfig, data_dir: str, tracking_uri: str, sweep_run_id: str
) -> dict[str, Any]:
    """See the module docstring. Returns the evaluation.json content."""
    from registry import tracking

    logger = get_run_logger()
    layout = DataLayout(Path(data_dir).resolve())
    reports = layout.reports(sweep_run_id)
    sweep_path = reports / "sweep.json"
    if not sweep_path.exists():
        raise FileNotFoundError(
            f"no sweep {sweep_run_id}: {sweep_path} missing (run `chappie train` first)"
        )
    sweep = json.loads(sweep_path.read_text())
    spec_hash = cfg.features.spec.spec_hash
    if sweep["spec_hash"] != spec_hash:
        raise ValueError(
            f"sweep {sweep_run_id} used spec {sweep['spec_hash']}, the config has {spec_hash}"
        )
    catalog = load_catalog(layout, spec_hash)
    check_instrument(catalog, cfg.ingest.instrument)
    by_cid: dict[str, list[dict[str, Any]]] = {}
    for row in sweep["tasks"]:
        by_cid.setdefault(row["candidate_id"], []).append(row)

    plans: list[CandidatePlan] = []
    run_ids: dict[str, str | None] = {}
    failed_entries = []
    trained_on = {r["task"]["train_slice_id"]: r["task"]["train_sha256"] for r in sweep["tasks"]}
    current = {f.train_id: f.train_sha256 for f in catalog.folds}
    if trained_on != current:
        raise ValueError(
            f"the slices changed since sweep {sweep_run_id} was trained (train slices then "
            f"{sorted(trained_on)}, now {sorted(current)}, or their sha256 differ): train again"
        )
    for cid, rows in by_cid.items():
        rows = sorted(rows, key=lambda r: r["fold"])
        if not all(r["ok"] for r in rows) or len(rows) != len(catalog.folds):
            failed_entries.append(_failed_candidate(cid, rows))
            continue
        t = rows[0]["task"]
        zips = tuple(r["model_zip"] for r in rows)
        plans.append(
            CandidatePlan(
                candidate_id=cid,
                trial=t["trial"],
                seed=t["seed"],
                timesteps=t["timesteps"],
                model_zips=zips,
                folds=catalog.folds,
                stress_paths=catalog.stress_paths,
                stress_ids=catalog.stress_ids,
                evaluation=cfg.evaluation,
                out_dir=str(reports / cid),
                model_sha256=tuple(sha256_file(z) for z in zips),
            )
        )
        run_ids[cid] = rows[-1]["run_id"]
    logger.info("evaluating %d candidates (%d failed in training)", len(plans), len(failed_entries))
    futures = [backtest_candidate_task.submit(p) for p in plans]
    cands = []
    results_by_cid = {}
    for plan, fut in zip(plans, futures, strict=True):
        results = load_results(fut.result())
        results_by_cid[plan.candidate_id] = results
        c = candidate_backtest(plan, results)
        c.run_id = run_ids[plan.candidate_id]
        cands.append(c)
    judged = evaluate_sweep(cands, cfg.evaluation, n_trials=len(by_cid))
    evaluation = {
        "sweep_run_id": sweep_run_id,
        "experiment": cfg.registry.experiment,
        "config_fingerprint": cfg.fingerprint,
        "spec_hash": spec_hash,
        "candidates": judged["candidates"] + failed_entries,
        "best": judged["best"],
        "challenger": judged["challenger"],
        "overfitting": judged["overfitting"],
        "notes": judged["notes"],
        "stress_slices": list(catalog.stress_ids),
        "evaluation_config": cfg.evaluation.model_dump(mode="json"),
    }

    tracking.configure(tracking_uri)
    for entry in judged["candidates"]:
        cid = entry["candidate_id"]
        report = {
            **entry,
            "model": {
                "model_zip": entry["model_zip"],
                "stats_dir": entry["stats_dir"],
                "run_id": entry["run_id"],
                "sweep_run_id": sweep_run_id,
            },
            "overfitting": judged["overfitting"],
        }
        paths = write_report(reports / cid, report, results_by_cid[cid])
        entry["report"] = paths
        if entry["run_id"]:
            metrics = {f"test_{k}": float(v) for k, v in entry["test_totals"].items()}
            for s in entry["slices"] + entry["stress_slices"] + entry["validation_slices"]:
                for k in ("pnl_plus_fees", "max_drawdown", "sharpe", "trades"):
                    metrics[f"{s['slice_id']}_{k}"] = float(s[k])
            if entry["dsr"] is not None:
                metrics["dsr"] = float(entry["dsr"])
            tracking.log_metrics(entry["run_id"], metrics)
            tracking.log_artifacts(entry["run_id"], list(paths.values()), artifact_path="backtest")
            tracking.set_tags(entry["run_id"], {"decision": entry["decision"]})
            judged_on = entry["slices"] + entry["stress_slices"]  # test and stress slices
            tracking.log_slice_datasets_by_kind(
                entry["run_id"], [catalog.manifests[s["slice_id"]] for s in judged_on]
            )
    path = write_json_atomic(reports / EVALUATION_JSON, evaluation)
    over = {
        k: float(v)
        for k, v in judged["overfitting"].items()
        if isinstance(v, (int, float)) and v is not None
    }
    tracking.log_metrics(sweep_run_id, {f"overfitting_{k}": v for k, v in over.items()})
    tracking.log_artifacts(sweep_run_id, [str(path)])
    tracking.set_tags(
        sweep_run_id, {"best": str(evaluation["best"]), "challenger": str(evaluation["challenger"])}
    )
    _post_artifact(evaluation)
    return evaluation


def _post_artifact(evaluation: dict[str, Any]) -> None:
    post_markdown_artifact("evaluation", _summary_markdown(evaluation), "gates")


def evaluate_flow(
    cfg: ExperimentConfig, data_dir: str, tracking_uri: str, sweep_run_id: str
) -> dict[str, Any]:
    """Entry point (nightly, CLI): the `evaluate-policies` flow."""
    return evaluate_policies_flow(cfg, data_dir, tracking_uri, sweep_run_id)
