"""The ingest flow on a synthetic market: end to end, report balances, idempotent re-run."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config.ingest import IngestConfig
from core.config.market import SyntheticMarketConfig
from core.paths import DataLayout
from ingest.events import read_manifest
from ingest.report import IngestReport
from tests.ingest_runs import run_ingest

CFG = IngestConfig(synthetic=SyntheticMarketConfig(seed=2, days=2, day_hours=0.25))


def test_ingest_synthetic_publishes_every_day_with_balanced_report(
    tmp_path: Path, prefect_harness: None
) -> None:
    layout = DataLayout(tmp_path)
    rep = run_ingest(CFG, tmp_path)
    assert rep.partitions_written == ["2024-01-01", "2024-01-02"]
    assert rep.rows_in == rep.rows_out == rep.events_out["book"] + rep.events_out["trades"] > 0
    assert rep.rows_rejected == 0 and rep.desyncs == {} and rep.files_in == 0
    m = read_manifest(layout, "XBTUSD", "2024-01-02")
    assert m is not None and m["extra"]["book_check"]["snapshots"] == 1
    # the run's staging is kept for a cached re-run, and only that
    assert len(list((tmp_path / "staging" / "ingest").iterdir())) == 1


def test_ingest_synthetic_rerun_does_no_work(tmp_path: Path, prefect_harness: None) -> None:
    first = run_ingest(CFG, tmp_path)
    rep = run_ingest(CFG, tmp_path)
    assert rep.partitions_written == [] and rep.partitions_unchanged == ["2024-01-01", "2024-01-02"]
    assert rep.rows_in == first.rows_in  # the report of the cached staging, not re-read


def test_ingest_report_rejects_unbalanced_counts() -> None:
    kw = dict(
        source="x",
        symbol="XBTUSD",
        events_out={},
        partitions_written=[],
        partitions_unchanged=[],
        desyncs={},
        quarantine=[],
        reasons={},
    )
    with pytest.raises(ValueError, match="rows_in"):
        IngestReport(
            files_in=0,
            files_ok=0,
            files_quarantined=0,
            rows_in=3,
            rows_out=1,
            rows_rejected=1,
            **kw,
        )
    with pytest.raises(ValueError, match="files_in"):
        IngestReport(
            files_in=2,
            files_ok=1,
            files_quarantined=0,
            rows_in=0,
            rows_out=0,
            rows_rejected=0,
            **kw,
        )


def test_prune_staging_keeps_only_the_current_folder(tmp_path: Path) -> None:
    from ingest.run import prune_staging

    root = tmp_path / "staging" / "ingest"
    import os

    for name in ("aaa", "bbb", "ccc", "ddd"):
        (root / name).mkdir(parents=True)
        (root / name / "x.parquet").write_bytes(b"x")
        if name != "ddd":  # ddd: a concurrent run's fresh staging
            os.utime(root / name, (0, 0))
    assert prune_staging(str(tmp_path), "bbb") == ["aaa", "ccc"]
    assert sorted(p.name for p in root.iterdir()) == ["bbb", "ddd"]
    assert prune_staging(str(tmp_path / "nowhere"), "bbb") == []


def test_a_claimed_staging_folder_survives_a_concurrent_prune(tmp_path: Path) -> None:
    """A run that reuses an old cached staging folder claims it (mtime now) before its
    existence check: another run's prune_staging then leaves it alone."""
    import os

    from ingest.run import claim_staging, prune_staging

    root = tmp_path / "staging" / "ingest"
    for name in ("old", "reused", "mine"):
        (root / name).mkdir(parents=True)
        os.utime(root / name, (0, 0))
    claim_staging(str(root / "reused"))
    claim_staging(str(root / "gone"))  # pruned already: nothing to claim, no error
    assert prune_staging(str(tmp_path), "mine") == ["old"]
    assert sorted(p.name for p in root.iterdir()) == ["mine", "reused"]


def test_staged_index_is_staged_json_and_decodes_from_a_persisted_result(tmp_path: Path) -> None:
    """The staging task's result: `<stage>/staged.json` is its dump, and the flow's
    persisted record decodes back to the same value; a record of another layout (an
    earlier version's) does not decode (Prefect counts a miss and stages again)."""
    from pydantic import ValidationError

    from core.atomic import json_bytes
    from flows.results import decode_object
    from ingest.run import STAGED_INDEX, stage_source, staged_files_exist
    from ingest.staged import StagedIndex

    index = stage_source(CFG, str(tmp_path), str(tmp_path / "stage"))
    assert (tmp_path / "stage" / STAGED_INDEX).read_bytes() == json_bytes(index.to_json())
    assert sorted(index.days) == ["2024-01-01", "2024-01-02"]
    assert [(f.path, f.is_file) for f in index.files] == [
        ("synthetic:2024-01-01", False),
        ("synthetic:2024-01-02", False),
    ]
    day = index.days["2024-01-01"]
    assert day.inputs == [{"path": "synthetic", "sha256": day.inputs[0]["sha256"]}]
    record = {"__class__": f"{StagedIndex.__module__}.StagedIndex"}
    assert decode_object(record | {"data": index.to_json()}) == index
    old = index.to_json()
    del old["leftovers"]
    with pytest.raises(ValidationError):
        decode_object(record | {"data": old})
    assert staged_files_exist(index)
    Path(day.trades).unlink()
    assert not staged_files_exist(index)


def test_published_day_counts_the_desyncs_of_its_book_check(tmp_path: Path) -> None:
    from ingest.events import BookCheck
    from ingest.run import desyncs_of, publish_staged_day, stage_source

    chk: BookCheck = {
        "messages": 9,
        "snapshots": 1,
        "unknown_level": 2,
        "crossed": 1,
        "bad_size": 4,
        "first_desync_row": 3,
    }
    assert desyncs_of(chk) == 7 and desyncs_of(None) == 0  # None: a manifest without one
    index = stage_source(CFG, str(tmp_path), str(tmp_path / "stage"))
    pub = publish_staged_day(CFG, str(tmp_path), "2024-01-01", index.days["2024-01-01"])
    m = read_manifest(DataLayout(tmp_path), "XBTUSD", "2024-01-01")
    assert m is not None and pub.written and pub.mode == "new" and pub.desyncs == 0
    assert pub.book_rows == m["rows"]["book"] and pub.trades_rows == m["rows"]["trades"]
    assert m["extra"]["book_check"]["snapshots"] == 1
    assert m["extra"]["book_check"]["first_desync_row"] == -1  # never desynced
    assert m["extra"]["market"]["fingerprint"] == index.days["2024-01-01"].inputs[0]["sha256"]
