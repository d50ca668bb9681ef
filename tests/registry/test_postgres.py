"""registry.tracking on MLflow's PostgreSQL backend (the scale-out store): the same round
trip as on SQLite, and slice datasets within PostgreSQL's enforced column sizes (MLflow's
dataset digest column is VARCHAR(36): the full sha256 goes to tags/source/profile)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from registry import tracking
from tests.conftest import postgres_available

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not postgres_available(), reason="no PostgreSQL on 127.0.0.1:5432"),
]


@pytest.fixture()
def pg_uri() -> Iterator[str]:
    import psycopg2

    name = f"chappie_registry_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(host="127.0.0.1", port=5432, dbname="postgres", user="root")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://root@127.0.0.1:5432/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
            )
            cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.close()


def test_tracking_round_trip_on_postgres_with_full_sha_datasets(pg_uri: str, tmp_path) -> None:
    tracking.configure(pg_uri, artifact_location=(tmp_path / "artifacts").as_uri())
    parent = tracking.start_parent_run("chappie", "sweep", {"a": {"b": 1}}, {"k": "v"})
    sha = "0123456789abcdef" * 4
    manifest = {
        "slice_id": "fold00-test",
        "kind": "test",
        "fold": 0,
        "sha256": sha,
        "path": "/x.parquet",
    }
    child = tracking.log_child_run(
        parent,
        "chappie",
        "c",
        {},
        {},
        [("m", float(i), i) for i in range(1500)],
        {"f": 1.0},
        [],
        [manifest],
    )
    tracking.end_run(parent)
    run = tracking.client().get_run(child)
    [di] = run.inputs.dataset_inputs
    assert {t.key: t.value for t in di.tags}["sha256"] == sha
    assert di.dataset.digest == sha[:32]
    assert len(tracking.client().get_metric_history(child, "m")) == 1500
    assert tracking.client().get_run(parent).data.params["a.b"] == "1"
