"""What every flow and CLI handler resolves the same way: the config, the data folder and
the MLflow tracking URI. Control flow only.

Standard library only at import time: the `chappie` parser imports DEFAULT_CONFIG from
here, and `chappie --help` must stay fast (pydantic and the config models are imported
by the functions that need them)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from core.config.experiment import ExperimentConfig
    from core.paths import DataLayout

#: the experiment config every command reads unless given --config
DEFAULT_CONFIG = "conf/default.yaml"


@dataclass(frozen=True)
class Runtime:
    """Where this run reads and writes."""

    data_dir: str
    tracking_uri: str

    @property
    def layout(self) -> DataLayout:
        # slow: not itself (~2 ms), but chappie's parser imports no core (test_default_config)
        from core.paths import DataLayout

        return DataLayout(Path(self.data_dir))


def resolve_runtime(data_dir: str | None = None, tracking_uri: str | None = None) -> Runtime:
    """Data folder from the argument or CHAPPIE_DATA_DIR (default ./data); tracking URI from
    the argument, MLFLOW_TRACKING_URI, or SQLite inside the data folder."""
    from core.settings import load_settings  # slow: pydantic-settings (~0.3 s); not for --help

    settings = load_settings()
    if data_dir:
        settings = settings.model_copy(update={"data_dir": Path(data_dir)})
    return Runtime(
        data_dir=str(settings.layout.root), tracking_uri=tracking_uri or settings.tracking_uri
    )


class ConfigError(ValueError):
    """A config file that cannot be used (not YAML, or not a valid experiment config); the
    message is one line naming the file and, for a bad key, the key."""


class ConfigNotFound(ConfigError, FileNotFoundError):
    """The config file does not exist (a FileNotFoundError, as callers have caught)."""


def _validation_line(exc: Any) -> str:
    """The first error of a pydantic ValidationError as `key.path: what is wrong`, and how
    many more there are (a user fixes one at a time; the rest follow on the next run)."""
    errors = exc.errors()
    first = errors[0]
    key = ".".join(str(part) for part in first["loc"]) or "(top level)"
    if first["type"] == "extra_forbidden":
        what = f"unknown key {key!r} (check its spelling and section against conf/default.yaml)"
    else:
        what = f"{key}: {first['msg']}"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return what + more


def load_experiment(path: str | os.PathLike[str]) -> ExperimentConfig:
    """The experiment config at `path`, parsed and validated (cheap: no Prefect, no I/O
    beyond the file). Raises ConfigNotFound when the file is missing, ConfigError (one
    line naming the file, and the key when one is wrong) when it is not YAML or not a
    valid config."""
    # slow: pydantic and the config models (~0.7 s); chappie --help imports the stdlib only
    import yaml
    from pydantic import ValidationError

    from core.config.experiment import load_config

    p = Path(path)
    if not p.is_file():
        raise ConfigNotFound(
            f"config file not found: {p} (pass --config PATH; conf/default.yaml is an example)"
        )
    try:
        return load_config(p)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{p}: not valid YAML{where}: {problem}") from exc
    except ValidationError as exc:
        raise ConfigError(f"{p}: {_validation_line(exc)}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not a text file ({exc.reason})") from exc


class ServerUnreachable(ConnectionError):
    """A server the command is configured to use does not accept connections."""


def check_reachable(url: str, what: str, env_var: str, timeout_s: float = 3.0) -> None:
    """Connect once (TCP, `timeout_s` seconds) to the host and port of an http(s) `url`, so
    that a server nobody runs is one line now instead of a client's minutes of retries
    (MLflow's HTTP client backs off for minutes). Other schemes are not checked. Raises
    ServerUnreachable naming `what`, the URL and the `env_var` that set it."""
    import socket  # slow: socket (~10 ms); only a command about to run checks its servers

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout_s).close()
    except OSError as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise ServerUnreachable(
            f"cannot reach the {what} at {url} ({reason}): start it, or unset {env_var} "
            "to use a local one"
        ) from exc


def post_markdown_artifact(key: str, markdown: str, description: str) -> None:
    """Post a Prefect markdown artifact; a report is never a reason to fail the run, so a
    failure to post is logged as a warning and swallowed."""
    # slow: prefect (~2 s); only a flow run posts artifacts, chappie's parser never does
    from prefect import get_run_logger
    from prefect.artifacts import create_markdown_artifact

    try:
        create_markdown_artifact(key=key, markdown=markdown, description=description)
    except Exception:
        get_run_logger().warning("could not post the %s artifact", key, exc_info=True)


@contextlib.contextmanager
def data_folder_lock(data_dir: str | os.PathLike[str], stage: str) -> Iterator[dict[str, Any]]:
    """Hold the data folder's lock (`core.locks.hold_folder`) for the `with` block: every
    writing stage (ingest, features, train, evaluate, nightly) takes it, re-entrantly, so
    two runs never share a staging folder. Waits up to CHAPPIE_LOCK_WAIT_S (default 0)
    for another run, then raises `core.locks.FolderBusy` (one line naming the holder)."""
    # slow: core.locks, pydantic-settings (~0.4 s); chappie --help imports the stdlib only
    from core.locks import hold_folder, lock_wait_seconds

    with hold_folder(data_dir, stage, wait_s=lock_wait_seconds()) as holder:
        yield holder


@contextlib.contextmanager
def command_session(data_dir: str | os.PathLike[str], stage: str) -> Iterator[None]:
    """What a `chappie` command that runs flows holds: the data folder's lock (taken
    first, so a busy folder stops the command before anything starts), then a Prefect API
    that ends with the command (`flows.api_server.prefect_api`: PREFECT_API_URL, or a
    temporary server that dies with this process even when it is SIGKILLed).

    Enter it before importing a flow module. Raises FolderBusy, ServerStartError."""
    # slow: subprocess, threads, urllib.request (~0.1 s); not for chappie --help
    from flows.api_server import prefect_api

    with data_folder_lock(data_dir, stage), prefect_api():
        yield
