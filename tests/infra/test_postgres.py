"""Scale-out settings exercised for real: a Prefect server and an MLflow server on the
PostgreSQL at 127.0.0.1:5432 (a fresh `chappie_test_<random>` database each, dropped
afterwards), MLflow artifacts on an S3-compatible store (moto server on 127.0.0.1).
These are the settings of infra/compose.yaml. Skipped cleanly when PostgreSQL does not
answer."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, postgres_available
from tests.infra.servers import (
    base_env,
    mlflow_server,
    moto_s3,
    postgres_database,
    prefect_server,
)
from tests.infra.sweep_fixture import log_sweep
from tests.infra.test_mlflow_server import check_server_view

PG_USER = os.environ.get("CHAPPIE_TEST_PG_USER", "postgres")

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not postgres_available(), reason="no PostgreSQL answers on 127.0.0.1:5432"),
]


def _rows(db: str, sql: str) -> list[tuple]:
    import psycopg2

    with psycopg2.connect(host="127.0.0.1", user=PG_USER, dbname=db) as conn, conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchall()


@pytest.mark.slow  # ~16 s quiet; keeps the default infra suite under its time budget
def test_prefect_server_on_postgres_records_a_flow_run(tmp_path: Path) -> None:
    with postgres_database(PG_USER) as db:
        url = f"postgresql+asyncpg://{PG_USER}@127.0.0.1:5432/{db}"
        with prefect_server(tmp_path, db_url=url) as api:
            env = base_env(tmp_path / "client-home")
            env["PREFECT_API_URL"] = api
            data = tmp_path / "data"
            code = (
                "from tests.infra.stub_flows import nightly_stub; "
                f"nightly_stub({str(REPO / 'conf' / 'tiny.yaml')!r}, {str(data)!r})"
            )
            r = subprocess.run(
                [sys.executable, "-c", code],
                cwd=REPO,
                env=env,
                capture_output=True,
                text=True,
                timeout=180,
            )
            assert r.returncode == 0, r.stderr[-3000:]
            runs = httpx.post(f"{api}/flow_runs/filter", json={}, timeout=10).json()
            assert [fr["state"]["type"] for fr in runs] == ["COMPLETED"]
            # The run is in PostgreSQL, not in some SQLite file.
            assert _rows(db, "SELECT name, state_type FROM flow_run") == [
                (runs[0]["name"], "COMPLETED")
            ]
        assert not list(tmp_path.rglob("prefect.db"))


@pytest.mark.slow  # MLflow's migrations on PostgreSQL take ~40 s
def test_mlflow_server_on_postgres_with_s3_artifacts(tmp_path: Path) -> None:
    import boto3

    with postgres_database(PG_USER) as db, moto_s3(tmp_path, "mlflow") as s3_env:
        backend = f"postgresql://{PG_USER}@127.0.0.1:5432/{db}"
        with mlflow_server(
            tmp_path, backend_uri=backend, artifacts="s3://mlflow/artifacts", extra_env=s3_env
        ) as url:
            logged = log_sweep(url, tmp_path)
            check_server_view(url, logged)
        (n_runs,) = _rows(db, "SELECT count(*) FROM runs")[0]
        assert n_runs == 1 + len(logged["children"])
        assert {a for (a,) in _rows(db, "SELECT alias FROM registered_model_aliases")} == {
            "champion",
            "challenger",
        }
        s3 = boto3.client(
            "s3",
            endpoint_url=s3_env["MLFLOW_S3_ENDPOINT_URL"],
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="mlflow")["Contents"]]
        assert sum(k.endswith("model/policy.json") for k in keys) == len(logged["children"])
    assert not (tmp_path / "mlartifacts").exists()
