"""Instrument specification: travels with every event partition, slice and model.

Prices stay integer ticks until a feature needs a float: `price = ticks * tick_size`.
Inverse contracts (XBTUSD) settle in XBT: pnl = contracts * multiplier * (1/entry - 1/exit).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class OffTickError(ValueError):
    """A price that is not an integer multiple of the tick size."""


class InstrumentSpec(BaseModel):
    """Tick size, lot size, settlement and funding interval of one instrument.

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


#: `InstrumentSpec.contract` fields
CONTRACT_FIELDS = frozenset(
    {"symbol", "tick_size", "lot_size", "is_inverse", "multiplier", "settle_currency"}
)


XBTUSD = InstrumentSpec()
