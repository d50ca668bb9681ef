"""Small slice parquet files and frozen-stats dirs with the exact slice schema.

Numbers are XBTUSD-like: mid around 80,000 ticks (40,000 USD at tick 0.5), a one-tick
spread most of the time, 1 s bars.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.config.features import FeatureSpec
from core.schema import EXEC_COLUMNS, MID_TICKS, TS

SPEC = FeatureSpec()
NAMES = list(SPEC.names)
T0 = 1_626_912_000_000_000_000  # 2021-07-22 00:00 UTC in ns
BAR_NS = 1_000_000_000


@dataclass(frozen=True)
class SliceFiles:
    slice_path: Path
    stats_dir: Path


def write_stats(
    stats_dir: Path, names: list[str], mean: np.ndarray, sigma: np.ndarray, spec_hash: str
) -> Path:
    """A frozen-stats dir in the contract format (mean.npy, sigma.npy, stats.json)."""
    stats_dir.mkdir(parents=True, exist_ok=True)
    np.save(stats_dir / "mean.npy", np.asarray(mean, dtype=np.float64))
    np.save(stats_dir / "sigma.npy", np.asarray(sigma, dtype=np.float64))
    meta = {
        "stats_id": stats_dir.name,
        "spec_hash": spec_hash,
        "feature_names": list(names),
        "sigma_floor": 1e-8,
        "n_rows": 0,
        "train_slices": [],
    }
    (stats_dir / "stats.json").write_text(json.dumps(meta))
    return stats_dir


def write_slice(
    path: Path,
    bid: np.ndarray,
    ask: np.ndarray,
    buy_hi: np.ndarray | None = None,
    sell_lo: np.ndarray | None = None,
    features: np.ndarray | None = None,
    names: list[str] | None = None,
    t0: int = T0,
    bar_ns: int = BAR_NS,
    events: dict[str, np.ndarray] | None = None,
) -> Path:
    """A slice parquet: ts, mid_ticks, features (raw), EXEC_COLUMNS, in that order.
    Without `events` (#17's queue and latency columns by slice name, as
    `random_events` makes them) it is a slice built before them."""
    names = NAMES if names is None else names
    n = len(bid)
    bid = np.asarray(bid, dtype=np.int64)
    ask = np.asarray(ask, dtype=np.int64)
    buy_hi = np.zeros(n, np.int64) if buy_hi is None else np.asarray(buy_hi, dtype=np.int64)
    sell_lo = np.zeros(n, np.int64) if sell_lo is None else np.asarray(sell_lo, dtype=np.int64)
    if features is None:
        features = np.random.default_rng(7).normal(size=(n, len(names)))
    cols: dict[str, np.ndarray] = {
        TS: t0 + bar_ns * np.arange(1, n + 1, dtype=np.int64),
        MID_TICKS: (bid + ask) / 2.0,
    }
    for j, name in enumerate(names):
        cols[name] = np.asarray(features[:, j], dtype=np.float64)
    rng = np.random.default_rng(11)
    cols[EXEC_COLUMNS[0]] = bid
    cols[EXEC_COLUMNS[1]] = ask
    cols[EXEC_COLUMNS[2]] = buy_hi
    cols[EXEC_COLUMNS[3]] = sell_lo
    cols[EXEC_COLUMNS[4]] = np.where(buy_hi > 0, rng.integers(100, 5000, n), 0).astype(np.int64)
    cols[EXEC_COLUMNS[5]] = np.where(sell_lo > 0, rng.integers(100, 5000, n), 0).astype(np.int64)
    for name, values in (events or {}).items():
        cols[name] = np.asarray(values, dtype=np.int64)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(cols), path)
    return path


def random_events(
    m: dict[str, np.ndarray], bar_ns: int = BAR_NS, t0: int = T0, seed: int = 0
) -> dict[str, np.ndarray]:
    """#17's bar columns for a `random_market` book, consistent with it: sizes at the best
    at each close; the volume sold at the previous close's best bid when a sell printed
    at or below it, through-timestamps inside the bar when one printed below it (and the
    mirror for buys); the first bar has none."""
    rng = np.random.default_rng(seed)
    bid, ask, buy_hi, sell_lo = m["bid"], m["ask"], m["buy_hi"], m["sell_lo"]
    n = len(bid)
    close = t0 + bar_ns * np.arange(1, n + 1, dtype=np.int64)
    out: dict[str, np.ndarray] = {
        "bid_sz_0": rng.integers(200, 6_000, n),
        "ask_sz_0": rng.integers(200, 6_000, n),
    }
    for side, px, ref, below in (("sell", sell_lo, bid, True), ("buy", buy_hi, ask, False)):
        prev = np.concatenate([[0], ref[:-1]])
        printed = (px > 0) & (prev > 0)
        at = printed & ((px <= prev) if below else (px >= prev))
        thru = printed & ((px < prev) if below else (px > prev))
        first = close - bar_ns + rng.integers(1, bar_ns // 2, n)
        last = first + rng.integers(0, bar_ns // 2, n)
        ref_name = "bid" if below else "ask"
        out[f"{side}_at_{ref_name}_vol"] = np.where(at, rng.integers(100, 8_000, n), 0)
        out[f"{side}_thru_{ref_name}_first_ts"] = np.where(thru, first, -1)
        out[f"{side}_thru_{ref_name}_last_ts"] = np.where(thru, last, -1)
    return out


def random_market(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A random-walk XBTUSD book around 80,000 ticks with taker trades on both sides."""
    rng = np.random.default_rng(seed)
    bid = 80_000 + np.cumsum(rng.integers(-2, 3, n)).astype(np.int64)
    spread = np.where(rng.random(n) < 0.9, 1, 2).astype(np.int64)
    ask = bid + spread
    trade = rng.random(n)
    # a taker buy prints at or above the ask, a taker sell at or below the bid
    buy_hi = np.where(trade < 0.35, ask + rng.integers(0, 3, n), 0).astype(np.int64)
    sell_lo = np.where((trade > 0.4) & (trade < 0.75), bid - rng.integers(0, 3, n), 0).astype(
        np.int64
    )
    feats = np.column_stack(
        [rng.normal(loc=1.0 + j, scale=0.5 + j, size=n) for j in range(len(NAMES))]
    )
    return {"bid": bid, "ask": ask, "buy_hi": buy_hi, "sell_lo": sell_lo, "features": feats}


def round_trip_market(n: int = 12) -> dict[str, np.ndarray]:
    """A book at 80,000/80,001 then 80,800/80,801 from bar 5; a taker sell at 79,999 on bar 2
    (fills a long maker order resting at 80,000) and a taker buy at 80,900 on bar 7 (fills a
    short resting at 80,801): with window 2, actions long, hold x3, short, hold x2 make one
    round trip."""
    bid = np.full(n, 80_000, np.int64)
    bid[5:] = 80_800
    sell_lo = np.zeros(n, np.int64)
    sell_lo[2] = 79_999
    buy_hi = np.zeros(n, np.int64)
    buy_hi[7] = 80_900
    return {"bid": bid, "ask": bid + 1, "sell_lo": sell_lo, "buy_hi": buy_hi}


def make_market_files(root: Path, n: int = 400, seed: int = 0) -> SliceFiles:
    m = random_market(n, seed)
    slice_path = write_slice(root / "slices" / "fold00-train.parquet", **m)
    stats_dir = write_stats(
        root / "stats" / "s0",
        NAMES,
        m["features"].mean(axis=0),
        m["features"].std(axis=0),
        SPEC.spec_hash,
    )
    return SliceFiles(slice_path, stats_dir)


@pytest.fixture()
def market_files(tmp_path: Path) -> SliceFiles:
    return make_market_files(tmp_path)


@pytest.fixture()
def flat_stats(tmp_path: Path) -> Path:
    """Identity stats (mean 0, sigma 1) for hand-computed scenarios."""
    return write_stats(
        tmp_path / "stats" / "id", NAMES, np.zeros(len(NAMES)), np.ones(len(NAMES)), SPEC.spec_hash
    )
