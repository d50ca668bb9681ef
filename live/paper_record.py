"""The paper record's lines as typed values: what `live.paper_log.PaperLog` writes (each
line a row's `to_json()`) and what `live.paper_replay` reads back (`parse_line`).

The JSON lines are the contract (keys, order and number kinds unchanged since the rows
were dicts): `parse_line(json.loads(s)).to_json()` dumps to the line `s`. `RECORD_VERSION`
2 (#17) adds the `funding` line (the rate and source of each settlement) and the bars'
`BAR_EVENTS` (queue and latency fields); a version 1 record has neither: its funding
times settled at the rules' constant `funding_rate`, its bars' events were unknown. The
rules and the instrument stay the JSON of their own types (`BrokerRules` via
`rules_json`, `InstrumentSpec`); the account is every `Position` field but the lots, by
name (`live.paper_log.account_json`).

Pure: pydantic models and their serialisers.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    TypeAdapter,
    model_serializer,
)

from core.jsontypes import JsonObject
from envs.broker import SLICE_COLUMNS

RECORD_VERSION = 2
READABLE_VERSIONS = (1, 2)  # what live.paper_replay replays

Account = dict[str, float | int]  # every Position field but the lots, by name
LotRow = list[float | int]  # [side, price_ticks, ts_ns, stake, contracts, entry_fee]


class _Line(BaseModel):
    """Base of the record's lines: immutable, unknown keys are an error."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def to_json(self) -> JsonObject:
        """The line as a JSON-able dict (keys in the record's order)."""
        out: JsonObject = self.model_dump()
        return out


# #17's bar fields (envs.broker.BAR_DTYPE's names, BrokerAccount.on_bar's keywords): the
# sizes at the best bid / ask at the close, the taker volume at the previous close's best
# and the first / last ts of the prints through it, per side
BAR_EVENTS = tuple(SLICE_COLUMNS)


class BarInputs(_Line):
    """What the paper account used at a bar's close (ns; prices in ticks, mid a float; the
    `BAR_EVENTS` in contracts and ns): the one value the live loop hands the paper account
    and its record per bar. An event field is None (and absent from the line) in records
    written before the sampler had it: the broker took it as unknown."""

    ts: int
    bid: int
    ask: int
    buy_hi: int
    sell_lo: int
    mid: float
    bid_size: int | None = None
    ask_size: int | None = None
    sell_at_vol: int | None = None
    sell_thru_first: int | None = None
    sell_thru_last: int | None = None
    buy_at_vol: int | None = None
    buy_thru_first: int | None = None
    buy_thru_last: int | None = None

    @model_serializer(mode="wrap")
    def _known_events_only(self, dump: SerializerFunctionWrapHandler) -> JsonObject:
        out: JsonObject = dump(self)
        for name in BAR_EVENTS:
            if out.get(name, 0) is None:
                del out[name]
        return out

    def events(self) -> dict[str, int]:
        """The event fields known, by name (BrokerAccount.on_bar's keywords)."""
        return {n: v for n in BAR_EVENTS if (v := getattr(self, n)) is not None}


class PaperStart(_Line):
    """The account opened at the decision bar `bar`, under `rules`, on `instrument`."""

    kind: Literal["start"] = "start"
    version: int = RECORD_VERSION
    ts: int
    time: str
    rules: JsonObject  # live.paper_log.rules_json
    instrument: JsonObject  # InstrumentSpec.model_dump(mode="json")
    bar: BarInputs
    account: Account
    equity: float


class PaperFill(_Line):
    """One simulated fill (`envs.broker.BrokerFill`), written before its bar."""

    kind: Literal["fill"] = "fill"
    ts: int
    side: Literal["buy", "sell"]
    price_ticks: int
    stake: float
    contracts: float
    notional: float
    fee: float
    fee_rate: float
    liquidity: Literal["maker"] = "maker"


class PaperFunding(_Line):
    """A funding time settled at the bar `ts` (written before its bar line, whose `funding`
    is the amount paid): the rate, and where it came from: "exchange" (BitMEX announced it
    on the instrument table) or "config" (the rules' constant `funding_rate`)."""

    kind: Literal["funding"] = "funding"
    ts: int
    funding_time: int
    rate: float
    source: Literal["exchange", "config"]


class PaperBar(BarInputs):
    """A bar after the decision bar: its inputs (`BarInputs`' fields), what it did and the
    account after it (`lots` only when the bar filled: lots change only by fills)."""

    kind: Literal["bar"] = "bar"
    fills: int
    funding: float
    orders: list[int]  # resting [bid, ask] prices in ticks after the roll (0: none)
    account: Account
    equity: float
    lots: list[LotRow] | None = None

    def to_json(self) -> JsonObject:
        out: JsonObject = self.model_dump(exclude={"lots"} if self.lots is None else None)
        return out


class PaperDecision(_Line):
    """The action the paper orders followed at the decision bar `ts`, and the resting
    orders after it."""

    kind: Literal["decision"] = "decision"
    ts: int
    action: int | None
    action_name: str | None
    orders: list[int]


class RulesChange(_Line):
    """New env rules (a model swap) from bar `ts` on."""

    kind: Literal["rules"] = "rules"
    ts: int
    rules: JsonObject


class PaperTotals(_Line):
    """A paper session's totals (settle currency; drawdown a fraction of the peak;
    `position` the signed exposure): `live.paper_log.PaperStats.totals`."""

    initial_equity: float
    fills: int
    buys: int
    sells: int
    bars: int
    decisions: int
    fees: float
    funding: float
    equity: float
    peak: float
    max_drawdown: float
    position: float | int  # 0 (an int) when flat
    pnl: float


class PaperEnd(PaperTotals):
    """The session's last line: its totals."""

    kind: Literal["end"] = "end"

    def to_json(self) -> JsonObject:
        return {"kind": self.kind, **self.model_dump(exclude={"kind"})}


PaperLine = Annotated[
    PaperStart | PaperFill | PaperFunding | PaperBar | PaperDecision | RulesChange | PaperEnd,
    Field(discriminator="kind"),
]
_LINE: TypeAdapter[PaperLine] = TypeAdapter(PaperLine)


def parse_line(obj: JsonObject) -> PaperLine:
    """One record line read back, strictly (a number written as a string is malformed).
    Raises pydantic.ValidationError (an unknown `kind`, a missing or malformed field, an
    unknown key)."""
    return _LINE.validate_python(obj, strict=True)
