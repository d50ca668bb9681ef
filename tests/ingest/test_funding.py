"""Funding-rate history into the funding table (#17): BitMEX's /api/v1/funding JSON and
tardis' derivative_ticker CSV, bad rows quarantined with a reason and counted."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from core.instrument import XBTUSD
from ingest.funding import FundingHistory, funding_table_path, ingest_funding

H = 3_600_000_000_000
DAY0 = 1_626_912_000_000_000_000  # 2021-07-22 00:00 UTC
EIGHT_H = "2000-01-01T08:00:00.000Z"  # BitMEX's fundingInterval encoding


def row(ts: str, rate: object, symbol: str = "XBTUSD", interval: str = EIGHT_H) -> dict:
    daily = rate * 3 if isinstance(rate, float) else rate
    return {
        "timestamp": ts,
        "symbol": symbol,
        "fundingInterval": interval,
        "fundingRate": rate,
        "fundingRateDaily": daily,
    }


# the shape of GET https://www.bitmex.com/api/v1/funding?symbol=XBTUSD&reverse=false
GOOD = [
    row("2021-07-22T04:00:00.000Z", 0.000125),
    row("2021-07-22T12:00:00.000Z", -0.000254),
    row("2021-07-22T20:00:00.000Z", 0.0001),
]


def write_json(path: Path, rows: list) -> Path:
    path.write_text(json.dumps(rows))
    return path


def test_bitmex_funding_json_becomes_the_table(tmp_path: Path) -> None:
    src = write_json(
        tmp_path / "funding.json", GOOD + [row("2021-07-22T04:00:00.000Z", 0.0003, "ETHUSD")]
    )
    rep = ingest_funding([src], tmp_path / "data", "XBTUSD", XBTUSD)
    assert (rep.rows_in, rep.rows_out, rep.rows_rejected, rep.rows_filtered) == (
        4,
        3,
        0,
        1,
    )
    assert rep.filtered == {"other symbol": 1} and rep.quarantine == []
    hist = FundingHistory.load(funding_table_path(tmp_path / "data", "XBTUSD"), "XBTUSD")
    assert hist.ts.tolist() == [DAY0 + 4 * H, DAY0 + 12 * H, DAY0 + 20 * H]
    assert hist.rate.tolist() == [0.000125, -0.000254, 0.0001]
    rates, found = hist.rates_at(np.array([DAY0 + 12 * H, DAY0 + 28 * H, DAY0 + 4 * H]))
    assert found.tolist() == [True, False, True]
    assert rates[0] == -0.000254 and np.isnan(rates[1]) and rates[2] == 0.000125
    # the same file again adds nothing and rewrites nothing
    again = ingest_funding([src], tmp_path / "data", "XBTUSD", XBTUSD)
    assert (again.rows_out, again.table_written) == (0, False)
    assert again.filtered == {"already in the table": 3, "other symbol": 1}


def test_bad_rows_are_quarantined_with_a_reason_and_counted(tmp_path: Path) -> None:
    bad = [
        row("2021-07-22T05:00:00.000Z", 0.0001),  # not 04/12/20 UTC
        row("not a time", 0.0001),
        row("2021-07-23T04:00:00.000Z", "abc"),
        row("2021-07-23T12:00:00.000Z", 0.5),  # 50 % an interval: a unit error
        row("2021-07-23T20:00:00.000Z", 0.0001, interval="2000-01-01T01:00:00.000Z"),
        row("2021-07-22T12:00:00.000Z", 0.0002),  # a second, different rate for 12:00
        "not an object",
    ]
    src = write_json(tmp_path / "funding.json", GOOD + bad)
    rep = ingest_funding([src], tmp_path / "data", "XBTUSD", XBTUSD)
    assert rep.rows_in == 10
    assert (rep.rows_out, rep.rows_rejected, rep.rows_filtered) == (3, 7, 0)
    assert rep.rows_in == rep.rows_out + rep.rows_rejected + rep.rows_filtered
    assert set(rep.rejected) == {
        "not a funding time of XBTUSD",
        "bad timestamp",
        "bad funding rate",
        "implausible funding rate (|rate| > 0.05)",
        "funding interval 1 h is not XBTUSD's 8 h",
        "a second rate for this funding time (-0.000254)",
        "not an object",
    }
    (q,) = rep.quarantine
    reason = json.loads((Path(q.where) / "reason.json").read_text())
    assert reason["rows_rejected"] == 7 and len(reason["rejected_rows_sample"]) == 7
    # a later file disagreeing with the table is rejected, the table keeps its rate
    other = write_json(tmp_path / "other.json", [row("2021-07-22T04:00:00.000Z", 0.0009)])
    rep2 = ingest_funding([other], tmp_path / "data", "XBTUSD", XBTUSD)
    assert rep2.rejected == {"conflicts with the table's rate 0.000125": 1}
    hist = FundingHistory.load(funding_table_path(tmp_path / "data", "XBTUSD"), "XBTUSD")
    assert hist.rate[0] == 0.000125


def test_an_unreadable_file_is_quarantined_whole_not_fatal(tmp_path: Path) -> None:
    junk = tmp_path / "junk.csv"
    junk.write_text("a,b,c\n1,2,3\n")
    good = write_json(tmp_path / "funding.json", GOOD)
    rep = ingest_funding([junk, good], tmp_path / "data", "XBTUSD", XBTUSD)
    assert (rep.files_in, rep.files_ok, rep.files_quarantined) == (2, 1, 1)
    assert rep.quarantine[0].level == "file"
    assert (Path(rep.quarantine[0].where) / "junk.csv").exists()
    assert rep.rows_out == 3


TARDIS_HEADER = (
    "exchange,symbol,timestamp,local_timestamp,funding_timestamp,funding_rate,"
    "predicted_funding_rate,open_interest,last_price,index_price,mark_price"
)


def test_tardis_derivative_ticker_takes_the_last_rate_announced_before_each_time(
    tmp_path: Path,
) -> None:
    us = 1000  # ns per microsecond
    f4, f12 = (DAY0 + 4 * H) // us, (DAY0 + 12 * H) // us
    lines = [
        TARDIS_HEADER,
        f"bitmex,XBTUSD,{f4 - 60_000_000},{f4 - 59_000_000},{f4},0.0001,0.0002,1,1,1,1",
        f"bitmex,XBTUSD,{f4 - 1_000_000},{f4 - 900_000},{f4},0.00012,0.0002,1,1,1,1",
        f"bitmex,ETHUSD,{f4 - 1_000_000},{f4 - 900_000},{f4},0.0005,0.0002,1,1,1,1",
        f"bitmex,XBTUSD,{f4 + 1_000_000},{f4 + 1_100_000},{f4},0.00012,0.0002,1,1,1,1",
        f"bitmex,XBTUSD,{f4 + 2_000_000},{f4 + 2_100_000},{f12},-0.0003,0.0001,1,1,1,1",
        f"bitmex,XBTUSD,{f4 + 3_000_000},{f4 + 3_100_000},{f12},oops,0.0001,1,1,1,1",
    ]
    src = tmp_path / "bitmex_derivative_ticker_2021-07-22_XBTUSD.csv.gz"
    src.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    rep = ingest_funding([src], tmp_path / "data", "XBTUSD", XBTUSD)
    assert rep.rows_in == 6
    assert (rep.rows_out, rep.rows_rejected, rep.rows_filtered) == (2, 1, 3)
    assert rep.filtered == {
        "announced after its funding time": 1,
        "other symbol": 1,
        "superseded by a later announcement": 1,
    }
    hist = FundingHistory.load(funding_table_path(tmp_path / "data", "XBTUSD"), "XBTUSD")
    assert hist.ts.tolist() == [DAY0 + 4 * H, DAY0 + 12 * H]
    assert hist.rate.tolist() == [0.00012, -0.0003]


def test_a_table_of_another_symbol_is_refused(tmp_path: Path) -> None:
    rows = [row("2021-07-22T04:00:00.000Z", 0.0001, "ETHUSD")]
    ingest_funding([write_json(tmp_path / "f.json", rows)], tmp_path, "ETHUSD", XBTUSD)
    with pytest.raises(ValueError, match="ETHUSD, not XBTUSD"):
        FundingHistory.load(funding_table_path(tmp_path, "ETHUSD"), "XBTUSD")
    with pytest.raises(FileNotFoundError, match="chappie ingest funding"):
        FundingHistory.load(tmp_path / "none.parquet", "XBTUSD")


def test_chappie_ingest_funding_writes_the_table_and_reports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from flows.cli import build_parser

    src = write_json(tmp_path / "funding.json", GOOD + [row("2021-07-22T05:00:00.000Z", 0.0001)])
    data = tmp_path / "data"
    args = build_parser().parse_args(
        ["ingest", "funding", str(src), "--data-dir", str(data), "--json"]
    )
    assert args.func(args) == 0
    rep = json.loads(capsys.readouterr().out)
    assert (rep["rows_out"], rep["rows_rejected"]) == (3, 1)
    assert set(rep) == {  # the report's keys (FundingReport's dump), as before it was typed
        *("source", "symbol", "files_in", "files_ok", "files_quarantined", "rows_in"),
        *("rows_out", "rows_rejected", "rows_filtered", "rejected", "filtered", "quarantine"),
        *("table", "table_rows", "table_written", "first_funding_ns", "last_funding_ns"),
    }
    assert rep["table"] == str(funding_table_path(data, "XBTUSD"))
    args = build_parser().parse_args(["ingest", "funding", str(src), "--data-dir", str(data)])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "rows:  in 4, out 0, rejected 1, filtered 3" in out and "(3 funding times)" in out
    assert "not a funding time of XBTUSD [1 rows]" in out
    args = build_parser().parse_args(["ingest", "funding", str(tmp_path / "missing.json")])
    assert args.func(args) == 2
    assert "no such file" in capsys.readouterr().err


def test_funding_is_on_by_default_when_the_data_has_its_history(tmp_path: Path) -> None:
    """#17: a data folder holding the symbol's funding table turns funding on, from it, in
    every trial that did not say otherwise; without one nothing changes."""
    from core.config.experiment import ExperimentConfig
    from ingest.funding import with_funding_history

    cfg = ExperimentConfig.model_validate(
        {"sweep": {"trials": [{"name": "a"}, {"name": "off", "env": {"funding": False}}]}}
    )
    data = tmp_path / "data"
    assert with_funding_history(cfg, data) == cfg  # no table: unchanged
    ingest_funding([write_json(tmp_path / "f.json", GOOD)], data, "XBTUSD", XBTUSD)
    on = with_funding_history(cfg, data)
    a, off = on.sweep.trials
    assert a.env.funding and a.env.funding_rates_path == str(funding_table_path(data, "XBTUSD"))
    assert not off.env.funding and off.env.funding_rates_path is None
    assert with_funding_history(on, data) == on
