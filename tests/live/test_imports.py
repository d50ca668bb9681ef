"""live/ never imports prefect, great_expectations or stable_baselines3 (DESIGN.md seams)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_live_package_imports_no_prefect_gx_or_sb3() -> None:
    code = (
        "import sys, live.app, live.loop, live.feed, live.orders, live.exchange, sim.fake_exchange, "
        "sim.replay_server, live.model_watch, live.risk, live.journal, live.recording, flows.cli_live\n"
        "bad = [m for m in ('prefect', 'great_expectations', 'stable_baselines3', 'torch') if m in sys.modules]\n"
        "print(','.join(bad))"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == ""
