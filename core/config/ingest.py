"""Ingest config (owned by ingest/)."""

from __future__ import annotations

from typing import Literal

from core.config.base import FrozenModel
from core.config.market import SyntheticMarketConfig
from core.instrument import InstrumentSpec

Source = Literal["synthetic", "tardis", "bitmex-dump", "ws-recording"]


class IngestConfig(FrozenModel):
    source: Source = "synthetic"
    symbol: str = "XBTUSD"
    paths: tuple[str, ...] = ()
    instrument: InstrumentSpec = InstrumentSpec()
    synthetic: SyntheticMarketConfig = SyntheticMarketConfig()
