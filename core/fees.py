"""The fee the user pays: dated maker / taker fee schedules and one's own tier (pure).

Rates are fractions of the fill's notional in the settle currency (XBT for XBTUSD:
contracts * multiplier / price); a negative rate is a rebate. A fill is charged the rate
in force at its bar's close `ts` (int64 ns UTC): the last change whose `since` is at or
before `ts`. The first change of a schedule also covers every bar before its date (a
synthetic or test market dated before the instrument existed is charged its launch rates).

`FeeConfig` is the ONE place the fee is configured: `fees:` at the top of the experiment
config (`core.config.experiment`), copied into every trial's `EnvConfig.fees`, which the
env, the backtest and the live paper account (`envs.broker.BrokerRules.fees`) all charge.
The default is the dated BitMEX XBTUSD base-tier schedule below; `maker` / `taker` override
one side at every date (your own tier); `schedule` may also be your own dated list.

BitMEX XBTUSD, base tier (what an account without volume, staking or VIP discounts pays),
each change with where it is documented and how sure it is:

- 2016-05-13 (XBTUSD listed, BitMEX "Perpetual Contracts Guide"): maker -0.025 %, taker
  0.075 %. Source: bitmex.com/app/fees ("Fees", perpetual/swap table: Bitcoin (XBT) 100x,
  maker -0.0250 %, taker 0.0750 %), in snapshots from about 2017 (its futures list still
  has the XBJ/XBC yen and yuan series) to 2021. Sure of the rates from 2017 to August
  2021; the 2016 launch rates are assumed equal (no 2016 snapshot was found).
- 2021-08-18 00:00 UTC: maker -0.01 %, taker 0.05 % (base tier, 30-day ADV under $5 M).
  Source: BitMEX announcement "Revamp of BitMEX Fee Structures for Increased Trader
  Rewards" (2021-08-12: "from 18 August 00:00 UTC the taker fee is lowered from 0.075 %
  to 0.05 % on all products, the maker rebate adjusted from 0.025 % to 0.01 %") and the
  blog post "Now 'Live' - Revamp of BitMEX Fee Structures for Increased Trader Rewards".
  Sure of rates and date.
- 2023-01-17 00:00 UTC: maker +0.02 %, taker 0.075 % (base tier, 30-day ADV under $1 M).
  Source: BitMEX blog "Incoming: Fee Changes, Higher Discounts for Staking BMEX Tokens and
  More Maker Incentives" ("updated on Tuesday 17 January 2023 at 00:00 UTC"; tier table
  0: taker 0.0750 %, maker 0.020 %) and "Arriving Tomorrow: Fee Changes, Better Discounts,
  and More Maker Incentives"; the same base tier is restated in the later blog post
  "ICYMI: How to Lower Your Trading Fees on BitMEX". Sure of rates and date.

Not found, so not in the schedule: any XBTUSD base-tier change between August 2021 and
January 2023, or after January 2023 (the 2024 and 2025 BitMEX fee announcements found are
for spot markets). Check your own account's fee page and set `maker` / `taker` for your
tier; the schedule is the default, not a promise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, date, datetime
from functools import lru_cache
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, field_validator, model_validator

from core.config.base import FrozenModel

MAX_ABS_RATE = 0.01  # 100 bp: a larger rate is a percent typed as a fraction (0.02 for 0.02 %)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def since_ns(text: str) -> int:
    """ns UTC of a change date: "YYYY-MM-DD" (00:00 UTC) or an ISO 8601 time with an
    explicit offset ("2021-08-18T00:00:00Z"). Raises ValueError otherwise (no naive times)."""
    if len(text) == 10:
        d = date.fromisoformat(text)
        dt = datetime(d.year, d.month, d.day, tzinfo=UTC)
    else:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if dt.tzinfo is None:
            raise ValueError(f"{text!r} has no UTC offset (write e.g. {text}Z)")
    delta = dt - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def _check_rate(value: float, name: str) -> float:
    if not math.isfinite(value) or abs(value) > MAX_ABS_RATE:
        raise ValueError(
            f"{name}={value} is not a fee rate: rates are fractions of notional, "
            f"|rate| <= {MAX_ABS_RATE} (2 bp = 0.02 % = 0.0002; negative = rebate)"
        )
    return value


class FeeChange(FrozenModel):
    """Maker and taker rates in force from `since` (until the next change)."""

    since: str  # "YYYY-MM-DD" (00:00 UTC) or ISO 8601 with an offset
    maker: float  # fraction of notional; negative = rebate
    taker: float
    source: str = ""  # where the change is documented (announcement or page, its date)

    @field_validator("since")
    @classmethod
    def _since_parses(cls, v: str) -> str:
        try:
            since_ns(v)
        except ValueError as exc:
            raise ValueError(f"since={v!r}: {exc}") from exc
        return v

    @model_validator(mode="after")
    def _rates_are_fractions(self) -> FeeChange:
        _check_rate(self.maker, "maker")
        _check_rate(self.taker, "taker")
        return self

    @property
    def since_ns(self) -> int:
        return since_ns(self.since)


_BITMEX_ANN_2021 = (
    'BitMEX "Revamp of BitMEX Fee Structures for Increased Trader Rewards" (announced '
    "2021-08-12, live 2021-08-18 00:00 UTC; blog \"Now 'Live' - Revamp of BitMEX Fee "
    'Structures ..."): taker 0.075 % -> 0.05 %, maker rebate 0.025 % -> 0.01 %'
)
_BITMEX_ANN_2023 = (
    'BitMEX blog "Incoming: Fee Changes, Higher Discounts for Staking BMEX Tokens and More '
    'Maker Incentives" and "Arriving Tomorrow: Fee Changes, Better Discounts, and More Maker '
    'Incentives": from Tuesday 17 January 2023 00:00 UTC, tier 0 (30-day ADV < $1 M) '
    "taker 0.0750 %, maker 0.020 %"
)

#: BitMEX XBTUSD base-tier maker / taker rates by date (sources and certainty: module doc)
BITMEX_XBTUSD: tuple[FeeChange, ...] = (
    FeeChange(
        since="2016-05-13",
        maker=-0.00025,
        taker=0.00075,
        source="bitmex.com/app/fees (perpetual table, Bitcoin (XBT) 100x: maker -0.0250 %, "
        "taker 0.0750 %; snapshots c. 2017-2021); XBTUSD listed 2016-05-13 per BitMEX's "
        "Perpetual Contracts Guide; 2016 rates assumed equal",
    ),
    FeeChange(since="2021-08-18", maker=-0.0001, taker=0.0005, source=_BITMEX_ANN_2021),
    FeeChange(since="2023-01-17", maker=0.0002, taker=0.00075, source=_BITMEX_ANN_2023),
)

ScheduleName = Literal["bitmex-xbtusd"]
SCHEDULES: dict[str, tuple[FeeChange, ...]] = {"bitmex-xbtusd": BITMEX_XBTUSD}


@lru_cache(maxsize=64)
def _table(changes: tuple[FeeChange, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(since ns, maker, taker) arrays of a schedule (cached: schedules are immutable)."""
    ns = np.array([c.since_ns for c in changes], dtype=np.int64)
    maker = np.array([c.maker for c in changes], dtype=np.float64)
    taker = np.array([c.taker for c in changes], dtype=np.float64)
    for a in (ns, maker, taker):
        a.setflags(write=False)
    return ns, maker, taker


class FeeConfig(FrozenModel):
    """The fee the account pays (see the module docstring).

    schedule: "bitmex-xbtusd" (default: BitMEX XBTUSD base tier by date) or your own
      dated list of {since, maker, taker[, source]}, strictly increasing in `since`;
    maker / taker: a constant rate for that side at every date (your tier); it beats the
      schedule. None: the schedule's rate.

    Raises (ValidationError) on a rate outside +-MAX_ABS_RATE, an empty or unordered list,
    or a date without a UTC offset.
    """

    schedule: ScheduleName | tuple[FeeChange, ...] = "bitmex-xbtusd"
    maker: float | None = None
    taker: float | None = None

    @model_validator(mode="after")
    def _valid(self) -> FeeConfig:
        for name in ("maker", "taker"):
            value = getattr(self, name)
            if value is not None:
                _check_rate(value, name)
        if not isinstance(self.schedule, str):
            if not self.schedule:
                raise ValueError("fees.schedule is an empty list: give at least one change")
            ns = [c.since_ns for c in self.schedule]
            if any(b <= a for a, b in zip(ns, ns[1:], strict=False)):
                raise ValueError(
                    "fees.schedule must be strictly increasing in `since`, got "
                    f"{[c.since for c in self.schedule]}"
                )
        return self

    @classmethod
    def constant(cls, maker: float, taker: float) -> FeeConfig:
        """The same maker and taker rate at every date (e.g. a fee-sensitivity re-run)."""
        return cls(maker=maker, taker=taker)

    def changes(self) -> tuple[FeeChange, ...]:
        """The dated schedule (before the overrides)."""
        return SCHEDULES[self.schedule] if isinstance(self.schedule, str) else self.schedule

    @property
    def is_constant(self) -> bool:
        """True when both rates are the same at every date."""
        if self.maker is not None and self.taker is not None:
            return True
        ch = self.changes()
        return all(
            (self.maker is not None or c.maker == ch[0].maker)
            and (self.taker is not None or c.taker == ch[0].taker)
            for c in ch
        )

    def resolve(self, ts_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(maker, taker) float64 rates in force at each `ts_ns` (int64 ns UTC): one
        `np.searchsorted` over the change dates, so an env resolves its whole slice once."""
        ts = np.asarray(ts_ns, dtype=np.int64)
        ns, maker, taker = _table(self.changes())
        idx = np.searchsorted(ns, ts, side="right") - 1
        np.maximum(idx, 0, out=idx)  # before the first change: the first change's rates
        m = np.full(ts.shape, self.maker) if self.maker is not None else maker[idx]
        t = np.full(ts.shape, self.taker) if self.taker is not None else taker[idx]
        return m, t

    def rates_at(self, ts_ns: int) -> tuple[float, float]:
        """(maker, taker) in force at `ts_ns`: `resolve` of one time (the same rule)."""
        m, t = self.resolve(np.array([ts_ns], dtype=np.int64))
        return float(m[0]), float(t[0])

    def describe(self) -> str:
        """One line for reports: what is charged."""
        base = (
            f"the dated {self.schedule} schedule (core.fees)"
            if isinstance(self.schedule, str)
            else f"a dated schedule of {len(self.schedule)} change(s) from {self.schedule[0].since}"
        )
        if self.maker is not None and self.taker is not None:
            return f"maker {self.maker:+.4%}, taker {self.taker:+.4%} at every date (override)"
        parts = [f"{side} {v:+.4%} (override)" for side, v in self.overrides().items()]
        return base + (", " + ", ".join(parts) if parts else "")

    def overrides(self) -> dict[str, float]:
        """The sides set to a constant rate."""
        return {k: v for k, v in (("maker", self.maker), ("taker", self.taker)) if v is not None}


DEFAULT_FEES = FeeConfig()

# --------------------------------------------------------- the legacy per-instrument fees
_LEGACY = (("maker_fee", "maker"), ("taker_fee", "taker"))


def split_instrument_fees(instrument: Any) -> tuple[Any, dict[str, float]]:
    """(`instrument` without fee fields, {"maker": .., "taker": ..} of the ones it set).

    `InstrumentSpec.maker_fee` / `taker_fee` are never charged; a config that still sets
    them (e.g. `ingest.instrument.maker_fee`, the fee's place before `fees:` existed) means
    a constant override of that side, which the config loaders move into `fees` with this
    function. `instrument`: an InstrumentSpec, a mapping or anything else (returned as is)."""
    if isinstance(instrument, BaseModel):
        values: dict[str, Any] = {old: getattr(instrument, old, None) for old, _ in _LEGACY}
    elif isinstance(instrument, Mapping):
        values = {old: instrument.get(old) for old, _ in _LEGACY}
    else:
        return instrument, {}
    found = {new: float(values[old]) for old, new in _LEGACY if values[old] is not None}
    if not found:
        return instrument, found
    if isinstance(instrument, BaseModel):
        return instrument.model_copy(update=dict.fromkeys(("maker_fee", "taker_fee"))), found
    return {k: v for k, v in instrument.items() if k not in ("maker_fee", "taker_fee")}, found


def merge_override(fees: Any, override: dict[str, float], where: str) -> Any:
    """`fees` (a FeeConfig, a mapping or None) with the sides of `override` set. Raises
    ValueError naming `where` when a side is already set to another value (the fee is set
    in one place)."""
    if not override:
        return fees
    if isinstance(fees, FeeConfig):
        current: dict[str, Any] = fees.model_dump()
    elif isinstance(fees, Mapping):
        current = dict(fees)
    elif fees is None:
        current = {}
    else:
        return fees  # not ours to judge: the model's own validation will refuse it
    for side, value in override.items():
        have = current.get(side)
        if have is not None and float(have) != value:
            raise ValueError(
                f"the {side} fee is set twice: {where}.{side}_fee={value} and fees.{side}="
                f"{have}; set it once, under `fees`"
            )
        current[side] = value
    return current
