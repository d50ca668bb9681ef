"""`chappie ui`: the MLflow UI on 127.0.0.1 over Chappie's tracking store."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from flows.common import resolve_runtime


def ui_command(host: str = "127.0.0.1", port: int = 5000) -> list[str]:
    """The `mlflow ui` command line for this data folder's tracking store."""
    rt = resolve_runtime()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    exe = [str(mlflow_bin)] if mlflow_bin.exists() else [sys.executable, "-m", "mlflow"]
    return [*exe, "ui", "--backend-store-uri", rt.tracking_uri, "--host", host, "--port", str(port)]


def served_ui(tracking_uri: str) -> str | None:
    """The URL of the UI when the tracking store is already an MLflow server (it serves its
    own UI, nothing to start), else None."""
    return tracking_uri.rstrip("/") if tracking_uri.startswith(("http://", "https://")) else None


def run_ui(host: str = "127.0.0.1", port: int = 5000) -> int:
    """Replace this process with the MLflow UI (Ctrl-C stops it); against a tracking
    server, say where its UI already is."""
    url = served_ui(resolve_runtime().tracking_uri)
    if url is not None:
        print(f"MLflow tracking is a server: its UI is at {url} (nothing to start here)")
        return 0
    cmd = ui_command(host, port)
    print(f"MLflow UI on http://{host}:{port}  ({' '.join(cmd)})", flush=True)
    os.execv(cmd[0], cmd)
    return 0  # pragma: no cover
