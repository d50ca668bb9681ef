"""Shared fixtures of the features tests: real event partitions made by ingest."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config.ingest import IngestConfig
from core.config.market import SyntheticMarketConfig
from tests.ingest_runs import run_ingest


@pytest.fixture(scope="session")
def events_dir(tmp_path_factory, prefect_harness) -> Path:
    """Two short synthetic days ingested into a data folder (events only)."""
    root = tmp_path_factory.mktemp("events")
    run_ingest(IngestConfig(synthetic=SyntheticMarketConfig(seed=9, days=2, day_hours=0.2)), root)
    return root


@pytest.fixture(scope="session")
def capture_events_dir(ws_capture, tmp_path_factory, prefect_harness) -> Path:
    """The real BitMEX websocket capture ingested into a data folder (skips without it)."""
    root = tmp_path_factory.mktemp("capture")
    run_ingest(IngestConfig(source="ws-recording", paths=(str(ws_capture),)), root)
    return root
