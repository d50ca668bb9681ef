"""registry.tracking against a real SQLite MLflow store on tmp_path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from registry import tracking
from tests.conftest import REPO


@pytest.fixture()
def store(sqlite_uri: str) -> str:
    tracking.configure(sqlite_uri)
    return sqlite_uri


def _manifest(i: int, kind: str = "test") -> dict:
    sha = f"{i:02d}" + "ab" * 31
    return {
        "slice_id": f"fold{i:02d}-{kind}",
        "kind": kind,
        "fold": i,
        "spec_hash": "c" * 64,
        "t_start_ns": 0,
        "t_end_ns": 10,
        "rows": 100 + i,
        "sha256": sha,
        "path": f"/data/slices/cccccccccccc/fold{i:02d}-{kind}.parquet",
        "validation": {
            "success": True,
            "suite": "chappie-book+chappie-features-v1",
            "failed": [],
            "statistics": {"evaluated_expectations": 60, "unsuccessful_expectations": 0},
        },
    }


def test_flatten_params_nested_dicts_use_dotted_keys_and_json_lists() -> None:
    flat = tracking.flatten_params({"ppo": {"net_arch": (64, 64), "lr": 0.1}, "seed": 3, "x": None})
    assert flat == {"ppo.net_arch": "[64, 64]", "ppo.lr": "0.1", "seed": "3", "x": "None"}


@given(st.dictionaries(st.text("abc", min_size=1, max_size=3), st.integers(), max_size=8))
def test_flatten_params_flat_dict_keeps_every_key(d: dict) -> None:
    assert tracking.flatten_params(d) == {k: str(v) for k, v in d.items()}


def test_sqlite_path_parses_absolute_and_rejects_other_schemes() -> None:
    assert tracking.sqlite_path("sqlite:////tmp/x/mlflow.db") == Path("/tmp/x/mlflow.db")
    assert tracking.sqlite_path("http://127.0.0.1:5000") is None
    assert tracking.sqlite_path("sqlite:///:memory:") is None


def test_configure_creates_db_and_artifacts_beside_it(tmp_path: Path) -> None:
    tracking.configure(f"sqlite:///{tmp_path / 'data' / 'mlflow.db'}")
    assert (tmp_path / "data" / "mlflow.db").exists()
    exp_id = tracking.ensure_experiment("chappie")
    assert tracking.ensure_experiment("chappie") == exp_id
    exp = tracking.client().get_experiment(exp_id)
    assert exp.artifact_location == (tmp_path / "data" / "mlartifacts").as_uri()
    # the UI opens it in the model-training view, not the GenAI traces screen
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"


def test_parent_and_child_runs_carry_params_metrics_datasets_and_artifacts(
    store: str, tmp_path: Path
) -> None:
    parent = tracking.start_parent_run(
        "chappie", "sweep-1", {"sweep": {"seeds": [0, 1]}}, {"config_fingerprint": "f" * 64}
    )
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"ok": True}))
    folder = tmp_path / "plots"
    folder.mkdir()
    (folder / "a.txt").write_text("a")
    history = [("train/reward", float(s), s) for s in range(2500)]  # > one batch
    child = tracking.log_child_run(
        parent,
        "chappie",
        "base-s0-fold00",
        {"ppo": {"net_arch": [64, 64]}, "seed": 0},
        {"candidate_id": "base-s0-t20000"},
        history,
        {"test/pnl": 1.5},
        [str(report), str(folder)],
        [_manifest(0, "train"), _manifest(0, "test")],
    )
    c = tracking.client()
    run = c.get_run(child)
    assert run.info.status == "FINISHED"
    assert run.data.tags[tracking.PARENT_TAG] == parent
    assert run.data.params["ppo.net_arch"] == "[64, 64]"
    assert run.data.metrics["test/pnl"] == 1.5
    assert len(c.get_metric_history(child, "train/reward")) == 2500
    names = {a.path for a in c.list_artifacts(child)}
    assert names == {"report.json", "plots"}
    inputs = run.inputs.dataset_inputs
    assert len(inputs) == 2
    for di in inputs:
        tags = {t.key: t.value for t in di.tags}
        assert len(tags["sha256"]) == 64
        assert di.dataset.digest == tags["sha256"][:32]
        assert tags["sha256"] in di.dataset.source
        assert json.loads(di.dataset.profile)["sha256"] == tags["sha256"]
        assert tags["validation.success"] == "true"
        assert tags["validation.suite"] == "chappie-book+chappie-features-v1"
        assert tags["validation.evaluated"] == "60"
        assert tags["validation.unsuccessful"] == "0"
    assert {dict((t.key, t.value) for t in di.tags)["mlflow.data.context"] for di in inputs} == {
        "train",
        "test",
    }
    # the parent is still open until end_run
    assert c.get_run(parent).info.status == "RUNNING"
    tracking.log_metrics(parent, {"best_pnl": 2.0}, step=3)
    tracking.set_tags(parent, {"decision": "promote"})
    tracking.end_run(parent)
    pr = c.get_run(parent)
    assert pr.info.status == "FINISHED"
    assert pr.data.params["sweep.seeds"] == "[0, 1]"
    assert pr.data.tags["decision"] == "promote"
    assert pr.data.metrics["best_pnl"] == 2.0


def test_log_child_run_missing_artifact_marks_child_failed(store: str) -> None:
    parent = tracking.start_parent_run("chappie", "sweep", {}, {})
    with pytest.raises(FileNotFoundError, match="nope"):
        tracking.log_child_run(parent, "chappie", "c", {}, {}, [], {}, ["/nope/x"], [])
    c = tracking.client()
    exp = c.get_experiment_by_name("chappie")
    runs = c.search_runs([exp.experiment_id], filter_string="attributes.run_name = 'c'")
    assert [r.info.status for r in runs] == ["FAILED"]


def test_log_slice_datasets_manifest_without_sha_raises_naming_field(store: str) -> None:
    parent = tracking.start_parent_run("chappie", "sweep", {}, {})
    with pytest.raises(KeyError, match="sha256"):
        tracking.log_slice_datasets(parent, [{"slice_id": "x"}], "test")


def test_validation_tags_summarise_a_failed_validation_and_fit_a_tag() -> None:
    failed = [f"ExpectColumnValuesToBeBetween(z__f{i}): 10 unexpected" for i in range(40)]
    tags = tracking.validation_tags(
        {"success": False, "suite": "s", "failed": failed, "statistics": {}}
    )
    assert tags["validation.success"] == "false"
    assert tags["validation.failed"].startswith('["ExpectColumnValuesToBeBetween(z__f0)')
    assert len(tags["validation.failed"]) <= 500
    assert tracking.validation_tags(None) == {}


def test_end_run_unknown_status_raises(store: str) -> None:
    with pytest.raises(ValueError, match="FINISHED"):
        tracking.end_run("abc", "DONE")


_WORKER = """
import sys
from registry import tracking as t
uri, i = sys.argv[1], sys.argv[2]
t.configure(uri)
parent = t.start_parent_run("chappie", f"p{i}", {"i": i}, {})
child = t.log_child_run(parent, "chappie", f"c{i}", {}, {}, [("m", 1.0, k) for k in range(200)], {}, [], [])
t.end_run(parent)
print(child)
"""


def test_parallel_processes_configure_and_write_same_new_db(tmp_path: Path) -> None:
    """Two fresh interpreters (as a process pool's workers) configure the same, not yet
    existing SQLite store at once and write runs: one schema, one experiment, no error."""
    uri = f"sqlite:///{tmp_path / 'fresh' / 'mlflow.db'}"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, uri, str(i)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-2000:] for _, e in outs]
    children = {o.strip().splitlines()[-1] for o, _ in outs}
    tracking.configure(uri)
    c = tracking.client()
    exps = [e for e in c.search_experiments() if e.name == "chappie"]
    assert len(exps) == 1
    for child in children:
        assert c.get_run(child).info.status == "FINISHED"
