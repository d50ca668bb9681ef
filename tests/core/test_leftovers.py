"""Temp files of crashed runs: removed by age, or at any age under the folder's lock;
a live writer's fresh temp file and ordinary files are never touched."""

from __future__ import annotations

import os
import time
from pathlib import Path

from core.leftovers import remove_stale_temps
from core.paths import DataLayout


def _aged(p: Path, seconds: float) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"x")
    t = time.time() - seconds
    os.utime(p, (t, t))
    return p


def test_only_temp_files_older_than_the_margin_are_removed(tmp_path: Path) -> None:
    old = _aged(tmp_path / ".manifest.json.abc.tmp", 7200)
    fresh = _aged(tmp_path / ".manifest.json.def.tmp", 5)
    keep = _aged(tmp_path / "manifest.json", 7200)
    deep = _aged(tmp_path / "sub" / ".x.tmp", 7200)
    assert remove_stale_temps(tmp_path) == [old]
    assert fresh.exists() and keep.exists() and deep.exists()
    assert remove_stale_temps(tmp_path, recursive=True) == [deep]
    assert remove_stale_temps(tmp_path, min_age_s=0) == [fresh]  # under the lock
    assert remove_stale_temps(tmp_path / "missing") == []


def test_a_symlink_named_like_a_temp_file_is_not_followed(tmp_path: Path) -> None:
    target = _aged(tmp_path / "outside" / "precious", 7200)
    link = tmp_path / "d" / ".evil.tmp"
    link.parent.mkdir()
    link.symlink_to(target)
    remove_stale_temps(tmp_path / "d", min_age_s=0)
    assert target.exists()


def test_ingest_start_removes_a_crashed_runs_temp_files(
    tmp_path: Path, prefect_harness: None
) -> None:
    from core.config.ingest import IngestConfig
    from tests.ingest_runs import run_ingest

    layout = DataLayout(tmp_path)
    q = _aged(tmp_path / "quarantine" / "tardis" / "ab12" / ".reason.json.x1.tmp", 7200)
    e = _aged(layout.events_day("XBTUSD", "2020-01-02") / ".book.parquet.x2.tmp", 7200)
    live = _aged(layout.events_day("XBTUSD", "2020-01-02") / ".book.parquet.x3.tmp", 1)
    # the day this run publishes: its publish holds the lock, so any age goes
    locked = _aged(layout.events_day("XBTUSD", "2020-01-01") / ".trades.parquet.x4.tmp", 1)
    raw = tmp_path / "trades.csv"
    raw.write_text(
        "exchange,symbol,timestamp,local_timestamp,id,side,price,amount\n"
        "bitmex,XBTUSD,1577836800000000,1577836800000001,a,buy,7000.5,10\n"
    )
    rep = run_ingest(IngestConfig(source="tardis", paths=(str(raw),)), tmp_path)
    assert rep.partitions_written == ["2020-01-01"]
    assert not q.exists() and not e.exists() and live.exists() and not locked.exists()
