"""The paper account's dry-run output: one line per simulated fill and per funding
settlement, a final summary, and a JSON-lines record that `live.paper_replay` replays
through the env to the same numbers.

Orchestration-side adapter (stdout and one file); the encoders are pure. The live loop
(observe-only) calls `start` when the paper account opens (the first decision bar),
`bar` after every later bar's fills, funding and roll (each with the bar's `BarInputs`), `decision` after the paper orders
followed a decision, `rules` when a new champion brings other env rules, and `close` at
the end. Per bar that is a few small rows (`live.paper_record`, each line a row's dump)
and one `json.dumps`: microseconds, outside the decision's latency.

The record, one JSON object a line (`kind`), `RECORD_VERSION` 2:
- `start`: the rules (`BrokerRules`, fee schedule included), the instrument, the decision
  bar that opened the account (`bar`: ts, bid, ask, buy_hi, sell_lo, mid) and its account;
- `fill`: one simulated fill (ts, side, price_ticks, stake, contracts, notional, fee,
  fee_rate), written before its bar;
- `funding`: a funding time the bar settled (with funding on; also when flat), its rate
  and its source ("exchange": announced on BitMEX's instrument table; "config": the
  rules' constant), written before its bar (`live.funding`);
- `bar`: the inputs the paper account used (`BarInputs`: ts, bid, ask, buy_hi, sell_lo in
  ticks, mid, and #17's queue and latency fields: sizes at the best, volume at and times
  through the previous best),
  what it did (fills, funding) and the result: resting orders after the roll, the account
  (every `Position` field but the lots; `lots` too when the bar filled) and the equity
  marked at the mid;
- `decision`: the action applied at that bar's close and the resting orders after it;
- `rules`: new rules from a model swap; `end`: the summary.
Floats are written with Python's shortest round-trip repr, so the numbers read back are
the numbers computed.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import IO

from core.clock import iso_ms
from core.fees import FeeConfig
from core.instrument import InstrumentSpec
from core.jsontypes import JsonObject
from envs.broker import BrokerAccount, BrokerFill, BrokerRules
from envs.position import Lot, Position, equity
from live.decision import Decision
from live.funding import FundingDue
from live.jsonl import JsonLinesAppender
from live.paper_record import (
    Account,
    BarInputs,
    LotRow,
    PaperBar,
    PaperDecision,
    PaperEnd,
    PaperFill,
    PaperFunding,
    PaperStart,
    PaperTotals,
    RulesChange,
)

_ACCOUNT = tuple(f.name for f in fields(Position) if f.name not in ("longs", "shorts"))


# ---------------------------------------------------------------- pure encoders
def rules_json(rules: BrokerRules) -> JsonObject:
    """The rules as JSON (the fee schedule as its pydantic dump)."""
    d: JsonObject = {f.name: getattr(rules, f.name) for f in fields(rules) if f.name != "fees"}
    d["fees"] = rules.fees.model_dump(mode="json")
    return d


def rules_from_json(d: JsonObject) -> BrokerRules:
    """`rules_json`'s inverse. Raises ValueError (pydantic's, or an unknown field) or
    TypeError (a field of the wrong kind)."""
    kw: dict[str, object] = dict(d)
    kw["fees"] = FeeConfig.model_validate(kw.get("fees", {}))
    return BrokerRules(**kw)  # type: ignore[arg-type]  # BrokerRules.__post_init__ checks


def account_json(position: Position) -> Account:
    """Every field of the account but the lots (`lots_list`)."""
    return {name: getattr(position, name) for name in _ACCOUNT}


def lots_list(position: Position) -> list[LotRow]:
    """The open lots, oldest first: [side, price_ticks, ts_ns, stake, contracts, entry_fee]."""
    return [
        [lot.side, lot.price_ticks, lot.ts_ns, lot.stake, lot.contracts, lot.entry_fee]
        for lot in position.lots
    ]


def position_from_record(account: Account, lots: list[LotRow]) -> Position:
    """The Position an `account` and a `lots_list` describe (the replay's expectation).
    Raises KeyError (a missing field), TypeError or ValueError."""
    built = tuple(
        Lot(int(s), int(px), int(ts), float(st), float(c), float(f)) for s, px, ts, st, c, f in lots
    )

    def num(name: str) -> float:
        return float(account[name])

    return Position(
        balance=num("balance"),
        flat_since_ns=int(account["flat_since_ns"]),
        longs=tuple(lot for lot in built if lot.side > 0),
        shorts=tuple(lot for lot in built if lot.side < 0),
        realized_pnl=num("realized_pnl"),
        fees=num("fees"),
        funding=num("funding"),
        maker_volume=num("maker_volume"),
        taker_volume=num("taker_volume"),
        maker_fees=num("maker_fees"),
        taker_fees=num("taker_fees"),
    )


def quote_currency(instrument: InstrumentSpec) -> str:
    """The currency prices are quoted in (XBTUSD: USD)."""
    sym = instrument.symbol
    return "USD" if sym.endswith("USD") else sym[3:] or sym


def format_fill(
    fill: BrokerFill, position: Position, eq: float, initial: float, instrument: InstrumentSpec
) -> str:
    """The dry-run line of one simulated fill. Pure."""
    side = "buy" if fill.side > 0 else "sell"
    price = fill.price_ticks * instrument.tick_size
    unit = instrument.settle_currency
    return (
        f"{iso_ms(fill.ts_ns)} paper fill: {side} {fill.stake:g} stake ({fill.contracts:,.0f} "
        f"contracts) @ {price:,} {quote_currency(instrument)} (maker, fee "
        f"{fill.fee_rate * 1e4:+.2f} bp = {fill.fee:+.8f} {unit}) "
        f"pos={position.signed_exposure:+.3f} equity={eq:.8f} {unit} "
        f"pnl={(eq / initial - 1.0) * 100:+.4f} %"
    )


def format_funding(
    due: FundingDue, paid: float, position: Position, eq: float, instrument: InstrumentSpec
) -> str:
    """The dry-run line of one funding settlement (`paid` positive = paid). Pure."""
    source = "announced by the exchange" if due.source == "exchange" else "configured constant"
    return (
        f"{iso_ms(due.funding_time)} paper funding: rate {due.rate * 1e4:+.2f} bp ({source}), "
        f"paid {paid:+.8f} {instrument.settle_currency} pos={position.signed_exposure:+.3f} "
        f"equity={eq:.8f} {instrument.settle_currency}"
    )


@dataclass
class PaperStats:
    """Running totals of a paper session (settle currency; drawdown a fraction of the peak)."""

    initial_equity: float = 0.0
    fills: int = 0
    buys: int = 0
    sells: int = 0
    bars: int = 0
    decisions: int = 0
    fees: float = 0.0
    funding: float = 0.0
    equity: float = 0.0
    peak: float = 0.0
    max_drawdown: float = 0.0
    position: float = 0.0  # signed exposure

    def mark(self, position: Position, eq: float) -> None:
        self.fees, self.funding = position.fees, position.funding
        self.position = position.signed_exposure
        self.equity = eq
        self.peak = max(self.peak, eq)
        if self.peak > 0:
            self.max_drawdown = max(self.max_drawdown, 1.0 - eq / self.peak)

    @property
    def pnl(self) -> float:
        """Equity less the initial equity (settle currency)."""
        return self.equity - self.initial_equity

    def totals(self) -> PaperTotals:
        """The totals now, as one value (the record's `end` line, `LiveSummary.paper`)."""
        return PaperTotals(
            initial_equity=self.initial_equity,
            fills=self.fills,
            buys=self.buys,
            sells=self.sells,
            bars=self.bars,
            decisions=self.decisions,
            fees=self.fees,
            funding=self.funding,
            equity=self.equity,
            peak=self.peak,
            max_drawdown=self.max_drawdown,
            position=self.position,
            pnl=self.pnl,
        )


def format_summary(s: PaperStats, unit: str) -> str:
    """The paper session in one line. Pure."""
    pct = (s.equity / s.initial_equity - 1.0) * 100 if s.initial_equity else 0.0
    return (
        f"paper: {s.fills} fills ({s.buys} buy, {s.sells} sell) over {s.bars} bars, "
        f"fees {s.fees:+.8f} {unit}, funding {s.funding:+.8f} {unit}, "
        f"equity {s.equity:.8f} {unit}, pnl {s.pnl:+.8f} {unit} ({pct:+.4f} %), "
        f"max drawdown {s.max_drawdown * 100:.4f} %, pos={s.position:+.3f}"
    )


# ---------------------------------------------------------------- the sink
class PaperLog:
    """Prints each simulated fill to `out` and writes the record to `path` (either None)."""

    def __init__(self, out: IO[str] | None, path: str | Path | None) -> None:
        self.out = out
        self.path = Path(path) if path else None
        self._file = JsonLinesAppender(self.path) if self.path else None
        self.stats = PaperStats()
        self.started = False
        self._unit = "XBT"

    def _write(
        self,
        line: PaperStart
        | PaperFill
        | PaperFunding
        | PaperBar
        | PaperDecision
        | RulesChange
        | PaperEnd,
    ) -> None:
        """Append one row's line to the record (when there is one)."""
        if self._file is not None:
            self._file.append(line.to_json())

    def start(self, paper: BrokerAccount, bar: BarInputs) -> None:
        """The paper account opened at the decision bar `bar` (before its first action)."""
        inst = paper.instrument
        self.started = True
        self._unit = inst.settle_currency
        eq = equity(paper.position, bar.mid, inst)
        self.stats = PaperStats(initial_equity=paper.rules.initial_equity_xbt, peak=eq)
        self.stats.mark(paper.position, eq)
        self._write(
            PaperStart(
                ts=bar.ts,
                time=iso_ms(bar.ts),
                rules=rules_json(paper.rules),
                instrument=inst.model_dump(mode="json"),
                bar=bar,
                account=account_json(paper.position),
                equity=eq,
            )
        )

    def bar(self, paper: BrokerAccount, bar: BarInputs, funding: FundingDue | None = None) -> None:
        """One bar after the decision bar, after `paper.on_bar` (`live.funding.paper_on_bar`,
        whose answer `funding` is: the funding the bar settled, None when none): its fills
        and its funding's rate and source (printed and written), then the bar."""
        pos, inst = paper.position, paper.instrument
        eq = equity(pos, bar.mid, inst)
        s = self.stats
        s.bars += 1
        for fill in paper.last_fills:
            s.fills += 1
            s.buys += fill.side > 0
            s.sells += fill.side < 0
            if self.out is not None:
                line = format_fill(fill, pos, eq, s.initial_equity, inst)
                print(line, file=self.out, flush=True)
        if funding is not None and self.out is not None:
            line = format_funding(funding, paper.last_funding, pos, eq, inst)
            print(line, file=self.out, flush=True)
        s.mark(pos, eq)
        if self._file is None:
            return  # not recorded: no rows to build (a few µs each)
        for fill in paper.last_fills:
            self._write(
                PaperFill(
                    ts=fill.ts_ns,
                    side="buy" if fill.side > 0 else "sell",
                    price_ticks=fill.price_ticks,
                    stake=fill.stake,
                    contracts=fill.contracts,
                    notional=fill.notional,
                    fee=fill.fee,
                    fee_rate=fill.fee_rate,
                )
            )
        if funding is not None:
            self._write(
                PaperFunding(
                    ts=bar.ts,
                    funding_time=funding.funding_time,
                    rate=funding.rate,
                    source=funding.source,
                )
            )
        self._write(
            PaperBar(
                **bar.model_dump(),
                fills=len(paper.last_fills),
                funding=paper.last_funding,
                orders=[int(paper.bid_px), int(paper.ask_px)],
                account=account_json(pos),
                equity=eq,
                lots=lots_list(pos) if paper.last_fills else None,  # lots change only by fills
            )
        )

    def decision(self, paper: BrokerAccount, rec: Decision) -> None:
        """The action the paper orders followed at the decision bar `rec.ts`."""
        self.stats.decisions += 1
        if self._file is None:
            return
        self._write(
            PaperDecision(
                ts=rec.ts,
                action=rec.action,
                action_name=rec.action_name,
                orders=[int(paper.bid_px), int(paper.ask_px)],
            )
        )

    def rules(self, paper: BrokerAccount, ts: int) -> None:
        """New env rules (a model swap) from bar `ts` on."""
        self._write(RulesChange(ts=int(ts), rules=rules_json(paper.rules)))

    def close(self) -> PaperTotals | None:
        """Print and write the summary (when the account opened); close the record."""
        summary = self.stats.totals() if self.started else None
        if summary is not None:
            self._write(PaperEnd(**summary.model_dump()))
            if self.out is not None:
                where = f" (record: {self.path})" if self.path else ""
                print(
                    f"chappie live: {format_summary(self.stats, self._unit)}{where}",
                    file=self.out,
                    flush=True,
                )
        if self._file is not None:
            self._file.close()
            self._file = None
        return summary
