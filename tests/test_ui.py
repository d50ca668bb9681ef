"""`chappie ui` against a tracking server: it says where the server's UI is (#20)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from flows.nightly import _ui_hint
from flows.ui import served_ui

CHAPPIE = Path(sys.executable).with_name("chappie")


def test_ui_against_a_tracking_server_names_its_ui_and_starts_nothing(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:5999/",
        "CHAPPIE_DATA_DIR": str(tmp_path / "data"),
    }
    proc = subprocess.run([str(CHAPPIE), "ui"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout.strip().splitlines() == [
        "MLflow tracking is a server: its UI is at http://127.0.0.1:5999 (nothing to start here)"
    ]


def test_the_nightly_summary_points_at_the_right_ui() -> None:
    assert served_ui("sqlite:////data/mlflow.db") is None
    assert "chappie ui" in _ui_hint("sqlite:////data/mlflow.db")
    hint = _ui_hint("https://mlflow.example.org")
    assert "https://mlflow.example.org" in hint and "chappie ui" not in hint
