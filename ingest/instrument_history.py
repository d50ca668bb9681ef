"""Instrument history: the contract of one symbol over time, and the contract of each day.

An instrument's contract changes over a year: XBTUSD's lot size went from 1 to 100
contracts on 2021-06-08 04:30 UTC, its tick size from 0.5 to 0.1 USD on 2024-07-31
04:00 UTC (BitMEX's announcements). `InstrumentHistory` holds the `InstrumentSpec` in
force from each change on; the ingest records the contract of each day from it
(`spec_for_day`, in the day's partition manifest, as before), and the features read the
contract per day from those manifests (`features.instrument_days`).

Read (`read_instrument_history`) from the real source formats:
- BitMEX websocket `instrument` table messages (``{"table": "instrument", "action":
  "partial" | "update", "data": [{"symbol", "timestamp", "tickSize", "lotSize", ...}]}``),
  one per line, as tardis.dev records its `instrument` channel (``<localTimestamp>
  <message>``) or as a raw recording (anything before the first ``{`` is dropped). An
  update carries only the fields that changed; they are applied to the symbol's last
  state, and the new state takes effect at the update's ``timestamp``;
- a JSON list of BitMEX instrument objects with a ``timestamp`` each (REST answers
  of ``GET /api/v1/instrument`` taken over time; `ingest.instruments.from_bitmex` fields);
- tardis.dev's instrument metadata (``GET /v1/instruments/bitmex/XBTUSD``): the current
  ``priceIncrement``, ``amountIncrement``, ``contractMultiplier``, ``makerFee``,
  ``takerFee``, ``inverse`` and a ``changes`` list giving the values in force *until*
  each date;
- its own JSON (`InstrumentHistory.model_dump`), what `store_history` writes beside the
  events (`events/<symbol>/instrument_history.json`).

The day's contract (`spec_for_day`): the one in force at the end of the day. A day
holding a change (the XBTUSD tick change is at 04:00 UTC) keeps every price of its
earlier hours on that contract's grid when the earlier tick is a multiple of the later
one (0.5 = 5 x 0.1); a day whose earlier prices would be off the later grid is refused.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from core.atomic import write_json_atomic
from core.clock import NS_PER_DAY, NS_PER_S, iso_day, parse_day
from core.config.ingest import IngestConfig
from core.instrument import InstrumentSpec
from core.paths import DataLayout
from ingest.instruments import from_bitmex
from ingest.report import IngestReport

#: file name of the stored history, beside the day partitions of a symbol
HISTORY_FILE = "instrument_history.json"

#: BitMEX instrument fields that make up an `InstrumentSpec` (a change of any other
#: field, e.g. the mark price, is not a contract change)
_SPEC_FIELDS = (
    "tickSize",
    "lotSize",
    "isInverse",
    "multiplier",
    "makerFee",
    "takerFee",
    "fundingInterval",
    "settlCurrency",
)


class InstrumentRecord(BaseModel):
    """`spec` in force from `from_ns` (int64 ns UTC; None: since before any data)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    from_ns: int | None
    spec: InstrumentSpec


class InstrumentHistory(BaseModel):
    """The contracts of `symbol` over time, `records` in time order (each in force until
    the next). Pure."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    symbol: str
    records: tuple[InstrumentRecord, ...]

    def model_post_init(self, _: Any) -> None:
        if not self.records:
            raise ValueError(f"instrument history of {self.symbol} has no record")
        starts = [r.from_ns for r in self.records]
        if any(s is None for s in starts[1:]):
            raise ValueError("only the first instrument record may be in force since always")
        known = [s for s in starts if s is not None]
        if known != sorted(set(known)):
            raise ValueError(f"instrument records of {self.symbol} are not in time order")
        for r in self.records:
            if r.spec.symbol != self.symbol:
                raise ValueError(f"a record of {r.spec.symbol} in the history of {self.symbol}")

    @classmethod
    def constant(cls, spec: InstrumentSpec) -> InstrumentHistory:
        """One contract at every time."""
        return cls(symbol=spec.symbol, records=(InstrumentRecord(from_ns=None, spec=spec),))

    def spec_at(self, ts_ns: int) -> InstrumentSpec:
        """The spec in force at `ts_ns`; ValueError before the first record."""
        found: InstrumentSpec | None = None
        for r in self.records:
            if r.from_ns is None or r.from_ns <= ts_ns:
                found = r.spec
            else:
                break
        if found is None:
            raise ValueError(
                f"no instrument record of {self.symbol} at or before {iso_day(ts_ns)} "
                f"(the history starts {iso_day(self.records[0].from_ns or 0)})"
            )
        return found

    def spec_for_day(self, day: str) -> InstrumentSpec:
        """The contract a day's partition is recorded under: the one in force at the
        day's end (see the module docstring). Raises ValueError when the day ends
        before the history starts or an earlier tick of the day is not a multiple of it."""
        start = parse_day(day)
        end = self.spec_at(start + NS_PER_DAY - 1)
        tick = Decimal(str(end.tick_size))
        for r in self.records:
            if r.from_ns is not None and start < r.from_ns < start + NS_PER_DAY:
                before = self.spec_at(r.from_ns - 1)
                if Decimal(str(before.tick_size)) % tick != 0:
                    raise ValueError(
                        f"{self.symbol}'s tick size changes within {day} from "
                        f"{before.tick_size} to {end.tick_size}: the earlier prices of the "
                        "day are not on the later grid; ingest that day's hours apart"
                    )
        return end

    def tick_changes(self) -> list[tuple[int, float, float]]:
        """(time ns, tick before, tick after) of every change of the tick size."""
        out = []
        for a, b in zip(self.records, self.records[1:], strict=False):
            if a.spec.tick_size != b.spec.tick_size and b.from_ns is not None:
                out.append((b.from_ns, a.spec.tick_size, b.spec.tick_size))
        return out


# ---------------------------------------------------------------- building
def _ns(text: str) -> int:
    """ns UTC of an ISO timestamp (`2024-07-31T04:00:00.000Z`; nanosecond digits beyond
    microseconds, as tardis writes them, are cut)."""
    t = text.strip().replace("Z", "+00:00")
    m = re.match(r"^(.*T\d\d:\d\d:\d\d)(\.\d+)?(.*)$", t)
    if m is None:
        raise ValueError(f"bad timestamp {text!r}")
    frac = (m.group(2) or ".0")[1:]
    whole = datetime.fromisoformat(m.group(1) + (m.group(3) or "+00:00"))
    return int(whole.timestamp()) * NS_PER_S + int((frac + "000000000")[:9])


def _compact(symbol: str, points: Iterable[tuple[int | None, InstrumentSpec]]) -> InstrumentHistory:
    """Records from (from_ns, spec) points in time order, a point repeating the spec in
    force dropped."""
    records: list[InstrumentRecord] = []
    for ts, spec in points:
        if records and records[-1].spec == spec:
            continue
        if records and records[-1].from_ns == ts:
            records[-1] = InstrumentRecord(from_ns=ts, spec=spec)
            continue
        records.append(InstrumentRecord(from_ns=ts, spec=spec))
    if not records:
        raise ValueError(f"no instrument record of {symbol}")
    return InstrumentHistory(symbol=symbol, records=tuple(records))


def from_bitmex_states(objs: Sequence[dict[str, Any]], symbol: str) -> InstrumentHistory:
    """History from BitMEX instrument objects of `symbol`, each with its ``timestamp``
    (full objects, or updates applied in order onto the state before them)."""
    state: dict[str, Any] = {}
    points: list[tuple[int, InstrumentSpec]] = []
    for obj in objs:
        if obj.get("symbol") != symbol:
            continue
        before = {k: state.get(k) for k in _SPEC_FIELDS}
        state.update(obj)
        if points and {k: state.get(k) for k in _SPEC_FIELDS} == before:
            continue
        if "timestamp" not in obj:
            raise ValueError(f"a BitMEX instrument record of {symbol} without a timestamp")
        points.append((_ns(str(obj["timestamp"])), from_bitmex(state)))
    points.sort(key=lambda p: p[0])
    return _compact(symbol, points)


def _ws_objects(lines: Iterable[str]) -> list[dict[str, Any]]:
    """The data rows of BitMEX `instrument` table messages, one message per line."""
    out: list[dict[str, Any]] = []
    for line in lines:
        at = line.find("{")
        if at < 0:
            continue
        try:
            msg = json.loads(line[at:])
        except json.JSONDecodeError:
            continue
        if (
            isinstance(msg, dict)
            and msg.get("table") == "instrument"
            and msg.get("action") in ("partial", "update", "insert")
        ):
            out += [d for d in msg.get("data", []) if isinstance(d, dict)]
    return out


def from_tardis_metadata(obj: dict[str, Any], base: InstrumentSpec) -> InstrumentHistory:
    """History from tardis.dev's instrument metadata: the current values, and in
    ``changes`` the values in force until each ``until`` (a missing value: as after).
    `base` gives what the metadata does not (funding times, settlement)."""
    symbol = str(obj["id"])

    def spec(values: dict[str, Any]) -> InstrumentSpec:
        fields: dict[str, Any] = {"symbol": symbol, "tick_size": float(values["priceIncrement"])}
        fields["lot_size"] = int(float(values["amountIncrement"]))
        if values.get("makerFee") is not None:
            fields["maker_fee"] = float(values["makerFee"])
        if values.get("takerFee") is not None:
            fields["taker_fee"] = float(values["takerFee"])
        if not values.get("inverse", base.is_inverse) and values.get("contractMultiplier"):
            fields["multiplier"] = abs(float(values["contractMultiplier"]))
        fields["is_inverse"] = bool(values.get("inverse", base.is_inverse))
        return base.model_copy(update=fields)

    now = {k: obj.get(k) for k in ("priceIncrement", "amountIncrement", "makerFee", "takerFee")}
    now |= {"inverse": obj.get("inverse"), "contractMultiplier": obj.get("contractMultiplier")}
    changes = sorted(obj.get("changes") or [], key=lambda c: _ns(str(c["until"])))
    # walk back from now: each change gives the values before its `until`
    points: list[tuple[int | None, InstrumentSpec]] = []
    values = dict(now)
    after = values
    ends: list[int | None] = [_ns(str(c["until"])) for c in changes]
    eras: list[dict[str, Any]] = []
    for c in reversed(changes):
        before = dict(after)
        before.update({k: v for k, v in c.items() if k != "until" and v is not None})
        eras.append(before)
        after = before
    eras.reverse()  # eras[i] in force until ends[i]
    starts: list[int | None] = [None, *ends]
    for start, vals in zip(starts, [*eras, values], strict=True):
        points.append((start, spec(vals)))
    return _compact(symbol, points)


def read_instrument_history(
    path: str | Path, symbol: str, base: InstrumentSpec | None = None
) -> InstrumentHistory:
    """The history of `symbol` from a file in one of the formats of the module
    docstring. `base`: the fields tardis metadata does not give (default XBTUSD's).
    Raises ValueError when the file holds no record of `symbol`."""
    p = Path(path)
    text = p.read_text()
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError:
        data = None
    if isinstance(data, dict) and "records" in data:
        hist = InstrumentHistory.model_validate(data)
        if hist.symbol != symbol:
            raise ValueError(f"{p} is the history of {hist.symbol}, not {symbol}")
        return hist
    if isinstance(data, dict) and "priceIncrement" in data:
        if str(data.get("id")) != symbol:
            raise ValueError(f"{p} describes {data.get('id')!r}, not {symbol!r}")
        return from_tardis_metadata(data, base or InstrumentSpec(symbol=symbol))
    if isinstance(data, list):
        objs = [o for o in data if isinstance(o, dict)]
    elif isinstance(data, dict) and data.get("table") == "instrument":
        objs = _ws_objects([text])
    else:
        objs = _ws_objects(text.splitlines())
    if not any(o.get("symbol") == symbol for o in objs):
        raise ValueError(f"no instrument record of {symbol!r} in {p}")
    return from_bitmex_states(objs, symbol)


# ---------------------------------------------------------------- stored beside the events
def history_path(layout: DataLayout, symbol: str) -> Path:
    return layout.events_symbol(symbol) / HISTORY_FILE


def store_history(layout: DataLayout, history: InstrumentHistory) -> Path:
    """Write `history` beside the symbol's day partitions (atomically)."""
    return write_json_atomic(history_path(layout, history.symbol), history.model_dump(mode="json"))


def load_stored_history(layout: DataLayout, symbol: str) -> InstrumentHistory | None:
    """The history stored beside the events of `symbol`, None when there is none."""
    p = history_path(layout, symbol)
    if not p.exists():
        return None
    return InstrumentHistory.model_validate_json(p.read_text())


# ---------------------------------------------------------------- files by contract
_DATE = re.compile(r"(?<!\d)(\d{4})-?(\d{2})-?(\d{2})(?!\d)")


def day_of_file(path: str | Path) -> str | None:
    """The UTC day a day file is named after (tardis ``..._2024-07-31_XBTUSD.csv.gz``,
    BitMEX dumps ``20240731.csv.gz``); None when the name holds no date."""
    m = _DATE.search(Path(path).name)
    return None if m is None else f"{m.group(1)}-{m.group(2)}-{m.group(3)}"


def paths_by_contract(
    paths: Sequence[str], history: InstrumentHistory
) -> list[tuple[InstrumentSpec, tuple[str, ...]]]:
    """`paths` grouped by the contract of the day each file is named after, in the order
    of the contracts' first days: each group is ingested under its contract. One contract
    over the history: one group. Raises ValueError naming a file whose day cannot be
    told (no date in its name) when the history holds more than one contract."""
    specs = {r.spec for r in history.records}
    if len(specs) == 1:
        return [(history.records[0].spec, tuple(paths))]
    groups: dict[InstrumentSpec, list[tuple[str, str]]] = {}
    for p in paths:
        day = day_of_file(p)
        if day is None:
            raise ValueError(
                f"{p}: the instrument history of {history.symbol} changes its contract, and "
                "this file's name holds no date to tell its contract by; name day files "
                "by their date (YYYY-MM-DD or YYYYMMDD) or ingest them with --instrument"
            )
        groups.setdefault(history.spec_for_day(day), []).append((day, p))
    ordered = sorted(groups.items(), key=lambda kv: min(d for d, _ in kv[1]))
    return [(spec, tuple(p for _, p in sorted(items))) for spec, items in ordered]


# ---------------------------------------------------------------- the ingest, by contract
def ingest_configs(cfg: IngestConfig, history: InstrumentHistory) -> list[IngestConfig]:
    """`cfg` split into one ingest per contract of `history`: each with the files of the
    days under that contract (`paths_by_contract`) and that contract as its instrument,
    in time order. The synthetic market is generated under one instrument: its days
    must share one contract (ValueError naming the change otherwise)."""
    if history.symbol != cfg.symbol:
        raise ValueError(f"the instrument history is of {history.symbol}, not {cfg.symbol}")
    if cfg.source == "synthetic":
        syn = cfg.synthetic
        start = parse_day(syn.start_day)
        days = [iso_day(start + i * NS_PER_DAY) for i in range(syn.days)]
        specs = {d: history.spec_for_day(d) for d in days}
        changed = [d for a, d in zip(days, days[1:], strict=False) if specs[a] != specs[d]]
        if changed:
            raise ValueError(
                f"the synthetic market is generated under one instrument; its days span "
                f"{cfg.symbol}'s contract change on {changed[0]}: generate each side apart"
            )
        return [cfg.model_copy(update={"instrument": specs[days[0]]})]
    return [
        cfg.model_copy(update={"instrument": spec, "paths": paths})
        for spec, paths in paths_by_contract(list(cfg.paths), history)
    ]


def merge_reports(reports: Sequence[IngestReport]) -> IngestReport:
    """One report of an ingest run made of several (one per contract): counts added,
    lists joined, reason tallies added. The balance equations hold for the sum when
    they hold for each part."""
    if len(reports) == 1:
        return reports[0]

    def tally(key: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in reports:
            for k, v in getattr(r, key).items():
                out[k] = out.get(k, 0) + v
        return out

    first = reports[0]
    ints: tuple[str, ...] = ("files_in", "files_ok", "files_quarantined", "rows_in")
    ints += ("rows_out", "rows_rejected", "rows_filtered")
    lists = ("partitions_written", "partitions_unchanged", "quarantine")
    fields: dict[str, Any] = {k: sum(getattr(r, k) for r in reports) for k in ints}
    fields |= {k: [x for r in reports for x in getattr(r, k)] for k in lists}
    fields |= {k: tally(k) for k in ("events_out", "desyncs", "reasons", "filtered")}
    return IngestReport(source=first.source, symbol=first.symbol, **fields)
