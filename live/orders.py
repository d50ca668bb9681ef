"""Decisions -> exchange orders, under the model-independent risk limits. Orchestration ring.

The policy's actions are the env's, in the model's `EnvConfig.action_mode`
(`core.schema.ACTION_NAMES`). "toggle": 0 hold, 1 toggle the resting long (buy) order,
2 toggle the resting short (sell) order; a toggle on places a post-only limit order of the
stake size at the best price of its side (bid for a buy, ask for a sell), a toggle off
cancels it. "target": the action names the resting orders wanted (0 none, 1 bid only,
2 ask only, 3 both); per side, an own LIVE order not wanted is cancelled and a wanted side
with no own order (live or in flight) gets one, as the broker's `target` (envs.broker)
does; a side in flight is left to its lookup and decided again on the next bar. Every
bar, live orders roll to the current best price of their side (as the env's orders do).
Every new order passes `live.risk.check_new_order`; cancels always go through.

**Orders are never lost track of.** Each side holds at most one own order, and every own
order is in exactly one state (`OrderState`):

    SUBMITTING --answer New/PartiallyFilled--> LIVE
    SUBMITTING --answer closed, or refused (4xx, 429)--> DONE
    SUBMITTING --5xx / timeout / garbled answer / "Duplicate clOrdID"--> UNKNOWN
    LIVE --cancel sent--> CANCELLING --answer Canceled/Filled--> DONE
    LIVE --amend or cancel outcome unknown, or gone from the open orders--> UNKNOWN
    CANCELLING --cancel outcome unknown (or the answer lists no such order)--> UNKNOWN
    UNKNOWN --lookup by clOrdID finds it open--> LIVE (and cancelled at once if that was asked)
    UNKNOWN --lookup finds it closed--> DONE (its fills applied)
    UNKNOWN --not found `not_found_lookups` times AND its request's api-expires passed--> DONE

A side whose order is SUBMITTING, CANCELLING or UNKNOWN is busy: nothing else is sent on
it until a lookup (GET /order by clOrdID, exponential backoff from `lookup_backoff_s` to
`lookup_backoff_max_s`) has resolved the order, so an unknown outcome can never become a
second order. "Not found" counts only once the create's `api-expires` has passed: BitMEX
drops a request still queued after it, so the order cannot appear later. This follows
nautilus_trader's in-flight checks (ambiguous outcomes stay in flight until a targeted
query resolves them) and hummingbot's lost-order tracking (a "not found" is confirmed
several times before an order is given up, and a given-up id stays on a watch list).

The open orders are polled (every `fill_poll_s` while own orders exist, `idle_poll_s`
otherwise): fills become `Fill`s (partial fills included, by cumQty delta), an own order the
manager does not track (a late commit, an order of a previous session) is adopted when its
side is free and cancelled when it is not. Nothing is untracked for longer than one poll.

**Transient REST errors are never fatal.** A failed poll, lookup, reconciliation or
dead-man refresh is logged (`logging`, the journal, `errors`) and retried with backoff;
the dead man's switch is retried well inside its window. Fatal (`FatalTradingError`) are
only: the keys refused (401/403), and no successful REST request for longer than the dead
man's window (`rest_outage_s`), after which the exchange has cancelled everything anyway.
The loop then cancels own orders (`shutdown`, which never raises) and exits cleanly.

Every intent is journaled (fsynced) before it is sent, its outcome after, and every state
transition in between. Times: `now_ns` (market time) stamps the journal and the risk
checks; REST scheduling (backoff, polls, the dead man's switch) runs on `mono()` seconds.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from core.config.live import RiskConfig
from core.instrument import InstrumentSpec
from core.jsontypes import JsonObject
from live.exchange import OWN_PREFIX, BitmexRest, ErrorKind, cl_ord_id, classify_error
from live.journal import Journal
from live.risk import OrderIntent, RiskState, check_new_order, update_equity

log = logging.getLogger(__name__)

OPEN_STATUSES = ("New", "PartiallyFilled")


class OrderState(StrEnum):
    SUBMITTING = "submitting"  # create sent, no answer yet
    LIVE = "live"  # the exchange confirmed it open
    CANCELLING = "cancelling"  # cancel sent, no answer yet
    UNKNOWN = "unknown"  # a request's outcome is unknown: looked up by clOrdID with backoff
    DONE = "done"  # closed: filled, cancelled, refused, or never created


S = OrderState
TRANSITIONS: dict[OrderState, frozenset[OrderState]] = {
    S.SUBMITTING: frozenset({S.LIVE, S.UNKNOWN, S.DONE}),
    S.LIVE: frozenset({S.LIVE, S.CANCELLING, S.UNKNOWN, S.DONE}),
    S.CANCELLING: frozenset({S.LIVE, S.UNKNOWN, S.DONE}),
    S.UNKNOWN: frozenset({S.UNKNOWN, S.LIVE, S.DONE}),
    S.DONE: frozenset(),
}


class FatalTradingError(RuntimeError):
    """Trading cannot go on safely (keys refused, or the exchange unreachable for longer than
    the dead man's window): cancel own orders and stop."""


@dataclass
class TrackedOrder:
    """One own order. `price_ticks`/`qty`: what rests (qty = leaves qty once known)."""

    side: int
    cl_ord_id: str
    price_ticks: int
    qty: int
    state: OrderState = S.SUBMITTING
    order_id: str = ""
    status: str = ""  # the exchange's last ordStatus
    doubt: str = ""  # what is unknown: "create", "cancel", "amend", "closed"
    filled: int = 0  # cumQty already turned into Fills
    in_position: bool = False  # its fills so far are in the reconciled position already
    lookups: int = 0
    not_found: int = 0
    next_lookup_s: float = 0.0
    expires_unix: float = 0.0  # api-expires of its create: "not found" is final only after
    want_cancel: bool = False
    reason: str = ""  # why it is DONE


Resting = TrackedOrder  # the name callers used before the state machine


@dataclass(frozen=True)
class Fill:
    side: int
    price_ticks: int
    qty: int
    cl_ord_id: str


@dataclass(frozen=True)
class Reconciliation:
    """What `OrderManager.reconcile` found: on success the exchange's position (contracts),
    how many own orders are tracked and foreign ones rest, and the own strays it cancelled
    (clOrdIDs); on failure why (it is retried from `service`)."""

    ok: bool
    error: str = ""
    position: int = 0
    own: int = 0
    foreign: int = 0
    cancelled_extra: tuple[str, ...] = ()


@dataclass
class _Call:
    ok: bool
    value: Any = None
    kind: ErrorKind | None = None
    error: str = ""


@dataclass
class OrderStats:
    """Counters for the summary and the fault campaign."""

    transitions: Counter[str] = field(default_factory=Counter)  # "live->done"
    errors: Counter[str] = field(default_factory=Counter)  # "poll: unknown"
    unknown_resolved: int = 0
    adopted: int = 0
    strays_cancelled: int = 0
    given_up: int = 0  # unknown creates declared never created


class OrderManager:
    """Own orders of one trading session (see module docstring)."""

    def __init__(
        self,
        rest: BitmexRest,
        *,
        symbol: str,
        instrument: InstrumentSpec,
        risk: RiskConfig,
        stake_contracts: int,
        session: str,
        journal: Journal,
        dead_man_timeout_ms: int = 60_000,
        dead_man_refresh_s: float = 15.0,
        fill_poll_s: float = 2.0,
        idle_poll_s: float = 10.0,
        position_check_s: float = 30.0,
        lookup_backoff_s: float = 0.5,
        lookup_backoff_max_s: float = 8.0,
        not_found_lookups: int = 3,
        rest_outage_s: float | None = None,
        mono: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if stake_contracts <= 0 or stake_contracts % instrument.lot_size:
            raise ValueError(
                f"stake_contracts={stake_contracts} must be a positive multiple of lot {instrument.lot_size}"
            )
        if dead_man_refresh_s * 1000 >= dead_man_timeout_ms:
            raise ValueError("dead_man_refresh_s must be well inside dead_man_timeout_ms")
        self.rest = rest
        self.symbol = symbol
        self.instrument = instrument
        self.risk_cfg = risk
        self.stake = stake_contracts
        self.session = session
        self.journal = journal
        self.dead_man_timeout_ms = dead_man_timeout_ms
        self.dead_man_refresh_s = dead_man_refresh_s
        self.fill_poll_s = fill_poll_s  # REST budget: BitMEX allows ~120 requests/min
        self.idle_poll_s = idle_poll_s
        self.position_check_s = position_check_s
        self.lookup_backoff_s = lookup_backoff_s
        self.lookup_backoff_max_s = lookup_backoff_max_s
        self.not_found_lookups = not_found_lookups
        self.rest_outage_s = (
            dead_man_timeout_ms / 1000 if rest_outage_s is None else float(rest_outage_s)
        )
        self._mono = mono
        self._sleep = sleep
        self.slots: dict[int, TrackedOrder] = {}  # side -> its order (never DONE)
        self.closed: deque[TrackedOrder] = deque(maxlen=256)
        # clOrdIDs given up as never created -> when (mono s): for a while after, the open
        # orders are polled as often as when own orders rest (a late twin would show there)
        self.lost: dict[str, float] = {}
        self.position = 0
        self.foreign: list[tuple[int, int]] = []
        self.risk = RiskState()
        self.orders_sent = 0
        self.refusals: list[str] = []
        self.fills: list[Fill] = []  # not yet taken by the session
        self.stats = OrderStats()
        self.needs_reconcile = False
        self._prefix = OWN_PREFIX  # own = any Chappie session's order (restarts included)
        now = mono()
        self._failing_since: float | None = None  # first failure since the last success
        self._next_reconcile_s = now
        self._reconcile_failures = 0
        self._next_poll_s = -float("inf")
        self._poll_failures = 0
        self._next_position_s = now + position_check_s
        self._dead_man_due_s = -float("inf")
        self._dead_man_failures = 0
        self._dead_man_armed_s: float | None = None

    # ------------------------------------------------------------------ views
    @property
    def resting(self) -> dict[int, TrackedOrder]:
        """Own orders that may rest, by side (any state but DONE)."""
        return dict(self.slots)

    @property
    def long_order(self) -> bool:
        return 1 in self.slots

    @property
    def short_order(self) -> bool:
        return -1 in self.slots

    def busy(self, side: int) -> bool:
        """True when the side's order is in flight (nothing may be sent on that side)."""
        o = self.slots.get(side)
        return o is not None and o.state is not S.LIVE

    def take_fills(self) -> list[Fill]:
        out, self.fills = self.fills, []
        return out

    # ------------------------------------------------------------------ REST, classified
    def _call(self, what: str, fn: Callable[..., Any], *args: Any) -> _Call:
        """One REST call: never raises but FatalTradingError (keys refused, or no success
        for longer than `rest_outage_s`); every failure is counted and logged."""
        try:
            value = fn(*args)
        except Exception as exc:  # noqa: BLE001 - classified: the loop must not die of it
            kind = classify_error(exc)
            text = f"{type(exc).__name__}: {exc}"[:200]
            self.stats.errors[f"{what}: {kind}"] += 1
            log.warning("%s failed (%s): %s", what, kind, text)
            if kind == "auth":
                raise FatalTradingError(f"{what}: the exchange refused the keys ({text})") from exc
            now = self._mono()
            if kind == "refused":
                self._failing_since = None  # the exchange answered: it is reachable
            elif self._failing_since is None:
                self._failing_since = now
            elif now - self._failing_since > self.rest_outage_s:
                raise FatalTradingError(
                    f"REST requests failing for {now - self._failing_since:.0f} s "
                    f"(> {self.rest_outage_s:.0f} s, the dead man's window); last: {what}: {text}"
                ) from exc
            return _Call(False, None, kind, text)
        self._failing_since = None
        return _Call(True, value)

    def _backoff(self, k: int) -> float:
        return float(min(self.lookup_backoff_max_s, self.lookup_backoff_s * 2.0 ** max(k - 1, 0)))

    # ------------------------------------------------------------------ state machine
    def _to(self, o: TrackedOrder, new: OrderState, now_ns: int, why: str) -> None:
        """Move `o` to `new` (an illegal transition is a bug: ValueError)."""
        old = o.state
        if new not in TRANSITIONS[old]:
            raise ValueError(f"order {o.cl_ord_id}: illegal transition {old} -> {new} ({why})")
        o.state = new
        self.stats.transitions[f"{old}->{new}"] += 1
        if old is S.UNKNOWN and new is not S.UNKNOWN:
            self.stats.unknown_resolved += 1
        if new is not S.UNKNOWN:
            o.doubt, o.lookups, o.not_found, o.next_lookup_s = "", 0, 0, 0.0
        if old is not new:
            self.journal.record(
                now_ns,
                "event",
                what="order_state",
                cl_ord_id=o.cl_ord_id,
                side=o.side,
                frm=str(old),
                to=str(new),
                why=why,
                status=o.status,
            )
        if new is S.DONE:
            o.reason = why
            if self.slots.get(o.side) is o:
                del self.slots[o.side]
            self.closed.append(o)
        self._sync_risk()

    def _unknown(self, o: TrackedOrder, doubt: str, now_ns: int, why: str) -> None:
        o.doubt = doubt
        o.next_lookup_s = self._mono()  # the first lookup is due at once
        self._to(o, S.UNKNOWN, now_ns, why)
        o.doubt = doubt

    def _apply_row(self, o: TrackedOrder, row: JsonObject, now_ns: int, why: str) -> None:
        """The exchange's view of `o` (an answer, a lookup, a poll row) decides its state."""
        o.order_id = str(row.get("orderID") or o.order_id)
        o.status = str(row.get("ordStatus") or "")
        price = self._ticks(row.get("avgPx") or row.get("price"))
        self._fills_from(o, row, price)
        if o.status in OPEN_STATUSES:
            px = self._ticks(row.get("price"))
            if px is not None:
                o.price_ticks = px
            o.qty = _int(row.get("leavesQty"), o.qty)
            self._to(o, S.LIVE, now_ns, why)
        else:
            self._to(o, S.DONE, now_ns, f"{why}: {o.status or 'closed'}")

    def _fills_from(self, o: TrackedOrder, row: JsonObject, price: int | None) -> None:
        cum = _int(row.get("cumQty"), 0)
        if cum <= o.filled:
            return
        qty, o.filled = cum - o.filled, cum
        if not o.in_position:
            self.position += o.side * qty
        self.fills.append(
            Fill(o.side, price if price is not None else o.price_ticks, qty, o.cl_ord_id)
        )

    def _ticks(self, price: Any) -> int | None:
        try:
            return int(self.instrument.price_to_ticks(price)) if price is not None else None
        except Exception:  # noqa: BLE001 - a garbled price from the exchange: keep ours
            return None

    def _resolve(self, o: TrackedOrder, now_ns: int, force: bool = False) -> None:
        """Look an UNKNOWN order up by its clOrdID when its backoff has passed."""
        if o.state is not S.UNKNOWN or (not force and self._mono() < o.next_lookup_s):
            return
        res = self._call("lookup", self.rest.get_order, self.symbol, o.cl_ord_id)
        o.lookups += 1
        if not res.ok:
            o.next_lookup_s = self._mono() + self._backoff(o.lookups)
            return
        if res.value is None:
            o.not_found += 1
            expired = self.rest.wall_s() > o.expires_unix + 1.0
            if o.not_found >= self.not_found_lookups and (o.doubt != "create" or expired):
                self.lost[o.cl_ord_id] = self._mono()
                if len(self.lost) > 1000:
                    del self.lost[next(iter(self.lost))]
                self.stats.given_up += 1
                self._to(o, S.DONE, now_ns, f"not found after {o.not_found} lookups ({o.doubt})")
                self.journal.record(
                    now_ns, "outcome", cl_ord_id=o.cl_ord_id, ok=False, error="not found"
                )
                return
            o.next_lookup_s = self._mono() + self._backoff(o.lookups)
            return
        first_outcome = o.doubt == "create"
        self._apply_row(o, dict(res.value), now_ns, f"lookup after unknown {o.doubt}")
        if first_outcome:
            self.journal.record(
                now_ns,
                "outcome",
                cl_ord_id=o.cl_ord_id,
                ok=True,
                order_id=o.order_id,
                status=o.status,
            )
        if o.state is S.LIVE and o.want_cancel:
            self._cancel(o, now_ns, "cancel asked while the order was unknown")

    # ------------------------------------------------------------------ truth from the exchange
    def reconcile(self, now_ns: int) -> Reconciliation:
        """Merge the exchange's open orders and position into the tracked state (start, every
        reconnect, after a lapse of the dead man's switch). Own orders the manager does not
        track are adopted (side free) or cancelled (side taken); tracked orders no longer open
        are looked up. On a REST failure it is retried from `service` with backoff."""
        orders = self._call("reconcile orders", self.rest.open_orders, self.symbol)
        pos = (
            self._call("reconcile position", self.rest.position, self.symbol)
            if orders.ok
            else orders
        )
        if not (orders.ok and pos.ok):
            self.needs_reconcile = True
            self._reconcile_failures += 1
            self._next_reconcile_s = self._mono() + self._backoff(self._reconcile_failures)
            self.journal.record(
                now_ns, "event", what="reconcile_failed", error=pos.error or orders.error
            )
            return Reconciliation(ok=False, error=pos.error or orders.error)
        self.needs_reconcile = False
        self._reconcile_failures = 0
        self.position = _int(pos.value.get("currentQty"), 0)
        for o in self.slots.values():  # fills up to now are in that position already
            o.in_position = True
        extra = self._merge_open(list(orders.value), now_ns, "reconcile")
        for o in self.slots.values():
            # an open order's fills so far are in o.filled: later ones move the position; an
            # order still unknown keeps in_position (its fills are in the snapshot). A fill
            # between the two GETs can still be counted twice: the idle position check
            # corrects that once nothing of ours is in flight.
            if o.state is S.LIVE:
                o.in_position = False
        summary = Reconciliation(
            ok=True,
            position=self.position,
            own=len(self.slots),
            foreign=len(self.foreign),
            cancelled_extra=tuple(extra),
        )
        self.journal.record(
            now_ns,
            "event",
            what="reconcile",
            ok=True,
            position=summary.position,
            own=summary.own,
            foreign=summary.foreign,
            cancelled_extra=extra,
        )
        return summary

    def _merge_open(self, rows: list[JsonObject], now_ns: int, why: str) -> list[str]:
        """Apply a list of open orders; returns the clOrdIDs of own strays cancelled."""
        own: dict[str, JsonObject] = {}
        foreign: list[tuple[int, int]] = []
        for r in rows:
            if not isinstance(r, dict):
                continue
            side = 1 if r.get("side") == "Buy" else -1
            cid = str(r.get("clOrdID") or "")
            if cid.startswith(self._prefix):
                own[cid] = r
            else:
                foreign.append((side, _int(r.get("leavesQty", r.get("orderQty")), 0)))
        self.foreign = foreign
        by_cid = {o.cl_ord_id: o for o in self.slots.values()}
        strays: list[str] = []
        for cid, r in own.items():
            o = by_cid.get(cid)
            side = 1 if r.get("side") == "Buy" else -1
            if o is not None:
                if o.state is S.CANCELLING:
                    continue  # its cancel answer decides
                self._apply_row(o, r, now_ns, f"{why}: open")
                if o.state is S.LIVE and o.want_cancel:
                    self._cancel(o, now_ns, "cancel asked")
            elif side not in self.slots:
                px = self._ticks(r.get("price"))
                o = TrackedOrder(side, cid, px if px is not None else 0, 0, order_id="")
                o.filled = _int(r.get("cumQty"), 0)  # fills before adoption are not ours to add
                self.slots[side] = o
                self.stats.adopted += 1
                self.journal.record(now_ns, "event", what="adopted", cl_ord_id=cid, side=side)
                self._apply_row(o, r, now_ns, f"{why}: adopted")
            else:
                strays.append(cid)  # one own order per side: the extra one is cancelled
        if strays:
            self.journal.record(now_ns, "intent", op="cancel_strays", cl_ord_ids=strays)
            res = self._call("cancel strays", self.rest.cancel, strays)
            self.journal.record(
                now_ns, "outcome", op="cancel_strays", cl_ord_ids=strays, ok=res.ok, error=res.error
            )
            if res.ok:
                self.stats.strays_cancelled += len(strays)
        for o in list(self.slots.values()):
            if o.cl_ord_id not in own and o.state in (S.LIVE, S.CANCELLING):
                self._unknown(o, "closed", now_ns, f"{why}: no longer open")
                self._resolve(o, now_ns)
        self._sync_risk()
        return strays

    def _sync_risk(self) -> None:
        resting = tuple((o.side, o.qty) for o in self.slots.values()) + tuple(self.foreign)
        self.risk = replace(self.risk, position=self.position, resting=resting)

    # ------------------------------------------------------------------ the periodic work
    def service(self, now_ns: int) -> None:
        """Due work: a pending reconciliation, lookups of UNKNOWN orders, cancels asked of
        LIVE ones, the open-order poll and the position check. Raises only FatalTradingError."""
        if self.needs_reconcile and self._mono() >= self._next_reconcile_s:
            self.reconcile(now_ns)
        for o in list(self.slots.values()):
            if o.state is S.UNKNOWN:
                self._resolve(o, now_ns)
            elif o.state is S.LIVE and o.want_cancel:
                self._cancel(o, now_ns, "cancel asked")
        self._poll(now_ns)
        if self._dead_man_armed_s is not None and (
            self._mono() - self._dead_man_armed_s > self.dead_man_timeout_ms / 1000
        ):
            # the switch lapsed (not refreshed while unhealthy, or failing): the exchange has
            # cancelled everything; learn what is left
            self._dead_man_armed_s = None
            self.needs_reconcile = True

    def poll_fills(self, now_ns: int) -> list[Fill]:
        """Poll the open orders when due, return the fills not yet taken."""
        self._poll(now_ns)
        return self.take_fills()

    def _poll(self, now_ns: int) -> None:
        if self._mono() < self._next_poll_s:
            return
        res = self._call("poll", self.rest.open_orders, self.symbol)
        if not res.ok:
            self._poll_failures += 1
            self._next_poll_s = self._mono() + min(
                self.fill_poll_s, self._backoff(self._poll_failures)
            )
            return
        self._poll_failures = 0
        self._merge_open(list(res.value), now_ns, "poll")
        watching = any(self._mono() - t < self.idle_poll_s * 6 for t in self.lost.values())
        interval = self.fill_poll_s if self.slots or watching else self.idle_poll_s
        self._next_poll_s = self._mono() + interval
        if not self.slots and self._mono() >= self._next_position_s:
            # nothing of ours in flight: the exchange's position is unambiguous
            pos = self._call("position", self.rest.position, self.symbol)
            self._next_position_s = self._mono() + self.position_check_s
            if pos.ok:
                qty = _int(pos.value.get("currentQty"), self.position)
                if qty != self.position:
                    self.journal.record(
                        now_ns, "event", what="position_corrected", was=self.position, now=qty
                    )
                    self.position = qty
                    self._sync_risk()

    # ------------------------------------------------------------------ decisions
    def on_decision(
        self,
        action: int | None,
        decision_ts: int,
        best_bid: int,
        best_ask: int,
        mid_ticks: float,
        now_ns: int,
        last_data_ns: int,
        action_mode: str = "toggle",
    ) -> str:
        """Carry out one action of the model's `action_mode`; returns what was done (for the
        decision log)."""
        if action is None:
            return "none"
        if action_mode == "target":
            return self._on_target(
                action & 1 != 0,
                action & 2 != 0,
                decision_ts,
                best_bid,
                best_ask,
                mid_ticks,
                now_ns,
                last_data_ns,
            )
        if action not in (1, 2):
            return "none"
        side = 1 if action == 1 else -1
        o = self._settled(side, now_ns)
        if o is not None:
            if o.state is not S.LIVE:
                return f"pending: {o.cl_ord_id} {o.state}"
            return self._cancel(o, now_ns, "toggle off")
        price = best_bid if side == 1 else best_ask
        return self._place(side, int(price), decision_ts, mid_ticks, now_ns, last_data_ns)

    def _on_target(
        self,
        want_bid: bool,
        want_ask: bool,
        decision_ts: int,
        best_bid: int,
        best_ask: int,
        mid_ticks: float,
        now_ns: int,
        last_data_ns: int,
    ) -> str:
        """Action mode "target", side by side (bid first, as the env): cancel an own LIVE
        order not wanted; place one where wanted and the side has no own order (live or in
        flight: an UNKNOWN one is looked up first). Returns "bid: ...; ask: ..." for the
        sides where something was done or is pending, "none" when both already match."""
        done: list[str] = []
        for side, want, price, label in (
            (1, want_bid, best_bid, "bid"),
            (-1, want_ask, best_ask, "ask"),
        ):
            o = self._settled(side, now_ns)
            if o is not None and o.state is not S.LIVE:
                what = f"pending: {o.cl_ord_id} {o.state}"  # its lookup decides; next bar acts
            elif o is not None and not want:
                what = self._cancel(o, now_ns, "not wanted")
            elif o is None and want:
                what = self._place(side, int(price), decision_ts, mid_ticks, now_ns, last_data_ns)
            else:
                continue  # wanted and resting, or not wanted and none: nothing to do
            done.append(f"{label}: {what}")
        return "; ".join(done) or "none"

    def _settled(self, side: int, now_ns: int) -> TrackedOrder | None:
        """The side's own order after an UNKNOWN one was looked up (before anything else is
        sent on that side)."""
        o = self.slots.get(side)
        if o is not None and o.state is S.UNKNOWN:
            self._resolve(o, now_ns)
            o = self.slots.get(side)
        return o

    def _place(
        self,
        side: int,
        price: int,
        decision_ts: int,
        mid_ticks: float,
        now_ns: int,
        last_data_ns: int,
    ) -> str:
        """A new post-only order of the stake on a free side: reconciled, risk-checked, its
        clOrdID unused, journaled before it is sent."""
        if self.needs_reconcile:
            return "refused: not reconciled with the exchange"
        self._sync_risk()
        d = check_new_order(
            OrderIntent(side, int(price), self.stake),
            self.risk,
            mid_ticks=mid_ticks,
            now_ns=now_ns,
            last_data_ns=last_data_ns,
            cfg=self.risk_cfg,
        )
        if not d.allowed:
            self.refusals.append(d.reason)
            self.journal.record(now_ns, "event", what="risk_refused", side=side, reason=d.reason)
            return f"refused: {d.reason}"
        cid = cl_ord_id(self.session, decision_ts, side)
        if cid in self.lost or any(c.cl_ord_id == cid for c in self.closed):
            return f"refused: clOrdID {cid} already used"
        o = TrackedOrder(side, cid, int(price), self.stake)
        self.slots[side] = o
        self.journal.record(
            now_ns,
            "intent",
            cl_ord_id=cid,
            op="create",
            side=side,
            price_ticks=int(price),
            qty=self.stake,
        )
        res = self._call(
            "create",
            self.rest.create_post_only,
            self.symbol,
            side,
            self.stake,
            self.instrument.ticks_to_price(price),
            cid,
        )
        o.expires_unix = float(self.rest.last_expires)
        self.orders_sent += 1
        self.risk = d.state  # counts against the orders-per-minute limit whatever the outcome
        if res.ok:
            self._apply_row(o, dict(res.value), now_ns, "create answered")
            self.journal.record(
                now_ns, "outcome", cl_ord_id=cid, ok=True, order_id=o.order_id, status=o.status
            )
            return f"placed {cid} ({o.status})"
        if res.kind == "unknown" or "duplicate clordid" in res.error.lower():
            self._unknown(o, "create", now_ns, f"create outcome unknown: {res.error}")
            self._resolve(o, now_ns)
            if o.state is S.UNKNOWN:
                return f"pending: {cid} unknown ({res.error[:60]})"
            return f"placed {cid} ({o.status}) after a lookup"
        self._to(o, S.DONE, now_ns, f"create refused: {res.error}")
        self.journal.record(now_ns, "outcome", cl_ord_id=cid, ok=False, error=res.error)
        return f"create failed: {res.error[:80]}"

    def _cancel(self, o: TrackedOrder, now_ns: int, why: str) -> str:
        """LIVE -> CANCELLING -> DONE, or UNKNOWN (looked up, then cancelled again)."""
        o.want_cancel = True
        self._to(o, S.CANCELLING, now_ns, why)
        self.journal.record(now_ns, "intent", cl_ord_id=o.cl_ord_id, op="cancel")
        res = self._call("cancel", self.rest.cancel, [o.cl_ord_id])
        rows = [
            r for r in (res.value or []) if isinstance(r, dict) and r.get("clOrdID") == o.cl_ord_id
        ]
        if res.ok and rows:
            self._apply_row(o, rows[0], now_ns, "cancel answered")
            self.journal.record(
                now_ns, "outcome", cl_ord_id=o.cl_ord_id, ok=o.state is S.DONE, status=o.status
            )
            if o.state is S.LIVE:  # still open: cancelled again on the next service
                return f"cancel pending {o.cl_ord_id}"
            return f"cancelled {o.cl_ord_id}"
        error = res.error or "the answer lists no such order"
        self.journal.record(now_ns, "outcome", cl_ord_id=o.cl_ord_id, ok=False, error=error)
        self._unknown(o, "cancel", now_ns, f"cancel outcome unknown: {error}")
        self._resolve(o, now_ns)  # learn at once whether it is gone
        if o.state is S.DONE:
            return f"cancelled {o.cl_ord_id} ({o.status}) after a lookup"
        return f"cancel pending {o.cl_ord_id} ({o.state})"

    def reprice(self, best_bid: int, best_ask: int, mid_ticks: float, now_ns: int) -> None:
        """Roll LIVE orders to the current best price of their side (within the band)."""
        for o in list(self.slots.values()):
            if o.state is not S.LIVE or o.want_cancel or not o.order_id:
                continue
            target = best_bid if o.side == 1 else best_ask
            if target == o.price_ticks:
                continue
            if abs(target - mid_ticks) > mid_ticks * self.risk_cfg.price_band_bps / 1e4:
                continue
            res = self._call(
                "amend", self.rest.amend_price, o.order_id, self.instrument.ticks_to_price(target)
            )
            if res.ok:
                self._apply_row(o, dict(res.value), now_ns, "amend answered")
            elif res.kind != "busy":  # refused (closed?) or unknown: learn its state first
                self._unknown(o, "amend", now_ns, f"amend failed: {res.error}")

    def update_equity(self, equity: float, now_ns: int) -> None:
        was = self.risk.killed
        self.risk = update_equity(self.risk, equity, self.risk_cfg)
        if self.risk.killed and not was:
            self.journal.record(now_ns, "event", what="kill_switch", reason=self.risk.kill_reason)
            self.cancel_own(now_ns)

    def refresh_dead_man(self, now_s: float | None = None) -> bool:
        """Re-arm cancelAllAfter when due; True when it was re-armed. A failure is retried
        with backoff well inside the window (never fatal by itself)."""
        now_s = self._mono() if now_s is None else now_s
        if now_s < self._dead_man_due_s:
            return False
        res = self._call("dead man", self.rest.cancel_all_after, self.dead_man_timeout_ms)
        if not res.ok:
            self._dead_man_failures += 1
            self._dead_man_due_s = now_s + min(
                self.dead_man_refresh_s, self._backoff(self._dead_man_failures)
            )
            return False
        self._dead_man_failures = 0
        self._dead_man_armed_s = now_s
        self._dead_man_due_s = now_s + self.dead_man_refresh_s
        return True

    def cancel_own(self, now_ns: int) -> int:
        """Take every own order down (cancels are always allowed): LIVE ones are cancelled
        now, UNKNOWN ones as soon as a lookup finds them open. Returns the orders asked."""
        n = 0
        for o in list(self.slots.values()):
            o.want_cancel = True
            n += 1
            if o.state is S.LIVE:
                self._cancel(o, now_ns, "cancel own")
            elif o.state is S.UNKNOWN:
                self._resolve(o, now_ns)
        return n

    def shutdown(self, now_ns: int, attempts: int = 4) -> int:
        """Graceful stop, never raises: cancel own orders (also any the exchange still lists,
        strays and given-up ids included) with a few retries; disarm the dead man's switch
        only when no own order is left, else leave it armed so the exchange cancels them.
        Returns the number of cancel requests that went through."""
        n = 0
        left: list[str] = []
        try:
            for attempt in range(attempts):
                for o in list(self.slots.values()):
                    o.want_cancel = True
                    if o.state is S.LIVE:
                        self._cancel(o, now_ns, "shutdown")
                    elif o.state is S.UNKNOWN:
                        self._resolve(o, now_ns, force=True)
                res = self._call("shutdown open orders", self.rest.open_orders, self.symbol)
                if res.ok:
                    left = [
                        str(r.get("clOrdID"))
                        for r in res.value
                        if str(r.get("clOrdID", "")).startswith(self._prefix)
                    ]
                    if not left and all(o.state is S.DONE for o in self.slots.values()):
                        break
                    if left:
                        c = self._call("shutdown cancel", self.rest.cancel, left)
                        n += len(left) if c.ok else 0
                self._sleep(0.2 * 2**attempt)
            else:
                left = left or [o.cl_ord_id for o in self.slots.values()]
            if not left:
                self._call("disarm dead man", self.rest.cancel_all_after, 0)
        except FatalTradingError as exc:
            left = left or [o.cl_ord_id for o in self.slots.values()]
            log.error("shutdown: %s", exc)
        finally:
            self.journal.record(now_ns, "event", what="shutdown", cancelled=n, left=left)
        return n


def _int(v: Any, default: int) -> int:
    try:
        return int(v)
    except (TypeError, ValueError, OverflowError):
        return default
