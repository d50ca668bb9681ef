"""Ingest for the tests: the production flow (`flows.ingest.ingest_flow`, run under the
session's Prefect harness, so the caller asks for the `prefect_harness` fixture) and the
`IngestReport` of its outcome."""

from __future__ import annotations

from pathlib import Path

from core.config.ingest import IngestConfig
from ingest.report import IngestReport


def run_ingest(cfg: IngestConfig, data_dir: Path | str) -> IngestReport:
    """Ingest `cfg` into `data_dir` through the flow; the run's report."""
    from flows.ingest import ingest_flow

    return ingest_flow(cfg, str(data_dir)).report
