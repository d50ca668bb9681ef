"""What every flow and CLI handler resolves the same way: the config, the data folder and
the MLflow tracking URI. Control flow only."""

from __future__ import annotations

import os
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
