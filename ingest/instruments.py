"""Instrument specs from a config file or a BitMEX instrument JSON (adapter).

``load_instrument(path, symbol)`` accepts:
- a BitMEX REST answer (``GET /api/v1/instrument`` or ``/instrument/active``): a JSON list
  of instrument objects (or one object) with ``symbol``, ``tickSize``, ``lotSize``,
  ``isInverse``, ``multiplier``, ``makerFee``, ``takerFee``, ``fundingInterval``,
  ``settlCurrency``;
- a config file (``.json`` or ``.yaml``) holding `core.instrument.InstrumentSpec` fields
  (optionally under an ``instrument:`` key).
Raises ValueError with a clear message when the symbol is absent or a field is invalid.

Fees: ``makerFee`` / ``takerFee`` are what BitMEX lists for the instrument at the time of
the query (its base tier then, not the user's tier and not the rate of older data). They
are recorded in the spec (`InstrumentSpec.maker_fee` / `taker_fee`, never charged) and
offered as a constant fee override by `listed_fees`; the account charges the experiment's
`fees:` (core.fees, by default BitMEX XBTUSD's rates by date).
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from core.clock import NS_PER_S
from core.fees import FeeConfig
from core.instrument import InstrumentSpec, funding_offset_hours_of
from core.jsontypes import JsonObject, JsonValue

_SETTLE = {"XBt": "XBt", "XBT": "XBT", "USDt": "USDt", "USD": "USD"}


def _funding_hours(text: Any) -> float:
    """BitMEX encodes the funding interval as a time after 2000-01-01 (8 h = 08:00)."""
    if not isinstance(text, str):
        return 8.0
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    base = datetime.fromisoformat("2000-01-01T00:00:00+00:00")
    return (dt - base).total_seconds() / 3600.0


def _funding_offset(text: Any, hours: float) -> dict[str, float]:
    """`funding_offset_hours` from BitMEX's next funding time (`fundingTimestamp`, e.g.
    2021-07-23T04:00:00.000Z: 4 h past 00:00 UTC); none when it is not given."""
    if not isinstance(text, str):
        return {}
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return {"funding_offset_hours": funding_offset_hours_of(int(dt.timestamp()) * NS_PER_S, hours)}


def _scalar(value: JsonValue, key: str) -> str | int | float:
    """A field that must be a number (or its text: what float() and int() take); raises
    TypeError for any other JSON value."""
    if not isinstance(value, str | int | float):
        raise TypeError(f"{key} is {value!r}"[:200])
    return value


def _fee(value: JsonValue, key: str) -> float | None:
    return None if value is None else float(_scalar(value, key))


def from_bitmex(obj: JsonObject) -> InstrumentSpec:
    """InstrumentSpec of one BitMEX instrument object (its listed fees recorded, not
    charged: see the module docstring)."""
    try:
        settle = _SETTLE.get(str(obj.get("settlCurrency")), "XBT")
        if obj.get("isInverse"):
            settle = "XBT"  # inverse pnl is computed in XBT with multiplier 1 (core.instrument)
        return InstrumentSpec(
            symbol=str(obj["symbol"]),
            tick_size=float(_scalar(obj["tickSize"], "tickSize")),
            lot_size=int(_scalar(obj["lotSize"], "lotSize")),
            is_inverse=bool(obj.get("isInverse", False)),
            multiplier=abs(float(_scalar(obj.get("multiplier") or 1.0, "multiplier")))
            if not obj.get("isInverse")
            else 1.0,
            maker_fee=_fee(obj.get("makerFee"), "makerFee"),
            taker_fee=_fee(obj.get("takerFee"), "takerFee"),
            funding_interval_hours=_funding_hours(obj.get("fundingInterval")),
            **_funding_offset(
                obj.get("fundingTimestamp"), _funding_hours(obj.get("fundingInterval"))
            ),
            settle_currency=settle,  # type: ignore[arg-type]
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"bad BitMEX instrument {obj.get('symbol')!r}: {exc}") from exc


def load_instrument(path: str | Path, symbol: str) -> InstrumentSpec:
    """The spec of `symbol` from a BitMEX instrument JSON or an InstrumentSpec config file."""
    p = Path(path)
    text = p.read_text()
    if p.suffix in (".yaml", ".yml"):
        data: Any = yaml.safe_load(text)
    else:
        data = json.loads(text)
    if isinstance(data, dict) and "tickSize" in data:
        data = [data]
    if isinstance(data, list):
        for obj in data:
            if isinstance(obj, dict) and obj.get("symbol") == symbol:
                return from_bitmex(obj)
        raise ValueError(f"symbol {symbol!r} not found in {p}")
    if isinstance(data, dict):
        fields = data.get("instrument", data)
        spec = InstrumentSpec(**fields)
        if spec.symbol != symbol:
            raise ValueError(f"{p} describes {spec.symbol!r}, not {symbol!r}")
        return spec
    raise ValueError(f"{p} is neither a BitMEX instrument list nor an instrument config")


def listed_fees(spec: InstrumentSpec) -> FeeConfig:
    """The fee the exchange listed for `spec` (`load_instrument` of a BitMEX instrument
    list) as a constant override at every date: for a user whose tier that is, trading
    data from around the time of the query. Raises ValueError when the spec lists no fee."""
    if spec.maker_fee is None or spec.taker_fee is None:
        raise ValueError(f"{spec.symbol}: the instrument lists no maker and taker fee")
    return FeeConfig.constant(spec.maker_fee, spec.taker_fee)
