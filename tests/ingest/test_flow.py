"""The ingest flow: plain-function wiring and one real Prefect run."""

from __future__ import annotations

from pathlib import Path

from core.config.ingest import IngestConfig
from core.config.market import SyntheticMarketConfig
from core.paths import DataLayout
from ingest.events import list_event_days
from ingest.run import report_table

CFG = IngestConfig(synthetic=SyntheticMarketConfig(seed=9, days=2, day_hours=0.2))


def test_ingest_flow_runs_in_prefect_and_reruns_without_writing(
    tmp_path: Path, prefect_harness: None
) -> None:
    from flows.ingest import ingest_flow

    first = ingest_flow(CFG, str(tmp_path))
    assert first["partitions_written"] == ["2024-01-01", "2024-01-02"]
    assert first["rows_in"] == first["rows_out"] + first["rows_rejected"]
    assert list_event_days(DataLayout(tmp_path), "XBTUSD") == ["2024-01-01", "2024-01-02"]
    second = ingest_flow(CFG, str(tmp_path))
    assert second["partitions_written"] == []
    assert second["partitions_unchanged"] == ["2024-01-01", "2024-01-02"]


def test_report_table_lists_files_rows_partitions() -> None:
    from ingest.report import IngestReport, QuarantineEntry

    rep = IngestReport(
        source="tardis",
        symbol="XBTUSD",
        files_in=2,
        files_ok=1,
        files_quarantined=1,
        rows_in=5,
        rows_out=3,
        rows_rejected=2,
        events_out={"book": 3, "trades": 0},
        partitions_written=["2024-01-01"],
        partitions_unchanged=[],
        desyncs={},
        quarantine=[QuarantineEntry(path="a.csv", level="file", reason="empty file", rows=2)],
        reasons={"empty file": 1},
    )
    rows = report_table(rep)
    assert [r["item"] for r in rows] == ["files", "rows", "partitions", "quarantine (file)"]
    assert rows[1]["quarantined"] == 2 and "empty file" in rows[3]["detail"]
