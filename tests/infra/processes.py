"""Real `chappie` commands as subprocesses, marked so that every process they start can
be found in /proc afterwards (tests and the kill campaign)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

from tests.conftest import REPO

MARK_VAR = "CHAPPIE_TEST_PROCESS_MARK"
TINY = REPO / "conf" / "tiny.yaml"
# variables of the test session that would point a command at the test's Prefect server
_SESSION_VARS = (
    "PREFECT_API_URL",
    "PREFECT_API_DATABASE_CONNECTION_URL",
    "PREFECT_HOME",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_REGISTRY_URI",
)


def command_env(data_dir: Path, mark: str | None = None) -> dict[str, str]:
    """The environment of a command run as a user would: its own Prefect home under the
    data folder, no server configured, and `MARK_VAR` set (inherited by every child)."""
    env = {k: v for k, v in os.environ.items() if k not in _SESSION_VARS}
    env.update(
        {
            MARK_VAR: mark or uuid.uuid4().hex,
            "CHAPPIE_DATA_DIR": str(data_dir),
            "TQDM_DISABLE": "1",
            "PREFECT_LOGGING_LEVEL": "WARNING",
            "GIT_PYTHON_REFRESH": "quiet",
        }
    )
    return env


def start(args: list[str], env: dict[str, str], **kw: object) -> subprocess.Popen[str]:
    """`chappie ARGS...` in the repository, with `env`."""
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-m", "flows.cli", *args], cwd=REPO, env=env, text=True, **kw
    )


def marked(mark: str) -> list[tuple[int, str, str]]:
    """(pid, state, command line) of every live process whose environment carries
    `mark` (zombies excluded: they are dead, only not yet reaped)."""
    needle = f"{MARK_VAR}={mark}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if needle not in (proc / "environ").read_bytes().split(b"\0"):
                continue
            stat = (proc / "stat").read_text()
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        state = stat[stat.rfind(")") + 2]
        if state not in "ZX":
            found.append((int(proc.name), state, cmd.strip()))
    return found


def wait_for(predicate: object, timeout_s: float, every_s: float = 0.1) -> bool:
    """Poll `predicate()` until it is truthy or `timeout_s` passed."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(every_s)
    return False


def survivors_after(mark: str, seconds: float) -> list[tuple[int, str, str]]:
    """The marked processes still alive `seconds` from now (returns early when none)."""
    wait_for(lambda: not marked(mark), seconds)
    return marked(mark)
