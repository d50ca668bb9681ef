"""A small real flow with the nightly flow's signature, for deployment tests that must not
spend minutes training: it parses the config like the nightly does and writes the
`reports/last_nightly.json` outcome into the data folder."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow

from core.atomic import write_json_atomic
from flows.common import load_experiment


@flow(name="nightly-stub")
def nightly_stub(config_path: str, data_dir: str | None = None) -> dict[str, Any]:
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    cfg = load_experiment(config_path)
    outcome = {
        "started": started,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "status": "completed",
        "failed_step": None,
        "config": config_path,
        "config_fingerprint": cfg.fingerprint,
        "decisions": [],
    }
    assert data_dir is not None
    write_json_atomic(Path(data_dir) / "reports" / "last_nightly.json", outcome)
    return outcome
