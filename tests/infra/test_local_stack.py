"""infra/local-stack.sh: start/status/env/stop of a real Prefect server and a real MLflow
server on 127.0.0.1, their state under one folder."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, free_port

SCRIPT = REPO / "infra" / "local-stack.sh"


def stack(
    *args: str, env: dict[str, str] | None = None, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    full = dict(os.environ) | (env or {})
    for var in ("PREFECT_API_URL", "PREFECT_HOME", "PREFECT_API_DATABASE_CONNECTION_URL"):
        full.pop(var, None)
    return subprocess.run(
        ["bash", str(SCRIPT), *args], env=full, capture_output=True, text=True, timeout=timeout
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_usage_and_status_of_a_stopped_stack(tmp_path: Path) -> None:
    folder = tmp_path / "stack"
    r = stack("bogus", str(folder))
    assert r.returncode == 1 and "usage" in r.stderr
    r = stack("status", str(folder))
    assert r.returncode == 1
    assert "prefect: stopped" in r.stdout and "mlflow: stopped" in r.stdout
    assert stack("stop", str(folder)).returncode == 0
    assert not folder.exists()  # only `start` creates the folder


def test_start_refuses_a_taken_port(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = stack(
            "start", str(tmp_path), env={"PREFECT_PORT": str(port), "MLFLOW_PORT": str(free_port())}
        )
    assert r.returncode == 1
    assert f"port {port}" in r.stderr and "in use" in r.stderr
    assert not (tmp_path / "run" / "prefect.pid").exists()


@pytest.mark.slow  # two servers start and stop: ~30-60 s on 2 cores
def test_start_status_stop(tmp_path: Path) -> None:
    ports = {"PREFECT_PORT": str(free_port()), "MLFLOW_PORT": str(free_port())}
    r = stack("start", str(tmp_path), env=ports)
    try:
        assert r.returncode == 0, r.stdout + r.stderr
        prefect_api = f"http://127.0.0.1:{ports['PREFECT_PORT']}/api"
        mlflow_url = f"http://127.0.0.1:{ports['MLFLOW_PORT']}"
        assert f"export PREFECT_API_URL={prefect_api}" in r.stdout
        assert f"export MLFLOW_TRACKING_URI={mlflow_url}" in r.stdout
        assert httpx.get(f"{prefect_api}/health", timeout=5).status_code == 200
        assert httpx.get(f"{mlflow_url}/health", timeout=5).status_code == 200
        for f in ("prefect/prefect.db", "mlflow/mlflow.db", "logs/prefect.log", "logs/mlflow.log"):
            assert (tmp_path / f).exists(), f
        pids = [int((tmp_path / "run" / f"{n}.pid").read_text()) for n in ("prefect", "mlflow")]

        # Later commands remember the ports; start again is a no-op.
        r = stack("status", str(tmp_path))
        assert (
            r.returncode == 0 and "prefect: running" in r.stdout and "mlflow: running" in r.stdout
        )
        assert stack("env", str(tmp_path)).stdout.splitlines() == [
            f"export PREFECT_API_URL={prefect_api}",
            f"export MLFLOW_TRACKING_URI={mlflow_url}",
        ]
        again = stack("start", str(tmp_path))
        assert again.returncode == 0 and "already running" in again.stdout
    finally:
        r = stack("stop", str(tmp_path))
    assert r.returncode == 0
    assert not any(_alive(p) for p in pids)
    assert stack("status", str(tmp_path)).returncode == 1
    # process groups are gone too (no orphaned uvicorn workers)
    for p in pids:
        assert (
            subprocess.run(
                ["ps", "-o", "pid=", "-g", str(p)], capture_output=True, text=True
            ).stdout.strip()
            == ""
        )
