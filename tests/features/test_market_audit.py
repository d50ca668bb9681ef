"""Market audit: every statistic on hand-computed tiny event frames, the real capture's
figures pinned, and the `chappie audit market` command."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from core.clock import NS_PER_S
from features.market_audit import (
    MarketReport,
    MidVolatility,
    levels_swept,
    markdown_table,
    market_orders,
    market_report,
    message_mix,
    mid_volatility,
    passive_markouts,
    queue_at_touch,
    spread_ticks,
    touch_series,
    trade_sizes,
    weighted_quantiles,
)
from flows.cli import main
from ingest.events import book_schema, trade_schema

S = NS_PER_S


def _book(rows: list[tuple[float, int, int, int, bool]]) -> pl.DataFrame:
    """(t seconds, side, price, size, is_snapshot) -> canonical book deltas."""
    return pl.DataFrame(
        [(int(t * S), int(t * S), sd, px, sz, sn) for t, sd, px, sz, sn in rows],
        schema=book_schema(),
        orient="row",
    )


def _trades(rows: list[tuple[float, int, int, int]]) -> pl.DataFrame:
    return pl.DataFrame(
        [(int(t * S), int(t * S), sd, px, sz) for t, sd, px, sz in rows],
        schema=trade_schema(),
        orient="row",
    )


# A 1-tick market around 100/101 for 10 s:
#  t=0 snapshot: bid 100 x10, 99 x4; ask 101 x5
#  t=1 bid 100 -> 12 (update)            t=2 ask 102 x3 (insert)
#  t=3 ask 102 -> 0 (delete)             t=4 one message: ask 103 x4 (insert), 103 -> 6
#      (update, judged against the row before it in the same message)
#  t=5 ask 101 deleted (delete; a buy of 5 printed there): bid 100 / ask 103, spread 3
#  t=6 bid 102 x7 (insert): bid 102 / ask 103, mid 102.5
#  t=10 bid 102 -> 8 (update; the end of the data)
BOOK = _book(
    [
        (0, 1, 100, 10, True),
        (0, 1, 99, 4, True),
        (0, -1, 101, 5, True),
        (1, 1, 100, 12, False),
        (2, -1, 102, 3, False),
        (3, -1, 102, 0, False),
        (4, -1, 103, 4, False),
        (4, -1, 103, 6, False),
        (5, -1, 101, 0, False),
        (6, 1, 102, 7, False),
        (10, 1, 102, 8, False),
    ]
)
TRADES = _trades([(5, 1, 101, 2), (5, 1, 101, 3), (8, -1, 102, 1), (8, -1, 101, 1)])


def test_message_mix_classifies_against_the_book_and_skips_snapshots() -> None:
    mix = message_mix(touch_series(BOOK))
    assert (mix.insert, mix.update, mix.delete) == (3, 3, 2)
    assert mix.deltas == 8 and mix.update_share == pytest.approx(3 / 8)


def test_queue_and_spread_are_time_weighted_by_how_long_each_touch_held() -> None:
    ts = touch_series(BOOK)
    # states (touch after each message) and how long they held, seconds:
    # t0 b10 a5 (1) | t1 b12 a5 (1) | t2 (1) | t3 (1) | t4 (1) : spread 1, bid 12, ask 5
    # t5 bid 100 x12 / ask 103 x6, spread 3 (1) | t6 bid 102 x7 / ask 103 x6 (4) | t10 (0)
    assert ts.hold.tolist() == [S] * 6 + [4 * S, 0]
    sp = spread_ticks(ts)
    assert sp.share_1_tick == pytest.approx(9 / 10) and sp.median == 1.0
    assert sp.mean == pytest.approx((9 * 1 + 1 * 3) / 10)
    q = queue_at_touch(ts)
    # pooled seconds per size: 5:5, 6:5, 7:4, 10:1, 12:5 (20 in all; cumulative 5, 10,
    # 14, 15, 20): p10 = 5, median = 6 (cumulative 10 reaches half), p90 = 12
    assert q.p10 == 5.0 and q.median == 6.0 and q.p90 == 12.0
    # heavy side 7:4, 10:1, 12:5 -> median 10; light side 5:5, 6:5 -> median 5
    assert q.heavy_side_median == 10.0 and q.light_side_median == 5.0


def test_weighted_quantiles_hand_computed_and_empty() -> None:
    x, w = np.array([3, 1, 2]), np.array([1, 1, 2])
    assert weighted_quantiles(x, w, (0.25, 0.5, 0.75, 1.0)) == [1.0, 2.0, 2.0, 3.0]
    assert weighted_quantiles(x, np.zeros(3), (0.5,)) == [None]


def test_market_orders_group_prints_by_receive_time_and_side() -> None:
    mo = market_orders(TRADES)
    assert mo.select("side", "levels", "size", "touch_ticks", "prints").rows() == [
        (1, 1, 5, 101, 2),
        (-1, 2, 2, 102, 2),  # a sell: its touch is the highest price it printed at
    ]
    lv = levels_swept(mo)
    assert lv.mean == 1.5 and lv.max == 2 and lv.share_multi == 0.5
    assert lv.counts == {"1": 1, "2": 1, "3": 0, "4+": 0}
    ts = trade_sizes(TRADES, mo)
    assert ts.per_print.n == 4 and ts.per_print.median == 1.5
    assert ts.per_market_order.mean == 3.5


def test_passive_markouts_sign_horizon_and_data_end() -> None:
    ts = touch_series(BOOK)
    mo = market_orders(TRADES)
    out = passive_markouts(ts, mo, horizons_s=(1, 2, 3))
    # the buy at t=5 fills the resting ask; mid before it 100.5 (t4 state), at t=6
    # 102.5 (bid 102 / ask 103): the ask's markout is -(102.5 - 100.5) = -2 ticks;
    # the sell at t=8 fills the resting bid at 102: mid stays 102.5 until t=10: 0
    assert out["1s"].n == 2 and out["1s"].mean_ticks == pytest.approx(-1.0)
    assert out["1s"].vs_fill_ticks == pytest.approx((-(102.5 - 101) + (102.5 - 102)) / 2)
    assert out["1s"].mean_bps == pytest.approx((-2 / 100.5 * 1e4 + 0.0) / 2)
    # at 3 s the sell's horizon (t=11) is past the data's end: only the buy counts
    assert out["3s"].n == 1 and out["3s"].mean_ticks == pytest.approx(-2.0)


def test_mid_volatility_on_a_one_second_grid() -> None:
    ts = touch_series(BOOK)
    vol = mid_volatility(ts, (1, 4, 60))
    mids = np.array([100.5] * 5 + [101.5, 102.5, 102.5, 102.5, 102.5, 102.5])
    assert vol["1s"].n == 10
    assert vol["1s"].ticks == pytest.approx(np.diff(mids).std(ddof=1))
    assert vol["1s"].bps == pytest.approx(np.diff(np.log(mids)).std(ddof=1) * 1e4)
    assert vol["4s"].n == 2 and vol["60s"] == MidVolatility(n=0, bps=None, ticks=None)


def test_a_gap_ends_a_segment_no_statistic_crosses_it() -> None:
    gap = 1000.0  # seconds, beyond max_gap_s
    book = pl.concat([BOOK, _book([(10 + gap, -1, 103, 0, False), (10 + gap, -1, 104, 2, False)])])
    trades = _trades([(10 + gap - 1, 1, 103, 1)])  # a trade in the gap: no state in force
    ts = touch_series(book, max_gap_s=300)
    assert ts.hold[-2] == 0  # the t=10 state does not hold across the gap
    assert len(ts.segments()) == 2 and ts.seconds() == pytest.approx(10.0)
    assert passive_markouts(ts, market_orders(trades))["1s"].n == 0
    assert mid_volatility(ts, (1,))["1s"].n == 10


def test_market_report_on_empty_trades_and_a_markdown_table() -> None:
    rep = market_report(BOOK, _trades([]))
    assert rep.markout["1s"].n == 0 and rep.levels_swept.n == 0
    assert "edge" not in rep.to_json()  # only when asked for
    table = markdown_table({"a": rep, "b": rep})
    assert table.splitlines()[0] == "| statistic | a | b |"
    assert "queue at touch p10 / median / p90" in table


def test_unsorted_book_deltas_raise() -> None:
    with pytest.raises(ValueError, match="sorted"):
        touch_series(BOOK.reverse())


def test_the_real_capture_figures_are_pinned(capture_events_dir) -> None:
    """Golden figures of the 2021-07-22 XBTUSD capture (30 s of orderBookL2 + trades)."""
    from features.audit import load_events

    book, trades, _ = load_events([capture_events_dir])
    rep = market_report(book, trades)
    assert rep.message_mix.insert == 222 and rep.message_mix.update == 1274
    assert rep.message_mix.delete == 216
    q = rep.queue_at_touch
    assert (q.p10, q.median, q.p90) == (100.0, 161_000.0, 1_507_700.0)
    assert q.heavy_side_median == 1_372_800.0 and q.light_side_median == 200.0
    assert rep.spread_ticks.share_1_tick is not None and rep.spread_ticks.share_1_tick > 0.99
    assert rep.levels_swept.max == 6 and rep.levels_swept.n == 5
    mean_ticks = rep.markout["1s"].mean_ticks
    assert mean_ticks is not None and mean_ticks < 0  # adverse selection, as in real markets


def test_cli_audit_market_json_text_and_errors(capture_events_dir, capsys, tmp_path) -> None:
    assert main(["audit", "market", str(capture_events_dir), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["check"] == "market" and rep["market"]["source"] == "ws-recording"
    assert rep["edge"]["feature"] == "imbalance_l1"
    # the JSON is the typed report's dump, and reads back to it
    assert MarketReport.model_validate(rep).to_json() == rep
    assert main(["audit", "market", str(capture_events_dir), "--feature", "spread_ticks"]) == 0
    out = capsys.readouterr().out
    assert "markout 1s ticks" in out and "edge feature measured" in out and "spread_ticks" in out
    assert main(["audit", "market", str(tmp_path)]) == 2
    assert "no event partitions" in capsys.readouterr().err
    assert main(["audit", "market"]) == 2
    assert "EVENTS or --synthetic" in capsys.readouterr().err
    assert main(["audit", "market", str(capture_events_dir), "--feature", "nope"]) == 2
    assert "unknown feature" in capsys.readouterr().err
    # a config whose synthetic market did not make these partitions is refused
    cfg = tmp_path / "m.yaml"
    cfg.write_text("ingest: {synthetic: {model: realistic}}\n")
    assert main(["audit", "market", str(capture_events_dir), "--config", str(cfg)]) == 2
    assert "not the one these partitions" in capsys.readouterr().err


def test_cli_audit_market_shows_the_planted_edge_of_ingested_synthetic_partitions(
    tmp_path, capsys, prefect_harness
) -> None:
    """The partitions record their market's fingerprint; `--config` names the YAML they
    came from and the report shows its planted edge (refused for another market)."""
    from core.config.ingest import IngestConfig
    from core.config.market import PlantedEdgeConfig, SyntheticMarketConfig
    from tests.ingest_runs import run_ingest

    syn = SyntheticMarketConfig(
        model="realistic",
        days=1,
        day_hours=0.3,
        edge=PlantedEdgeConfig(feature="log_return_60s", strength=0.4),
    )
    run_ingest(IngestConfig(synthetic=syn), tmp_path / "data")
    cfg = tmp_path / "m.yaml"
    cfg.write_text(f"ingest:\n  synthetic: {syn.model_dump_json()}\n")
    args = ["audit", "market", str(tmp_path / "data"), "--config", str(cfg), "--json"]
    assert main(args) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["market"]["edge"]["feature"] == "log_return_60s"
    assert rep["market"]["edge"]["strength"] == 0.4 and rep["edge"]["feature"] == "log_return_60s"
    assert rep["markout"]["1s"]["n"] > 100
    other = tmp_path / "other.yaml"
    other.write_text(
        f"ingest:\n  synthetic: {syn.model_copy(update={'seed': 8}).model_dump_json()}\n"
    )
    assert main([*args[:4], str(other)]) == 2
    assert "not the one these partitions" in capsys.readouterr().err
    assert main(["audit", "market", "--synthetic", str(cfg)]) == 0
    assert "log_return_60s (0.4)" in capsys.readouterr().out


def test_cli_audit_fills_sizes_the_quote_in_the_partitions_lot(capture_events_dir, capsys) -> None:
    """`chappie audit fills` without --size quotes one lot of the instrument the events
    were ingested under (XBTUSD: 100 contracts)."""
    assert main(["audit", "fills", str(capture_events_dir), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["size"] == 100 and rep["fills"] >= 0
