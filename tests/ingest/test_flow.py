"""The ingest flow: plain-function wiring and ONE test with a real Prefect run (the
session harness) covering the flow, its cache, the CLI and the download mode."""

from __future__ import annotations

import gzip
import json
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from core.config.ingest import IngestConfig
from core.config.market import SyntheticMarketConfig
from core.paths import DataLayout
from ingest import run as ingest_run
from ingest.events import list_event_days, read_events
from ingest.run import report_table
from ingest.staged import PublishedDay, StagedDay

CFG = IngestConfig(synthetic=SyntheticMarketConfig(seed=9, days=2, day_hours=0.2))
TRADE_DUMP = (
    "timestamp,symbol,side,size,price,tickDirection,trdMatchID,grossValue,homeNotional,foreignNotional\n"
    "2019-01-01D00:00:03.367608000,XBTUSD,Buy,100,3700.5,PlusTick,a,1,0.1,100\n"
    "2019-01-01D00:00:04.000000000,.BXBT,Buy,0,3700.33,PlusTick,b,0,0,0\n"
)
QUOTE_DUMP = "timestamp,symbol,bidSize,bidPrice,askPrice,askSize\n2019-01-01D00:00:01.000000000,XBTUSD,100,3700,3700.5,200\n"


def _serve(root: Path) -> ThreadingHTTPServer:
    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *a: object, **k: object) -> None:
            super().__init__(*a, directory=str(root), **k)  # type: ignore[arg-type]

        def log_message(self, *args: object) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def test_ingest_flow_cache_cli_and_download_in_prefect(
    tmp_path: Path,
    prefect_harness: None,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flows.cli import main
    from flows.ingest import ingest_flow

    # which thread publishes each day (the publish itself runs unchanged): the caller's.
    # A thread per day gave each day a malloc arena of its own, and the peak RSS grew
    # with the days of a run (#19)
    publishers: dict[str, int] = {}
    publish = ingest_run._publish_staged_day

    def spy(cfg: IngestConfig, layout: DataLayout, day: str, staged: StagedDay) -> PublishedDay:
        publishers[day] = threading.get_ident()
        return publish(cfg, layout, day, staged)

    monkeypatch.setattr(ingest_run, "_publish_staged_day", spy)
    data = tmp_path / "data"
    first = ingest_flow(CFG, str(data)).to_json()
    assert first["partitions_written"] == ["2024-01-01", "2024-01-02"]
    assert publishers == dict.fromkeys(["2024-01-01", "2024-01-02"], threading.get_ident())
    monkeypatch.undo()
    assert first["rows_in"] == first["rows_out"] + first["rows_rejected"]
    second = ingest_flow(CFG, str(data)).to_json()
    assert second["partitions_written"] == [] and second["partitions_unchanged"] == [
        "2024-01-01",
        "2024-01-02",
    ]
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["ingest-report"]))
        )
    assert arts and arts[0].type == "table"
    assert "rows" in str(arts[0].data) and "partitions" in str(arts[0].data)

    bucket = tmp_path / "bucket"
    (bucket / "trade").mkdir(parents=True)
    (bucket / "quote").mkdir()
    (bucket / "trade" / "20190101.csv.gz").write_bytes(gzip.compress(TRADE_DUMP.encode()))
    (bucket / "quote" / "20190101.csv.gz").write_bytes(gzip.compress(QUOTE_DUMP.encode()))
    srv = _serve(bucket)
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}"
        code = main(
            [
                "ingest",
                "bitmex-dump",
                "--url",
                url,
                "--start",
                "2019-01-01",
                "--end",
                "2019-01-02",
                "--json",
                "--data-dir",
                str(data),
            ]
        )
    finally:
        srv.shutdown()
        srv.server_close()
    assert code == 0
    rep = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(rep["download"]["downloaded"]) == 2 and len(rep["download"]["missing"]) == 2
    assert (
        rep["files_in"] == 2
        and rep["files_ok"] == 2
        and rep["partitions_written"] == ["2019-01-01"]
    )
    layout = DataLayout(data)
    assert "2019-01-01" in list_event_days(layout, "XBTUSD")
    book, trades = read_events(layout, "XBTUSD", ["2019-01-01"])
    assert book.height == 2 and trades.height == 1


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
