"""Session-wide test setup: an isolated Prefect home, one Prefect test harness, single
threaded math, and the real BitMEX capture in ../shared/data."""

from __future__ import annotations

import os
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# Before anything imports prefect or torch.
_PREFECT_HOME = tempfile.mkdtemp(prefix="chappie-test-prefect-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "60"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault(
    "PREFECT_API_DATABASE_CONNECTION_URL", f"sqlite+aiosqlite:///{_PREFECT_HOME}/prefect.db"
)
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
os.environ.pop("MLFLOW_TRACKING_URI", None)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
WS_CAPTURE = SHARED_DATA / "bitmex_ws_XBTUSD_2021-07-22.txt"
INSTRUMENTS = SHARED_DATA / "bitmex_instrument_active_2021-07-22.json"


_MLFLOW_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
_MLFLOW_ENV_BASELINE = {var: os.environ.get(var) for var in _MLFLOW_ENV}


@pytest.fixture(autouse=True)
def _no_mlflow_store_leaks() -> Iterator[None]:
    """`registry.tracking.configure` points the whole process (os.environ, its own state)
    at a store on purpose, so that child processes follow; no test may leave that behind
    for the next one (a later `chappie status` read the previous test's store)."""
    yield
    for var, value in _MLFLOW_ENV_BASELINE.items():
        if value is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = value
    tracking = sys.modules.get("registry.tracking")
    if tracking is not None:
        tracking._state.update(uri=None, artifact_location=None)


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One Prefect test harness (temporary server on SQLite) for the whole session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield


@pytest.fixture(scope="session")
def ws_capture() -> Path:
    if not WS_CAPTURE.exists():
        pytest.skip(f"real capture not found at {WS_CAPTURE}")
    return WS_CAPTURE


@pytest.fixture(scope="session")
def instruments_json() -> Path:
    if not INSTRUMENTS.exists():
        pytest.skip(f"instrument list not found at {INSTRUMENTS}")
    return INSTRUMENTS


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def postgres_available(host: str = "127.0.0.1", port: int = 5432) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False
