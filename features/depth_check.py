"""Refuse a FeatureSpec the data cannot feed: book depth.

Some sources carry only the top of the book (BitMEX's public `quote` dumps, tardis
`quotes`, the websocket `quote` table): sampled to a 10-level bar, levels 2-10 stay
empty and the depth features (`imbalance_l5`, `imbalance_l10`, `depth_*bps`) quietly
become level-1 features, or zero. Rather than train on that, the features stage measures
how many levels each day's bars really hold and refuses the spec with one message that
names the features, the days and their source.

A level counts as present in a bar when both sides have a price there; a day holds k
levels when levels 1..k are present in at least `MIN_SHARE` of its bars (a thin real
book may lack a deep level now and then; a top-of-book source never has one). Pure.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from core import schema as S
from core.config.features import FeatureSpec
from core.paths import DataLayout
from features.slices import SliceBuildError
from ingest.events import list_event_days, read_manifest
from ingest.report import BOOK_KIND_LEVELS

MIN_SHARE = 0.5  # a level is held when both sides have it in at least half the bars


class DepthError(SliceBuildError):
    """The spec needs more book levels than the data holds (one line for the user)."""


def levels_needed(spec: FeatureSpec) -> dict[str, int]:
    """Feature -> book levels per side it reads, for the features that read beyond the
    touch (`features.compute`): the weighted imbalances their level count, the depth
    bands every sampled level (`spec.depth`)."""
    out: dict[str, int] = {}
    for name in spec.names:
        if name == "imbalance_l5":
            out[name] = 5
        elif name == "imbalance_l10":
            out[name] = 10
        elif name.startswith(("depth_bid_", "depth_ask_")):
            out[name] = spec.depth
    return out


def priced_share(bars: pl.DataFrame, level: int) -> float:
    """Share of `bars` with a price on both sides at `level` (0-based; 0 for no bars)."""
    if bars.height == 0:
        return 0.0
    both = (pl.col(S.bid_px(level)) > 0) & (pl.col(S.ask_px(level)) > 0)
    share = bars.select(both.mean()).item()
    return 0.0 if share is None else float(share)


def levels_held(bars: pl.DataFrame, depth: int, min_share: float = MIN_SHARE) -> int:
    """How many levels per side `bars` hold: the largest k <= depth such that each of
    levels 1..k has a price on both sides in at least `min_share` of the bars (0 for no
    bars)."""
    held = 0
    while bars.height and held < depth and priced_share(bars, held) >= min_share:
        held += 1
    return held


@dataclass(frozen=True)
class DayDepth:
    """What one day's bars hold and where its book came from (the event partition's
    `book_kind`, e.g. "bitmex-dump:quote"; None for the synthetic market)."""

    day: str
    levels: int
    source: str | None


def check_depth(spec: FeatureSpec, days: list[DayDepth]) -> None:
    """Raise DepthError when some day holds fewer levels than a feature of `spec` reads."""
    need = levels_needed(spec)
    if not need:
        return
    most = max(need.values())
    short = [d for d in days if d.levels < most]
    if not short:
        return
    features = sorted(k for k, v in need.items() if v > min(d.levels for d in short))
    sources = sorted({d.source or "synthetic" for d in short})
    first = short[0]
    raise DepthError(
        f"FeatureSpec {spec.version} needs {most} book levels per side "
        f"({', '.join(features)}), but {len(short)} day(s) hold fewer: {first.day} holds "
        f"{first.levels} (source {', '.join(sources)}). Use a full-depth source (tardis "
        f"incremental_book_L2, a BitMEX orderBookL2 recording) for these days."
    )


def check_declared_depth(data_dir: str | Path, symbol: str, spec: FeatureSpec) -> list[DayDepth]:
    """`check_depth` on what the event partitions of `symbol` declare: the levels their
    book stream carries where its format fixes them (`ingest.report.BOOK_KIND_LEVELS`;
    the BitMEX dumps and quote tables hold the touch only). Reads the manifests only, so
    the CLI refuses such a spec before any flow starts; the features flow measures the
    bars themselves (`check_bars_index`) for streams whose depth is their own."""
    layout = DataLayout(Path(data_dir))
    days = []
    for day in list_event_days(layout, symbol):
        kind = (read_manifest(layout, symbol, day) or {}).get("book_kind")
        if kind in BOOK_KIND_LEVELS:
            days.append(DayDepth(day, min(BOOK_KIND_LEVELS[kind], spec.depth), kind))
    check_depth(spec, days)
    return days


def check_bars_index(
    index_path: str | Path, spec: FeatureSpec, source_by_day: Mapping[str, str | None]
) -> list[DayDepth]:
    """`check_depth` over the days of a bars index (`features.bars.build_bars`), each day
    measured over all its parts (a day can end in a short tail part: the last bar alone
    says nothing about the day). Reads only the price columns of the deepest level the
    spec needs (memory-mapped); a day that lacks it is measured level by level for the
    message."""
    need = max(levels_needed(spec).values(), default=0)
    if need == 0:
        return []
    index = Path(index_path)
    parts_by_day: dict[str, list[pl.LazyFrame]] = {}
    for entry in json.loads(index.read_text())["parts"]:
        day, rows = entry.get("day"), int(entry["rows"])
        if day is None or rows == 0:
            continue
        part = pl.scan_ipc(index.parent / entry["file"]).head(rows)
        parts_by_day.setdefault(day, []).append(part)
    deepest = [S.bid_px(need - 1), S.ask_px(need - 1)]
    prices = [c for i in range(spec.depth) for c in (S.bid_px(i), S.ask_px(i))]
    days = []
    for day, parts in parts_by_day.items():
        bars = pl.concat(parts)
        if priced_share(bars.select(deepest).collect(), need - 1) >= MIN_SHARE:
            held = need  # the deepest level needed is there (so are those above it)
        else:
            held = levels_held(bars.select(prices).collect(), spec.depth)
        days.append(DayDepth(day, held, source_by_day.get(day)))
    check_depth(spec, days)
    return days
