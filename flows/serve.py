"""`chappie serve`: the nightly flow as a Prefect deployment on a cron schedule.

A schedule needs a real Prefect server (its scheduler service creates the runs); the
ephemeral mode used by `chappie nightly` has none. `serve_nightly` therefore refuses to
start unless `PREFECT_API_URL` points at a server that answers (`infra/local-stack.sh
start` runs one on 127.0.0.1). The same deployment, on a process work pool instead of
an in-process runner, is defined in `infra/prefect.yaml`.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any

import httpx
from prefect import Flow, serve
from prefect.client.schemas.schedules import CronSchedule
from prefect.deployments.runner import EntrypointType
from prefect.schedules import Cron
from pydantic import ValidationError

from flows.common import resolve_runtime

DEFAULT_CRON = "0 2 * * *"  # 02:00 every day
DEFAULT_TIMEZONE = "UTC"
DEPLOYMENT_NAME = "chappie-nightly"
NIGHTLY_ENTRYPOINT = "flows.nightly:nightly_flow"
DEPLOYMENT_TAGS = ("chappie", "nightly")


class PrefectServerUnavailable(RuntimeError):
    """No Prefect server answers at PREFECT_API_URL (or the variable is not set)."""


def validate_cron(cron: str) -> str:
    """`cron` unchanged when it is a valid 5-field cron expression.

    Raises ValueError naming the expression otherwise."""
    if len(cron.split()) != 5:
        raise ValueError(
            f"invalid cron expression {cron!r}: expected 5 fields, e.g. {DEFAULT_CRON!r}"
        )
    try:
        CronSchedule(cron=cron)
    except ValidationError as exc:
        raise ValueError(f"invalid cron expression {cron!r}: {exc.errors()[0]['msg']}") from None
    return cron


def load_flow(entrypoint: str = NIGHTLY_ENTRYPOINT) -> Any:
    """The Prefect flow object at `module:attribute` (default: the nightly flow).

    Raises ValueError for a malformed entrypoint, ImportError/AttributeError when it
    does not exist, TypeError when the attribute is not a Prefect flow."""
    module_name, sep, attr = entrypoint.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"entrypoint must look like 'package.module:flow', got {entrypoint!r}")
    obj = getattr(importlib.import_module(module_name), attr)
    if not isinstance(obj, Flow):
        raise TypeError(f"{entrypoint} is a {type(obj).__name__}, not a Prefect flow")
    return obj


def nightly_parameters(
    config_path: str | os.PathLike[str], data_dir: str | None = None
) -> dict[str, Any]:
    """Deployment parameters: absolute paths, so a run started by the scheduler in any
    working directory reads the same config and writes the same data folder.

    Raises FileNotFoundError when the config file does not exist."""
    cfg = Path(config_path).resolve()
    if not cfg.is_file():
        raise FileNotFoundError(f"config file not found: {cfg}")
    return {"config_path": str(cfg), "data_dir": resolve_runtime(data_dir).data_dir}


def nightly_deployment(
    config_path: str | os.PathLike[str],
    cron: str = DEFAULT_CRON,
    *,
    data_dir: str | None = None,
    name: str = DEPLOYMENT_NAME,
    entrypoint: str = NIGHTLY_ENTRYPOINT,
    timezone: str = DEFAULT_TIMEZONE,
) -> Any:
    """The nightly `RunnerDeployment`: one run per cron tick (UTC by default), never two
    at once (concurrency limit 1), parameters `config_path` and `data_dir`."""
    flow = load_flow(entrypoint)
    # A module-path entrypoint (flows.nightly.nightly_flow), never a file path: loading
    # flows/nightly.py as a script puts flows/ on sys.path, and then `import features`
    # finds flows/features.py instead of the features package (a circular import).
    return flow.to_deployment(
        entrypoint_type=EntrypointType.MODULE_PATH,
        name=name,
        schedules=[Cron(validate_cron(cron), timezone=timezone)],
        parameters=nightly_parameters(config_path, data_dir),
        concurrency_limit=1,
        tags=list(DEPLOYMENT_TAGS),
        description="Chappie nightly: ingest new days, rebuild what changed, train, evaluate, gate, promote.",
    )


def require_server(timeout_s: float = 5.0) -> str:
    """The API URL of a Prefect server that answers its health check.

    Raises PrefectServerUnavailable with the command that starts one."""
    url = os.environ.get("PREFECT_API_URL", "").rstrip("/")
    hint = "start one with `infra/local-stack.sh start` and export the PREFECT_API_URL it prints"
    if not url:
        raise PrefectServerUnavailable(
            f"PREFECT_API_URL is not set: schedules need a Prefect server (ephemeral mode has no scheduler); {hint}"
        )
    try:
        r = httpx.get(f"{url}/health", timeout=timeout_s)
        r.raise_for_status()
    except httpx.HTTPError as exc:
        raise PrefectServerUnavailable(
            f"no Prefect server answers at {url} ({exc}); {hint}"
        ) from exc
    return url


def serve_nightly(
    config_path: str | os.PathLike[str],
    cron: str = DEFAULT_CRON,
    *,
    data_dir: str | None = None,
    name: str = DEPLOYMENT_NAME,
    entrypoint: str = NIGHTLY_ENTRYPOINT,
    timezone: str = DEFAULT_TIMEZONE,
    limit: int = 1,
) -> None:
    """Register the nightly deployment with the Prefect server and execute its runs in
    this process until interrupted (Ctrl-C pauses the schedule and returns).

    Raises PrefectServerUnavailable when no server answers at PREFECT_API_URL,
    ValueError for a bad cron expression, FileNotFoundError for a missing config."""
    deployment = nightly_deployment(
        config_path, cron, data_dir=data_dir, name=name, entrypoint=entrypoint, timezone=timezone
    )
    url = require_server()
    print(
        f"serving {deployment.flow_name}/{name} on cron {cron!r} ({timezone}) against {url}; "
        "Ctrl-C stops",
        flush=True,
    )
    serve(deployment, limit=limit, print_starting_message=False)


def run_serve_cli(config_path: str, cron: str) -> int:
    """`chappie serve`: exit code 2 with a clear message when the server is missing."""
    try:
        serve_nightly(config_path, cron)
    except (PrefectServerUnavailable, ValueError, FileNotFoundError) as exc:
        print(f"chappie serve: {exc}", file=sys.stderr)
        return 2
    return 0
