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

from collections.abc import Mapping
from dataclasses import dataclass

import polars as pl

from core import schema as S
from core.config.features import FeatureSpec

MIN_SHARE = 0.5  # a level is held when both sides have it in at least half the bars


class DepthError(ValueError):
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
        elif name.startswith("depth_bid_") or name.startswith("depth_ask_"):
            out[name] = spec.depth
    return out


def levels_held(bars: pl.DataFrame, depth: int, min_share: float = MIN_SHARE) -> int:
    """How many levels per side `bars` hold: the largest k <= depth such that each of
    levels 1..k has a price on both sides in at least `min_share` of the bars (0 for no
    bars)."""
    if bars.height == 0:
        return 0
    shares = bars.select(
        ((pl.col(S.bid_px(i)) > 0) & (pl.col(S.ask_px(i)) > 0)).mean().alias(str(i))
        for i in range(depth)
    ).row(0)
    held = 0
    for share in shares:
        if share is None or share < min_share:
            break
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


def check_depth_of(
    spec: FeatureSpec,
    bars_by_day: Mapping[str, pl.DataFrame],
    source_by_day: Mapping[str, str | None],
) -> list[DayDepth]:
    """Measure each day's bars and `check_depth` them; returns the measurements."""
    days = [
        DayDepth(day, levels_held(bars, spec.depth), source_by_day.get(day))
        for day, bars in sorted(bars_by_day.items())
    ]
    check_depth(spec, days)
    return days
