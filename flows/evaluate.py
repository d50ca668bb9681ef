"""Prefect flow `evaluate-policies`: walk-forward backtests, gates, overfitting statistics,
reports and evaluation.json for one sweep. Control flow only.

Every candidate (trial, seed, timesteps) is backtested with each fold's own model on that
fold's test (and validation) slice, and with its last-fold model on the stress slices
(reported separately, never gated): one cached task per candidate (INPUTS + TASK_SOURCE,
the models' sha256 in the inputs). Beside them, the same walk-forward runs the baseline
panel (`training.baselines`) and the current champion (`registry.reference`), once per
distinct env config. Then `training.evaluation.evaluate_sweep` applies the gates
(beats_baselines and beats_champion among them), seed stability, PBO and DSR over the
trial ledger (`registry.ledger`: every candidate evaluated before on the same spec and
test slices; failed trainings count as trials), reports are written under
reports/<sweep_run_id>/<candidate_id>/, evaluation.json under reports/<sweep_run_id>/,
and metrics, reports, decisions, ledger tags and the baseline runs (tagged
`baseline=true`) go to MLflow.

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
from core.schema import feature_names
from flows import progress
from flows.common import data_folder_lock, post_markdown_artifact
from flows.results import PERSISTED, ensure_result_storage
from training.candidates import (
    CandidatePlan,
    ReferencePlan,
    backtest_candidate,
    backtest_reference,
    candidate_backtest,
    check_instrument,
    load_catalog,
    load_results,
    plan_references,
    reference_backtest,
)
from training.evaluation import CHAMPION, data_key, evaluate_sweep
from training.report import write_report

EVALUATION_JSON = "evaluation.json"


@task(name="backtest-candidate", cache_policy=INPUTS + TASK_SOURCE, **PERSISTED)
def backtest_candidate_task(plan: CandidatePlan) -> str:
    """training.candidates.backtest_candidate: returns the folder holding the results."""
    return backtest_candidate(plan)


@task(name="backtest-reference", cache_policy=INPUTS + TASK_SOURCE, **PERSISTED)
def backtest_reference_task(plan: ReferencePlan) -> str:
    """training.candidates.backtest_reference (a baseline): returns the results folder."""
    return backtest_reference(plan)


@task(name="backtest-champion", cache_policy=INPUTS + TASK_SOURCE, **PERSISTED)
def backtest_champion_task(plan: ReferencePlan) -> str:
    """registry.reference.backtest_champion: returns the results folder."""
    from registry.reference import backtest_champion

    return backtest_champion(plan)


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
    """See the module docstring. Returns the evaluation.json content. Holds the data
    folder's lock; persisted results are JSON records (`flows.results`)."""
    with data_folder_lock(data_dir, "evaluate"):
        ensure_result_storage()
        return _evaluate_policies(cfg, data_dir, tracking_uri, sweep_run_id)


def _evaluate_policies(
    cfg: ExperimentConfig, data_dir: str, tracking_uri: str, sweep_run_id: str
) -> dict[str, Any]:
    """The flow's body (runs inside the flow, so its tasks are Prefect task runs)."""
    from registry import ledger, tracking
    from registry.reference import resolve_champion

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
    fold_runs: dict[str, dict[int, str]] = {}  # candidate -> fold -> that fold's training run
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
        fold_runs[cid] = {int(r["fold"]): r["run_id"] for r in rows if r.get("run_id")}
    logger.info("evaluating %d candidates (%d failed in training)", len(plans), len(failed_entries))
    tracking.configure(tracking_uri)
    champ, champ_note = resolve_champion(
        cfg.registry.model_name, cfg.registry.champion_alias, tracking_uri, spec_hash
    )
    ref_plans = plan_references(
        [p.trial for p in plans],  # the env each candidate was trained and is judged in
        catalog,
        cfg.evaluation,
        feature_names(cfg.features.spec),
        cfg.features.spec.window,
        reports / "references",
        (champ.bundle_dir, champ.bundle_sha256) if champ is not None else None,
    )
    futures = [backtest_candidate_task.submit(p) for p in plans]
    ref_futures = [
        (backtest_champion_task if p.name == CHAMPION else backtest_reference_task).submit(p)
        for p in ref_plans
    ]
    cands = []
    results_by_cid = {}
    with progress.step("evaluate: candidates", len(plans), "backtests") as st:
        for plan, fut in zip(plans, futures, strict=True):
            results = load_results(fut.result())
            results_by_cid[plan.candidate_id] = results
            c = candidate_backtest(plan, results)
            c.run_id = run_ids[plan.candidate_id]
            cands.append(c)
            st.advance()
    refs = []
    ref_results = {}
    with progress.step("evaluate: baselines", len(ref_plans), "backtests") as st:
        ref_done = []
        for fut in ref_futures:
            ref_done.append(load_results(fut.result()))
            st.advance()
    for rplan, results in zip(ref_plans, ref_done, strict=True):
        ref = reference_backtest(rplan, results)
        if rplan.name == CHAMPION and champ is not None:
            ref.model_key, ref.label, ref.train_end_ns = (
                champ.model_key,
                champ.label,
                champ.train_end_ns,
            )
        refs.append(ref)
        ref_results[(rplan.env_key, rplan.name, rplan.seed)] = results
    dkey = data_key([f.test_sha256 for f in catalog.folds], cfg.evaluation.return_period_s)
    trials = ledger.read_ledger(cfg.registry.experiment, spec_hash, dkey)
    judged = evaluate_sweep(
        cands, cfg.evaluation, n_trials=len(by_cid), references=refs, ledger=trials
    )
    last_train = catalog.manifests[catalog.folds[-1].train_id]
    for entry in judged["candidates"]:
        entry["train_end_ns"] = int(last_train["t_end_ns"])
    notes = judged["notes"] + ([champ_note] if champ_note else [])
    evaluation = {
        "sweep_run_id": sweep_run_id,
        "experiment": cfg.registry.experiment,
        "config_fingerprint": cfg.fingerprint,
        "spec_hash": spec_hash,
        "data_key": dkey,
        "candidates": judged["candidates"] + failed_entries,
        "best": judged["best"],
        "challenger": judged["challenger"],
        "overfitting": judged["overfitting"],
        "baselines": judged["baselines"],
        "champion": judged["champion"],
        "ledger": [
            {"model_key": t.model_key, "config_key": t.config_key, "returns": list(t.returns)}
            for t in trials
        ],
        "notes": notes,
        "drift": {
            sid: _drift_summary(catalog.manifests[sid])
            for sid in [f.test_id for f in catalog.folds] + list(catalog.stress_ids)
            if (catalog.manifests[sid].get("validation") or {}).get("drift")
        },
        "stress_slices": list(catalog.stress_ids),
        "evaluation_config": cfg.evaluation.model_dump(mode="json"),
        "env_configs": {c.env_key: c.trial.env.model_dump(mode="json") for c in cands},
    }

    st = progress.open_step("evaluate: reports and MLflow", len(judged["candidates"]), "candidates")
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
            "baselines": judged["baselines"],
        }
        best = entry["best_baseline"]
        seed0 = min((k[2] for k in ref_results if k[:2] == (entry["env_key"], best)), default=0)
        reference = ref_results.get((entry["env_key"], best, seed0), [])
        paths = write_report(reports / cid, report, results_by_cid[cid], reference, best or "")
        entry["report"] = paths
        if entry["run_id"]:
            # every fold's run: the candidate's totals and its own fold's slices, under the
            # same keys on every run (MLflow Compare lines them up; the fold is a param)
            totals = _run_metrics(entry)
            by_fold = {s["fold"]: s for s in entry["slices"]}
            val_by_fold = {s["fold"]: s for s in entry["validation_slices"]}
            for fold, run in fold_runs.get(cid, {}).items():
                own = _slice_metrics("test", by_fold.get(fold))
                own |= _slice_metrics("validation", val_by_fold.get(fold))
                tracking.log_metrics(run, totals | own)
                tracking.set_tags(run, {"decision": entry["decision"]})
            tracking.log_artifacts(entry["run_id"], list(paths.values()), artifact_path="backtest")
            tracking.set_tags(entry["run_id"], {"decision": entry["decision"]})
            judged_on = entry["slices"] + entry["stress_slices"]  # test and stress slices
            tracking.log_slice_datasets_by_kind(
                entry["run_id"], [catalog.manifests[s["slice_id"]] for s in judged_on]
            )
            c = next(x for x in cands if x.candidate_id == cid)
            ledger.record_trial(
                entry["run_id"],
                ledger.ledger_tags(
                    spec_hash,
                    dkey,
                    c.model_key,
                    c.config_key,
                    c.returns(cfg.evaluation.return_period_s).tolist(),
                ),
            )
        st.advance()
    for name, b in judged["baselines"].items():
        tracking.log_child_run(
            sweep_run_id,
            cfg.registry.experiment,
            f"baseline-{name}",
            {"baseline": name, "seeds": b.get("seeds", [0])},
            {"baseline": "true", "sweep_run_id": sweep_run_id},
            [],
            _run_metrics({"test_totals": _totals_keys(b), **b}),
            [],
            [],
        )
    st.close()
    path = write_json_atomic(reports / EVALUATION_JSON, evaluation)
    over = {
        k: float(v)
        for k, v in judged["overfitting"].items()
        if isinstance(v, (int, float)) and v is not None
    }
    tracking.log_metrics(sweep_run_id, {f"overfitting_{k}": v for k, v in over.items()})
    tracking.log_metrics(
        sweep_run_id,
        {
            f"drift_{sid}_{k}": float(d[k])
            for sid, d in evaluation["drift"].items()
            for k in ("max_beyond_clip_share", "max_mean_shift")
            if d.get(k) is not None
        },
    )
    tracking.log_artifacts(sweep_run_id, [str(path)])
    tracking.set_tags(
        sweep_run_id, {"best": str(evaluation["best"]), "challenger": str(evaluation["challenger"])}
    )
    _post_artifact(evaluation)
    return evaluation


def _drift_summary(manifest: dict[str, Any]) -> dict[str, Any]:
    """The headline of a slice's drift report (its manifest keeps the per-feature table)."""
    d = manifest["validation"]["drift"]
    keys = (
        "clip",
        "max_beyond_clip_share",
        "max_beyond_clip_feature",
        "max_mean_shift",
        "max_mean_shift_feature",
        "flagged",
    )
    return {k: d.get(k) for k in keys}


def _totals_keys(b: dict[str, Any]) -> dict[str, float]:
    """A panel entry's totals under the candidates' `test_totals` keys."""
    return {
        "pnl": b["pnl_without_fees"],
        "fees": b["fees"],
        "pnl_plus_fees": b["pnl_plus_fees"],
        "trades": b["trades"],
        "max_drawdown": b["max_drawdown"],
    }


def _run_metrics(entry: dict[str, Any]) -> dict[str, float]:
    """The candidate-level keys every evaluated run carries (every fold run of a candidate
    and every baseline run): totals over the test slices, fee sensitivity, DSR, and the
    stress slices (the last-fold model's, so the same on every fold run)."""
    metrics = {f"total_test_{k}": float(v) for k, v in entry["test_totals"].items()}
    for s in entry["stress_slices"]:
        for k in ("pnl_plus_fees", "max_drawdown", "sharpe", "trades"):
            metrics[f"{s['slice_id']}_{k}"] = float(s[k])
    for row in entry.get("fee_sensitivity") or []:
        # MLflow metric names take no "+": maker_-2.5bp, maker_0bp, maker_2bp
        metrics[f"total_test_pnl_plus_fees_maker_{row['maker_fee'] * 1e4:g}bp"] = row[
            "pnl_plus_fees"
        ]
    if entry.get("dsr") is not None:
        metrics["dsr"] = float(entry["dsr"])
    return metrics


def _slice_metrics(prefix: str, s: dict[str, Any] | None) -> dict[str, float]:
    """One slice's figures under `<prefix>_<name>` (no slice id in the key)."""
    if s is None:
        return {}
    keys = ("pnl", "fees", "pnl_plus_fees", "max_drawdown", "sharpe", "trades")
    return {f"{prefix}_{k}": float(s[k]) for k in keys}


def _post_artifact(evaluation: dict[str, Any]) -> None:
    post_markdown_artifact("evaluation", _summary_markdown(evaluation), "gates")


def evaluate_flow(
    cfg: ExperimentConfig, data_dir: str, tracking_uri: str, sweep_run_id: str
) -> dict[str, Any]:
    """Entry point (nightly, CLI): the `evaluate-policies` flow."""
    return evaluate_policies_flow(cfg, data_dir, tracking_uri, sweep_run_id)
