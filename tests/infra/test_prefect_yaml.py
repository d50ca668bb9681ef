"""infra/prefect.yaml: the nightly deployment on a process work pool. The definition is
checked against the real nightly flow and `chappie serve`'s constants; a slow test deploys
it with `prefect deploy` to a REAL server and runs a same-shaped deployment (entrypoint
swapped for a stub flow) through a real process worker."""

from __future__ import annotations

import inspect
import json
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml

from flows.serve import DEFAULT_CRON, DEFAULT_TIMEZONE, DEPLOYMENT_NAME, load_flow
from tests.conftest import REPO
from tests.infra.servers import _bin, api_call, base_env, prefect_server, stop, wait_flow_run

PREFECT_YAML = REPO / "infra" / "prefect.yaml"


def _nightly() -> dict:
    doc = yaml.safe_load(PREFECT_YAML.read_text())
    (dep,) = doc["deployments"]
    return dep


def test_prefect_yaml_defines_the_serve_deployment_on_a_process_pool() -> None:
    dep = _nightly()
    assert dep["name"] == DEPLOYMENT_NAME
    (sched,) = dep["schedules"]
    assert (sched["cron"], sched["timezone"], sched["active"]) == (
        DEFAULT_CRON,
        DEFAULT_TIMEZONE,
        True,
    )
    assert dep["concurrency_limit"] == 1
    assert dep["work_pool"]["name"] == "chappie-process"
    assert dep["work_pool"]["job_variables"]["env"]["OMP_NUM_THREADS"] == "1"
    # The entrypoint is the real nightly flow and the parameters are its own.
    assert ".py" not in dep["entrypoint"]  # module path: see the comment in prefect.yaml
    flow = load_flow(dep["entrypoint"])
    assert flow.name == "nightly"
    assert set(dep["parameters"]) == set(inspect.signature(flow.fn).parameters)
    assert (REPO / dep["parameters"]["config_path"]).is_file()


def _prefect(args: list[str], env: dict[str, str], cwd: Path) -> str:
    r = subprocess.run(
        [_bin("prefect"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=180
    )
    assert r.returncode == 0, f"prefect {' '.join(args)}:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    return r.stdout


@pytest.mark.slow  # server + deploy + worker + flow-run subprocess: ~60 s on 2 cores
def test_prefect_deploy_and_process_worker_run(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with prefect_server(tmp_path) as api:
        env = base_env(tmp_path / "client-home")
        env.update(PREFECT_API_URL=api, PREFECT_CLI_PROMPT="false")
        _prefect(["work-pool", "create", "chappie-process", "--type", "process"], env, REPO)
        _prefect(["deploy", "--prefect-file", str(PREFECT_YAML), "--all"], env, REPO)

        # A same-shaped deployment whose flow finishes in seconds.
        doc = yaml.safe_load(PREFECT_YAML.read_text())
        stub = doc["deployments"][0]
        stub.update(
            name="chappie-nightly-stub",
            entrypoint="tests.infra.stub_flows:nightly_stub",
            parameters={"config_path": str(REPO / "conf" / "tiny.yaml"), "data_dir": str(data)},
        )
        stub_yaml = tmp_path / "prefect-stub.yaml"
        stub_yaml.write_text(yaml.safe_dump(doc))
        _prefect(["deploy", "--prefect-file", str(stub_yaml), "--all"], env, REPO)

        with httpx.Client(base_url=api, timeout=10) as http:
            real = http.get(f"/deployments/name/nightly/{DEPLOYMENT_NAME}").json()
            assert real["work_pool_name"] == "chappie-process"
            assert real["entrypoint"] == "flows.nightly:nightly_flow"
            assert real["schedules"][0]["schedule"]["cron"] == DEFAULT_CRON
            assert real["schedules"][0]["schedule"]["timezone"] == "UTC"
            assert real["pull_steps"] == [
                {"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}
            ]
            dep = http.get("/deployments/name/nightly-stub/chappie-nightly-stub").json()
            run = api_call(http, "POST", f"/deployments/{dep['id']}/create_flow_run", {})

            log = tmp_path / "worker.log"
            with log.open("wb") as out:
                worker = subprocess.Popen(
                    [_bin("prefect"), "worker", "start", "--pool", "chappie-process"],
                    cwd=tmp_path,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            try:
                state = wait_flow_run(http, run["id"], 150)
                assert state == "COMPLETED", log.read_text()[-3000:]
            finally:
                stop(worker)
    outcome = json.loads((data / "reports" / "last_nightly.json").read_text())
    assert outcome["status"] == "completed"
