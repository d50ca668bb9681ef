"""What every flow and CLI handler resolves the same way: the config, the data folder and
the MLflow tracking URI. Control flow only."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.config.experiment import ExperimentConfig, load_config
from core.paths import DataLayout
from core.settings import Settings, load_settings


@dataclass(frozen=True)
class Runtime:
    """Where this run reads and writes."""

    data_dir: str
    tracking_uri: str

    @property
    def layout(self) -> DataLayout:
        return DataLayout(Path(self.data_dir))


def resolve_runtime(data_dir: str | None = None, tracking_uri: str | None = None) -> Runtime:
    """Data folder from the argument or CHAPPIE_DATA_DIR (default ./data); tracking URI from
    the argument, MLFLOW_TRACKING_URI, or SQLite inside the data folder."""
    settings: Settings = load_settings()
    if data_dir:
        settings = settings.model_copy(update={"data_dir": Path(data_dir)})
    return Runtime(
        data_dir=str(settings.layout.root), tracking_uri=tracking_uri or settings.tracking_uri
    )


def progress(total: int, desc: str, unit: str) -> Any:
    """A command-line progress bar over a flow's steps (TQDM_DISABLE=1 turns it off).
    Use it as a context manager so it is closed when the flow raises."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=os.environ.get("TQDM_DISABLE") == "1")


def load_experiment(path: str | os.PathLike[str]) -> ExperimentConfig:
    """The experiment config at `path`, with a clear error when the file is missing."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"config file not found: {p} (see conf/default.yaml)")
    return load_config(p)


def post_markdown_artifact(key: str, markdown: str, description: str) -> None:
    """Post a Prefect markdown artifact; a report is never a reason to fail the run, so a
    failure to post is logged as a warning and swallowed."""
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
    from core.locks import hold_folder

    with hold_folder(data_dir, stage, wait_s=load_settings().lock_wait_s) as holder:
        yield holder


@contextlib.contextmanager
def command_session(data_dir: str | os.PathLike[str], stage: str) -> Iterator[None]:
    """What a `chappie` command that runs flows holds: the data folder's lock (taken
    first, so a busy folder stops the command before anything starts), then a Prefect API
    that ends with the command (`flows.api_server.prefect_api`: PREFECT_API_URL, or a
    temporary server that dies with this process even when it is SIGKILLed).

    Enter it before importing a flow module. Raises FolderBusy, ServerStartError."""
    from flows.api_server import prefect_api

    with data_folder_lock(data_dir, stage), prefect_api():
        yield
