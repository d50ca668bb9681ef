"""`chappie rollback` answers at once where no work is needed (#20): nothing to roll back,
or a --dry-run, on an existing SQLite registry is read without importing mlflow
(registry.sqlite_aliases), through the CLI as a user types it. The time itself is
measured in BENCHMARKS.md, not asserted here."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from core.config.registry import RegistryConfig
from registry.promotion import PromotionError, rollback, rollback_plan
from registry.sqlite_aliases import read_aliases

REPO = Path(__file__).resolve().parents[2]
CHAPPIE = Path(sys.executable).with_name("chappie")
MODEL = RegistryConfig().model_name


def _registry(folder: Path, aliases: dict[str, str]) -> str:
    """An MLflow SQLite registry with two versions of MODEL and `aliases`."""
    from registry import tracking

    uri = f"sqlite:///{folder / 'mlflow.db'}"
    tracking.configure(uri)
    client = tracking.client()
    client.create_registered_model(MODEL)
    for i in range(2):
        client.create_model_version(MODEL, source=f"file:///nowhere/{i}")
    for alias, version in aliases.items():
        client.set_registered_model_alias(MODEL, alias, version)
    return uri


@pytest.fixture(scope="module")
def registries(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    """'none': a challenger only (nothing to roll back); 'some': champion 2, previous 1."""
    out = {}
    for key, aliases in (
        ("none", {"challenger": "1"}),
        ("some", {"champion": "2", "previous-champion": "1"}),
    ):
        folder = tmp_path_factory.mktemp(f"registry-{key}")
        out[key] = (folder, _registry(folder, aliases))
    return out


def _chappie(data: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "CHAPPIE_"))
    }
    env.update(CHAPPIE_DATA_DIR=str(data), PREFECT_HOME=str(data / "prefect"))
    return subprocess.run(
        [str(CHAPPIE), *argv], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )


def test_rollback_with_nothing_to_roll_back_on_a_registry_is_one_line(
    registries: dict[str, tuple[Path, str]],
) -> None:
    folder, _ = registries["none"]
    out = _chappie(folder, "rollback")
    err = out.stderr.splitlines()
    assert out.returncode == 2, out.stderr
    assert 1 <= len(err) <= 2 and "Traceback" not in out.stderr
    assert "nothing to roll back" in err[0] and "'challenger': '1'" in err[0]
    assert not list((folder / "prefect").glob("*.db"))  # answered before any Prefect server


def test_rollback_dry_run_answers_from_the_database_as_mlflow_would(
    registries: dict[str, tuple[Path, str]],
) -> None:
    import json

    folder, uri = registries["some"]
    out = _chappie(folder, "rollback", "--dry-run")
    assert out.returncode == 0, out.stderr
    assert out.stderr.splitlines() == ["DRY RUN (nothing changed):"]
    assert json.loads(out.stdout) == rollback(RegistryConfig(), uri, dry_run=True).to_json()
    assert read_aliases(uri, MODEL) == {"champion": "2", "previous-champion": "1"}


def test_read_aliases_answers_only_when_it_can_be_sure(
    registries: dict[str, tuple[Path, str]], tmp_path: Path
) -> None:
    _, uri = registries["none"]
    assert read_aliases(uri, MODEL) == {"challenger": "1"}
    assert read_aliases(uri, "no-such-model") == {}
    assert read_aliases("http://127.0.0.1:5000", MODEL) is None  # a server: ask MLflow
    assert read_aliases(f"sqlite:///{tmp_path / 'missing.db'}", MODEL) is None
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE registered_model_aliases (x INTEGER)")
    assert read_aliases(f"sqlite:///{other}", MODEL) is None  # a schema it does not know
    ws = tmp_path / "ws.db"
    con = sqlite3.connect(ws)
    con.execute("CREATE TABLE registered_model_aliases (alias, version, name, workspace)")
    con.execute("INSERT INTO registered_model_aliases VALUES ('champion', 3, ?, 'team')", (MODEL,))
    con.commit()
    assert read_aliases(f"sqlite:///{ws}", MODEL) is None  # workspaces: MLflow decides


def test_rollback_plan_refuses_without_a_previous_champion() -> None:
    with pytest.raises(PromotionError, match="nothing to roll back"):
        rollback_plan(RegistryConfig(), {"champion": "2"})
    plan = rollback_plan(RegistryConfig(), {"champion": "2", "previous-champion": "1"}, "why")
    assert (plan.from_version, plan.to_version, plan.reasons) == ("2", "1", ("why",))
    assert plan.to_json() == {  # `chappie rollback --dry-run` prints this
        "model_name": RegistryConfig().model_name,
        "from_version": "2",
        "to_version": "1",
        "aliases": {"champion": "2", "previous-champion": "1"},
        "dry_run": True,
        "reasons": ["why"],
    }
