"""`chappie promote` / `chappie rollback` (plain-function path, in-process) on SQLite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from registry import store
from tests.registry.conftest import candidate_record, evaluation_doc

MODEL = "chappie-cli"


@pytest.fixture()
def env(tmp_path: Path, sqlite_uri: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CHAPPIE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_uri)
    conf = tmp_path / "exp.yaml"
    conf.write_text(
        "features:\n  spec: {window: 2}\n"
        "sweep:\n  trials:\n    - {name: base, env: {window: 2}}\n"
        f"registry: {{model_name: {MODEL}}}\n"
    )
    return conf


def _report(data: Path, sweep: str, cand: dict) -> Path:
    path = data / "reports" / sweep / "evaluation.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(evaluation_doc([cand], cand["candidate_id"], None, sweep)))
    return path


def test_cli_promote_dry_run_then_apply_then_rollback(
    env: Path, tmp_path: Path, sb3_zip: Path, stats_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from flows.cli import main

    _report(tmp_path, "s1", candidate_record("base-s0-t1024", "promote", sb3_zip, stats_dir, 1.0))
    assert main(["promote", "--config", str(env), "--dry-run", "--no-flow"]) == 0
    out = capsys.readouterr()
    assert "DRY RUN" in out.err and json.loads(out.out)["action"] == "promote"
    assert store.aliases(MODEL) == {}

    assert main(["promote", "--config", str(env), "--no-flow"]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == "1"
    second = _report(
        tmp_path, "s2", candidate_record("base-s1-t1024", "promote", sb3_zip, stats_dir, 2.0)
    )
    assert main(["promote", "--config", str(env), "--evaluation", str(second), "--no-flow"]) == 0
    capsys.readouterr()
    assert store.aliases(MODEL) == {"champion": "2", "previous-champion": "1"}

    assert main(["rollback", "--config", str(env), "--no-flow", "--reason", "cli"]) == 0
    assert json.loads(capsys.readouterr().out)["to_version"] == "1"
    assert store.aliases(MODEL) == {"champion": "1"}


def test_cli_errors_are_one_line_and_exit_2(
    env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from flows.cli import main

    assert main(["promote", "--config", str(env), "--no-flow"]) == 2
    assert "no reports/*/evaluation.json" in capsys.readouterr().err
    assert main(["rollback", "--config", str(env), "--no-flow"]) == 2
    assert "nothing to roll back" in capsys.readouterr().err
