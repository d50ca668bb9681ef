"""Replay a paper record (`live.paper_log`) through the env and say whether it agrees.

The record's bars become a slice (ts, mid, best bid/ask, buy_hi, sell_lo and #17's event
columns, `envs.broker.SLICE_COLUMNS`, as the broker took them; one constant
dummy feature with its frozen stats, in a temporary folder), the record's rules an
`EnvConfig` (every rule by its name; window 1, one bar a step, the whole slice, no
flattening at the end), and
`envs.management.ManagementEnv` steps it with the recorded actions: the decision's at a
decision bar, "leave the orders as they are" at a bar without one (toggle 0; target:
the sides resting). After every bar the env's account (every `Position` field, the open
lots included), its resting orders, its fills (the maker volume and fees they added,
summed in the record's order) and its equity at the mid must equal the record's
exactly: the paper account runs the env's broker (`envs.broker`), so any difference is
a bug or a tampered record.

Funding: each `funding` line (record version 2) names the rate a bar settled and its
source. The rates BitMEX announced ("exchange") become the env's funding table
(`EnvConfig.funding_rates_path`, a table written to the temporary folder), so the env
settles each funding time at the record's rate, or at the rules' constant where the
record says "config"; the env's settlements (`ManagementEnv.funding_schedule`: bar, rate,
from the table or not) must be the record's, one for one. A version 1 record has no
funding lines: its funding times settled at the constant, as the env's do.

A file holding several sessions (a restarted `chappie live` appends) replays each from
its `start`. A session whose rules change mid-way (a model swap) is not replayable:
`PaperRecordError`.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import ValidationError

from core import schema as S
from core.clock import iso_ms
from core.config.env import EnvConfig
from core.instrument import InstrumentSpec
from core.jsontypes import JsonObject
from envs.broker import SLICE_COLUMNS, Bar
from envs.management import ManagementEnv
from envs.position import Position, equity
from features.stats import FrozenStats
from live.paper_log import position_from_record, rules_from_json
from live.paper_record import (
    READABLE_VERSIONS,
    BarInputs,
    LotRow,
    PaperBar,
    PaperDecision,
    PaperFill,
    PaperFunding,
    PaperLine,
    PaperStart,
    RulesChange,
    parse_line,
)

_FEATURE = "paper_replay_constant"
_MAX_REPORTED = 20


class PaperRecordError(ValueError):
    """The record cannot be read or replayed (malformed line, unknown version, rule change)."""


@dataclass
class PaperReplay:
    """What a replay found: counts, the final equity on both sides, the disagreements."""

    sessions: int = 0
    bars: int = 0
    decisions: int = 0
    fills_record: int = 0
    fills_env: int = 0
    settlements: int = 0  # funding lines (record version 2)
    settlements_exchange: int = 0  # of which at a rate BitMEX announced
    equity_record: float | None = None
    equity_env: float | None = None
    mismatches: list[str] = field(default_factory=list)
    mismatch_count: int = 0

    @property
    def agree(self) -> bool:
        return self.mismatch_count == 0

    def add(self, msg: str) -> None:
        self.mismatch_count += 1
        if len(self.mismatches) < _MAX_REPORTED:
            self.mismatches.append(msg)

    def as_dict(self) -> JsonObject:
        return {
            "agree": self.agree,
            "sessions": self.sessions,
            "bars": self.bars,
            "decisions": self.decisions,
            "fills_record": self.fills_record,
            "fills_env": self.fills_env,
            "settlements": self.settlements,
            "settlements_exchange": self.settlements_exchange,
            "equity_record": self.equity_record,
            "equity_env": self.equity_env,
            "mismatch_count": self.mismatch_count,
            "mismatches": [*self.mismatches],
        }


def read_paper_record(path: str | Path) -> list[PaperLine]:
    """The record's lines (`live.paper_record`). Raises PaperRecordError naming the line of
    a malformed one, or when the file holds no `start` line; OSError when it cannot be read."""
    p = Path(path)
    out: list[PaperLine] = []
    with p.open("r", encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise PaperRecordError(f"{p}:{n}: not JSON ({exc.msg})") from exc
            if not isinstance(obj, dict) or "kind" not in obj:
                raise PaperRecordError(f"{p}:{n}: not a paper record line (no 'kind')")
            try:
                out.append(parse_line(obj))
            except ValidationError as exc:
                err = exc.errors()[0]
                where = ".".join(str(x) for x in err["loc"])
                raise PaperRecordError(
                    f"{p}:{n}: not a paper record line ({where}: {err['msg']})"
                ) from None
    if not any(isinstance(o, PaperStart) for o in out):
        raise PaperRecordError(
            f"{p}: no 'start' line: not a paper record (chappie live --paper-out)"
        )
    return out


def replay_paper_record(path: str | Path) -> PaperReplay:
    """Replay every session of the record at `path` through the env (see the module
    docstring). Raises PaperRecordError / OSError as `read_paper_record`."""
    lines = read_paper_record(path)
    rep = PaperReplay()
    session: list[PaperLine] = []
    for obj in lines:
        if isinstance(obj, PaperStart) and session:
            _replay_session(session, rep)
            session = []
        if session or isinstance(obj, PaperStart):
            session.append(obj)
    if session:
        _replay_session(session, rep)
    return rep


@dataclass
class _Row:
    """One bar of a session: the start's bar (inputs only, no orders resting) or a bar line
    (inputs and results), the fill and funding lines written before it, and its decision."""

    bar: BarInputs | PaperBar
    fills: list[PaperFill] = field(default_factory=list)
    funding: PaperFunding | None = None
    action: int | None = None  # the decision's, None: no decision at this bar
    orders_after_decision: list[int] | None = None  # the decision's resting orders

    @property
    def orders(self) -> list[int]:
        """The resting orders the next bar starts from (the decision's, or the bar's)."""
        if self.orders_after_decision is not None:
            return self.orders_after_decision
        return self.bar.orders if isinstance(self.bar, PaperBar) else [0, 0]


def _rows(session: list[PaperLine]) -> list[_Row]:
    start = session[0]
    assert isinstance(start, PaperStart)  # replay_paper_record splits sessions at starts
    if start.version not in READABLE_VERSIONS:
        raise PaperRecordError(
            f"record version {start.version!r}: this replay reads "
            f"{', '.join(map(str, READABLE_VERSIONS))}"
        )
    rows = [_Row(start.bar)]
    pending: list[PaperFill] = []
    funding: PaperFunding | None = None
    for obj in session[1:]:
        if isinstance(obj, PaperFill):
            pending.append(obj)
        elif isinstance(obj, PaperFunding):
            if funding is not None:
                raise PaperRecordError(f"two funding lines before the bar {iso_ms(obj.ts)}")
            funding = obj
        elif isinstance(obj, PaperBar):
            if funding is not None and funding.ts != obj.ts:
                raise PaperRecordError(
                    f"funding line at {iso_ms(funding.ts)} before the bar {iso_ms(obj.ts)}"
                )
            rows.append(_Row(obj, pending, funding))
            pending, funding = [], None
        elif isinstance(obj, PaperDecision):
            row = rows[-1]
            if obj.ts != row.bar.ts or row.action is not None:
                raise PaperRecordError(
                    f"decision at {iso_ms(obj.ts)} is not at the last bar's close"
                )
            row.action = obj.action
            row.orders_after_decision = obj.orders
        elif isinstance(obj, RulesChange):
            raise PaperRecordError(
                f"the rules changed at {iso_ms(obj.ts)} (a model swap): "
                "a session under two rule sets is not replayable"
            )
        elif isinstance(obj, PaperStart):
            raise PaperRecordError("a start line inside a session")  # split before: a bug
    if pending or funding is not None:
        raise PaperRecordError("fills or funding after the last bar line (a truncated record?)")
    return rows


def _no_op(action_mode: str, orders: list[int]) -> int:
    """The action that leaves the resting orders as they are."""
    if action_mode == "target":
        return int(orders[0] != 0) | (int(orders[1] != 0) << 1)
    return 0


def _replay_session(session: list[PaperLine], rep: PaperReplay) -> None:
    rows = _rows(session)
    rep.sessions += 1
    rep.bars += len(rows) - 1
    rep.decisions += sum(r.action is not None for r in rows)
    rep.fills_record += sum(len(r.fills) for r in rows)
    settled = [r.funding for r in rows if r.funding is not None]
    rep.settlements += len(settled)
    rep.settlements_exchange += sum(f.source == "exchange" for f in settled)
    start = session[0]
    assert isinstance(start, PaperStart)
    rules = rules_from_json(start.rules)
    instrument = InstrumentSpec.model_validate(start.instrument)
    where = f"session {rep.sessions} ({start.time})"
    if len(rows) < 2:
        return  # the account opened on its last bar: nothing to step
    # every rule of the paper account is an EnvConfig field of the same name (fill model,
    # queue exponent and latencies included); the env steps one bar at a time, all of them
    cfg = EnvConfig.model_validate(
        {
            **{f.name: getattr(rules, f.name) for f in fields(rules)},
            "window": 1,
            "step_skip": 1,
            "random_start": False,
            "instrument": instrument,
        }
    )
    with tempfile.TemporaryDirectory(prefix="paper-replay-") as tmp:
        announced = [f for f in settled if f.source == "exchange"]
        if announced and rules.funding:
            table = _funding_table(announced, instrument.symbol, Path(tmp))
            cfg = cfg.model_copy(update={"funding_rates_path": str(table)})
        env = _env_for(rows, cfg, Path(tmp))
        if start.version >= 2:
            _compare_funding(env, rows, rep, where)
        _step_and_compare(env, rows, rules.action_mode, rep, where, instrument)


def _funding_table(announced: list[PaperFunding], symbol: str, tmp: Path) -> Path:
    """The rates the record says BitMEX announced, as a funding table (`ingest.funding`'s
    layout: ts, funding_rate, symbol, source) in `tmp`. Raises PaperRecordError on two
    rates for one funding time."""
    rates: dict[int, float] = {}
    for f in announced:
        if rates.setdefault(f.funding_time, f.rate) != f.rate:
            raise PaperRecordError(f"two funding rates for {iso_ms(f.funding_time)}")
    times = sorted(rates)
    path = tmp / "funding.parquet"
    table = {
        "ts": pa.array(times, pa.int64()),
        "funding_rate": pa.array([rates[t] for t in times], pa.float64()),
        "symbol": pa.array([symbol] * len(times), pa.string()),
        "source": pa.array(["paper record"] * len(times), pa.string()),
    }
    pq.write_table(pa.table(table), path)
    return path


def _compare_funding(env: Any, rows: list[_Row], rep: PaperReplay, where: str) -> None:
    """The env's settlements (bar, rate, from the table) against the record's funding
    lines (bar, rate, "exchange"), one for one."""
    sched = env.funding_schedule
    env_at = {
        int(t): (float(r), "exchange" if h else "config")
        for t, r, h in zip(sched.bar_ts, sched.rate, sched.from_history, strict=True)
    }
    rec_at = {r.bar.ts: (r.funding.rate, r.funding.source) for r in rows if r.funding}
    for ts in sorted(env_at.keys() | rec_at.keys()):
        e, f = env_at.get(ts), rec_at.get(ts)
        if e != f:
            said = "none" if f is None else f"{f[0]!r} ({f[1]})"
            did = "none" if e is None else f"{e[0]!r} ({e[1]})"
            rep.add(f"{where} bar {iso_ms(ts)}: funding record {said}, env {did}")


def _env_for(rows: list[_Row], cfg: Any, tmp: Path) -> Any:
    """A ManagementEnv over the record's bars (a slice and frozen stats written to `tmp`)."""
    n = len(rows)

    def col(values: list[int]) -> np.ndarray:
        return np.array(values, dtype=np.int64)

    bars = [r.bar for r in rows]
    recorded = {  # the execution columns the record holds, by the bar field holding them
        S.BEST_BID_TICKS: "bid",
        S.BEST_ASK_TICKS: "ask",
        S.BUY_HI_TICKS: "buy_hi",
        S.SELL_LO_TICKS: "sell_lo",
    }
    table = {
        S.TS: col([b.ts for b in bars]),
        S.MID_TICKS: np.array([b.mid for b in bars], dtype=np.float64),
        _FEATURE: np.zeros(n, np.float64),
    }
    recorded.update({column: name for name, column in SLICE_COLUMNS.items()})
    unknown = Bar._field_defaults  # an event field a bar lacks: what the broker took
    for column in S.EXEC_COLUMNS:
        name = recorded.get(column)
        if name is None:  # not in the record and not read by the broker (buy/sell volume)
            table[column] = np.zeros(n, np.int64)
            continue
        values = [getattr(b, name) for b in bars]
        table[column] = col([unknown[name] if v is None else v for v in values])
    pq.write_table(pa.table(table), tmp / "record.parquet")
    stats = FrozenStats.fit(np.zeros((2, 1)), [_FEATURE], "", 1e-8, [])
    stats.save(tmp / "stats")
    try:
        return ManagementEnv(tmp / "record.parquet", tmp / "stats", cfg)
    except ValueError as exc:  # SliceDataError: bars the env refuses (a bad book, time order)
        raise PaperRecordError(f"the env refuses the record's bars: {exc}") from exc


def _step_and_compare(
    env: Any, rows: list[_Row], action_mode: str, rep: PaperReplay, where: str, instrument: Any
) -> None:
    env.reset(options={"full": True, "flatten_at_end": False})
    lots: list[LotRow] = []
    for k in range(len(rows) - 1):
        row, nxt = rows[k], rows[k + 1]
        action = row.action if row.action is not None else _no_op(action_mode, row.orders)
        before: Position = env.position
        info = env.step(int(action))[4]
        pos: Position = env.position
        b = nxt.bar
        assert isinstance(b, PaperBar)  # every row after the start's is a bar line
        at = f"{where} bar {iso_ms(b.ts)}"
        # fills: what the env's maker volume and fees gained, summed in the record's order
        vol, fee = before.maker_volume, before.maker_fees
        for f in nxt.fills:
            vol += f.notional
            fee += f.fee
        env_filled = pos.maker_volume != before.maker_volume
        if nxt.fills:
            rep.fills_env += len(nxt.fills) if env_filled else 0
            if (vol, fee) != (pos.maker_volume, pos.maker_fees):
                rep.add(
                    f"{at}: record fills {len(nxt.fills)} (volume {vol!r}, fees {fee!r}), "
                    f"env volume {pos.maker_volume!r}, fees {pos.maker_fees!r}"
                )
        elif env_filled:
            rep.fills_env += 1
            rep.add(
                f"{at}: the env filled (volume +{pos.maker_volume - before.maker_volume!r}), the record did not"
            )
        if len(nxt.fills) != b.fills:
            rep.add(f"{at}: bar says {b.fills} fills, {len(nxt.fills)} fill lines")
        env_orders = list(env.resting_orders)
        if env_orders != b.orders:
            rep.add(f"{at}: resting orders record {b.orders}, env {env_orders}")
        if b.lots is not None:
            lots = b.lots
        try:
            expected = position_from_record(b.account, lots)
        except (KeyError, TypeError, ValueError) as exc:
            raise PaperRecordError(f"{at}: unreadable account ({exc})") from exc
        if expected != pos:
            diff = [
                f"{name} record {getattr(expected, name)!r} env {getattr(pos, name)!r}"
                for name in (f.name for f in fields(Position))
                if getattr(expected, name) != getattr(pos, name)
            ]
            rep.add(f"{at}: account differs: {'; '.join(diff)}")
        eq = float(info["equity"])  # the env's own mark (its kernel, at the bar's mid)
        if eq != equity(pos, b.mid, instrument):
            rep.add(f"{at}: the env's equity {eq!r} is not its account at the mid")
        if b.equity != eq:
            rep.add(f"{at}: equity record {b.equity!r}, env {eq!r}")
        rep.equity_record, rep.equity_env = b.equity, eq
