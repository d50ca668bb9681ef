"""What scheduling through a real Prefect server costs, side by side with the ephemeral
mode `chappie nightly` uses (the baseline): the same small flow (tests/infra/stub_flows.py,
which parses conf/tiny.yaml and writes reports/last_nightly.json) run

1. ephemeral: a fresh process calls the flow with no PREFECT_API_URL (Prefect starts its
   temporary server in-process);
2. client of a server: a fresh process calls the flow with PREFECT_API_URL set;
3. served: `serve_nightly` runs in a fresh process; a REST call creates a run of the
   deployment; time from the call to COMPLETED (runner poll + flow-run subprocess).

plus the start-up of the servers themselves (Prefect, MLflow, to a 200 on /health) and
`chappie status` on an empty data folder (fresh process). Wall-clock, best of N.

    .venv/bin/python -m bench.bench_ops [--repeats 3]

Writes bench/RESULTS_ops.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from tests.infra.servers import (  # noqa: E402
    api_call,
    base_env,
    mlflow_server,
    prefect_server,
    stop,
    wait_flow_run,
)

TINY = REPO / "conf" / "tiny.yaml"
STUB = "tests.infra.stub_flows:nightly_stub"


def _flow_call(env: dict[str, str], data: Path) -> float:
    code = f"from tests.infra.stub_flows import nightly_stub; nightly_stub({str(TINY)!r}, {str(data)!r})"
    t0 = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True
    )
    dt = time.perf_counter() - t0
    if r.returncode:
        raise RuntimeError(r.stderr[-3000:])
    return dt


def _timed_start(cm) -> tuple[float, object]:  # noqa: ANN001
    t0 = time.perf_counter()
    value = cm.__enter__()
    return time.perf_counter() - t0, value


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    rows: dict[str, list[float]] = {
        k: [] for k in ("ephemeral", "client", "served", "prefect_start", "mlflow_start", "status")
    }
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            env = base_env(tmp / "eph-home")
            env["PREFECT_API_DATABASE_CONNECTION_URL"] = f"sqlite+aiosqlite:///{tmp / 'eph.db'}"
            rows["ephemeral"].append(_flow_call(env, tmp / "data"))

            t0 = time.perf_counter()
            r = subprocess.run(
                [sys.executable, "-m", "flows.cli", "status"],
                cwd=REPO,
                env=base_env(tmp / "st") | {"CHAPPIE_DATA_DIR": str(tmp / "empty")},
                capture_output=True,
                text=True,
            )
            rows["status"].append(time.perf_counter() - t0)
            assert r.returncode == 0, r.stderr

            cm = prefect_server(tmp / "srv")
            (tmp / "srv").mkdir()
            dt, api = _timed_start(cm)
            rows["prefect_start"].append(dt)
            try:
                cenv = base_env(tmp / "client-home") | {"PREFECT_API_URL": str(api)}
                rows["client"].append(_flow_call(cenv, tmp / "data2"))
                code = (
                    f"from flows.serve import serve_nightly; serve_nightly({str(TINY)!r}, "
                    f"data_dir={str(tmp / 'data3')!r}, entrypoint={STUB!r})"
                )
                proc = subprocess.Popen(
                    [sys.executable, "-c", code],
                    cwd=REPO,
                    env=cenv,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
                try:
                    with httpx.Client(base_url=str(api), timeout=20) as http:
                        while (
                            http.get("/deployments/name/nightly-stub/chappie-nightly").status_code
                            != 200
                        ):
                            time.sleep(0.5)
                        dep = api_call(
                            http, "GET", "/deployments/name/nightly-stub/chappie-nightly"
                        )
                        t0 = time.perf_counter()
                        run = api_call(
                            http, "POST", f"/deployments/{dep['id']}/create_flow_run", {}
                        )
                        state = wait_flow_run(http, run["id"], 300, poll_s=0.2)
                        rows["served"].append(time.perf_counter() - t0)
                        assert state == "COMPLETED", state
                finally:
                    stop(proc)
            finally:
                cm.__exit__(None, None, None)

            cm = mlflow_server(tmp)
            dt, _ = _timed_start(cm)
            rows["mlflow_start"].append(dt)
            cm.__exit__(None, None, None)

    best = {k: min(v) for k, v in rows.items()}
    runs = "; ".join(f"{k}: " + " / ".join(f"{x:.1f}" for x in v) for k, v in rows.items())
    text = f"""## ops: scheduling through a real Prefect server vs ephemeral mode

Machine `{platform.node()}` ({platform.machine()}, {os.cpu_count()} cores, shared with other jobs), Python {platform.python_version()}, {time.strftime("%Y-%m-%d %H:%M", time.gmtime())} UTC, load average {os.getloadavg()[0]:.1f} at the end (other jobs share the 2 cores: upper bounds). Wall-clock seconds, best of {args.repeats}; every figure includes a fresh Python process (imports).

| what | seconds |
|---|---:|
| flow call, ephemeral mode (baseline: what `chappie nightly` pays) | {best["ephemeral"]:.1f} |
| flow call as a client of a running Prefect server | {best["client"]:.1f} |
| served deployment: create run (REST) -> COMPLETED | {best["served"]:.1f} |
| Prefect server start -> /api/health 200 (SQLite) | {best["prefect_start"]:.1f} |
| MLflow server start -> /health 200 (SQLite) | {best["mlflow_start"]:.1f} |
| `chappie status` on an empty data folder | {best["status"]:.1f} |

All runs: {runs}.

Command: `.venv/bin/python -m bench.bench_ops --repeats {args.repeats}`

Reading the figures. A nightly run is minutes of training, so neither overhead matters for
it; what the server buys is the schedule (the ephemeral mode has no scheduler), the UI and
run history. A served run pays the runner's poll interval and a fresh flow-run process.
"""
    (HERE / "RESULTS_ops.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
