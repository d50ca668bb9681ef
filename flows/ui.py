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


def run_ui(host: str = "127.0.0.1", port: int = 5000) -> int:
    """Replace this process with the MLflow UI (Ctrl-C stops it)."""
    cmd = ui_command(host, port)
    print(f"MLflow UI on http://{host}:{port}  ({' '.join(cmd)})", flush=True)
    os.execv(cmd[0], cmd)
    return 0  # pragma: no cover
