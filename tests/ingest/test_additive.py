"""Ingest is idempotent and additive: a day's files arriving in separate runs merge, the
same content under another name or the same exchange trade id is published once, a
re-ingest that dies before its manifest leaves the day as it was, every line is counted
in exactly one of out, rejected or filtered."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from core.config.ingest import IngestConfig
from core.paths import DataLayout
from ingest import events
from ingest.events import read_events, read_manifest, read_trade_ids
from tests.ingest_runs import run_ingest

pytestmark = pytest.mark.usefixtures("prefect_harness")  # ingest runs the production flow

DAY = "2021-07-22"
T = 1_626_912_000_000_000  # DAY 00:00 UTC in us
INC_HEAD = "exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount\n"
TRADES_HEAD = "exchange,symbol,timestamp,local_timestamp,id,side,price,amount\n"
DUMP_TRADE_HEAD = "timestamp,symbol,side,size,price,tickDirection,trdMatchID,grossValue,homeNotional,foreignNotional\n"


def _trades_csv(n: int, start: int = 0, prefix: str = "t") -> str:
    return TRADES_HEAD + "".join(
        f"bitmex,XBTUSD,{T + 100 * i},{T + 100 * i + 1},{prefix}{i},{'buy' if i % 2 else 'sell'},{100 + (i % 7) * 0.5},{i + 1}\n"
        for i in range(start, start + n)
    )


def _book_csv(n: int) -> str:
    rows = [
        f"bitmex,XBTUSD,{T + 10},{T + 11},true,bid,99.5,500\n",
        f"bitmex,XBTUSD,{T + 10},{T + 11},true,ask,110.0,300\n",
    ]
    rows += [
        f"bitmex,XBTUSD,{T + 50 * i},{T + 50 * i + 1},false,bid,99.0,{i}\n" for i in range(1, n)
    ]
    return INC_HEAD + "".join(rows)


def _run(paths: list[Path], data: Path) -> dict:
    rep = run_ingest(IngestConfig(source="tardis", paths=tuple(map(str, paths))), data)
    assert rep.rows_in == rep.rows_out + rep.rows_rejected + rep.rows_filtered
    return rep.model_dump()


def test_trades_then_book_in_another_run_keeps_every_trade(tmp_path: Path) -> None:
    trades, book = tmp_path / "trades.csv", tmp_path / "book.csv.gz"
    trades.write_text(_trades_csv(3000))
    book.write_bytes(gzip.compress(_book_csv(200).encode()))
    data = tmp_path / "data"
    first = _run([trades], data)
    assert first["partitions_written"] == [DAY] and first["rows_out"] == 3000
    second = _run([book], data)
    assert second["partitions_written"] == [DAY] and second["rows_out"] == 201
    b, t = read_events(DataLayout(data), "XBTUSD")
    assert t.height == 3000 and b.height == 201
    m = read_manifest(DataLayout(data), "XBTUSD", DAY)
    assert m is not None and {Path(i["path"]).name for i in m["inputs"]} == {
        "trades.csv",
        "book.csv.gz",
    }
    assert m["book_kind"] == "tardis:incremental_book_L2" and m["extra"]["book_check"]
    # both files again in one run: the day is rebuilt from them, the same bytes
    before = (data / "events" / "XBTUSD" / DAY / "manifest.json").read_bytes()
    third = _run([trades, book], data)
    assert third["partitions_unchanged"] == [DAY] and third["rows_out"] == 3201
    assert (data / "events" / "XBTUSD" / DAY / "manifest.json").read_bytes() == before
    # the order of the runs does not matter for files of different tables
    other = tmp_path / "other"
    _run([book], other)
    _run([trades], other)
    assert read_events(DataLayout(other), "XBTUSD")[1].equals(t)
    assert read_events(DataLayout(other), "XBTUSD")[0].equals(b)


def test_same_file_under_another_name_publishes_each_trade_once(tmp_path: Path) -> None:
    a, b = tmp_path / "a.csv", tmp_path / "copy_of_a.csv"
    a.write_text(_trades_csv(50))
    b.write_bytes(a.read_bytes())
    data = tmp_path / "data"
    both = _run([a, b], data)  # one run: the second is the same content
    assert both["rows_out"] == 50 and both["rows_filtered"] == 50
    assert both["filtered"] == {"same content as a.csv (sha256)": 50}
    assert read_events(DataLayout(data), "XBTUSD")[1].height == 50
    later = _run([b], data)  # another run, the copy alone: already published
    assert later["partitions_unchanged"] == [DAY] and later["partitions_written"] == []
    assert read_events(DataLayout(data), "XBTUSD")[1].height == 50


def test_trades_with_known_exchange_ids_are_not_published_twice(tmp_path: Path) -> None:
    """Other bytes, same trades (a gzip copy, an overlapping download): by trade id."""
    first, overlap = tmp_path / "t1.csv", tmp_path / "t2.csv.gz"
    first.write_text(_trades_csv(40))  # t0..t39
    overlap.write_bytes(gzip.compress(_trades_csv(40, start=20).encode()))  # t20..t59
    data = tmp_path / "data"
    _run([first], data)
    rep = _run([overlap], data)
    assert rep["rows_out"] == 20 and rep["filtered"] == {
        "duplicate trade id (already in the day)": 20
    }
    layout = DataLayout(data)
    t = read_events(layout, "XBTUSD")[1]
    ids = read_trade_ids(layout, "XBTUSD", DAY)
    assert t.height == 60 and ids.n_unique() == 60 and ids.null_count() == 0
    assert t["ts_recv"].is_sorted()
    # the same in one run
    one = tmp_path / "one"
    rep = _run([first, overlap], one)
    assert rep["rows_out"] == 60 and rep["rows_filtered"] == 20
    assert read_events(DataLayout(one), "XBTUSD")[1].equals(t)


def test_a_ws_recording_book_is_not_mixed_into_a_day_holding_a_tardis_book(
    tmp_path: Path, ws_capture: Path
) -> None:
    """One book per day: a poorer (or other) stream arriving later is set aside with
    its reason, unless the run has every input of the day."""
    quotes = tmp_path / "quotes.csv"
    quotes.write_text(
        "exchange,symbol,timestamp,local_timestamp,ask_amount,ask_price,bid_price,bid_amount\n"
        f"bitmex,XBTUSD,{T + 15},{T + 16},10,100.5,100,5\n"
    )
    data = tmp_path / "data"
    _run([quotes], data)
    lines = ws_capture.read_text().splitlines()[:400]
    rec = tmp_path / "rec.txt"
    rec.write_text("\n".join(lines) + "\n")
    rep = run_ingest(IngestConfig(source="ws-recording", paths=(str(rec),)), data)
    (q,) = [q for q in rep.quarantine if q.level == "file"]
    assert "holds tardis:quotes" in q.reason and rep.partitions_written == []
    assert read_events(DataLayout(data), "XBTUSD")[0].height == 2


def test_every_line_is_counted_before_the_symbol_filter(tmp_path: Path) -> None:
    p = tmp_path / "messy.csv"
    body = _trades_csv(5)
    p.write_text(
        body
        + "\n"  # blank
        + "   \n"  # white space only
        + "no commas at all\n"  # comma-less: rejected, whatever its symbol
        + "bitmex,ETHUSD,1,2,x,buy,1,1,ragged\n"  # another symbol but ragged: rejected
        + "bitmex,ETHUSD,1,2,y,buy,1,1\n"  # another symbol: filtered
        + f"bitmex,XBTUSD,{T},{T},z,buy,100.25,1"  # off tick, no final newline
    )
    rep = _run([p], tmp_path / "data")
    assert rep["rows_in"] == len(p.read_text().split("\n")) - 1 == 11
    assert rep["rows_out"] == 5 and rep["rows_rejected"] == 3 and rep["rows_filtered"] == 3
    assert rep["filtered"] == {"blank line": 2, "row of another symbol": 1}
    assert rep["reasons"] == {
        "malformed row: 1 fields, expected 8": 1,
        "malformed row: 9 fields, expected 8": 1,
        "off-tick price (tick 0.5)": 1,
    }


@pytest.mark.parametrize("chunk", [16, 1 << 20])
def test_dump_lines_are_counted_while_streaming(tmp_path: Path, chunk: int) -> None:
    from ingest.rawfile import scan_symbol_lines

    good = "2019-01-01D00:00:0{i}.000000000,{s},Buy,{n},3700.5,PlusTick,m{i},1,0.1,1\n"
    text = (
        DUMP_TRADE_HEAD
        + good.format(i=1, s="XBTUSD", n=5)
        + good.format(i=2, s=".BXBT", n=0)
        + "\n"
        + "garbage without commas\n"
        + "2019-01-01D00:00:03.0,ETHUSD,Buy\n"  # ragged, other symbol
        + "2019-01-01D00:00:04.0,XBTUSD,Buy,1\n"  # ragged, our symbol
        + good.format(i=5, s="XBTUSD", n=7)
    )
    p = tmp_path / "20190101.csv.gz"
    p.write_bytes(gzip.compress(text.encode()))
    scan = scan_symbol_lines(p, "XBTUSD", chunk=chunk)
    assert scan.other == 1 and scan.blank == 1
    assert scan.malformed == {
        "malformed row: 1 fields, expected 10": 1,
        "malformed row: 3 fields, expected 10": 1,
    }
    rep = run_ingest(IngestConfig(source="bitmex-dump", paths=(str(p),)), tmp_path / "data")
    assert rep.rows_in == 7 and rep.rows_out == 2 and rep.rows_rejected == 3
    assert rep.rows_filtered == 2


def test_a_reingest_that_dies_before_its_manifest_leaves_the_day_readable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The manifest rename is the commit point: injected I/O failure just before it."""
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text(_trades_csv(30))
    b.write_text(_trades_csv(10, start=30))
    data = tmp_path / "data"
    layout = DataLayout(data)
    _run([a], data)
    old = read_events(layout, "XBTUSD")
    folder = layout.events_day("XBTUSD", DAY)
    manifest = (folder / "manifest.json").read_bytes()

    def disk_full(*_a: object, **_k: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(events, "write_json_atomic", disk_full)
    with pytest.raises(OSError, match="No space"):
        run_ingest(IngestConfig(source="tardis", paths=(str(b),)), data)
    monkeypatch.undo()
    assert (folder / "manifest.json").read_bytes() == manifest
    now = read_events(layout, "XBTUSD")  # verifies every sha256
    assert now[0].equals(old[0]) and now[1].equals(old[1])
    orphans = {p.name for p in folder.glob("*.parquet")} - set(json.loads(manifest)["outputs"])
    assert orphans  # the new files the dead run wrote, named by no manifest
    for o in orphans:  # age them past the readers' grace period
        os.utime(folder / o, (time.time() - 3600, time.time() - 3600))
    rep = _run([b], data)
    assert rep["partitions_written"] == [DAY]
    assert read_events(layout, "XBTUSD")[1].height == 40
    named = set(json.loads((folder / "manifest.json").read_text())["outputs"])
    old_named = set(json.loads(manifest)["outputs"])
    left = {p.name for p in folder.glob("*.parquet")}
    assert left == named | (old_named - named)  # superseded: kept for the grace period
    assert not list(folder.glob(".*.tmp"))


def test_format_1_partitions_stay_readable(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path)
    folder = layout.events_day("XBTUSD", DAY)
    folder.mkdir(parents=True)
    b = pl.DataFrame(schema=events.book_schema())
    t = pl.DataFrame(
        {
            "ts_event": [T * 1000],
            "ts_recv": [T * 1000],
            "side": [1],
            "price_ticks": [200],
            "size": [3],
        }
    ).cast(events.trade_schema())  # type: ignore[arg-type]
    outputs = {}
    for name, df in (("book.parquet", b), ("trades.parquet", t)):
        events._write_parquet(df, folder / name)
        outputs[name] = events.sha256_file(folder / name)
    (folder / "manifest.json").write_text(
        json.dumps({"outputs": outputs, "rows": {"book": 0, "trades": 1}, "inputs": []})
    )
    rb, rt = read_events(layout, "XBTUSD")
    assert rt.equals(t) and read_trade_ids(layout, "XBTUSD", DAY).null_count() == 1


# the publishing layer itself (what the flow's stage and publish tasks run), so that the
# kills land in staging and publishing rather than in a Prefect server's start-up
_KILLED_RUN = """
import sys
from core.config.ingest import IngestConfig
from ingest.run import publish_staged_day, stage_source
cfg = IngestConfig(source="tardis", paths=(sys.argv[2],))
for day, staged in sorted(stage_source(cfg, sys.argv[1]).days.items()):
    publish_staged_day(cfg, sys.argv[1], day, staged)
"""


@pytest.mark.slow
def test_sigkilled_reingests_never_lose_or_damage_a_published_day(tmp_path: Path) -> None:
    """Crash injection: re-ingests killed at spread-out moments; after each kill the day
    is readable and holds either the old or the new content, never less."""
    a = tmp_path / "a.csv"
    a.write_text(_trades_csv(20000))
    data = tmp_path / "data"
    layout = DataLayout(data)
    _run([a], data)
    old_n = read_events(layout, "XBTUSD")[1].height
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    kills = 0
    for k in range(12):
        b = tmp_path / f"b{k}.csv"
        b.write_text(_trades_csv(20000 + k, start=0, prefix=f"k{k}-"))
        proc = subprocess.Popen(
            [sys.executable, "-c", _KILLED_RUN, str(data), str(b)], env=env, cwd=repo
        )
        time.sleep(1.0 + 0.35 * k)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        _, t = read_events(layout, "XBTUSD")  # sha256-verified
        assert t.height >= old_n
        old_n = t.height
    assert kills >= 3
