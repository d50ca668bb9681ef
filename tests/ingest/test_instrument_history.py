"""The instrument history: read from BitMEX `instrument` messages (as tardis records its
channel) and from tardis instrument metadata, the contract of each day, and the ingest
recording each day under its own contract (XBTUSD's tick 0.5 -> 0.1 USD on 2024-07-31
04:00 UTC)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.config.ingest import IngestConfig
from core.config.market import SyntheticMarketConfig
from core.instrument import XBTUSD, InstrumentSpec
from core.paths import DataLayout
from ingest.events import read_events, read_manifest
from ingest.instrument_history import (
    InstrumentHistory,
    InstrumentRecord,
    day_of_file,
    history_path,
    ingest_configs,
    load_stored_history,
    paths_by_contract,
    read_instrument_history,
)

CHANGE = "2024-07-31T04:00:00.000Z"


def _instrument_lines() -> str:
    """tardis's `instrument` channel of bitmex: `<localTimestamp> <message>` lines; a
    partial with the whole object, updates with the changed fields only."""
    partial = {
        "table": "instrument",
        "action": "partial",
        "data": [
            {
                "symbol": "XBTUSD",
                "timestamp": "2024-07-30T00:00:00.000Z",
                "tickSize": 0.5,
                "lotSize": 100,
                "isInverse": True,
                "multiplier": -100000000,
                "makerFee": -0.0001,
                "takerFee": 0.00075,
                "fundingInterval": "2000-01-01T08:00:00.000Z",
                "fundingTimestamp": "2024-07-30T04:00:00.000Z",
                "settlCurrency": "XBt",
                "markPrice": 66000.1,
            },
            {"symbol": "ETHUSD", "timestamp": "2024-07-30T00:00:00.000Z", "tickSize": 0.05},
        ],
    }
    mark = {  # not a contract field: no new record
        "table": "instrument",
        "action": "update",
        "data": [{"symbol": "XBTUSD", "timestamp": "2024-07-30T12:00:00.000Z", "markPrice": 1.0}],
    }
    tick = {
        "table": "instrument",
        "action": "update",
        "data": [{"symbol": "XBTUSD", "timestamp": CHANGE, "tickSize": 0.1}],
    }
    return "".join(
        f"{ts} {json.dumps(m)}\n"
        for ts, m in (
            ("2024-07-30T00:00:00.1234567Z", partial),
            ("2024-07-30T12:00:00.0012345Z", mark),
            ("2024-07-31T04:00:00.0100000Z", tick),
        )
    )


@pytest.fixture
def history(tmp_path: Path) -> InstrumentHistory:
    path = tmp_path / "bitmex_instrument_XBTUSD.json"
    path.write_text(_instrument_lines())
    return read_instrument_history(path, "XBTUSD")


def test_instrument_messages_give_one_record_per_contract_change(history) -> None:
    assert [r.spec.tick_size for r in history.records] == [0.5, 0.1]
    first = history.records[0].spec
    assert (first.lot_size, first.is_inverse, first.funding_offset_hours) == (100, True, 4.0)
    assert first.contract() == XBTUSD.contract()
    [(when, before, after)] = history.tick_changes()
    assert (before, after) == (0.5, 0.1) and history.spec_at(when - 1).tick_size == 0.5
    assert history.spec_at(when).tick_size == 0.1


def test_the_day_of_a_change_takes_the_contract_at_its_end(history) -> None:
    assert history.spec_for_day("2024-07-30").tick_size == 0.5
    # 04:00 UTC: the first four hours' prices (0.5 grid) are on the 0.1 grid too
    assert history.spec_for_day("2024-07-31").tick_size == 0.1
    assert history.spec_for_day("2025-01-01").tick_size == 0.1
    with pytest.raises(ValueError, match="no instrument record of XBTUSD"):
        history.spec_for_day("2024-07-29")
    # the other way round, the earlier prices would be off the later grid: refused
    coarser = InstrumentHistory(
        symbol="XBTUSD",
        records=(
            InstrumentRecord(from_ns=None, spec=XBTUSD.model_copy(update={"tick_size": 0.1})),
            InstrumentRecord(from_ns=history.tick_changes()[0][0], spec=XBTUSD),
        ),
    )
    with pytest.raises(ValueError, match="tick size changes within 2024-07-31 from 0.1 to 0.5"):
        coarser.spec_for_day("2024-07-31")


def test_tardis_metadata_changes_give_the_eras_before_each_until(tmp_path: Path) -> None:
    meta = {
        "id": "XBTUSD",
        "exchange": "bitmex",
        "priceIncrement": 0.1,
        "amountIncrement": 100,
        "makerFee": -0.0001,
        "takerFee": 0.00075,
        "inverse": True,
        "contractMultiplier": 1,
        "changes": [
            {"until": CHANGE, "priceIncrement": 0.5},
            {"until": "2021-06-08T04:30:00.000Z", "amountIncrement": 1},
        ],
    }
    path = tmp_path / "meta.json"
    path.write_text(json.dumps(meta))
    h = read_instrument_history(path, "XBTUSD")
    assert [(r.spec.tick_size, r.spec.lot_size) for r in h.records] == [
        (0.5, 1),
        (0.5, 100),
        (0.1, 100),
    ]
    assert h.records[0].from_ns is None
    assert h.spec_for_day("2021-06-07").lot_size == 1
    assert h.spec_for_day("2024-07-30").tick_size == 0.5
    with pytest.raises(ValueError, match="describes 'XBTUSD', not 'ETHUSD'"):
        read_instrument_history(path, "ETHUSD")


def test_files_are_grouped_by_the_contract_of_their_day(history) -> None:
    paths = [
        "raw/bitmex_trades_2024-07-31_XBTUSD.csv.gz",
        "raw/bitmex_trades_2024-07-30_XBTUSD.csv.gz",
        "raw/20240801.csv.gz",
    ]
    assert day_of_file(paths[2]) == "2024-08-01" and day_of_file("book.csv") is None
    groups = paths_by_contract(paths, history)
    assert [(s.tick_size, p) for s, p in groups] == [
        (0.5, (paths[1],)),
        (0.1, (paths[0], paths[2])),
    ]
    with pytest.raises(ValueError, match="book.csv: the instrument history of XBTUSD changes"):
        paths_by_contract(["book.csv"], history)
    # one contract: nothing to tell apart
    assert paths_by_contract(["book.csv"], InstrumentHistory.constant(XBTUSD)) == [
        (XBTUSD, ("book.csv",))
    ]
    # the synthetic market is one instrument: its days may not span a change
    syn = IngestConfig(synthetic=SyntheticMarketConfig(start_day="2024-07-30", days=2))
    with pytest.raises(ValueError, match="contract change on 2024-07-31"):
        ingest_configs(syn, history)
    one = ingest_configs(
        syn.model_copy(update={"synthetic": SyntheticMarketConfig(start_day="2024-08-01", days=2)}),
        history,
    )
    assert [c.instrument.tick_size for c in one] == [0.1]


TRADES_HEAD = "exchange,symbol,timestamp,local_timestamp,id,side,price,amount\n"


def _trades(day_us: int, prices: list[float], prefix: str) -> str:
    return TRADES_HEAD + "".join(
        f"bitmex,XBTUSD,{day_us + 1000 * i},{day_us + 1000 * i + 1},{prefix}{i},buy,{p},100\n"
        for i, p in enumerate(prices)
    )


@pytest.mark.usefixtures("prefect_harness")
def test_ingest_records_each_days_contract_from_the_history(history, tmp_path: Path) -> None:
    """Day files before and after the tick change, in one run: each day is read with its
    own tick (0.1 prices are not off-tick on the new day) and its partition records its
    contract; the history is stored beside the events and used by a later run."""
    from flows.ingest import ingest_flow

    d30, d31 = 1_722_297_600_000_000, 1_722_384_000_000_000  # 00:00 UTC, us
    a = tmp_path / "bitmex_trades_2024-07-30_XBTUSD.csv"
    b = tmp_path / "bitmex_trades_2024-07-31_XBTUSD.csv"
    a.write_text(_trades(d30, [66000.5, 66001.0, 66000.0], "a"))
    b.write_text(_trades(d31 + 5 * 3600 * 10**6, [66000.3, 66000.1, 66001.0], "b"))
    data = tmp_path / "data"
    cfg = IngestConfig(source="tardis", paths=(str(a), str(b)))
    report = ingest_flow(cfg, str(data), history=history).report
    assert report.rows_out == 6 and report.rows_rejected == 0 and report.files_in == 2
    assert report.partitions_written == ["2024-07-30", "2024-07-31"]
    layout = DataLayout(data)
    ticks = {}
    for day in ("2024-07-30", "2024-07-31"):
        m = read_manifest(layout, "XBTUSD", day)
        assert m is not None
        ticks[day] = InstrumentSpec.model_validate(m["instrument"]).tick_size
    assert ticks == {"2024-07-30": 0.5, "2024-07-31": 0.1}
    _, trades = read_events(layout, "XBTUSD")
    assert trades["price_ticks"].to_list() == [132001, 132002, 132000, 660003, 660001, 660010]
    assert history_path(layout, "XBTUSD").exists()
    assert load_stored_history(layout, "XBTUSD") == history
    # a later run (the nightly) gives no history: the stored one decides the day's tick
    c = tmp_path / "bitmex_trades_2024-08-01_XBTUSD.csv"
    c.write_text(_trades(d31 + 86_400 * 10**6, [66000.7], "c"))
    later = ingest_flow(IngestConfig(source="tardis", paths=(str(c),)), str(data)).report
    assert later.rows_out == 1 and later.rows_rejected == 0
    m = read_manifest(layout, "XBTUSD", "2024-08-01")
    assert m is not None and m["instrument"]["tick_size"] == 0.1
    # without the history, the same 0.1 prices under the configured 0.5 are off-tick
    bare = ingest_flow(cfg, str(tmp_path / "bare")).report
    assert bare.rows_rejected == 2


def test_timestamped_rest_objects_and_the_stored_history_read_back(history, tmp_path) -> None:
    """A list of BitMEX instrument objects taken over time (`GET /api/v1/instrument`)
    gives the same history as the messages; the stored JSON reads back as itself."""
    first_line = _instrument_lines().splitlines()[0]
    xbt = json.loads(first_line.split(" ", 1)[1])["data"][0]
    objs = [xbt, {**xbt, "timestamp": CHANGE, "tickSize": 0.1}]
    path = tmp_path / "rest.json"
    path.write_text(json.dumps(objs))
    assert read_instrument_history(path, "XBTUSD") == history
    stored = tmp_path / "history.json"
    stored.write_text(history.model_dump_json())
    assert read_instrument_history(stored, "XBTUSD") == history
    with pytest.raises(ValueError, match="no instrument record of 'ETHUSD'"):
        read_instrument_history(path, "ETHUSD")


def _cli(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """`chappie ARGV` as a user runs it, on a data folder of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "CHAPPIE_"))}
    env.update(
        CHAPPIE_DATA_DIR=str(tmp_path / "data"),
        PREFECT_HOME=str(tmp_path / "prefect"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="90",
    )
    chappie = Path(sys.executable).with_name("chappie")
    return subprocess.run(
        [str(chappie), *argv], env=env, capture_output=True, text=True, timeout=300
    )


def test_chappie_ingest_takes_the_instrument_history_file(tmp_path: Path) -> None:
    """`chappie ingest tardis FILES --instrument-history FILE`: the two days across the
    tick change are read with their own ticks and recorded under their contracts."""
    hist = tmp_path / "bitmex_instrument_XBTUSD.json"
    hist.write_text(_instrument_lines())
    d30, d31 = 1_722_297_600_000_000, 1_722_384_000_000_000
    a = tmp_path / "bitmex_trades_2024-07-30_XBTUSD.csv"
    b = tmp_path / "bitmex_trades_2024-07-31_XBTUSD.csv"
    a.write_text(_trades(d30, [66000.5, 66001.0], "a"))
    b.write_text(_trades(d31 + 5 * 3600 * 10**6, [66000.3, 66000.1], "b"))
    out = _cli(
        tmp_path, "ingest", "tardis", str(a), str(b), "--instrument-history", str(hist), "--json"
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["rows_out"] == 4 and report["rows_rejected"] == 0
    layout = DataLayout(tmp_path / "data")
    ticks = [
        read_manifest(layout, "XBTUSD", d)["instrument"]["tick_size"]
        for d in ("2024-07-30", "2024-07-31")
    ]  # type: ignore[index]
    assert ticks == [0.5, 0.1]
    assert history_path(layout, "XBTUSD").exists()


def test_a_history_without_the_symbol_is_one_line_before_prefect(tmp_path: Path) -> None:
    hist = tmp_path / "other.json"
    hist.write_text(json.dumps([{"symbol": "ETHUSD", "timestamp": "2024-07-30T00:00:00Z"}]))
    day = tmp_path / "bitmex_trades_2024-07-30_XBTUSD.csv"
    day.write_text(_trades(1_722_297_600_000_000, [66000.5], "a"))
    out = _cli(tmp_path, "ingest", "tardis", str(day), "--instrument-history", str(hist))
    assert out.returncode == 2
    err = out.stderr.strip().splitlines()
    assert len(err) == 1 and "--instrument-history" in err[0] and "XBTUSD" in err[0], err
    assert not any((tmp_path / "prefect").iterdir())  # no Prefect server started
