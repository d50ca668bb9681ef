"""`chappie rollback` where no work is needed (#20: a user error in under 3 s): nothing
to roll back, and a --dry-run, on an existing SQLite registry, as a user types them,
side by side with the way they were answered before (the same plan through MLflow's
client: import mlflow, open its SQLAlchemy store, read the aliases) in a fresh process.

    .venv/bin/python -m bench.bench_rollback [--repeats 5]

Prints a markdown section for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHAPPIE = Path(sys.executable).with_name("chappie")
MAKE = """
import sys
from registry import tracking
tracking.configure(sys.argv[1])
c = tracking.client()
c.create_registered_model("chappie-xbtusd")
for i in range(2):
    c.create_model_version("chappie-xbtusd", source=f"file:///nowhere/{i}")
for pair in sys.argv[2:]:
    alias, version = pair.split("=")
    c.set_registered_model_alias("chappie-xbtusd", alias, version)
"""
VIA_MLFLOW = """
import sys
from core.config.registry import RegistryConfig
from registry.promotion import PromotionError, rollback
try:
    rollback(RegistryConfig(), sys.argv[1], dry_run=True)
except PromotionError:
    pass
"""


def _env(data: Path) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "CHAPPIE_"))
    }
    env.update(CHAPPIE_DATA_DIR=str(data), PREFECT_HOME=str(data / "prefect"))
    return env


def _time(cmd: list[str], env: dict[str, str], repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, check=False)
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case, aliases, argv in (
            ("nothing to roll back", ["challenger=1"], ["rollback"]),
            ("--dry-run", ["champion=2", "previous-champion=1"], ["rollback", "--dry-run"]),
        ):
            data = Path(tmp) / case.replace(" ", "-")
            data.mkdir()
            uri = f"sqlite:///{data / 'mlflow.db'}"
            subprocess.run([sys.executable, "-c", MAKE, uri, *aliases], cwd=REPO, check=True)
            now = _time([str(CHAPPIE), *argv], _env(data), args.repeats)
            before = _time([sys.executable, "-c", VIA_MLFLOW, uri], _env(data), args.repeats)
            rows.append((case, now, before))
    load = os.getloadavg()[0]
    print(
        f"machine `{platform.node()}` ({platform.machine()}, {os.cpu_count()} cores, shared), "
        f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"load average {load:.1f}; {args.repeats} runs each, wall seconds.\n"
    )
    print(
        "| case | `chappie rollback` now: median (max) | the same answer through MLflow's client, python start included: median (max) |"
    )
    print("|---|---:|---:|")
    for case, now, before in rows:
        print(
            f"| {case} | {statistics.median(now):.2f} ({max(now):.2f}) "
            f"| {statistics.median(before):.2f} ({max(before):.2f}) |"
        )


if __name__ == "__main__":
    main()
