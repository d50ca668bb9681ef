"""Event partitions: atomic publish, manifest, idempotence, concurrency, read back."""

from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

import polars as pl
import pytest

from core.clock import parse_day
from core.config.ingest import IngestConfig
from core.config.market import SyntheticMarketConfig
from core.instrument import InstrumentSpec
from core.paths import DataLayout
from ingest.events import (
    PartitionError,
    empty_book,
    empty_trades,
    list_event_days,
    manifest_sha256,
    publish_partition,
    read_events,
    read_manifest,
)
from ingest.run import publish_staged_day, stage_source
from ingest.synthetic import generate_market

DAY = "2024-01-01"
T0 = parse_day(DAY)
TINY = SyntheticMarketConfig(seed=1, days=2, day_hours=0.25)


def _day0() -> tuple[pl.DataFrame, pl.DataFrame]:
    _, b, t = next(generate_market(TINY.model_copy(update={"days": 1})))
    return b, t


def test_publish_partition_writes_files_and_manifest_last(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path)
    b, t = _day0()
    res = publish_partition(
        layout, "XBTUSD", DAY, b, t, InstrumentSpec(), "synthetic", [{"path": "x", "sha256": "a"}]
    )
    assert res.written
    m = read_manifest(layout, "XBTUSD", DAY)
    assert m is not None and m["rows"] == {"book": b.height, "trades": t.height}
    assert m["instrument"]["tick_size"] == 0.5 and m["code_version"]
    assert m["time_span"]["ts_recv_min"] == T0
    rb, rt = read_events(layout, "XBTUSD")
    assert rb.equals(b) and rt.equals(t)
    assert list_event_days(layout, "XBTUSD") == [DAY]


def test_publish_partition_same_inputs_changes_no_byte(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path)
    b, t = _day0()
    args = (
        layout,
        "XBTUSD",
        DAY,
        b,
        t,
        InstrumentSpec(),
        "synthetic",
        [{"path": "x", "sha256": "a"}],
    )
    publish_partition(*args)
    folder = layout.events_day("XBTUSD", DAY)
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.iterdir()}
    sha = manifest_sha256(layout, "XBTUSD", DAY)
    assert not publish_partition(*args).written
    after = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.iterdir()}
    assert before == after and sha == manifest_sha256(layout, "XBTUSD", DAY)


def test_publish_partition_new_inputs_rewrite_and_damaged_file_is_detected(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path)
    b, t = _day0()
    publish_partition(
        layout, "XBTUSD", DAY, b, t, InstrumentSpec(), "synthetic", [{"path": "x", "sha256": "a"}]
    )
    res = publish_partition(
        layout,
        "XBTUSD",
        DAY,
        b.head(100),
        t,
        InstrumentSpec(),
        "synthetic",
        [{"path": "x", "sha256": "b"}],
    )
    assert res.written and read_events(layout, "XBTUSD")[0].height == 100
    m = read_manifest(layout, "XBTUSD", DAY)
    assert m is not None
    p = layout.events_day("XBTUSD", DAY) / m["files"]["trades"]
    p.write_bytes(p.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(PartitionError, match="sha256"):
        read_events(layout, "XBTUSD")


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda b: b.reverse(), "ts_recv order"),
        (lambda b: b.with_columns(pl.col("side").cast(pl.Int64)), "dtype"),
        (lambda b: b.drop("is_snapshot"), "columns"),
        (lambda b: b.with_columns(pl.col("ts_recv") + 86_400 * 10**9), "outside day"),
        (lambda b: b.with_columns(pl.lit(2, dtype=pl.Int8).alias("side")), "side"),
    ],
)
def test_publish_partition_rejects_non_canonical_frames(tmp_path: Path, mutate, match: str) -> None:  # type: ignore[no-untyped-def]
    b, t = _day0()
    with pytest.raises(PartitionError, match=match):
        publish_partition(
            DataLayout(tmp_path), "XBTUSD", DAY, mutate(b), t, InstrumentSpec(), "synthetic", []
        )
    assert read_manifest(DataLayout(tmp_path), "XBTUSD", DAY) is None


def test_read_events_missing_day_raises_and_empty_symbol_is_empty(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path)
    b, t = read_events(layout, "XBTUSD")
    assert b.height == 0 and b.schema == empty_book().schema and t.schema == empty_trades().schema
    with pytest.raises(FileNotFoundError):
        read_events(layout, "XBTUSD", ["2024-01-09"])


def _run_ingest(root: str) -> str:
    """Stage and publish (the flow's tasks, without the flow's folder lock: the
    publishing layer must keep a partition intact by itself)."""
    cfg = IngestConfig(synthetic=TINY)
    index = stage_source(cfg, root)
    written = [publish_staged_day(cfg, root, d, s).written for d, s in sorted(index.days.items())]
    return json.dumps(written)


def test_two_concurrent_ingest_runs_on_same_partitions_leave_them_intact(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    with ctx.Pool(2) as pool:
        pool.map(_run_ingest, [str(tmp_path), str(tmp_path)])
    layout = DataLayout(tmp_path)
    assert list_event_days(layout, "XBTUSD") == ["2024-01-01", "2024-01-02"]
    b, t = read_events(layout, "XBTUSD")  # verifies every sha256 against its manifest
    expect = list(generate_market(TINY))
    assert b.equals(pl.concat([x[1] for x in expect])) and t.equals(
        pl.concat([x[2] for x in expect])
    )


def test_code_version_covers_the_book_replay_and_every_named_file_exists() -> None:
    from ingest.events import code_files, code_version

    files = code_files()
    assert all(f.is_file() for f in files), [str(f) for f in files if not f.is_file()]
    assert {f.relative_to(f.parents[1]).as_posix() for f in files} >= {
        "book/order_book.py",
        "core/schema.py",
        "ingest/events.py",
    }
    assert len(code_version()) == 16
