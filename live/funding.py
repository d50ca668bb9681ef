"""The funding the paper account settles (#17): at each funding time, the rate BitMEX
announced for it on the websocket `instrument` table, else the rules' constant
`funding_rate`; which one is said per settlement (`FundingDue.source`, the paper record's
`funding` line).

BitMEX's instrument rows carry `fundingTimestamp` (the next funding time, ISO 8601 UTC;
XBTUSD 04/12/20 UTC) and `fundingRate` (the fraction of notional that settles then;
positive = longs pay shorts); `indicativeFundingRate` is the interval after it and is not
used. A partial carries both; an update carries only what changed, so a row's
`fundingRate` belongs to the latest `fundingTimestamp` seen (the same row's or an earlier
one's). The last rate announced for a funding time is the one it settles at. A row whose
time is not one of the instrument's funding times, or whose rate is not a finite number
within `ingest.funding.MAX_ABS_RATE`, is refused (counted), never settled.

`FundingAnnouncements` is state the live loop feeds (pure: no I/O, no clock);
`paper_on_bar` runs one bar of the paper account at the rate due.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from core.instrument import InstrumentSpec, funding_time
from core.jsontypes import JsonValue
from envs.broker import BrokerAccount
from ingest.funding import MAX_ABS_RATE
from live.decode import parse_timestamp_ns
from live.paper_record import BarInputs

FundingSource = Literal["exchange", "config"]


@dataclass(frozen=True, slots=True)
class FundingDue:
    """The funding a bar settles: its funding time (ns), the rate, and where the rate came
    from ("exchange": BitMEX announced it; "config": the rules' constant `funding_rate`)."""

    funding_time: int
    rate: float
    source: FundingSource


class FundingAnnouncements:
    """The funding rates BitMEX announced for `symbol`, by funding time (see the module
    docstring). `refused` counts rows whose time or rate could not be used."""

    def __init__(self, symbol: str, instrument: InstrumentSpec) -> None:
        self.symbol = symbol
        self.instrument = instrument
        self.rates: dict[int, float] = {}  # funding time (ns) -> the last rate announced
        self.next_time: int | None = None  # the latest fundingTimestamp seen
        self.refused = 0

    def on_rows(self, rows: JsonValue) -> None:
        """The `data` of one instrument message (a partial or an update), in order."""
        for row in rows if isinstance(rows, list) else []:
            if not isinstance(row, dict) or row.get("symbol") != self.symbol:
                continue
            if "fundingTimestamp" in row:
                self.next_time = self._time(row["fundingTimestamp"])
            if "fundingRate" in row:
                rate = row["fundingRate"]
                if self.next_time is None or not _usable_rate(rate):
                    self.refused += 1
                    continue
                assert isinstance(rate, int | float)  # _usable_rate
                self.rates[self.next_time] = float(rate)

    def _time(self, value: JsonValue) -> int | None:
        """A fundingTimestamp as ns, None (refused) when unreadable or not a funding time."""
        if value is None:
            return None  # an instrument without funding
        try:
            t = parse_timestamp_ns(value) if isinstance(value, str) else None
        except (ValueError, TypeError):
            t = None
        if t is None or funding_time(t, self.instrument) != t:
            self.refused += 1
            return None
        return t

    def due(self, funding_time_ns: int, constant: float) -> FundingDue:
        """The rate funding time `funding_time_ns` settles at: the one announced for it, else
        `constant`. Announcements for it and earlier times are forgotten (each settles once)."""
        rate = self.rates.get(funding_time_ns)
        for t in [t for t in self.rates if t <= funding_time_ns]:
            del self.rates[t]
        if rate is None:
            return FundingDue(funding_time_ns, float(constant), "config")
        return FundingDue(funding_time_ns, rate, "exchange")


def _usable_rate(value: JsonValue) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and abs(value) <= MAX_ABS_RATE
    )


def _on_bar(paper: BrokerAccount, bar: BarInputs, funding_rate: float | None = None) -> None:
    paper.on_bar(
        bar.ts, bar.bid, bar.ask, bar.buy_hi, bar.sell_lo, bar.mid, **bar.events(),
        funding_rate=funding_rate,
    )  # fmt: skip


def paper_on_bar(
    paper: BrokerAccount, bar: BarInputs, announced: FundingAnnouncements | None
) -> FundingDue | None:
    """One bar after the decision bar of the paper account (`BrokerAccount.on_bar`: fills,
    funding, roll; the funding marked at `bar.mid`; the bar's queue and latency fields
    `BarInputs.events`), funding at the rate due
    (`FundingAnnouncements.due`; without announcements the constant). Returns the funding
    the bar settled (rate and source; also when the account was flat and paid nothing),
    None when no funding time fell in the bar or the rules settle no funding."""
    rules = paper.rules
    if not paper.funding_due(bar.ts):
        _on_bar(paper, bar)
        return None
    t = int(funding_time(bar.ts, paper.instrument))
    if announced is None:
        due = FundingDue(t, float(rules.funding_rate), "config")
    else:
        due = announced.due(t, rules.funding_rate)
    _on_bar(paper, bar, due.rate)
    return due
