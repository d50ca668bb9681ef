"""`chappie serve` against a REAL Prefect server (subprocess, temporary SQLite, free port):
the nightly deployment is registered with its 02:00 UTC cron schedule, the server's
scheduler creates the upcoming runs, and a triggered run completes through the runner."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from flows.serve import (
    DEFAULT_CRON,
    PrefectServerUnavailable,
    nightly_deployment,
    nightly_parameters,
    require_server,
    validate_cron,
)
from tests.conftest import REPO
from tests.infra.servers import api_call, base_env, prefect_server, stop, wait_flow_run

TINY = REPO / "conf" / "tiny.yaml"
STUB = "tests.infra.stub_flows:nightly_stub"


def test_validate_cron_accepts_five_fields_and_rejects_others() -> None:
    assert validate_cron("0 2 * * *") == "0 2 * * *"
    assert validate_cron("*/15 1-3 * * 1-5") == "*/15 1-3 * * 1-5"
    for bad in ("0 2 * *", "61 2 * * *", "every night", "0 2 * * * *"):
        with pytest.raises(ValueError, match="invalid cron"):
            validate_cron(bad)


def test_nightly_parameters_are_absolute_and_config_must_exist(tmp_path: Path) -> None:
    params = nightly_parameters(TINY, data_dir=str(tmp_path / "data"))
    assert params == {
        "config_path": str(TINY.resolve()),
        "data_dir": str((tmp_path / "data").resolve()),
    }
    with pytest.raises(FileNotFoundError, match="config file not found"):
        nightly_parameters(tmp_path / "missing.yaml")


def test_nightly_deployment_definition_uses_the_real_nightly_flow(tmp_path: Path) -> None:
    dep = nightly_deployment(TINY, data_dir=str(tmp_path))
    assert dep.flow_name == "nightly"
    assert dep.name == "chappie-nightly"
    (sched,) = dep.schedules
    assert sched.schedule.cron == DEFAULT_CRON
    assert sched.schedule.timezone == "UTC"
    assert dep.parameters["config_path"] == str(TINY.resolve())
    assert dep.concurrency_limit == 1
    assert dep.entrypoint == "flows.nightly.nightly_flow"  # module path, never flows/nightly.py


def test_require_server_fails_clearly_without_a_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with pytest.raises(PrefectServerUnavailable, match="PREFECT_API_URL is not set"):
        require_server()
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    with pytest.raises(PrefectServerUnavailable, match="no Prefect server answers"):
        require_server(timeout_s=1)


def test_cli_serve_without_server_exits_2(tmp_path: Path) -> None:
    env = base_env(tmp_path)
    env["PREFECT_API_URL"] = "http://127.0.0.1:9/api"
    r = subprocess.run(
        [sys.executable, "-m", "flows.cli", "serve", "--config", str(TINY)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2, r.stderr
    assert "no Prefect server answers" in r.stderr


def _wait(fn, timeout_s: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.5)
    raise TimeoutError(f"timed out waiting for {what}")


def test_serve_registers_schedule_and_runs_a_triggered_flow(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with prefect_server(tmp_path) as api:
        env = base_env(tmp_path / "serve-home")
        env["PREFECT_API_URL"] = api
        log = tmp_path / "serve.log"
        code = (
            "from flows.serve import serve_nightly; "
            f"serve_nightly({str(TINY)!r}, data_dir={str(data)!r}, entrypoint={STUB!r})"
        )
        with log.open("wb") as out:
            server = subprocess.Popen(
                [sys.executable, "-c", code],
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            with httpx.Client(base_url=api, timeout=10) as http:

                def deployment() -> dict | None:
                    if server.poll() is not None:
                        raise RuntimeError(log.read_text())
                    r = http.get("/deployments/name/nightly-stub/chappie-nightly")
                    return r.json() if r.status_code == 200 else None

                dep = _wait(deployment, 60, "the deployment")
                (sched,) = dep["schedules"]
                assert sched["schedule"]["cron"] == DEFAULT_CRON
                assert sched["schedule"]["timezone"] == "UTC"
                assert sched["active"] is True
                assert dep["parameters"]["config_path"] == str(TINY.resolve())

                # The server's scheduler (not the runner) creates the upcoming 02:00 UTC runs.
                def scheduled() -> list[dict]:
                    r = http.post(
                        "/flow_runs/filter",
                        json={
                            "flow_runs": {
                                "deployment_id": {"any_": [dep["id"]]},
                                "state": {"type": {"any_": ["SCHEDULED"]}},
                            }
                        },
                    )
                    r.raise_for_status()
                    return r.json()

                upcoming = _wait(scheduled, 60, "scheduled runs")
                for run in upcoming:
                    t = datetime.fromisoformat(run["expected_start_time"].replace("Z", "+00:00"))
                    assert (t.utcoffset().total_seconds(), t.hour, t.minute) == (0, 2, 0)

                run = api_call(http, "POST", f"/deployments/{dep['id']}/create_flow_run", {})
                state = wait_flow_run(http, run["id"], 120)
                assert state == "COMPLETED", log.read_text()[-3000:]
        finally:
            stop(server)
    outcome = json.loads((data / "reports" / "last_nightly.json").read_text())
    assert outcome["status"] == "completed"
    assert outcome["config"] == str(TINY.resolve())
