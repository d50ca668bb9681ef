"""The live loop: feed -> decoder -> book/sampler -> features -> stats -> encoder -> policy.

Orchestration ring. `LiveSession` is the synchronous core (messages and clock ticks in,
decision records out) that the parity test drives directly; `run_live` wires it to the
websocket feed, a ticker, the decision sinks, the recording and a clean stop
(`--duration`, SIGTERM, SIGINT).

Observe-only (the default) sends no order: a decision is logged, and the paper orders
follow the action in the model's action mode (toggle: place or cancel one side; target:
the resting orders wanted) so that the management state the policy sees evolves as in
the env. It is a dry run: each simulated fill is printed with the position, equity and
pnl, the totals at the end, and `LiveRun.paper_out` records the bars, fills and decisions
(`live.paper_log`) for `chappie audit paper` to replay through the env
(`live.paper_replay`). Without a valid model the loop still runs the feed,
book, sampler and features, logs `action: null` and says why.

No message can kill the loop: `on_message` counts (`dropped`), logs and drops what it
cannot decode or apply; a dropped book message (or a book row the decoder refused) is a
desync, so the book is rebuilt from fresh partials. A decision that raises is counted
(`decision_errors`) and marks the strategy unhealthy until the next good decision.

Trading is gated on health (`health`): when the feed is stale, desynced, disconnected or
clock-skewed beyond `max_skew_s`, or the strategy is unhealthy, resting orders are
cancelled and the dead man's switch is NOT refreshed, so the exchange cancels everything
if the process cannot. A data fault clears only when the readiness gate has a full
window of valid bars again. Only `live.orders.FatalTradingError` ends a run early: own
orders are cancelled and `run_live` returns with `stopped = "fatal: ..."`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import IO, Any

import numpy as np

from book.order_book import ST_DESYNC
from core.clock import NS_PER_S, Clock, SystemClock, iso_ms
from core.config.features import FeatureSpec
from core.config.live import LiveConfig
from core.instrument import XBTUSD, InstrumentSpec
from core.jsontypes import JsonObject
from core.schema import (
    BUY_HI_TICKS,
    SELL_LO_TICKS,
    ask_px,
    bid_px,
)
from envs.broker import SLICE_COLUMNS, BrokerAccount, BrokerRules
from envs.position import (
    ExposureError,
    apply_fill,
    equity,
    open_account,
)
from live.decision import Decision, LiveMode
from live.decode import UnknownLevelError, make_decoder, parse_timestamp_ns
from live.feed import BitmexFeed, FeedMessage, FeedStatus
from live.funding import FundingAnnouncements, paper_on_bar
from live.jsonl import JsonLinesAppender
from live.model_watch import LoadedChampion, ModelSource, poll_model, same_stats
from live.orders import FatalTradingError, OrderManager
from live.paper_log import PaperLog
from live.paper_record import BarInputs, PaperTotals
from live.predictor import (
    BarUpdate,
    Normalizer,
    ObservationBuilder,
    Predictor,
    warm_up_kernels,
)
from live.recording import RecordingWriter
from live.snapshot import SnapshotManager

log = logging.getLogger(__name__)


class ScaledClock:
    """Market time of a replay: `origin_ns + (wall time since the first reading) * speed`.

    It starts on its first reading (the feed's connect), which is when the replay server
    starts its timeline (on the subscription right after), so receive times track the
    recording's own."""

    def __init__(self, origin_ns: int, speed: float) -> None:
        if speed <= 0:
            raise ValueError("a replay clock needs speed > 0")
        self.origin_ns = int(origin_ns)
        self.speed = float(speed)
        self._t0: int | None = None

    def now_ns(self) -> int:
        now = time.perf_counter_ns()
        if self._t0 is None:
            self._t0 = now
        return self.origin_ns + int((now - self._t0) * self.speed)


@dataclass
class LiveSummary:
    mode: str
    model_version: str | None
    model_reason: str
    spec_hash: str
    decisions: int = 0
    actions: dict[str, int] = field(default_factory=dict)
    bars: int = 0
    messages: int = 0
    desyncs: int = 0
    resubscribes: int = 0
    connects: int = 0
    disconnects: int = 0
    orders_sent: int = 0
    stopped: str = ""
    feed_errors: list[str] = field(default_factory=list)
    model_events: list[str] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)  # messages dropped, by reason
    decision_errors: int = 0
    quotes_pulled: int = 0  # episodes of bad data or an unhealthy strategy with own orders
    rest_errors: dict[str, int] = field(default_factory=dict)  # "poll: unknown" -> count
    order_transitions: dict[str, int] = field(default_factory=dict)  # "live->done" -> count
    paper: PaperTotals | None = None  # observe-only: the paper account's totals

    def as_dict(self) -> JsonObject:
        """The summary as JSON (the stop line)."""
        out: JsonObject = asdict(self)
        out["paper"] = None if self.paper is None else self.paper.to_json()
        return out


class LiveSession:
    """Synchronous core of the loop: messages and ticks in, decision records out."""

    def __init__(
        self,
        spec: FeatureSpec,
        stats: Normalizer | None,
        predictor: Predictor,
        *,
        symbol: str = "XBTUSD",
        instrument: InstrumentSpec = XBTUSD,
        stale_after_s: float = 10.0,
        max_skew_s: float | None = 30.0,
        rules: BrokerRules | None = None,
        mode: LiveMode = "observe",
        book_table: str = "orderBookL2",
        orders: OrderManager | None = None,
        on_decision: Callable[[Decision, np.ndarray | None], None] | None = None,
        on_status: Callable[[str], None] | None = None,
        paper_log: PaperLog | None = None,
    ) -> None:
        self.spec = spec
        self.paper_log = paper_log  # observe-only: prints and records the paper account
        self.on_status = on_status  # what the loop waits for, when it changes
        self._status = ""
        self._warm_bars = 0  # consecutive bars inside the feature warm-up
        self.predictor = predictor
        self.instrument = instrument
        self.symbol = symbol
        self.mode = mode
        self.book_table = book_table
        self.instrument_state: str | None = None  # from the instrument table; None = not seen
        self.funding = FundingAnnouncements(symbol, instrument)  # the instrument table's rates
        self.orders = orders
        self.rules = _rules_for(predictor, rules)
        self.decoder = make_decoder(symbol, instrument, book_table)
        self.builder = ObservationBuilder(spec, stats, self.rules.obs_clip)
        skew = int(max_skew_s * NS_PER_S) if max_skew_s is not None else 2**62
        self.gate = SnapshotManager(spec.window, int(stale_after_s * NS_PER_S), skew)
        self.paper: BrokerAccount | None = None
        self.on_decision = on_decision
        self.last_event_ns = -1
        self._next_close = 0
        self.desyncs = 0
        self.pending_resubscribe = False
        self.decisions: list[Decision] = []
        self.observations: list[np.ndarray] = []
        self.keep_history = False
        self.actions: Counter[str] = Counter()
        self.bars = 0
        self.messages = 0
        self.dropped: Counter[str] = Counter()  # messages dropped at the boundary, by reason
        self.decision_errors = 0
        self.data_fault = ""  # why the market data is not trusted ("" = trusted)
        # after a skewed exchange time, only a sane one clears the fault (bars without
        # timestamped messages prove nothing about the clocks)
        self._clock_suspect = False
        self.strategy_fault = ""  # why the decision pipeline is not trusted
        self.quotes_pulled = 0
        self._pulling = False  # within an episode of taking quotes down
        self._started_ns: int | None = None
        self.lock = threading.Lock()  # serialises calls when the loop runs them in threads

    def swap_model(self, champion: LoadedChampion | None, reason: str) -> None:
        """Between decisions: a new verified champion (or none: observe-only). A different
        FeatureSpec rebuilds the observation pipeline, which warms up again."""
        if champion is None:
            # the book, bars and features carry on; only the model and its stats go
            self.predictor = Predictor(None, None, reason)
            if self.orders is not None:
                self.orders.cancel_own(max(self.last_event_ns, 0))
            self._restat(None, f"observe-only: {reason}")
            return
        old_rules, self.rules = self.rules, model_rules(champion, self.rules)
        self.predictor = champion.predictor
        if self.paper is not None:
            self.paper.rules = self.rules
            if self.paper_log is not None and self.rules != old_rules:
                self.paper_log.rules(self.paper, max(self.last_event_ns, 0))
        same_spec = champion.spec.spec_hash == self.spec.spec_hash
        if (
            same_spec
            and self.rules.obs_clip == self.builder.obs_clip
            and same_stats(self.builder.stats, champion.stats)
        ):
            # same FeatureSpec, same frozen stats, same clip: the normalised window is what
            # the new model would have seen, so it keeps deciding on the next bar
            self.builder.stats = champion.stats
            return
        self.builder.obs_clip = self.rules.obs_clip
        if not same_spec:
            self.spec = champion.spec
            self.gate = SnapshotManager(
                self.spec.window, self.gate.stale_after_ns, self.gate.max_skew_ns
            )
            self.builder = ObservationBuilder(self.spec, champion.stats, self.rules.obs_clip)
            self.reset(f"new FeatureSpec {self.spec.spec_hash[:12]}: warming up again")
            self.pending_resubscribe = True  # the new book needs fresh partials
        else:
            # same spec: bars and features carry over; the window is re-normalised
            self._restat(champion.stats, "new stats: refilling the observation window")

    def _restat(self, stats: Normalizer | None, reason: str) -> None:
        """New frozen stats (or none) for the same spec: the normalised window refills."""
        self.builder.stats = stats
        self.builder.window.clear()
        self.gate.reset(reason)

    def reset(self, reason: str) -> None:
        """Forget book, bars, features and readiness (reconnect, resubscribe)."""
        self.decoder.reset()
        self.builder.reset()
        self.gate.reset(reason)
        self.last_event_ns = -1
        self._next_close = 0

    def on_message(self, ts_recv: int, msg: Any) -> list[Decision]:
        """Apply one received message; returns the decisions of the bars it closed.

        Never raises but `FatalTradingError` (from the order manager): a message that cannot
        be decoded or applied, or whose rows the decoder refused, is counted in `dropped`
        and logged (the good rows of a trade message still count); a dropped book message,
        or a refused book row, is a desync. A desync (unknown level,
        crossed book) resets the session and sets `pending_resubscribe`: the caller
        resubscribes.
        """
        self.messages += 1
        out: list[Decision] = []
        table: Any = None
        try:
            if not isinstance(msg, dict):
                self._drop("not a JSON object", msg)
                return out
            table = msg.get("table")
            if not isinstance(table, str):
                return out  # subscription answers, welcome, errors: not market data
            if not isinstance(msg.get("data"), list):
                self._drop(f"{table}: data is not a list", msg)
                if table == self.book_table:
                    self._desync("undecodable book message (data is not a list)", table)
                return out
            if table == "instrument":
                self._on_instrument(msg)
                return out
            if ts_recv < self.last_event_ns:
                ts_recv = self.last_event_ns  # never feed the sampler backwards (clock jitter)
            out = self.on_tick(ts_recv - 1)  # close bars that ended before this message
            ts_ex = _exchange_time(msg)
            if not self.gate.on_message(ts_recv, ts_ex):
                self._data_fault(f"bad timestamps: {self.gate.blocked_reason}")
                self._clock_suspect = True
            elif ts_ex is not None:
                self._clock_suspect = False  # a sane exchange time: the clocks agree again
            book = table == self.book_table
            had_partial = self.decoder.has_partial(table) or msg.get("action") == "partial"
            rows_in = self.decoder.rows_in
            try:
                decoded = self.decoder.decode(msg, ts_recv)
            except UnknownLevelError as exc:
                self._desync(str(exc), table)
                return out
            refused = self.decoder.rows_in - rows_in - len(decoded.book) - len(decoded.trades)
            history = table == "trade" and msg.get("action") == "partial"  # not ours to apply
            if had_partial and refused > 0 and not history:
                self._drop(f"{table}: refused rows", msg)
                if book:  # the book would silently miss a level: rebuild it
                    self._desync("book rows refused by the decoder", table)
                    return out
            self.builder.on_decoded(ts_recv, decoded)
            self.last_event_ns = ts_recv
            return out
        except FatalTradingError:
            raise
        except Exception as exc:  # noqa: BLE001 - no message can kill the loop
            self._drop(f"{table if isinstance(table, str) else '?'}: {type(exc).__name__}", msg)
            if table == self.book_table:
                self._desync(f"undecodable book message ({type(exc).__name__})", table)
            return out

    def _drop(self, reason: str, msg: Any) -> None:
        """Count and log a dropped message (the first few of each reason, then every 1000th)."""
        self.dropped[reason] += 1
        n = self.dropped[reason]
        if n <= 5 or n % 1000 == 0:
            log.warning("dropped message #%d (%s): %.200r", n, reason, msg)

    def _desync(self, reason: str, table: str) -> None:
        self.desyncs += 1
        self.reset(f"desync: {reason}")
        self._data_fault(f"desync: {reason}")
        self.pending_resubscribe = True  # every table: the decoder restarts from fresh partials

    def _data_fault(self, reason: str) -> None:
        """The market data is not trusted until the gate has a full window of valid bars
        (and, after bad timestamps, a message with a sane exchange time arrived)."""
        self.data_fault = reason

    def on_feed_status(self, kind: str, reason: str, ts_ns: int, reconnect: bool) -> None:
        """A feed status change: the book is rebuilt; a disconnect is a data fault; with
        orders, a reconnect reconciles them with the exchange (retried if it fails)."""
        self.reset(f"feed {kind}: {reason}")
        if kind == "disconnected":
            self._data_fault(f"feed disconnected: {reason}")
        if kind == "connected" and reconnect and self.orders is not None:
            self.orders.reconcile(ts_ns)

    def health(self, now_ns: int) -> str:
        """Why orders must not rest now ("" = healthy): a data fault, stale data (no market
        message within `stale_after_s`), an unhealthy strategy, the kill switch, no model."""
        if self.data_fault:
            return self.data_fault
        base = self.gate.last_recv_ns if self.gate.last_recv_ns >= 0 else self._started_ns
        if base is not None and now_ns - base > self.gate.stale_after_ns:
            return f"stale: no market message for {(now_ns - base) / NS_PER_S:.1f} s"
        if self.strategy_fault:
            return self.strategy_fault
        if self.orders is not None and self.orders.risk.killed:
            return f"kill switch: {self.orders.risk.kill_reason}"
        if self.predictor.policy is None:
            return f"no model: {self.predictor.reason}"
        return ""

    def on_timer(self, now_ns: int) -> list[Decision]:
        """The clock's tick: close bars; with orders, take quotes down when unhealthy, do the
        order manager's due work, and refresh the dead man's switch ONLY while healthy.
        Raises only FatalTradingError."""
        if self._started_ns is None:
            self._started_ns = now_ns
        try:
            out = self.on_tick(now_ns)
        except FatalTradingError:
            raise
        except Exception as exc:  # noqa: BLE001 - a bug in one bar must not stop the loop
            out = []
            self._decision_failed(exc)
        if self.orders is None:
            return out
        why = self.health(now_ns)
        if why and self.orders.slots:
            if not self._pulling:  # one journal entry per episode, with what started it
                self._pulling = True
                self.quotes_pulled += 1
                self.orders.journal.record(now_ns, "event", what="quotes_pulled", reason=why)
                log.warning("taking quotes down: %s", why)
            self.orders.cancel_own(now_ns)
        elif not why:
            self._pulling = False
        self.orders.service(now_ns)
        if not why:
            self.orders.refresh_dead_man()
        return out

    def _decision_failed(self, exc: BaseException) -> None:
        self.decision_errors += 1
        self.strategy_fault = f"decision failed: {type(exc).__name__}: {exc}"[:200]
        n = self.decision_errors
        if n <= 5 or n % 1000 == 0:
            log.error("decision #%d failed: %s", n, self.strategy_fault)

    def on_tick(self, now_ns: int) -> list[Decision]:
        """Close bars up to now_ns and decide on every bar that is ready."""
        if self.last_event_ns < 0:
            return []
        t = max(now_ns, self.last_event_ns)
        if t < self._next_close:
            return []  # no bar closes before t: the events stay buffered in the sampler
        self._next_close = (t // self.spec.interval_ns + 1) * self.spec.interval_ns
        out = []
        for upd in self.builder.advance(t):
            self.bars += 1
            bar = bar_inputs(upd)
            if self.paper is not None and self.orders is None:
                # observe-only: the paper orders rest, fill and roll on every bar, as in the env
                # funding at the rate BitMEX announced for the funding time, else the constant
                due = paper_on_bar(self.paper, bar, self.funding)
                if self.paper_log is not None:
                    self.paper_log.bar(self.paper, bar, due)
            rec = self._on_bar(upd, bar)
            if rec is not None:
                out.append(rec)
        if _desynced(self.builder.sampler):
            self._desync("crossed or inconsistent book", self.book_table)
        return out

    def _on_bar(self, upd: BarUpdate, bar: BarInputs) -> Decision | None:
        ready = self.gate.on_bar(upd.ts, upd.book_ok, upd.warmup, upd.finite)
        self._warm_bars = self._warm_bars + 1 if upd.warmup else 0
        if not ready.ok:
            self._report_wait(upd.ts, ready.reason)
            return None
        if self._status != "ready":
            self._say("ready", f"{iso_ms(upd.ts)} deciding from this bar on")
        if not self._clock_suspect:
            self.data_fault = ""  # a full window of valid bars since the last fault
        try:
            rec = self._decide(upd, bar)
        except FatalTradingError:
            raise
        except Exception as exc:  # noqa: BLE001 - counted; the strategy is unhealthy until it decides again
            self._decision_failed(exc)
            return None
        self.strategy_fault = ""
        return rec

    def bars_until_decision(self, reason: str) -> int | None:
        """Bars left before the first decision while warming up or filling the window;
        None for other waits (book, stale or skewed data), which end when the data does."""
        interval = self.spec.interval_ns
        if reason == "feature warm-up":
            lookback = -(-self.spec.lookback_ns // interval)
            return max(lookback - self._warm_bars, 0) + self.spec.window - 1
        if reason.startswith("filling observation window"):
            return self.spec.window - self.gate.valid_bars
        return None

    def _report_wait(self, ts: int, reason: str) -> None:
        """Say what the loop waits for, and when it will decide: once per kind of wait,
        then every 30 bars of it."""
        kind = reason.split(" ", 2)[0] if reason.startswith("filling") else reason
        left = self.bars_until_decision(reason)
        text = f"{iso_ms(ts)} waiting: {reason}"
        if left is not None:
            eta = ts + left * self.spec.interval_ns
            text += f"; about {left} bars left, first decision near {iso_ms(eta)}"
        if self.predictor.policy is None:
            text += f" (no model: {self.predictor.reason}; actions will be logged as none)"
        if kind != self._status or (left is not None and left % 30 == 0):
            self._say(kind, text)

    def _say(self, status: str, text: str) -> None:
        self._status = status
        if self.on_status is not None:
            self.on_status(text)

    def _decide(self, upd: BarUpdate, bar: BarInputs) -> Decision:
        t0 = time.perf_counter_ns()
        if self.paper is None:
            self.paper = BrokerAccount(
                self.rules, self.instrument, open_account(self.rules.initial_equity_xbt, upd.ts)
            )
            if self.paper_log is not None and self.orders is None:
                self.paper_log.start(self.paper, bar)
        if self.orders is not None:
            self._sync_orders(upd)
        state = self.paper.state(upd.ts, upd.mid_ticks)
        obs = self.builder.observation(state) if self.builder.stats is not None else None
        action = self.predictor.act(obs)
        latency_us = (time.perf_counter_ns() - t0) / 1000.0
        order: str | None = None  # trading: what the order manager did
        if self.orders is not None and self.instrument_state not in (None, "Open"):
            # the exchange is not trading this instrument: no new order; the resting ones are
            # the exchange's to handle (it cancels them on settlement/closing)
            order = f"refused: instrument state {self.instrument_state}"
        elif self.orders is not None:
            order = self.orders.on_decision(
                action,
                upd.ts,
                int(upd.bar[bid_px(0)]),
                int(upd.bar[ask_px(0)]),
                upd.mid_ticks,
                now_ns=upd.ts,
                last_data_ns=self.gate.last_recv_ns,
                action_mode=self.predictor.action_mode,
            )
            self._order_flags()
        else:
            # placed at the close: a queue model's place is behind the size at the best there
            self.paper.act(
                action,
                bar.bid,
                bar.ask,
                ts_ns=bar.ts,
                bid_size=bar.bid_size or 0,
                ask_size=bar.ask_size or 0,
            )
        rec = Decision.of(
            upd.ts,
            action,
            state,
            self.predictor.version,
            self.mode,
            upd.mid_ticks,
            latency_us,
            self.predictor.action_mode,
            order,
        )
        if self.orders is None and self.paper_log is not None:
            self.paper_log.decision(self.paper, rec)
        self.actions[rec.action_name or "none"] += 1
        if self.keep_history:
            self.decisions.append(rec)
            if obs is not None:
                self.observations.append(obs)
        if self.on_decision is not None:
            self.on_decision(rec, obs)
        return rec

    def _on_instrument(self, msg: JsonObject) -> None:
        """Track the instrument's trading state (`Open`, `Closed`, `Settled`, ...) and the
        funding rates it announces (`live.funding`: what the paper account settles at)."""
        data = msg.get("data")
        for row in data if isinstance(data, list) else []:
            if isinstance(row, dict) and row.get("symbol") == self.symbol and "state" in row:
                self.instrument_state = str(row["state"])
        self.funding.on_rows(data)

    def _sync_orders(self, upd: BarUpdate) -> None:
        """Trading: fills move the position, resting orders roll to the best price, the
        drawdown kill switch sees the equity, and the order flags come from the exchange."""
        assert self.orders is not None and self.paper is not None
        self.orders.service(upd.ts)
        for fill in self.orders.take_fills():
            try:
                self.paper.position, _ = apply_fill(
                    self.paper.position,
                    fill.side,
                    fill.price_ticks,
                    upd.ts,
                    self.instrument,
                    self.rules.stake_fraction,
                    self.rules.max_exposure,
                    fees=self.rules.fees,  # the model's fee, as in training and the paper
                )
            except ExposureError:  # the exchange position is the truth; the paper stack is capped
                continue
        self.orders.reprice(int(upd.bar[bid_px(0)]), int(upd.bar[ask_px(0)]), upd.mid_ticks, upd.ts)
        self.orders.update_equity(
            equity(self.paper.position, upd.mid_ticks, self.instrument), upd.ts
        )
        self._order_flags()

    def _order_flags(self) -> None:
        """Trading: the resting-order part of the state comes from the exchange's orders."""
        assert self.orders is not None and self.paper is not None
        own = self.orders.resting
        self.paper.bid_px = own[1].price_ticks if 1 in own else 0
        self.paper.ask_px = own[-1].price_ticks if -1 in own else 0


def bar_inputs(upd: BarUpdate) -> BarInputs:
    """What the paper account uses of a closed bar (`live.paper_record.BarInputs`): the
    sampler's columns, the #17 event fields by the broker's names (`SLICE_COLUMNS`)."""
    b = upd.bar
    return BarInputs(
        ts=int(upd.ts),
        bid=int(b[bid_px(0)]),
        ask=int(b[ask_px(0)]),
        buy_hi=int(b[BUY_HI_TICKS]),
        sell_lo=int(b[SELL_LO_TICKS]),
        mid=float(upd.mid_ticks),
        **{name: int(b[column]) for name, column in SLICE_COLUMNS.items()},
    )


def _rules_for(predictor: Predictor, rules: BrokerRules | None) -> BrokerRules:
    """The paper rules a session runs `predictor` under: `rules`, or the env's defaults in
    the predictor's action mode. Raises ValueError when a model's rules name another
    action mode than the model (the paper account would read its actions wrong)."""
    if rules is None:
        return BrokerRules(action_mode=predictor.action_mode)
    if predictor.policy is not None and rules.action_mode != predictor.action_mode:
        raise ValueError(
            f"paper rules in action_mode {rules.action_mode!r}, the model in "
            f"{predictor.action_mode!r}"
        )
    return rules


def model_rules(champion: LoadedChampion, fallback: BrokerRules) -> BrokerRules:
    """The env rules a champion runs under: its env config's (EnvConfig's defaults for what
    it lacks); a champion without one keeps `fallback`, in its predictor's action mode."""
    if champion.env_config:  # the predictor's action mode was read from it too
        rules = BrokerRules.from_env_config(champion.env_config)
    else:
        rules = replace(fallback, action_mode=champion.predictor.action_mode)
    return _rules_for(champion.predictor, rules)


def _desynced(sampler: Any) -> bool:
    return bool(sampler._st[ST_DESYNC] != 0)


def _exchange_time(msg: JsonObject) -> int | None:
    """Exchange time of a message's last timestamped row (trade, quote, instrument); None
    when it has none or it cannot be read."""
    data = msg.get("data")
    if not isinstance(data, list) or not data or msg.get("action") == "partial":
        return None
    ts = data[-1].get("timestamp") if isinstance(data[-1], dict) else None
    if not isinstance(ts, str):
        return None
    try:
        return parse_timestamp_ns(ts)
    except Exception:  # noqa: BLE001 - any unreadable timestamp is "none"
        return None


def _status_printer(out: IO[str]) -> Callable[[str], None]:
    def say(text: str) -> None:
        print(f"chappie live: {text}", file=out, flush=True)

    return say


# ---------------------------------------------------------------------- the async runner
class DecisionSink:
    """stdout lines and an optional JSON lines file (flushed per line, fsynced on close)."""

    def __init__(self, out: IO[str] | None, path: str | Path | None) -> None:
        self.out = out
        self._file = JsonLinesAppender(path) if path else None
        self.count = 0

    def __call__(self, rec: Decision, obs: np.ndarray | None) -> None:
        self.count += 1
        if self.out is not None:
            print(rec.line(), file=self.out, flush=True)
        if self._file is not None:
            self._file.append(rec.to_json())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


@dataclass(frozen=True)
class LiveRun:
    """What one `run_live` runs (its config; the collaborators are given apart): the live
    config, the observation contract and env rules used while no model brings its own,
    where the decisions and the recording go, how long, and the loop's timing."""

    live: LiveConfig = field(default_factory=LiveConfig)
    spec: FeatureSpec = field(default_factory=FeatureSpec)  # a champion's own spec wins
    rules: BrokerRules = field(default_factory=BrokerRules)  # a champion's env config wins
    instrument: InstrumentSpec = XBTUSD
    duration_s: float | None = None  # wall seconds; None: until a signal or the feed ends
    decisions_out: str | Path | None = None  # JSON lines, one per decision
    paper_out: str | Path | None = None  # observe-only: the paper record (live.paper_log)
    record: str | Path | None = None  # the received messages, replayable
    max_skew_s: float | None = 30.0  # None: a replay (its exchange times are in the past)
    tick_s: float = 0.05  # the clock's tick (bars close, orders are serviced)
    backoff_base_s: float = 1.0  # the feed's reconnect backoff
    no_model_reason: str = "no model requested"  # said when no champion is given


def run_live(
    run: LiveRun,
    champion: LoadedChampion | None = None,
    *,
    orders: OrderManager | None = None,
    clock: Clock | None = None,
    model_source: ModelSource | None = None,
    source_done: Callable[[], bool] | None = None,
    out: IO[str] | None = sys.stdout,
) -> LiveSummary:
    """Run the loop until `run.duration_s` (wall seconds) elapses, the feed ends (a replay's
    `source_done`) or SIGTERM/SIGINT arrives.

    `champion`: the verified model (its FeatureSpec, frozen stats, env config and action
    mode win over `run.spec` and `run.rules`), or None: observe-only, saying
    `run.no_model_reason`. `model_source`: where the alias is polled for a new champion
    (compared by `champion.version`, default its predictor's label). `clock`: market time
    (default the wall clock; a replay's `ScaledClock`). `out`: status and decision lines.

    Observe-only unless `run.live.allow_trade`; trading additionally needs an `OrderManager`
    (keys, REST client, journal) and a champion, else ValueError. With orders: reconcile
    on start and after every reconnect, dead man's switch refreshed by the ticker while
    healthy, own orders cancelled on every way out (duration, SIGTERM, SIGINT, error). A
    `FatalTradingError` ends the run cleanly: `stopped` says "fatal: ..." and nothing is
    raised.
    """
    cfg = run.live
    if champion is not None:
        predictor, stats, spec = champion.predictor, champion.stats, champion.spec
        rules = model_rules(champion, run.rules)
        version = champion.version if champion.version is not None else predictor.version
    else:
        predictor, stats, spec = Predictor(None, None, run.no_model_reason), None, run.spec
        rules, version = run.rules, None
    if cfg.allow_trade:
        if orders is None:
            raise ValueError("allow_trade needs an order manager (keys and a REST client)")
        if predictor.policy is None or stats is None:
            raise ValueError(
                f"allow_trade needs a loaded, verified model: {predictor.reason or 'none'}"
            )
    elif orders is not None:
        raise ValueError(
            "an order manager was given but allow_trade is off: observe-only sends no order"
        )
    if cfg.allow_trade and run.paper_out is not None:
        raise ValueError("the paper record is observe-only: trading follows the exchange")
    mode: LiveMode = "trade" if cfg.allow_trade else "observe"
    summary = LiveSummary(
        mode=mode,
        model_version=predictor.version,
        model_reason=predictor.reason,
        spec_hash=spec.spec_hash,
    )
    sink = DecisionSink(out, run.decisions_out)
    paper_log = PaperLog(out, run.paper_out) if mode == "observe" else None
    recorder = RecordingWriter(run.record) if run.record else None
    session = LiveSession(
        spec,
        stats,
        predictor,
        symbol=cfg.symbol,
        instrument=run.instrument,
        stale_after_s=cfg.risk.stale_after_s,
        max_skew_s=run.max_skew_s,
        book_table=cfg.book_table,
        orders=orders,
        rules=rules,
        mode=mode,
        on_decision=sink,
        on_status=None if out is None else _status_printer(out),
        paper_log=paper_log,
    )
    clock = clock or SystemClock()
    feed = BitmexFeed(
        cfg.ws_url,
        cfg.symbol,
        tables=(cfg.book_table, "trade", "instrument"),
        clock=clock,
        heartbeat_s=cfg.heartbeat_s,
        pong_timeout_s=cfg.pong_timeout_s,
        backoff_base_s=run.backoff_base_s,
        recorder=recorder,
    )
    if out is not None:
        model = (
            predictor.version
            or f"none ({predictor.reason}); observe-only, actions are logged as none"
        )
        print(
            f"chappie live: feed={cfg.feed} url={cfg.ws_url} symbol={cfg.symbol} mode={mode} "
            f"model={model} spec={spec.spec_hash[:12]}",
            file=out,
            flush=True,
        )
    warm_up_kernels(spec)  # before the first clock reading: JIT time is not market time
    try:
        try:
            if orders is not None:
                orders.reconcile(clock.now_ns())  # a failure is retried by the ticker
                orders.refresh_dead_man()
            watch = None
            if model_source is not None:
                watch = _Watch(model_source, cfg.alias_poll_s, summary.model_events, out, version)
            summary.stopped = asyncio.run(
                _run(session, feed, clock, run.duration_s, run.tick_s, watch, source_done)
            )
        except FatalTradingError as exc:
            summary.stopped = f"fatal: {exc}"
            log.error("chappie live: %s", summary.stopped)
            if out is not None:
                print(f"chappie live: {summary.stopped}", file=out, flush=True)
    finally:
        if orders is not None:
            try:
                with session.lock:  # after any decision still running in a worker thread
                    orders.shutdown(clock.now_ns())
            finally:
                summary.orders_sent = orders.orders_sent
                summary.rest_errors = dict(orders.stats.errors)
                summary.order_transitions = dict(orders.stats.transitions)
                orders.journal.close()
        sink.close()
        if paper_log is not None:
            summary.paper = paper_log.close()
        if recorder is not None:
            recorder.close()
    summary.decisions = sink.count
    summary.model_version = session.predictor.version
    summary.actions = dict(session.actions)
    summary.bars = session.bars
    summary.messages = session.messages
    summary.desyncs = session.desyncs
    summary.resubscribes = feed.stats.resubscribes
    summary.connects = feed.stats.connects
    summary.disconnects = feed.stats.disconnects
    summary.feed_errors = feed.stats.errors[-20:]
    summary.dropped = dict(session.dropped)
    summary.decision_errors = session.decision_errors
    summary.quotes_pulled = session.quotes_pulled
    if out is not None:
        print(
            f"chappie live: stopped ({summary.stopped}): {json.dumps(summary.as_dict())}",
            file=out,
            flush=True,
        )
    return summary


@dataclass
class _Watch:
    """The alias poll: where from, how often, where its events go, the version in use."""

    source: ModelSource
    every_s: float
    events: list[str]
    out: IO[str] | None
    version: str | None


async def _run(
    session: LiveSession,
    feed: BitmexFeed,
    clock: Clock,
    duration_s: float | None,
    tick_s: float,
    watch: _Watch | None = None,
    source_done: Callable[[], bool] | None = None,
) -> str:
    stop = asyncio.Event()
    why = {"reason": "feed ended"}
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        why["reason"] = sig.name
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(ValueError, NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal, sig)

    # Trading makes blocking REST calls inside a decision: then every session call runs in a
    # worker thread, one at a time (session.lock), so the event loop keeps reading the socket
    # and answering pings. Observe-only stays on the loop thread (no I/O, microseconds).
    offload = session.orders is not None

    def locked(fn: Callable[..., Any], *args: Any) -> Any:
        with session.lock:
            return fn(*args)

    async def call(fn: Callable[..., Any], *args: Any) -> Any:
        if offload:
            return await asyncio.to_thread(locked, fn, *args)
        return fn(*args)

    def on_status(ev: FeedStatus) -> None:
        session.on_feed_status(ev.kind, ev.reason, ev.ts_recv, feed.stats.connects > 1)

    async def consume() -> None:
        async for ev in feed.events():
            if isinstance(ev, FeedStatus):
                await call(on_status, ev)
                continue
            assert isinstance(ev, FeedMessage)
            await call(session.on_message, ev.ts_recv, ev.msg)
            if session.pending_resubscribe:
                session.pending_resubscribe = False
                await feed.resubscribe()

    async def ticker() -> None:
        while True:
            await asyncio.sleep(tick_s)
            await call(session.on_timer, clock.now_ns())
            if (
                source_done is not None
                and source_done()
                and time.monotonic() - feed.last_frame_at > 0.5
            ):
                why["reason"] = "replay finished"  # everything was sent and has been received
                stop.set()
            if session.pending_resubscribe:
                session.pending_resubscribe = False
                await feed.resubscribe()

    async def timer() -> None:
        if duration_s is None:
            await asyncio.Event().wait()  # no limit: only a signal or the feed ends the run
            return
        await asyncio.sleep(duration_s)
        why["reason"] = f"duration {duration_s:g} s"
        stop.set()

    async def watcher() -> None:
        if watch is None:
            await asyncio.Event().wait()
            return
        while True:
            await asyncio.sleep(watch.every_s)
            outcome = await asyncio.to_thread(poll_model, watch.source, watch.version)
            if outcome.action == "keep" and outcome.reason in ("unchanged", "no champion"):
                continue
            # applied through `call` (one session call at a time): between two decisions,
            # never during one
            try:
                if outcome.action == "swap":
                    await call(session.swap_model, outcome.champion, outcome.reason)
                    watch.version = outcome.version
                elif outcome.action == "observe":
                    await call(session.swap_model, None, outcome.reason)
                    watch.version = None
            except FatalTradingError:
                raise
            except Exception as exc:  # noqa: BLE001 - a failed swap keeps the loop running
                outcome = replace(outcome, reason=f"swap failed ({type(exc).__name__}: {exc})")
                log.error("chappie live: model: %s", outcome.reason)
            watch.events.append(outcome.reason)
            if watch.out is not None:
                print(f"chappie live: model: {outcome.reason}", file=watch.out, flush=True)

    tasks = [
        asyncio.create_task(consume()),
        asyncio.create_task(ticker()),
        asyncio.create_task(timer()),
        asyncio.create_task(watcher()),
    ]
    stopper = asyncio.create_task(stop.wait())
    # any task ending ends the run: the feed closing, the stop event, or a task failing
    done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
    failure = next(
        (t.exception() for t in done if not t.cancelled() and t.exception() is not None), None
    )
    await feed.close()
    for t in (*tasks, stopper):
        t.cancel()
    for t in (*tasks, stopper):
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await t
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(Exception):
            loop.remove_signal_handler(sig)
    if failure is not None:
        raise failure  # run_live's finally still cancels own orders and flushes the files
    return why["reason"]
