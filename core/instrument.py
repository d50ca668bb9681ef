"""Instrument specification: travels with every event partition, slice and model.

Prices stay integer ticks until a feature needs a float: `price = ticks * tick_size`.
Inverse contracts (XBTUSD) settle in XBT: pnl = contracts * multiplier * (1/entry - 1/exit).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Literal, overload

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from core.clock import NS_PER_HOUR


class OffTickError(ValueError):
    """A price that is not an integer multiple of the tick size."""


class InstrumentSpec(BaseModel):
    """Tick size, lot size, settlement and funding times of one instrument.

    Funding is settled at `funding_offset_hours + k * funding_interval_hours` after 00:00
    UTC (k integer): BitMEX's perpetuals (XBTUSD, XBTUSDT, ...) at 04:00, 12:00 and 20:00
    UTC, an 8 h interval with a 4 h offset (the instrument list's `fundingTimestamp`, e.g.
    2021-07-23T04:00Z, and `fundingInterval`). `funding_settles` is the one rule the env,
    the backtest and the paper account use.

    `maker_fee` / `taker_fee` (fractions of notional, negative = rebate) are the rates the
    exchange listed when the spec was read (BitMEX's instrument list `makerFee` /
    `takerFee`: its base tier at that moment), kept for reference and NEVER charged: the
    account charges `core.fees.FeeConfig` (`fees:` in the experiment config; by default
    BitMEX XBTUSD's rates by date). A config that still sets them (`ingest.instrument.
    maker_fee`, or an EnvConfig's `instrument`) means a constant override of that side,
    moved into `fees` on load (`core.fees.split_instrument_fees`). None: not given.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    symbol: str = "XBTUSD"
    tick_size: float = Field(0.5, gt=0)
    lot_size: int = Field(100, gt=0)
    is_inverse: bool = True
    multiplier: float = 1.0
    maker_fee: float | None = None  # listed / legacy override, never charged (see above)
    taker_fee: float | None = None
    funding_interval_hours: float = 8.0
    # funding times = this + k * interval after 00:00 UTC (BitMEX: 04/12/20 UTC)
    funding_offset_hours: float = Field(4.0, ge=0)
    settle_currency: Literal["XBt", "XBT", "USDt", "USD"] = "XBT"

    def price_to_ticks(self, price: float | str | Decimal) -> int:
        """Exact integer ticks of `price`; raises OffTickError when it is off the grid."""
        d = Decimal(str(price)) / Decimal(str(self.tick_size))
        if d != d.to_integral_value():
            raise OffTickError(f"price {price} is not a multiple of tick size {self.tick_size}")
        return int(d)

    def ticks_to_price(self, ticks: int | float) -> float:
        return float(ticks) * self.tick_size

    def contract(self) -> dict[str, object]:
        """The fields that give recorded prices and sizes their meaning (symbol, tick and
        lot size, inverse or linear, multiplier, settlement), without the fees and the
        funding interval: those are the account's and the backtest's assumptions, and
        may be changed in the experiment without re-ingesting the data."""
        return self.model_dump(mode="json", include=set(CONTRACT_FIELDS))


@overload
def funding_index(ts_ns: int, spec: InstrumentSpec) -> int: ...
@overload
def funding_index(ts_ns: np.ndarray, spec: InstrumentSpec) -> np.ndarray: ...
def funding_index(ts_ns: int | np.ndarray, spec: InstrumentSpec) -> int | np.ndarray:
    """How many of `spec`'s funding times lie at or before `ts_ns` (int64 ns UTC), up to a
    constant: it steps by one AT each funding time. Elementwise on an int64 array. Pure.
    An instrument without funding (interval 0) has index 0 everywhere."""
    interval = int(spec.funding_interval_hours * NS_PER_HOUR)
    if interval <= 0:
        return ts_ns * 0
    offset = int(spec.funding_offset_hours * NS_PER_HOUR) % interval
    return (ts_ns - offset) // interval


@overload
def funding_settles(prev_ns: int, ts_ns: int, spec: InstrumentSpec) -> bool: ...
@overload
def funding_settles(prev_ns: np.ndarray, ts_ns: np.ndarray, spec: InstrumentSpec) -> np.ndarray: ...
def funding_settles(
    prev_ns: int | np.ndarray, ts_ns: int | np.ndarray, spec: InstrumentSpec
) -> bool | np.ndarray:
    """True where a funding time of `spec` lies in (prev_ns, ts_ns]: the bar closing at
    `ts_ns` after one closing at `prev_ns` settles funding (once, even in the unrealistic
    case of a bar spanning two funding times). Elementwise on int64 arrays. Pure: the ONE
    due-time rule of the env (`envs.management`) and the paper account (`envs.broker`)."""
    due = funding_index(ts_ns, spec) != funding_index(prev_ns, spec)
    return due if isinstance(due, np.ndarray) else bool(due)


@overload
def funding_time(ts_ns: int, spec: InstrumentSpec) -> int: ...
@overload
def funding_time(ts_ns: np.ndarray, spec: InstrumentSpec) -> np.ndarray: ...
def funding_time(ts_ns: int | np.ndarray, spec: InstrumentSpec) -> int | np.ndarray:
    """The latest funding time of `spec` at or before `ts_ns` (int64 ns UTC): the funding
    time a bar closing at `ts_ns` settles when `funding_settles` says it does. Pure."""
    interval = int(spec.funding_interval_hours * NS_PER_HOUR)
    if interval <= 0:
        raise ValueError(f"{spec.symbol} has no funding interval")
    offset = int(spec.funding_offset_hours * NS_PER_HOUR) % interval
    return funding_index(ts_ns, spec) * interval + offset  # type: ignore[operator]


def funding_offset_hours_of(next_funding_ns: int, interval_hours: float) -> float:
    """The offset after 00:00 UTC of the funding times of an instrument whose next (or any)
    funding time is `next_funding_ns` (BitMEX's `fundingTimestamp`). Pure."""
    interval = int(interval_hours * NS_PER_HOUR)
    if interval <= 0:
        return 0.0
    return (next_funding_ns % interval) / NS_PER_HOUR


#: `InstrumentSpec.contract` fields
CONTRACT_FIELDS = frozenset(
    {"symbol", "tick_size", "lot_size", "is_inverse", "multiplier", "settle_currency"}
)
#: the contract fields that make it the same instrument over time; the others (tick and
#: lot size) may change (XBTUSD's tick 0.5 -> 0.1 USD on 2024-07-31), each slice being
#: priced in the contract its manifest records
FAMILY_FIELDS = ("symbol", "settle_currency", "is_inverse", "multiplier")


def family_mismatch(recorded: Mapping[str, object], spec: InstrumentSpec) -> str | None:
    """How a recorded `contract()` is another instrument than `spec` (`FAMILY_FIELDS`
    differing: "symbol ETHUSD, not XBTUSD"), None when it is the same one. Pure."""
    mine = spec.contract()
    diff = [
        f"{k} {recorded[k]}, not {mine[k]}"
        for k in FAMILY_FIELDS
        if k in recorded and recorded[k] != mine[k]
    ]
    return "; ".join(diff) or None


XBTUSD = InstrumentSpec()
