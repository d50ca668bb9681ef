"""Decisions -> exchange orders, under the model-independent risk limits. Orchestration ring.

The policy's actions are the env's: 0 hold, 1 toggle the resting long (buy) order, 2 toggle
the resting short (sell) order. A toggle on places a post-only limit order of the stake
size at the best price of its side (bid for a buy, ask for a sell); a toggle off cancels
it. Every bar, resting orders roll to the current best price of their side (as the env's
orders do). Every new order passes `live.risk.check_new_order`; cancels always go through.

Every intent is journaled (fsynced) before it is sent and its outcome after. The open
orders and the position are reconciled from the exchange on start and after every
reconnect; the dead man's switch (`cancelAllAfter`) is refreshed while trading, and
`shutdown` cancels the session's own orders and disarms it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

from core.config.live import RiskConfig
from core.instrument import InstrumentSpec
from live.exchange import OWN_PREFIX, BitmexRest, ExchangeError, cl_ord_id
from live.journal import Journal
from live.risk import OrderIntent, RiskState, check_new_order, update_equity


@dataclass
class Resting:
    side: int
    cl_ord_id: str
    order_id: str
    price_ticks: int
    qty: int


@dataclass(frozen=True)
class Fill:
    side: int
    price_ticks: int
    qty: int
    cl_ord_id: str


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
    ) -> None:
        if stake_contracts <= 0 or stake_contracts % instrument.lot_size:
            raise ValueError(
                f"stake_contracts={stake_contracts} must be a positive multiple of lot {instrument.lot_size}"
            )
        self.rest = rest
        self.symbol = symbol
        self.instrument = instrument
        self.risk_cfg = risk
        self.stake = stake_contracts
        self.session = session
        self.journal = journal
        self.dead_man_timeout_ms = dead_man_timeout_ms
        self.dead_man_refresh_s = dead_man_refresh_s
        self.resting: dict[int, Resting] = {}
        self.position = 0
        self.foreign: list[tuple[int, int]] = []
        self.risk = RiskState()
        self.orders_sent = 0
        self.refusals: list[str] = []
        self._last_dead_man = -1e18
        self.fill_poll_ns = int(fill_poll_s * 1e9)  # REST budget: BitMEX allows ~120 requests/min
        self._last_fill_poll = -(2**62)
        self._prefix = OWN_PREFIX  # own = any Chappie session's order (restarts included)

    # ------------------------------------------------------------------ truth from the exchange
    def reconcile(self, now_ns: int) -> dict[str, Any]:
        """Adopt the exchange's open orders and position (start, and after every reconnect)."""
        orders = self.rest.open_orders(self.symbol)
        pos = self.rest.position(self.symbol)
        self.position = int(pos.get("currentQty") or 0)
        self.resting = {}
        self.foreign = []
        extra: list[str] = []
        for o in orders:
            side = 1 if o["side"] == "Buy" else -1
            qty = int(o.get("leavesQty", o.get("orderQty", 0)))
            if str(o.get("clOrdID", "")).startswith(self._prefix):
                if side in self.resting:
                    extra.append(o["clOrdID"])  # one own order per side: cancel the rest
                    continue
                self.resting[side] = Resting(
                    side,
                    o["clOrdID"],
                    o["orderID"],
                    self.instrument.price_to_ticks(o["price"]),
                    qty,
                )
            else:
                self.foreign.append((side, qty))  # not ours: left alone, but counted in the risk
        if extra:
            self.rest.cancel(extra)
        self._sync_risk()
        summary = {
            "position": self.position,
            "own": len(self.resting),
            "foreign": len(self.foreign),
            "cancelled_extra": extra,
        }
        self.journal.record(now_ns, "event", what="reconcile", **summary)
        return summary

    def _sync_risk(self) -> None:
        resting = tuple((r.side, r.qty) for r in self.resting.values()) + tuple(self.foreign)
        self.risk = replace(self.risk, position=self.position, resting=resting)

    @property
    def long_order(self) -> bool:
        return 1 in self.resting

    @property
    def short_order(self) -> bool:
        return -1 in self.resting

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
    ) -> str:
        """Carry out one action; returns what was done (for the decision log)."""
        if action not in (1, 2):
            return "none"
        side = 1 if action == 1 else -1
        if side in self.resting:
            return self._cancel(side, now_ns)
        price = best_bid if side == 1 else best_ask
        intent = OrderIntent(side, int(price), self.stake)
        self._sync_risk()
        d = check_new_order(
            intent,
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
        self.journal.record(
            now_ns,
            "intent",
            cl_ord_id=cid,
            op="create",
            side=side,
            price_ticks=int(price),
            qty=self.stake,
        )
        try:
            o = self.rest.place_post_only(
                self.symbol, side, self.stake, self.instrument.ticks_to_price(price), cid
            )
        except Exception as exc:  # noqa: BLE001 - journaled and reported, the loop goes on
            self.journal.record(
                now_ns, "outcome", cl_ord_id=cid, ok=False, error=f"{type(exc).__name__}: {exc}"
            )
            return f"create failed: {type(exc).__name__}"
        self.orders_sent += 1
        self.risk = d.state
        status = str(o.get("ordStatus"))
        self.journal.record(
            now_ns, "outcome", cl_ord_id=cid, ok=True, order_id=o.get("orderID"), status=status
        )
        if status in ("New", "PartiallyFilled"):
            self.resting[side] = Resting(side, cid, str(o["orderID"]), int(price), self.stake)
        self._sync_risk()
        return f"placed {cid} ({status})"

    def _cancel(self, side: int, now_ns: int) -> str:
        r = self.resting.pop(side)
        self.journal.record(now_ns, "intent", cl_ord_id=r.cl_ord_id, op="cancel")
        try:
            self.rest.cancel([r.cl_ord_id])
        except Exception as exc:  # noqa: BLE001
            self.resting[side] = r
            self.journal.record(now_ns, "outcome", cl_ord_id=r.cl_ord_id, ok=False, error=str(exc))
            return f"cancel failed: {type(exc).__name__}"
        self.journal.record(now_ns, "outcome", cl_ord_id=r.cl_ord_id, ok=True, status="Canceled")
        self._sync_risk()
        return f"cancelled {r.cl_ord_id}"

    def poll_fills(self, now_ns: int) -> list[Fill]:
        """Own orders that left the open set: filled ones update the position. Polled at
        most every `fill_poll_s` (market time) to stay inside the REST rate budget."""
        if not self.resting or now_ns - self._last_fill_poll < self.fill_poll_ns:
            return []
        self._last_fill_poll = now_ns
        open_ids = {o.get("clOrdID") for o in self.rest.open_orders(self.symbol)}
        fills = []
        for side, r in list(self.resting.items()):
            if r.cl_ord_id in open_ids:
                continue
            o = self.rest.get_order(self.symbol, r.cl_ord_id) or {}
            del self.resting[side]
            filled = int(o.get("cumQty") or 0)
            if filled:
                self.position += side * filled
                fills.append(
                    Fill(
                        side,
                        self.instrument.price_to_ticks(o.get("price", 0) or 0),
                        filled,
                        r.cl_ord_id,
                    )
                )
            self.journal.record(
                now_ns,
                "event",
                what="order_closed",
                cl_ord_id=r.cl_ord_id,
                status=o.get("ordStatus"),
                filled=filled,
            )
        self._sync_risk()
        return fills

    def reprice(self, best_bid: int, best_ask: int, mid_ticks: float, now_ns: int) -> None:
        """Roll resting orders to the current best price of their side (within the band)."""
        for side, r in list(self.resting.items()):
            target = best_bid if side == 1 else best_ask
            if target == r.price_ticks:
                continue
            if abs(target - mid_ticks) > mid_ticks * self.risk_cfg.price_band_bps / 1e4:
                continue
            try:
                self.rest.amend_price(r.order_id, self.instrument.ticks_to_price(target))
                r.price_ticks = int(target)
            except ExchangeError as exc:
                self.journal.record(
                    now_ns, "event", what="amend_failed", cl_ord_id=r.cl_ord_id, error=str(exc)
                )

    def update_equity(self, equity: float, now_ns: int) -> None:
        was = self.risk.killed
        self.risk = update_equity(self.risk, equity, self.risk_cfg)
        if self.risk.killed and not was:
            self.journal.record(now_ns, "event", what="kill_switch", reason=self.risk.kill_reason)
            self.cancel_own(now_ns)

    def refresh_dead_man(self, now_s: float | None = None) -> bool:
        """Re-arm cancelAllAfter when due; True when a request was sent."""
        now_s = time.monotonic() if now_s is None else now_s
        if now_s - self._last_dead_man < self.dead_man_refresh_s:
            return False
        self.rest.cancel_all_after(self.dead_man_timeout_ms)
        self._last_dead_man = now_s
        return True

    def cancel_own(self, now_ns: int) -> int:
        """Cancel every own resting order (cancels always allowed)."""
        ids = [r.cl_ord_id for r in self.resting.values()]
        if ids:
            self.journal.record(now_ns, "intent", op="cancel_own", cl_ord_ids=ids)
            self.rest.cancel(ids)
            self.journal.record(now_ns, "outcome", op="cancel_own", cl_ord_ids=ids, ok=True)
        self.resting.clear()
        self._sync_risk()
        return len(ids)

    def shutdown(self, now_ns: int) -> int:
        """Graceful stop: cancel own orders (also any the exchange still lists), disarm the switch."""
        n = self.cancel_own(now_ns)
        try:
            leftovers = [
                o["clOrdID"]
                for o in self.rest.open_orders(self.symbol)
                if str(o.get("clOrdID", "")).startswith(self._prefix)
            ]
            if leftovers:
                self.rest.cancel(leftovers)
                n += len(leftovers)
            self.rest.cancel_all_after(0)
        finally:
            self.journal.record(now_ns, "event", what="shutdown", cancelled=n)
        return n
