"""The features stage refuses a spec the data's book depth cannot feed (#19)."""

from __future__ import annotations

import polars as pl
import pytest

from core import schema as S
from core.config.features import FeatureSpec
from features.depth_check import (
    DayDepth,
    DepthError,
    check_depth,
    levels_held,
    levels_needed,
)


def _bars(levels: int, n: int = 10, depth: int = 10, thin_every: int = 0) -> pl.DataFrame:
    """n bars whose first `levels` levels have prices on both sides (every `thin_every`-th
    bar lacks its deepest level)."""
    cols: dict[str, list[int]] = {}
    for i in range(depth):
        bid = [1000 - i if i < levels else 0 for _ in range(n)]
        ask = [1001 + i if i < levels else 0 for _ in range(n)]
        if thin_every and i == levels - 1:
            bid = [0 if k % thin_every == 0 else b for k, b in enumerate(bid)]
        cols[S.bid_px(i)] = bid
        cols[S.ask_px(i)] = ask
    return pl.DataFrame(cols)


def test_levels_needed_names_the_depth_features() -> None:
    need = levels_needed(FeatureSpec())
    assert need["imbalance_l5"] == 5 and need["imbalance_l10"] == 10
    assert need["depth_bid_10bps"] == need["depth_ask_10bps"] == 10
    assert "imbalance_l1" not in need and "spread_ticks" not in need


def test_levels_held_counts_levels_present_in_most_bars() -> None:
    assert levels_held(_bars(10), 10) == 10
    assert levels_held(_bars(1), 10) == 1  # a top-of-book source
    assert levels_held(_bars(10, thin_every=3), 10) == 10  # level 10 missing in 4 of 10 bars
    assert levels_held(_bars(10, thin_every=1), 10) == 9  # never there
    assert levels_held(_bars(10).head(0), 10) == 0


def test_a_top_of_book_source_is_refused_with_features_days_and_source() -> None:
    spec = FeatureSpec()
    days = {"2019-01-01": _bars(10), "2019-01-02": _bars(1), "2019-01-03": _bars(1)}
    sources = {d: "bitmex-dump:quote" for d in days}
    with pytest.raises(DepthError) as e:
        check_depth(spec, [DayDepth(d, levels_held(b, 10), sources[d]) for d, b in days.items()])
    msg = str(e.value)
    assert "needs 10 book levels" in msg and "2 day(s) hold fewer: 2019-01-02 holds 1" in msg
    assert "imbalance_l5" in msg and "imbalance_l10" in msg and "depth_bid_10bps" in msg
    assert "bitmex-dump:quote" in msg and "\n" not in msg


def test_full_depth_days_pass() -> None:
    check_depth(FeatureSpec(), [DayDepth("2024-01-01", levels_held(_bars(10), 10), None)])
    check_depth(FeatureSpec(), [])  # nothing to check


def test_a_bars_index_is_measured_day_by_day(tmp_path) -> None:
    """The features flow's check: day parts of a bars index, read by the deepest level."""
    import json

    from features.depth_check import check_bars_index

    parts = []
    for day, levels in (("2024-01-01", 10), ("2024-01-02", 5)):
        f = tmp_path / "days" / f"{day}.arrow"
        f.parent.mkdir(exist_ok=True)
        _bars(levels).write_ipc(f)
        parts.append({"day": day, "file": f"days/{day}.arrow", "rows": 10})
    index = tmp_path / "bars-x.json"
    index.write_text(json.dumps({"parts": parts}))
    with pytest.raises(DepthError, match=r"2024-01-02 holds 5 \(source tardis:book_snapshot\)"):
        check_bars_index(index, FeatureSpec(), {"2024-01-02": "tardis:book_snapshot"})
    parts[1]["rows"] = 0  # an empty part is not a day to judge
    index.write_text(json.dumps({"parts": parts}))
    assert check_bars_index(index, FeatureSpec(), {}) == [DayDepth("2024-01-01", 10, None)]


def test_a_day_ending_in_a_short_tail_part_is_measured_as_one_day(tmp_path) -> None:
    """The last day of a bars index ends in a tail part (the bar at the next midnight);
    one bar of 9 levels there is not a day of 9 levels (found on the planted-edge market,
    seed 7: its stress day was refused for its last bar)."""
    import json

    from features.depth_check import check_bars_index

    _bars(10).write_ipc(tmp_path / "day.arrow")
    _bars(9, n=1).write_ipc(tmp_path / "tail.arrow")
    parts = [
        {"day": "2024-01-05", "file": "day.arrow", "rows": 10},
        {"day": "2024-01-05", "file": "tail.arrow", "rows": 1},
    ]
    index = tmp_path / "bars-x.json"
    index.write_text(json.dumps({"parts": parts}))
    assert check_bars_index(index, FeatureSpec(), {}) == [DayDepth("2024-01-05", 10, None)]
    parts[0]["rows"] = 0  # the tail alone is all the day holds: 9 levels
    index.write_text(json.dumps({"parts": parts}))
    with pytest.raises(DepthError, match="2024-01-05 holds 9"):
        check_bars_index(index, FeatureSpec(), {})
