"""Synthetic market config (owned by ingest/synthetic.py)."""

from __future__ import annotations

from pydantic import Field

from core.config.base import FrozenModel


class RegimeConfig(FrozenModel):
    """Parameters that may change per day, so that a stress day unlike training exists."""

    name: str = "normal"
    volatility_scale: float = Field(1.0, gt=0)
    imbalance_tilt: float = Field(0.15, ge=0, le=1)  # predictable component strength
    trade_rate_scale: float = Field(1.0, gt=0)


class SyntheticMarketConfig(FrozenModel):
    """Deterministic BitMEX-like XBTUSD market: canonical book deltas and trades."""

    seed: int = 7
    start_day: str = "2024-01-01"
    days: int = Field(3, ge=1)
    day_hours: float = Field(24.0, gt=0, le=24.0)  # generate only the first hours of each day
    # USD. 4,000 (XBTUSD in early 2019, tick 0.5 = 1.25 bps): at this price the model's
    # few-ticks-per-minute moves are a realistic few bps, and the 25 contiguous levels
    # span ~30 bps, so depth features within 10 bps are not the whole book. At 40,000 a
    # tick is 0.125 bps: minute returns of ~0.3 bps and maker rebates dwarf every move.
    start_price: float = Field(4_000.0, gt=0)
    depth_levels: int = Field(25, ge=10)
    book_events_per_s: float = Field(4.0, gt=0)
    trades_per_s: float = Field(0.5, gt=0)
    regimes: tuple[RegimeConfig, ...] = (RegimeConfig(),)  # day i uses regimes[min(i, len-1)]
