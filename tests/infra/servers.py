"""Real servers for the infra tests: Prefect and MLflow as subprocesses on 127.0.0.1,
each in its own process group so teardown reaches every child (uvicorn workers)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.conftest import REPO, free_port

BIN = Path(sys.executable).parent


def _bin(name: str) -> str:
    exe = BIN / name
    return str(exe) if exe.exists() else name


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 90.0) -> None:
    """Poll `url` until it answers 200; fail with the server log when the process dies."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    raise TimeoutError(f"no answer at {url} after {timeout_s}s:\n{log.read_text()[-4000:]}")


def stop(proc: subprocess.Popen[bytes], grace_s: float = 15.0) -> None:
    """TERM the process group, KILL it after `grace_s`."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def base_env(prefect_home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PREFECT_HOME=str(prefect_home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_LOGGING_LEVEL="INFO",
        PYTHONPATH=str(REPO),
    )
    env.pop("PREFECT_API_URL", None)
    return env


@contextlib.contextmanager
def prefect_server(tmp: Path, db_url: str | None = None) -> Iterator[str]:
    """A Prefect server on a free port; yields its API URL. SQLite under `tmp` unless
    `db_url` (e.g. postgresql+asyncpg://...) is given."""
    home = tmp / "prefect-home"
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = base_env(home)
    env.update(
        PREFECT_API_DATABASE_CONNECTION_URL=db_url or f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="2",
        PREFECT_SERVER_UI_ENABLED="false",
    )
    log = tmp / "prefect-server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [_bin("prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=tmp,
        )
    url = f"http://127.0.0.1:{port}/api"
    try:
        wait_http(f"{url}/health", proc, log)
        yield url
    finally:
        stop(proc)


@contextlib.contextmanager
def mlflow_server(
    tmp: Path,
    backend_uri: str | None = None,
    artifacts: str | None = None,
    extra_env: dict[str, str] | None = None,
) -> Iterator[str]:
    """An MLflow tracking server on a free port (SQLite under `tmp` unless `backend_uri`),
    serving artifacts from `artifacts` (a folder under `tmp` unless given, e.g. s3://...)."""
    port = free_port()
    env = dict(os.environ)
    env.update(extra_env or {})
    env.pop("MLFLOW_TRACKING_URI", None)
    log = tmp / "mlflow-server.log"
    cmd = [
        _bin("mlflow"),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backend-store-uri",
        backend_uri or f"sqlite:///{tmp / 'mlflow.db'}",
        "--artifacts-destination",
        artifacts or str(tmp / "mlartifacts"),
        "--workers",
        "1",
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health", proc, log)
        yield url
    finally:
        stop(proc)


@contextlib.contextmanager
def moto_s3(tmp: Path, bucket: str) -> Iterator[dict[str, str]]:
    """A moto S3 server on 127.0.0.1 with `bucket` created; yields the env an S3 client
    (MLflow server, boto3) needs to reach it."""
    port = free_port()
    log = tmp / "moto.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [_bin("moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=tmp,
        )
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        "MLFLOW_S3_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    try:
        wait_http(f"{endpoint}/moto-api/", proc, log)
        import boto3

        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        s3.create_bucket(Bucket=bucket)
        yield env
    finally:
        stop(proc)


@contextlib.contextmanager
def postgres_database(
    user: str = "postgres", host: str = "127.0.0.1", port: int = 5432
) -> Iterator[str]:
    """A fresh database `chappie_test_<random>` on the PostgreSQL at host:port, dropped
    afterwards (even with servers still connected). Yields its name."""
    import secrets

    import psycopg2

    name = f"chappie_test_{secrets.token_hex(4)}"
    admin = psycopg2.connect(host=host, port=port, user=user, dbname="postgres")
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        try:
            yield name
        finally:
            with admin.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.close()


def api_call(
    http: httpx.Client, method: str, path: str, json: object = None, tries: int = 5
) -> object:
    """A Prefect REST call that retries transient server errors (a busy SQLite answers
    5xx under load); raises with the response text otherwise."""
    for attempt in range(tries):
        try:
            r = http.request(method, path, json=json)
        except httpx.TransportError:
            if attempt == tries - 1:
                raise
            time.sleep(1 + attempt)
            continue
        if r.status_code < 500 or attempt == tries - 1:
            if r.is_error:
                raise AssertionError(f"{method} {path} -> {r.status_code}: {r.text[:2000]}")
            return r.json()
        time.sleep(1 + attempt)
    raise AssertionError("unreachable")


def wait_flow_run(http: httpx.Client, run_id: str, timeout_s: float, poll_s: float = 1.0) -> str:
    """The final state type of a flow run (COMPLETED, FAILED, CRASHED, CANCELLED), or the
    last state seen when `timeout_s` passes."""
    deadline = time.monotonic() + timeout_s
    state = "UNKNOWN"
    while time.monotonic() < deadline:
        state = api_call(http, "GET", f"/flow_runs/{run_id}")["state"]["type"]  # type: ignore[index]
        if state in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            break
        time.sleep(poll_s)
    return state
