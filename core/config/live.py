"""Live loop config (owned by live/). Observe-only and testnet by default."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from core.config.base import FrozenModel

TESTNET_WS = "wss://ws.testnet.bitmex.com/realtime"
TESTNET_REST = "https://testnet.bitmex.com/api/v1"
MAINNET_WS = "wss://ws.bitmex.com/realtime"
MAINNET_REST = "https://www.bitmex.com/api/v1"


class RiskConfig(FrozenModel):
    """Limits that do not depend on the model."""

    max_position_contracts: int = Field(1000, ge=0)
    max_order_contracts: int = Field(100, ge=0)
    max_orders_per_minute: int = Field(10, ge=0)
    price_band_bps: float = Field(50.0, gt=0)
    max_drawdown_xbt: float = Field(0.01, gt=0)
    stale_after_s: float = Field(10.0, gt=0)


class LiveConfig(FrozenModel):
    feed: Literal["bitmex", "replay"] = "bitmex"
    ws_url: str = TESTNET_WS
    rest_url: str = TESTNET_REST
    symbol: str = "XBTUSD"
    # orderBookL2 (full depth) by default: the training pipeline samples the full book, and
    # depth features need more than 25 levels in a calm XBTUSD book
    book_table: Literal["orderBookL2", "orderBookL2_25"] = "orderBookL2"
    speed: float = Field(1.0, ge=0)  # replay speed (x real time); 0 = as fast as possible
    model_name: str = "chappie-xbtusd"
    alias: str = "champion"
    allow_trade: bool = False
    mainnet: bool = False
    alias_poll_s: float = Field(60.0, gt=0)
    heartbeat_s: float = Field(5.0, gt=0)  # no frame for this long -> send "ping"
    pong_timeout_s: float = Field(4.5, gt=0)  # no answer within this -> reconnect (< 10 s total)
    risk: RiskConfig = RiskConfig()
    stake_contracts: int = Field(100, gt=0)  # order size (contracts, a multiple of the lot size)
    dead_man_timeout_ms: int = Field(60_000, gt=0)  # cancelAllAfter while trading
    dead_man_refresh_s: float = Field(15.0, gt=0)  # re-armed this often (well inside the timeout)
    rest_timeout_s: float = Field(5.0, gt=0)
