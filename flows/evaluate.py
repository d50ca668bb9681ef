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
`baseline=true`) go to MLflow. Every report and run states the execution it was judged
under (fill model, latency, fee, funding) and the candidate's touch bound (its test slices
re-run under touch without latency: optimistic, never gated).

With `storage:` set and no slices of the spec in the data folder, the catalogue is the
store's (`training.candidates.open_catalog`) and the slices a backtest reads are fetched,
every byte checked, into this machine's cache first (`fetch_catalog`). A sweep that
trained with the store's funding table is backtested with the same bytes: fetched into
the cache against the sha256 its tasks recorded (`training.candidates.
fetch_trained_funding`; replaced on the store since: refused, naming it).

The backtests run in this process one candidate at a time: a few seconds each, less than
starting a pool of workers.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import INPUTS, TASK_SOURCE
from prefect.task_runners import ThreadPoolTaskRunner

from core.config.experiment import ExperimentConfig
from core.paths import DataLayout
from core.schema import feature_names
from flows import progress
from flows.common import data_folder_lock, post_markdown_artifact
from flows.results import PERSISTED, ensure_result_storage
from ingest.funding import with_funding_history
from registry.reference import backtest_champion, resolve_champion
from training.candidates import (
    CandidatePlan,
    ReferencePlan,
    backtest_candidate,
    backtest_reference,
    candidate_backtest,
    check_instrument,
    fetch_catalog,
    fetch_trained_funding,
    funding_on_store,
    load_results,
    load_touch_bound,
    open_catalog,
    plan_references,
    reference_backtest,
    with_local_funding,
)
from training.evaluation import CHAMPION, data_key, evaluate_sweep
from training.evaluation_plan import (
    drift_summary,
    execution_tags,
    plan_evaluation,
    run_metrics,
    slice_metrics,
    touch_bound_metrics,
)
from training.evaluation_record import (
    Evaluation,
    LedgerEntry,
)
from training.report import write_report
from training.sweep_record import SWEEP_JSON, SweepResult

EVALUATION_JSON = "evaluation.json"


@task(name="backtest-candidate", cache_policy=INPUTS + TASK_SOURCE, **PERSISTED)
def backtest_candidate_task(plan: CandidatePlan) -> str:
    """training.candidates.backtest_candidate (its test slices also under touch without
    latency, the touch bound): returns the folder holding the results."""
    return backtest_candidate(plan)


@task(name="backtest-reference", cache_policy=INPUTS + TASK_SOURCE, **PERSISTED)
def backtest_reference_task(plan: ReferencePlan) -> str:
    """training.candidates.backtest_reference (a baseline): returns the results folder."""
    return backtest_reference(plan)


@task(name="backtest-champion", cache_policy=INPUTS + TASK_SOURCE, **PERSISTED)
def backtest_champion_task(plan: ReferencePlan) -> str:
    """registry.reference.backtest_champion: returns the results folder."""
    return backtest_champion(plan)


def _summary_markdown(evaluation: Evaluation) -> str:
    lines = [
        "# Evaluation",
        "",
        "| candidate | decision | pnl+fees | trades | max dd | failed gates "
        "| touch bound pnl+fees |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in evaluation.candidates:
        failed = ", ".join(c.failed_gates()) or "-"
        t = c.test_totals
        if t is None:
            continue
        bound = c.touch_bound
        lines.append(
            f"| {c.candidate_id} | {c.decision} | {t.pnl_plus_fees:.6f} | {t.trades} "
            f"| {t.max_drawdown:.4f} | {failed} "
            f"| {f'{bound.test_totals.pnl_plus_fees:.6f}' if bound else 'n/a'} |"
        )
    executions = {c.execution.describe() for c in evaluation.candidates if c.execution}
    lines += ["", *(f"Judged under: {e}." for e in sorted(executions))]
    lines.append(
        "Touch bound: the same models on the same test slices under fill model touch without "
        "latency, the optimistic bound on fills; the gates never read it."
    )
    o = evaluation.overfitting
    pbo, dsr, n = (o.pbo, o.dsr, o.n_trials) if o is not None else (None, None, None)
    lines += [
        "",
        f"PBO {pbo}, DSR {dsr}, trials {n}; best {evaluation.best}, "
        f"challenger {evaluation.challenger}",
    ]
    return "\n".join(lines)


@flow(name="evaluate-policies", task_runner=ThreadPoolTaskRunner(max_workers=1))  # type: ignore[arg-type]
def evaluate_policies_flow(
    cfg: ExperimentConfig, data_dir: str, tracking_uri: str, sweep_run_id: str
) -> Evaluation:
    """See the module docstring. Returns the evaluation (evaluation.json is its dump).
    Holds the data folder's lock; persisted results are JSON records (`flows.results`)."""
    with data_folder_lock(data_dir, "evaluate"):
        ensure_result_storage()
        return _evaluate_policies(cfg, data_dir, tracking_uri, sweep_run_id)


def _evaluate_policies(
    cfg: ExperimentConfig, data_dir: str, tracking_uri: str, sweep_run_id: str
) -> Evaluation:
    """The flow's body (runs inside the flow, so its tasks are Prefect task runs)."""
    # slow: mlflow (~1.5 s), only when the flow runs
    from registry import ledger, tracking

    logger = get_run_logger()
    layout = DataLayout(Path(data_dir).resolve())
    reports = layout.reports(sweep_run_id)
    sweep_path = reports / SWEEP_JSON
    if not sweep_path.exists():
        raise FileNotFoundError(
            f"no sweep {sweep_run_id}: {sweep_path} missing (run `chappie train` first)"
        )
    sweep = SweepResult.read(sweep_path)
    spec_hash = cfg.features.spec.spec_hash
    # the store's when none here
    catalog = open_catalog(layout, spec_hash, cfg.storage, cfg.ingest.symbol)
    check_instrument(catalog, cfg.ingest.instrument)
    if cfg.storage is not None:  # the config as the train flow planned it (its funding)
        cfg = funding_on_store(cfg, layout, catalog)[0]
    if cfg.storage is not None and catalog.store_sha256:
        # the test, validation and stress slices and the stats, checked, into the cache
        catalog = fetch_catalog(catalog, cfg.storage)
    planned = plan_evaluation(sweep, catalog, spec_hash, cfg.evaluation, reports)
    plans, failed_entries = planned.plans, planned.failed
    # the funding tables the models trained with (store URL -> checked local copy): the
    # backtests read those; the plans keep the URLs (keys and reports name the store's)
    tables = fetch_trained_funding(r.task for r in sweep.tasks)
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
    futures = [
        backtest_candidate_task.submit(
            p.model_copy(
                update={
                    "trial": p.trial.model_copy(
                        update={"env": with_local_funding(p.trial.env, tables)}
                    )
                }
            )
        )
        for p in plans
    ]
    ref_futures = [
        (backtest_champion_task if p.name == CHAMPION else backtest_reference_task).submit(
            p.model_copy(update={"env": with_local_funding(p.env, tables)})
        )
        for p in ref_plans
    ]
    last_train = catalog.manifests[catalog.folds[-1].train.slice_id]
    cands = []
    results_by_cid = {}
    with progress.step("evaluate: candidates", len(plans), "backtests") as st:
        for plan, fut in zip(plans, futures, strict=True):
            out_dir = fut.result()
            results = load_results(out_dir)
            results_by_cid[plan.candidate_id] = results
            c = candidate_backtest(plan, results, load_touch_bound(out_dir))
            c.run_id = planned.run_ids[plan.candidate_id]
            c.train_end_ns = last_train.t_end_ns
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
    dkey = data_key([f.test.sha256 for f in catalog.folds], cfg.evaluation.return_period_s)
    trials = ledger.read_ledger(cfg.registry.experiment, spec_hash, dkey)
    verdict = evaluate_sweep(
        cands, cfg.evaluation, n_trials=planned.n_candidates, references=refs, ledger=trials
    )
    overfitting_json = verdict.overfitting.to_json()
    baselines_json = {name: b.to_json() for name, b in verdict.baselines.items()}

    report_paths: dict[str, dict[str, str]] = {}
    st = progress.open_step("evaluate: reports and MLflow", len(verdict.candidates), "candidates")
    for entry in verdict.candidates:
        cid = entry.candidate_id
        report = {
            **entry.to_json(),
            "model": {
                "model_zip": entry.model_zip,
                "stats_dir": entry.stats_dir,
                "run_id": entry.run_id,
                "sweep_run_id": sweep_run_id,
            },
            "overfitting": overfitting_json,
            "baselines": baselines_json,
        }
        env, best = entry.env_key or "", entry.best_baseline or ""
        seed0 = min((k[2] for k in ref_results if k[:2] == (env, best)), default=0)
        reference = ref_results.get((env, best, seed0), [])
        paths = write_report(reports / cid, report, results_by_cid[cid], reference, best)
        report_paths[cid] = paths
        if entry.run_id:
            # every fold's run: the candidate's totals and its own fold's slices, under the
            # same keys on every run (MLflow Compare lines them up; the fold is a param)
            totals = run_metrics(
                entry.test_totals, entry.stress_slices, entry.fee_sensitivity, entry.dsr
            ) | touch_bound_metrics(entry.touch_bound)
            tags = {"decision": entry.decision, **execution_tags(entry.execution)}
            by_fold = {s.fold: s for s in entry.slices}
            val_by_fold = {s.fold: s for s in entry.validation_slices}
            for fold, run in planned.fold_runs.get(cid, {}).items():
                own = slice_metrics("test", by_fold.get(fold))
                own |= slice_metrics("validation", val_by_fold.get(fold))
                tracking.log_metrics(run, totals | own)
                tracking.set_tags(run, tags)
            tracking.log_artifacts(entry.run_id, list(paths.values()), artifact_path="backtest")
            tracking.set_tags(entry.run_id, tags)
            judged_on = entry.slices + entry.stress_slices  # test and stress slices
            tracking.log_slice_datasets_by_kind(  # the manifests' JSON, as on disk
                entry.run_id, [catalog.manifests[s.slice_id].to_json() for s in judged_on]
            )
            c = next(x for x in cands if x.candidate_id == cid)
            ledger.record_trial(
                entry.run_id,
                ledger.ledger_tags(
                    spec_hash,
                    dkey,
                    c.model_key,
                    c.config_key,
                    c.returns(cfg.evaluation.return_period_s).tolist(),
                ),
            )
        st.advance()
    # the baselines shown are the first candidate's env's (evaluate_sweep), run as it was
    first = verdict.candidates[0].execution if verdict.candidates else None
    for name, b in verdict.baselines.items():
        tracking.log_child_run(
            sweep_run_id,
            cfg.registry.experiment,
            f"baseline-{name}",
            {"baseline": name, "seeds": b.seeds if b.seeds is not None else [0]},
            {"baseline": "true", "sweep_run_id": sweep_run_id, **execution_tags(first)},
            [],
            run_metrics(b.as_totals(), b.stress_slices, b.fee_sensitivity, None),
            [],
            [],
        )
    st.close()
    evaluation = Evaluation(
        sweep_run_id=sweep_run_id,
        experiment=cfg.registry.experiment,
        config_fingerprint=cfg.fingerprint,
        spec_hash=spec_hash,
        data_key=dkey,
        candidates=[
            c.model_copy(update={"report": report_paths[c.candidate_id]})
            for c in verdict.candidates
        ]
        + failed_entries,
        best=verdict.best,
        challenger=verdict.challenger,
        overfitting=verdict.overfitting,
        baselines=verdict.baselines,
        champion=verdict.champion,
        ledger=[
            LedgerEntry(model_key=t.model_key, config_key=t.config_key, returns=list(t.returns))
            for t in trials
        ],
        notes=verdict.notes + ([champ_note] if champ_note else []),
        drift={
            sid: drift_summary(drift)
            for sid in [f.test.slice_id for f in catalog.folds] + list(catalog.stress_ids)
            if (drift := catalog.manifests[sid].validation.drift) is not None
        },
        stress_slices=list(catalog.stress_ids),
        evaluation_config=cfg.evaluation.model_dump(mode="json"),
        env_configs={c.env_key: c.trial.env.model_dump(mode="json") for c in cands},
    )
    path = evaluation.write(reports / EVALUATION_JSON)
    over = {
        k: float(v)
        for k, v in overfitting_json.items()
        if isinstance(v, (int, float)) and v is not None
    }
    tracking.log_metrics(sweep_run_id, {f"overfitting_{k}": v for k, v in over.items()})
    tracking.log_metrics(
        sweep_run_id,
        {
            f"drift_{sid}_{k}": float(value)
            for sid, d in evaluation.drift.items()
            for k in ("max_beyond_clip_share", "max_mean_shift")
            if (value := getattr(d, k)) is not None
        },
    )
    tracking.log_artifacts(sweep_run_id, [str(path)])
    executions = {e.describe(): e for c in verdict.candidates if (e := c.execution)}
    tracking.set_tags(  # the execution when every candidate was judged under the same
        sweep_run_id,
        {"best": str(evaluation.best), "challenger": str(evaluation.challenger)}
        | (execution_tags(next(iter(executions.values()))) if len(executions) == 1 else {}),
    )
    _post_artifact(evaluation)
    return evaluation


def _post_artifact(evaluation: Evaluation) -> None:
    post_markdown_artifact("evaluation", _summary_markdown(evaluation), "gates")


def evaluate_flow(
    cfg: ExperimentConfig, data_dir: str, tracking_uri: str, sweep_run_id: str
) -> Evaluation:
    """Entry point (nightly, CLI): the `evaluate-policies` flow (funding on when the data
    has its history, as the train flow has it: `ingest.funding.with_funding_history`)."""
    cfg = with_funding_history(cfg, data_dir)
    return evaluate_policies_flow(cfg, data_dir, tracking_uri, sweep_run_id)
