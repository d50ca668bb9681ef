"""A synthetic market's truth travels with its partitions: every day's manifest carries
`ingest.synthetic.market_metadata` under ``extra["market"]``, so `chappie audit market
EVENTS` shows the planted edge without being told the config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.config.ingest import IngestConfig
from core.config.market import PlantedEdgeConfig, SyntheticMarketConfig
from core.paths import DataLayout
from flows.cli import main
from ingest.events import read_manifest
from ingest.synthetic import market_metadata
from tests.ingest_runs import run_ingest

SYN = SyntheticMarketConfig(
    model="realistic",
    days=2,
    day_hours=0.05,
    edge=PlantedEdgeConfig(feature="trade_imbalance_60s", strength=0.35),
)


def test_ingest_synthetic_writes_the_planted_edge_into_every_manifest(
    tmp_path: Path, prefect_harness: None
) -> None:
    layout = DataLayout(tmp_path)
    run_ingest(IngestConfig(synthetic=SYN), tmp_path)
    for day in ("2024-01-01", "2024-01-02"):
        m = read_manifest(layout, "XBTUSD", day)
        assert m is not None
        assert m["extra"]["market"] == json.loads(json.dumps(market_metadata(SYN)))
        assert m["extra"]["market"]["edge"]["strength"] == 0.35
        assert m["extra"]["book_check"]["snapshots"] == 1  # the book check is still there


def test_cli_audit_market_shows_the_recorded_edge_without_a_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], prefect_harness: None
) -> None:
    run_ingest(IngestConfig(synthetic=SYN.model_copy(update={"days": 1})), tmp_path)
    assert main(["audit", "market", str(tmp_path), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["market"]["edge"]["feature"] == "trade_imbalance_60s"
    assert rep["market"]["edge"]["strength"] == 0.35
    assert rep["market"]["model"] == "realistic" and rep["edge"]["feature"] == "trade_imbalance_60s"


def test_ingest_synthetic_with_no_edge_records_strength_zero(
    tmp_path: Path, prefect_harness: None
) -> None:
    syn = SYN.model_copy(update={"days": 1, "edge": PlantedEdgeConfig(strength=0.0)})
    layout = DataLayout(tmp_path)
    run_ingest(IngestConfig(synthetic=syn), tmp_path)
    m = read_manifest(layout, "XBTUSD", "2024-01-01")
    assert m is not None and m["extra"]["market"]["edge"]["strength"] == 0.0
