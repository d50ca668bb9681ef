"""The REAL nightly flow, served by `chappie serve` against a real Prefect server, run on
conf/tiny.yaml in a temporary data folder: the run completes, posts its markdown summary
artifact, and `chappie status` then shows the data, slices, models and the outcome."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO
from tests.infra.servers import api_call, base_env, prefect_server, stop, wait_flow_run

TINY = REPO / "conf" / "tiny.yaml"


@pytest.mark.slow  # trains PPO on the tiny config: minutes on 2 cores
def test_served_nightly_runs_end_to_end(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with prefect_server(tmp_path) as api:
        env = base_env(tmp_path / "serve-home")
        env.update(PREFECT_API_URL=api, CHAPPIE_DATA_DIR=str(data))
        env.pop("MLFLOW_TRACKING_URI", None)
        log = tmp_path / "serve.log"
        with log.open("wb") as out:
            server = subprocess.Popen(
                [sys.executable, "-m", "flows.cli", "serve", "--config", str(TINY)],
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            with httpx.Client(base_url=api, timeout=20) as http:
                deadline = time.monotonic() + 120
                dep = None
                while dep is None and time.monotonic() < deadline:
                    assert server.poll() is None, log.read_text()
                    r = http.get("/deployments/name/nightly/chappie-nightly")
                    dep = r.json() if r.status_code == 200 else None
                    time.sleep(1)
                assert dep is not None, log.read_text()
                assert dep["parameters"] == {"config_path": str(TINY), "data_dir": str(data)}
                run = api_call(http, "POST", f"/deployments/{dep['id']}/create_flow_run", {})
                state = wait_flow_run(http, run["id"], 1500, poll_s=5)
                assert state == "COMPLETED", log.read_text()[-5000:]
                arts = api_call(
                    http,
                    "POST",
                    "/artifacts/filter",
                    {"artifacts": {"key": {"any_": ["nightly-summary"]}}},
                )
                assert any("Chappie nightly: completed" in (a.get("data") or "") for a in arts)
        finally:
            stop(server)

    r = subprocess.run(
        [sys.executable, "-m", "flows.cli", "status", "--json", "--config", str(TINY)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    status = json.loads(r.stdout)
    assert status["last_nightly"]["status"] == "completed"
    assert status["data"]["XBTUSD"]["n_days"] == 2
    from core.config.experiment import load_config

    assert status["slices"]["n_folds"] == load_config(TINY).features.walk_forward.n_folds
    models = status["models"]
    assert models["available"], models
    assert models["champion"] or models["challenger"]
    for role in ("champion", "challenger"):
        if models[role]:
            assert models[role]["gates"], models[role]
