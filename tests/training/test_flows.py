"""train-policies and evaluate-policies through real Prefect runs (the session harness),
MLflow on SQLite, and `chappie audit overfitting` on the result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.config.experiment import ExperimentConfig
from tests.training.conftest import DataDir, build_data_dir
from training.baselines import BASELINE_NAMES
from training.evaluation_record import Evaluation
from training.gates import DEFINITIONS

CONTRACT_KEYS = {
    "sweep_run_id",
    "experiment",
    "config_fingerprint",
    "spec_hash",
    "candidates",
    "best",
    "challenger",
    "overfitting",
    "baselines",
    "data_key",
}
CANDIDATE_KEYS = {
    "candidate_id",
    "trial",
    "seed",
    "timesteps",
    "decision",
    "reasons",
    "gates",
    "test_totals",
    "slices",
    "model_zip",
    "stats_dir",
    "run_id",
    "env_config",
    "reward_config",
    "ppo_config",
    "train_slices",
    "test_slices",
}


def small(
    cfg: ExperimentConfig, executor: str = "sequential", seeds: tuple[int, ...] = (0, 1)
) -> ExperimentConfig:
    sweep = cfg.sweep.model_copy(update={"executor": executor, "timesteps": (256,), "seeds": seeds})
    return cfg.model_copy(update={"sweep": sweep})


@pytest.fixture(scope="module")
def swept(
    prefect_harness: None, tmp_path_factory: pytest.TempPathFactory, tiny_cfg: ExperimentConfig
):
    from flows.evaluate import evaluate_flow
    from flows.train import train_flow

    data = build_data_dir(tmp_path_factory.mktemp("flow-data"), tiny_cfg)
    cfg = small(tiny_cfg)
    uri = f"sqlite:///{data.root}/mlflow.db"
    sweep = train_flow(cfg, str(data.root), uri)
    evaluation = evaluate_flow(cfg, str(data.root), uri, sweep.sweep_run_id)
    assert isinstance(evaluation, Evaluation)  # one typed value, evaluation.json its dump
    return data, cfg, uri, sweep, evaluation.to_json()


def test_train_flow_runs_every_task_and_logs_parent_and_children(swept) -> None:
    from mlflow import MlflowClient

    data, cfg, uri, sweep, _ = swept
    assert len(sweep.tasks) == 2 * 2 and not sweep.failed  # 2 seeds x 2 folds
    assert all(Path(t.model_zip).is_file() for t in sweep.tasks)
    client = MlflowClient(tracking_uri=uri)
    parent = client.get_run(sweep.sweep_run_id)
    assert parent.data.tags["config_fingerprint"] == cfg.fingerprint
    assert parent.data.params["sweep.seeds"] == "[0, 1]" or "sweep.seeds" in parent.data.params
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
    )
    baselines = [r for r in children if r.data.tags.get("baseline") == "true"]
    children = [r for r in children if r.data.tags.get("baseline") != "true"]
    names = sorted(r.info.run_name for r in children)
    assert names == sorted(t.run_name for t in sweep.tasks)
    # the baseline panel: one run per reference policy, comparable by the same metric keys
    assert sorted(r.info.run_name for r in baselines) == [
        "baseline-always_quote",
        "baseline-flat",
        "baseline-hold_long",
        "baseline-hold_short",
        "baseline-imbalance_rule",
        "baseline-random",
    ]
    cand_run = next(client.get_run(c["run_id"]) for c in swept[4]["candidates"] if c.get("run_id"))
    test_keys = {k for k in cand_run.data.metrics if k.startswith("total_test_")}
    assert "total_test_pnl_plus_fees" in test_keys
    for b in baselines:
        assert test_keys <= set(b.data.metrics), test_keys - set(b.data.metrics)
    # every fold's run carries the same evaluation keys: Compare shows no NaN among them
    evaluated_keys = [
        {k for k in client.get_run(r.info.run_id).data.metrics if k.startswith(("test_", "total_"))}
        for r in children
    ]
    assert evaluated_keys[0] and all(k == evaluated_keys[0] for k in evaluated_keys)
    # each run lasts what its training took (it is logged after the task: its start is
    # set back by the training wall time), not the fraction of a second logging takes
    for r in children:
        wall = r.data.metrics["wall_s"]
        assert abs((r.info.end_time - r.info.start_time) / 1000.0 - wall) < 0.002, (r.info, wall)
    child = children[0]
    assert len(client.get_metric_history(child.info.run_id, "train/value_loss")) >= 1
    assert child.data.tags["seed"] in {"0", "1"} and "trial.ppo.n_steps" in child.data.params
    arts = {a.path for a in client.list_artifacts(child.info.run_id)}
    assert {"model.zip", "metrics.csv", "task.json"} <= arts
    inputs = child.inputs.dataset_inputs
    assert inputs and any(t.key == "sha256" and len(t.value) == 64 for t in inputs[0].tags)


def test_evaluate_flow_writes_the_evaluation_contract_and_reports(swept) -> None:
    data, cfg, uri, sweep, ev = swept
    path = data.layout.reports(sweep.sweep_run_id) / "evaluation.json"
    assert json.loads(path.read_text()) == ev
    assert Evaluation.read(path).to_json() == ev
    assert set(ev) >= CONTRACT_KEYS
    assert ev["overfitting"]["n_trials"] == 2 and ev["overfitting"]["pbo"] is not None
    assert set(ev["baselines"]) == set(BASELINE_NAMES)
    for b in ev["baselines"].values():
        assert {"pnl_plus_fees", "pnl_without_fees", "fees", "trades", "max_drawdown"} <= set(b)
        assert [s["slice_id"] for s in b["slices"]] == ["fold00-test", "fold01-test"]
    for c in ev["candidates"]:
        assert set(c) >= CANDIDATE_KEYS
        assert c["decision"] in {"promote", "reject", "retest"} and c["reasons"]
        assert [s["slice_id"] for s in c["slices"]] == ["fold00-test", "fold01-test"]
        assert [s["slice_id"] for s in c["stress_slices"]] == ["stress00"]
        assert c["model_zip"].endswith(
            "-f01-" + c["model_zip"].split("-f01-")[-1]
        )  # last-fold model
        assert set(c["gates"]) >= set(DEFINITIONS) - {"beats_champion"}  # no champion yet
        for name in ("equity.png", "drawdown.png", "trades.csv", "report.md", "report.json"):
            assert Path(c["report"][name]).is_file()
        # the execution it was judged under and its touch bound, in the record and report
        env = cfg.sweep.trials[0].env
        assert c["execution"]["fill_model"] == env.fill_model
        assert c["execution"]["entry_latency_ms"] == env.entry_latency_ms
        assert c["execution"]["fees"] == env.fees.describe() and c["execution"]["fee_rates"]
        assert c["touch_bound"]["fill_model"] == "touch"
        assert c["touch_bound"]["test_totals"]["trades"] > 0
        md = Path(c["report"]["report.md"]).read_text()
        assert "- Judged under: fill model " in md and "- touch bound: pnl+fees " in md
    from mlflow import MlflowClient

    run = MlflowClient(tracking_uri=uri).get_run(ev["candidates"][0]["run_id"])
    contexts = {
        t.value for d in run.inputs.dataset_inputs for t in d.tags if t.key == "mlflow.data.context"
    }
    assert {"train", "test", "stress"} <= contexts
    assert "test_pnl_plus_fees" in run.data.metrics and run.data.tags["decision"] in {
        "promote",
        "reject",
        "retest",
    }
    assert run.data.tags["execution_fill_model"] == ev["candidates"][0]["execution"]["fill_model"]
    assert run.data.tags["execution"].startswith("fill model ")
    bound = ev["candidates"][0]["touch_bound"]["test_totals"]["pnl_plus_fees"]
    assert run.data.metrics["touch_bound_total_test_pnl_plus_fees"] == bound
    promoted = [c for c in ev["candidates"] if c["decision"] == "promote"]
    if promoted:
        best = max(promoted, key=lambda c: c["test_totals"]["pnl_plus_fees"])
        assert ev["best"] == best["candidate_id"]
    else:
        assert ev["best"] is None


def test_sweep_json_is_the_typed_result_and_round_trips(swept) -> None:
    from training.sweep_record import SWEEP_JSON, SweepResult

    data, cfg, _, sweep, _ = swept
    path = data.layout.reports(sweep.sweep_run_id) / SWEEP_JSON
    on_disk = path.read_bytes()
    assert on_disk == sweep.dumps()  # the train flow's value, dumped
    back = SweepResult.read(path)
    assert back == sweep and back.dumps() == on_disk
    raw = json.loads(on_disk)  # the keys evaluate, audit and users read
    assert set(raw) == {"sweep_run_id", "tasks", "failed", "config_fingerprint", "spec_hash"}
    row = raw["tasks"][0]
    assert {"run_name", "candidate_id", "fold", "ok", "run_id", "out_dir", "task"} <= set(row)
    assert row["task"]["train_slice_id"] and "store" not in row["task"]  # local run
    assert raw["config_fingerprint"] == cfg.fingerprint
    assert set(back.by_candidate()) == {t.candidate_id for t in sweep.tasks}
    assert all([r.fold for r in rows] == [0, 1] for rows in back.by_candidate().values())


def test_rerun_resumes_without_retraining(swept) -> None:
    from flows.train import train_flow

    data, cfg, uri, sweep, _ = swept
    again = train_flow(cfg, str(data.root), uri)
    assert again.sweep_run_id != sweep.sweep_run_id
    before = {t.run_name: t.wall_s for t in sweep.tasks}
    assert {t.run_name: t.wall_s for t in again.tasks} == before  # reused, not retrained


def test_rerun_retrains_a_task_whose_model_was_deleted(swept) -> None:
    import shutil

    from flows.train import train_flow

    data, cfg, uri, sweep, _ = swept
    lost = sweep.tasks[0]
    shutil.rmtree(lost.out_dir)  # Prefect's cache still holds the old result
    again = train_flow(cfg, str(data.root), uri)
    assert Path(again.tasks[0].model_zip).is_file() and not again.failed


def test_audit_overfitting_recomputes_the_record(
    swept, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from flows.cli import main

    data, _, _, sweep, ev = swept
    monkeypatch.setenv("CHAPPIE_DATA_DIR", str(data.root))
    assert main(["audit", "overfitting", sweep.sweep_run_id, "--json"]) == 0
    audit = json.loads(capsys.readouterr().out)
    assert audit["agree"] and audit["recomputed"]["pbo"] == pytest.approx(ev["overfitting"]["pbo"])


def test_failed_training_is_retried_reported_and_judged_retest(
    prefect_harness: None, tmp_path: Path, tiny_cfg: ExperimentConfig
) -> None:
    from flows.evaluate import evaluate_flow
    from flows.train import train_flow

    data: DataDir = build_data_dir(tmp_path / "d", tiny_cfg)
    folder = data.layout.slices(tiny_cfg.features.spec.spec_hash)
    manifest = json.loads((folder / "fold01-train.manifest.json").read_text())
    (folder / manifest["parts"][0]["file"]).write_bytes(b"not an arrow file")
    cfg = small(tiny_cfg, seeds=(0,))
    uri = f"sqlite:///{data.root}/mlflow.db"
    sweep = train_flow(cfg, str(data.root), uri)
    assert [t.ok for t in sweep.tasks] == [True, False]
    failed = sweep.tasks[1]
    assert failed.attempts == 2 and failed.error and sweep.failed == [failed.run_name]
    ev = evaluate_flow(cfg, str(data.root), uri, sweep.sweep_run_id)
    (c,) = ev.candidates
    assert c.decision == "retest" and "training failed" in c.reasons[0]
    assert ev.best is None
    # slices rebuilt after the sweep: evaluation refuses instead of mixing data
    manifest = folder / "fold00-train.manifest.json"
    m = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**m, "sha256": "0" * 64}))
    with pytest.raises(ValueError, match="slices changed"):
        evaluate_flow(cfg, str(data.root), uri, sweep.sweep_run_id)


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["process", "dask"])
def test_train_flow_on_worker_processes(
    prefect_harness: None, tmp_path: Path, tiny_cfg: ExperimentConfig, executor: str
) -> None:
    from flows.train import train_flow

    data = build_data_dir(tmp_path / "d", tiny_cfg)
    sweep = train_flow(
        small(tiny_cfg, executor), str(data.root), f"sqlite:///{data.root}/mlflow.db"
    )
    assert [t.ok for t in sweep.tasks] == [True] * 4


def test_task_runner_follows_the_sweep_config() -> None:
    from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    from core.config.training import SweepConfig
    from flows.train import task_runner

    assert isinstance(
        task_runner(SweepConfig(executor="process", n_workers=2)), ProcessPoolTaskRunner
    )
    assert isinstance(task_runner(SweepConfig(executor="dask")), DaskTaskRunner)
    assert isinstance(task_runner(SweepConfig(executor="sequential")), ThreadPoolTaskRunner)


def test_cli_evaluate_defaults_to_the_latest_sweep(
    swept, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    import yaml

    from flows.cli import main
    from flows.cli_training import latest_sweep

    data, cfg, uri, sweep, ev = swept
    conf = tmp_path / "exp.yaml"
    conf.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    monkeypatch.setenv("CHAPPIE_DATA_DIR", str(data.root))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    latest = latest_sweep(data.layout.root / "reports")
    assert main(["evaluate", "--config", str(conf)]) == 0
    out = capsys.readouterr().out
    assert f"reports/{latest}/evaluation.json" in out
    for c in ev["candidates"]:
        assert c["candidate_id"] in out
    with pytest.raises(FileNotFoundError, match="chappie train"):
        latest_sweep(tmp_path / "nothing")


def test_a_task_that_succeeds_on_its_retry_reports_both_attempts(
    prefect_harness: None,
    tmp_path: Path,
    tiny_cfg: ExperimentConfig,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A transient failure (here: the first call of fold 0 raises) is retried by Prefect;
    the sweep reports the task ok with 2 attempts (Prefect's run count), not 1."""
    import flows.train as ft

    real = ft.train_one
    failed: list[int] = []

    def flaky(task):  # type: ignore[no-untyped-def]
        if task.fold == 0 and not failed:
            failed.append(task.fold)
            raise RuntimeError("transient: worker lost")
        return real(task)

    monkeypatch.setattr(ft, "train_one", flaky)
    data: DataDir = build_data_dir(tmp_path / "d", tiny_cfg)
    cfg = small(tiny_cfg, seeds=(0,))
    cfg = cfg.model_copy(update={"sweep": cfg.sweep.model_copy(update={"retries": 1})})
    sweep = ft.train_flow(cfg, str(data.root), f"sqlite:///{data.root}/mlflow.db")
    assert failed == [0] and sweep.failed == []
    assert [(t.fold, t.ok, t.attempts) for t in sweep.tasks] == [(0, True, 2), (1, True, 1)]
