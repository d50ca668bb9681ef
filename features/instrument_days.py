"""The instrument contract of each event day, and a history across a tick change. Pure
(`day_contracts` reads the day manifests).

Each day's partition records the contract it was ingested under (`ingest.
instrument_history`: the contract in force that day); its prices are integer ticks of
that day's tick. Across a tick change (XBTUSD: 0.5 -> 0.1 USD on 2024-07-31) the same
integer means another price, so the bars of a history are sampled on one *price grid*:
the greatest common divisor of the days' ticks (0.1 here), each day's ticks multiplied
by its `price_factors` entry (5 for a 0.5 day) as its events are read. The book, the
sampler's order-flow imbalance and every feature that compares prices across bars
(returns, realised volatility) then see one unit; features in bps or ratios are the
same numbers under either tick (`features.compute`, `TICK_BOUND_FEATURES` are not).
The slice rows are put back in the ticks of their own day (`to_day_ticks`): a slice is
priced and rounded with the contract of its day, recorded in its manifest, and may not
hold two contracts (`check_windows`).

No change (every day under one contract, or none recorded): every factor is 1 and
nothing differs from a history of one contract, bit for bit.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from decimal import Decimal

import numpy as np
import polars as pl

from core import schema as S
from core.clock import iso_day, parse_day
from core.config.features import FeatureSpec
from core.instrument import CONTRACT_FIELDS, InstrumentSpec
from core.jsontypes import JsonObject
from core.paths import DataLayout
from features.compute import tick_bound_features
from features.slices import SliceBuildError
from features.walk_forward import Fold, Window


def day_contracts(layout: DataLayout, symbol: str, days: Sequence[str]) -> dict[str, JsonObject]:
    """day -> the contract (`InstrumentSpec.contract`) its partition was ingested under,
    from its manifest; days whose manifest records none are left out."""
    out: dict[str, JsonObject] = {}
    for d in days:
        manifest = json.loads((layout.events_day(symbol, d) / "manifest.json").read_text())
        if manifest.get("instrument") is not None:
            spec = InstrumentSpec.model_validate(manifest["instrument"])
            out[d] = spec.model_dump(mode="json", include=set(CONTRACT_FIELDS))
    return out


def one_contract(contracts: Mapping[str, JsonObject]) -> JsonObject | None:
    """The contract every day shares; None when none is recorded or they differ."""
    seen = {json.dumps(c, sort_keys=True) for c in contracts.values()}
    return json.loads(seen.pop()) if len(seen) == 1 else None


def _tick(contract: JsonObject) -> Decimal:
    tick = contract["tick_size"]
    if not isinstance(tick, int | float):
        raise TypeError(f"tick_size is {tick!r}")
    return Decimal(str(tick))


def price_grid(contracts: Mapping[str, JsonObject]) -> Decimal | None:
    """The price grid of a history: the greatest common divisor of the days' ticks
    (0.5 and 0.1 -> 0.1); None when every day has the same tick (or none is known)."""
    ticks = {_tick(c) for c in contracts.values()}
    if len(ticks) < 2:
        return None
    places = max(-t.as_tuple().exponent for t in ticks)  # type: ignore[operator]
    scale = Decimal(10) ** places
    g = math.gcd(*(int(t * scale) for t in ticks))
    return Decimal(g) / scale


def price_factors(contracts: Mapping[str, JsonObject]) -> dict[str, int]:
    """day -> its tick in grid units (`price_grid`): what its integer prices are
    multiplied by to be on the grid. Empty when there is no tick change (every factor
    would be 1)."""
    grid = price_grid(contracts)
    if grid is None:
        return {}
    return {d: int(_tick(c) / grid) for d, c in sorted(contracts.items())}


def grid_contract(contracts: Mapping[str, JsonObject]) -> JsonObject | None:
    """The contract the bars of a history are in: the one every day shares, or, across a
    tick change, the latest day's with the grid as its tick (what a reader pricing the
    bars' integer prices needs: grid ticks * grid = price)."""
    same = one_contract(contracts)
    grid = price_grid(contracts)
    if grid is None or not contracts:
        return same
    latest = dict(contracts[max(contracts)])
    latest["tick_size"] = float(grid)
    return latest


def scale_events(frame: pl.DataFrame, factor: int) -> pl.DataFrame:
    """Events of one day with `price_ticks` multiplied by `factor` (onto the grid)."""
    if factor == 1:
        return frame
    return frame.with_columns(pl.col(S.PRICE_TICKS) * factor)


# ---------------------------------------------------------------- slices
#: slice columns in ticks: put back in the ticks of their row's day (`to_day_ticks`)
TICK_COLUMNS: tuple[str, ...] = (
    S.MID_TICKS,
    "spread_ticks",
    S.BEST_BID_TICKS,
    S.BEST_ASK_TICKS,
    S.BUY_HI_TICKS,
    S.SELL_LO_TICKS,
)


def _day_index(days: Sequence[str], ts: np.ndarray) -> np.ndarray:
    """Index into sorted `days` of the day each `ts` belongs to: the latest day starting
    at or before it (a bar past the last day, the tail, belongs to the last)."""
    starts = np.array([parse_day(d) for d in days], dtype=np.int64)
    return np.maximum(np.searchsorted(starts, ts, side="right") - 1, 0)


def to_day_ticks(frame: pl.DataFrame, factors: Mapping[str, int]) -> pl.DataFrame:
    """Slice rows on the price grid -> the same rows in the ticks of each row's day (the
    day its bar closes in): the integer tick columns divided exactly by the day's factor,
    `mid_ticks` and `spread_ticks` (floats of integers or half-integers) divided too,
    which is exact. Raises SliceBuildError when a price of a row is not on its day's
    grid (a bar closing on a coarser day whose book still holds the finer day's
    prices). Identity without factors."""
    if not factors or frame.height == 0:
        return frame
    days = sorted(factors)
    per_day = np.array([factors[d] for d in days], dtype=np.int64)
    f = per_day[_day_index(days, frame[S.TS].to_numpy())]
    if (f == 1).all():
        return frame
    fs = pl.Series("__f", f)
    ints = [c for c in TICK_COLUMNS[2:] if c in frame.columns]
    off = frame.select(pl.any_horizontal([(pl.col(c) % fs) != 0 for c in ints])).to_series()
    if off.any():
        ts = int(frame[S.TS].filter(off)[0])
        raise SliceBuildError(
            f"the bar closing at {ts} ns ({iso_day(ts)}) holds prices off that day's tick "
            "grid (its book still holds another contract's prices): start the slices a "
            "bar after the contract change"
        )
    floats = [c for c in TICK_COLUMNS[:2] if c in frame.columns]
    return frame.with_columns(
        *((pl.col(c) // fs).alias(c) for c in ints),
        *((pl.col(c) / fs.cast(pl.Float64)).alias(c) for c in floats),
    )


def _change_days(contracts: Mapping[str, JsonObject], tick_only: bool) -> list[tuple[str, str]]:
    """(day, "what changed") of every day whose contract differs from the day before's
    (`tick_only`: whose tick differs)."""
    out = []
    days = sorted(contracts)
    for a, b in zip(days, days[1:], strict=False):
        ca, cb = contracts[a], contracts[b]
        if tick_only and ca["tick_size"] != cb["tick_size"]:
            out.append((b, f"tick size {ca['tick_size']} -> {cb['tick_size']}"))
        elif not tick_only and ca != cb:
            diff = ", ".join(f"{k} {ca.get(k)} -> {cb.get(k)}" for k in cb if ca.get(k) != cb[k])
            out.append((b, diff))
    return out


def _spanned(start_ns: int, end_ns: int, changes: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Changes (at 00:00 UTC of their day) inside (start_ns, end_ns)."""
    return [(d, w) for d, w in changes if start_ns < parse_day(d) < end_ns]


def check_windows(
    spec: FeatureSpec,
    folds: Sequence[Fold],
    stress: Sequence[Window],
    contracts: Mapping[str, JsonObject],
    symbol: str = "",
) -> None:
    """Refuse, with one line, windows a contract change makes meaningless.

    - a slice holding two contracts: the env, the backtest and the live loop price and
      round one contract per slice (the manifest's), so no window may hold a day's
      00:00 UTC where the contract changes;
    - a tick-bound feature (`features.compute.TICK_BOUND_FEATURES`) across a tick
      change: its value moves with the tick, so a fold (train, validation, test, with
      the look-back before them, sharing one frozen stats) or a stress window (under the
      last fold's stats) spanning the change would see a regime change that is only a
      new tick. Raises SliceBuildError naming the features and the day."""
    changes = _change_days(contracts, tick_only=False)
    if not changes:
        return
    name = symbol or "the instrument"
    windows = [w for f in folds for w in (f.train, f.validation, f.test) if w is not None]
    for w in [*windows, *stress]:
        hit = _spanned(w.start_ns, w.end_ns, changes)
        if hit:
            d, what = hit[0]
            raise SliceBuildError(
                f"slice {w.slice_id} spans {name}'s contract change on {d} ({what}): a "
                "slice is priced and rounded with one contract; move the walk-forward "
                f"windows so that none holds {d} 00:00 UTC"
            )
    bound = tick_bound_features(spec)
    ticks = _change_days(contracts, tick_only=True)
    if not bound or not ticks:
        return
    back = spec.lookback_ns
    groups: list[tuple[str, list[Window]]] = [
        (f"fold {f.fold}", [w for w in (f.train, f.validation, f.test) if w is not None])
        for f in folds
    ]
    if folds:
        groups += [
            (f"stress {s.slice_id} (fold {folds[-1].fold}'s stats)", [s, folds[-1].train])
            for s in stress
        ]
    for what, ws in groups:
        hit = _spanned(min(w.start_ns for w in ws) - back, max(w.end_ns for w in ws), ticks)
        if hit:
            d, change = hit[0]
            raise SliceBuildError(
                f"{what} spans {name}'s tick change on {d} ({change}) and the spec's "
                f"feature(s) {', '.join(bound)} are in ticks (they move with the tick, "
                "not the market): keep each fold, its look-back and its stats on one "
                "side of the change, or use a spec without them"
            )


def slice_contract(t_start_ns: int, contracts: Mapping[str, JsonObject]) -> JsonObject | None:
    """The contract of the slice starting at `t_start_ns` (one per slice,
    `check_windows`): its day's."""
    if not contracts:
        return None
    days = sorted(contracts)
    i = int(_day_index(days, np.array([t_start_ns], dtype=np.int64))[0])
    return contracts[days[i]]
