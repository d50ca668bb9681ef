"""End to end: the nightly flow on conf/tiny.yaml through a real Prefect run, then the
observe-only live loop on a local replay with whatever the registry decided."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.baselines import BASELINE_NAMES

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def nightly_outcome(tmp_path_factory, prefect_harness):
    from flows.nightly import nightly_flow

    data_dir = tmp_path_factory.mktemp("e2e-data")
    outcome = nightly_flow(str(REPO / "conf" / "tiny.yaml"), str(data_dir))
    return outcome, data_dir


def test_nightly_flow_completes_every_step(nightly_outcome):
    outcome, data_dir = nightly_outcome
    assert outcome["status"] == "completed"
    assert list(outcome["steps"]) == ["ingest", "features", "train", "evaluate", "promote"]
    saved = json.loads((data_dir / "reports" / "last_nightly.json").read_text())
    assert saved["status"] == "completed"
    report = outcome["ingest"]
    assert report["rows_in"] == report["rows_out"] + report["rows_rejected"]


def test_nightly_publishes_validated_slices_with_hashes(nightly_outcome):
    from features.store import verify_slice

    outcome, data_dir = nightly_outcome
    folds = outcome["folds"]
    assert len(folds["folds"]) == 3 and folds["stress"]
    spec_dirs = list((data_dir / "slices").iterdir())
    assert len(spec_dirs) == 1
    manifests = sorted(spec_dirs[0].glob("*.manifest.json"))
    assert len(manifests) >= 7  # 3 x (train, test) + stress
    for m in manifests:
        meta = json.loads(m.read_text())
        assert meta["validation"]["success"] is True
        assert verify_slice(m) == [] and meta["path"] == str(m.resolve())
    for fold in folds["folds"]:
        stats = data_dir / "stats" / fold["stats_id"]
        assert (stats / "mean.npy").exists() and (stats / "sigma.npy").exists()


def test_nightly_logs_sweep_and_child_runs_to_mlflow(nightly_outcome):
    import mlflow
    from mlflow.tracking import MlflowClient

    outcome, data_dir = nightly_outcome
    client = MlflowClient(tracking_uri=outcome["tracking_uri"])
    parent = client.get_run(outcome["sweep_run_id"])
    exp_id = parent.info.experiment_id
    children = client.search_runs(
        [exp_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    # 2 seeds x 3 folds x 1 trial x 1 timesteps, and one run per baseline
    trained = [c for c in children if c.data.tags.get("baseline") != "true"]
    assert len(trained) == 6 and len(children) == 6 + len(BASELINE_NAMES)
    assert all(c.info.status == "FINISHED" for c in children)
    assert mlflow.get_tracking_uri() is not None


def test_nightly_registry_outcome_follows_the_gates(nightly_outcome):
    from mlflow.tracking import MlflowClient

    outcome, _ = nightly_outcome
    evaluation = outcome["evaluation"]
    promotion = outcome["promotion"]
    client = MlflowClient(tracking_uri=outcome["tracking_uri"])
    name = promotion["model_name"]
    versions = client.search_model_versions(f"name = '{name}'")
    assert versions, "a model version is registered whatever the decision"
    if evaluation["best"] is not None:
        champion = client.get_model_version_by_alias(name, "champion")
        assert champion.tags["decision"] == "promote"
        assert champion.tags["spec_hash"] == outcome["evaluation"]["spec_hash"]
    else:
        from mlflow.exceptions import MlflowException

        with pytest.raises(MlflowException):
            client.get_model_version_by_alias(name, "champion")
        challenger = client.get_model_version_by_alias(name, "challenger")
        assert challenger.tags["decision"] in {"reject", "retest"}
        assert challenger.tags["spec_hash"] == outcome["evaluation"]["spec_hash"]
        # the version links to the run that trained it (not an empty register run)
        cand = next(
            c for c in evaluation["candidates"] if c["candidate_id"] == evaluation["challenger"]
        )
        assert challenger.run_id == cand["run_id"]


def test_an_untrained_policy_beside_the_baselines_moves_no_alias(nightly_outcome):
    """#15: an (almost) untrained sweep is judged beside the baseline panel and promotes
    nothing; evaluation.json holds the panel with the documented fields."""
    outcome, data_dir = nightly_outcome
    ev_path = data_dir / "reports" / outcome["sweep_run_id"] / "evaluation.json"
    ev = json.loads(ev_path.read_text())
    assert set(ev["baselines"]) == set(BASELINE_NAMES)
    for b in ev["baselines"].values():
        assert {"pnl_plus_fees", "pnl_without_fees", "fees", "trades", "max_drawdown"} <= set(b)
        assert b["slices"] and b["fee_sensitivity"]
    assert ev["best"] is None  # 1 trial config: PBO is "not enough trials", never a pass
    # drift of every judged slice against its frozen stats: measured and carried along
    assert set(ev["drift"]) == {c["slice_id"] for c in ev["candidates"][0]["slices"]} | set(
        ev["stress_slices"]
    )
    assert "champion" not in outcome["promotion"]["aliases"]
    text = __import__("flows.nightly", fromlist=["summary_markdown"]).summary_markdown(outcome)
    assert "baseline: always_quote" in text and "Fee sensitivity" in text


@pytest.mark.slow  # a second nightly (about 40 s); registry-level twin: tests/registry/test_promotion.py
def test_a_rerun_on_unchanged_data_registers_nothing_and_moves_no_alias(nightly_outcome):
    from mlflow.tracking import MlflowClient

    from flows.nightly import nightly_flow, summary_markdown

    outcome, data_dir = nightly_outcome
    client = MlflowClient(tracking_uri=outcome["tracking_uri"])
    name = outcome["promotion"]["model_name"]
    before = sorted(v.version for v in client.search_model_versions(f"name = '{name}'"))
    again = nightly_flow(str(REPO / "conf" / "tiny.yaml"), str(data_dir))
    after = sorted(v.version for v in client.search_model_versions(f"name = '{name}'"))
    assert after == before
    assert again["promotion"]["aliases"] == outcome["promotion"]["aliases"]
    assert again["promotion"].get("unchanged") is True
    assert "nothing registered, no alias moved" in summary_markdown(again)
    # the ledger counts the same models once however often they are evaluated
    over = again["evaluation"]["overfitting"]
    assert over["n_trials_ledger"] == outcome["evaluation"]["overfitting"]["n_trials_ledger"]


def test_live_loop_observes_with_the_registry_outcome_and_sends_no_order(
    nightly_outcome, tmp_path, monkeypatch, capsys
):
    from flows.cli import main

    outcome, data_dir = nightly_outcome
    monkeypatch.setenv("CHAPPIE_DATA_DIR", str(data_dir))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", outcome["tracking_uri"])
    decisions = tmp_path / "decisions.jsonl"
    argv = ["live", "--feed", "replay", "--replay", "synthetic", "--speed", "50"]
    argv += ["--duration", "20", "--decisions-out", str(decisions)]
    argv += ["--config", str(REPO / "conf" / "tiny.yaml")]
    assert main(argv) == 0
    lines = [json.loads(x) for x in decisions.read_text().splitlines()]
    assert lines, "the loop made decisions once warm"
    assert all(d["mode"] == "observe" for d in lines)
    summary = capsys.readouterr().out
    assert '"orders_sent": 0' in summary
    if outcome["evaluation"]["best"] is not None:
        version = outcome["promotion"]["version"]
        assert all(
            d["model_version"] == f"{outcome['promotion']['model_name']}@v{version}" for d in lines
        )
        assert {d["action_name"] for d in lines} <= {"hold", "toggle_long", "toggle_short"}
    else:  # no champion: the loop says so and decides nothing
        assert all(d["action"] is None for d in lines)


def test_nightly_failure_names_the_step_and_keeps_earlier_outputs(tmp_path, prefect_harness):
    import yaml

    from flows.nightly import NightlyStepFailed, nightly_flow

    cfg = yaml.safe_load((REPO / "conf" / "tiny.yaml").read_text())
    # more folds than the data's span can hold: the features step refuses (WalkForwardError)
    cfg["features"]["walk_forward"]["n_folds"] = 100
    path = tmp_path / "too-many-folds.yaml"
    path.write_text(yaml.safe_dump(cfg))
    data_dir = tmp_path / "data"
    with pytest.raises(NightlyStepFailed) as err:
        nightly_flow(str(path), str(data_dir))
    assert err.value.step == "features"
    assert "WalkForwardError" in str(err.value)
    saved = json.loads((data_dir / "reports" / "last_nightly.json").read_text())
    assert saved["status"] == "failed" and saved["failed_step"] == "features"
    assert saved["steps"]["ingest"]["status"] == "ok"
    days = sorted(p.name for p in (data_dir / "events" / "XBTUSD").iterdir())
    assert len(days) == 2
    for day in days:  # the ingest step's outputs are published and intact
        assert (data_dir / "events" / "XBTUSD" / day / "manifest.json").exists()
    assert not (data_dir / "slices").exists() or not list(
        (data_dir / "slices").rglob("*.manifest.json")
    )
