# mypy: disable-error-code="no-any-return"
# (numba kernels return numpy scalars mypy cannot type; numba types their bodies)
"""Queue position, latency and fills of our own resting orders on an L2 book. Pure.

The exchange's view of one instrument, replayed event by event in exchange time
(``ts_event``) through the ONE order book (`features.book`), with our own limit orders
resting in it. Nothing here reads files or clocks; `ExchangeReplay` is fed canonical
event frames and order requests and returns fills.

Queue models (`QueueModel.name`); ``ahead`` is the quantity in front of our order at its
price p, in contracts (a float: the probabilistic model estimates it):

- ``touch``: front of the queue. ``ahead = 0`` on arrival: every trade at p fills us
  (by its volume), as do trades through p and the opposite best reaching p.
- ``trade_through``: never reaches the front: only a trade through p or the opposite best
  reaching p fills. Trades at p do nothing.
- ``risk_averse`` (hftbacktest ``RiskAverseQueueModel``): ``ahead`` = the level's size
  when the order arrives (we join at the back); a trade at p advances it by the trade's
  quantity; a size change at p sets ``ahead = min(ahead, new size)``: cancellations
  ahead help only when the level shrinks below what was ahead, and an increase goes behind.
- ``power_prob`` (hftbacktest ``ProbQueueModel`` with ``PowerProbQueueFunc(n)``): as
  risk_averse for trades; a size decrease at p not explained by the trades at p since the
  last size change (``chg = prev - new - traded``) advances the order by the share of
  ``chg`` that was ahead: with ``front = ahead`` and ``back = prev - front``, the
  probability that a cancellation was behind us is ``back^n / (back^n + front^n)``
  (Rigtorp 2013, "Estimating order queue position"), and
  ``ahead = min(front - (1 - prob) chg + min(back - prob chg, 0), new)``.

Fills (hftbacktest ``PartialFillExchange``): once ``ahead < 0`` the order can fill
``floor(-ahead / lot) * lot``, limited by the trade's quantity and the order's leaves (a
partial fill). A trade *through* p (a sell below our bid) or the opposite best reaching p
fills the whole remainder: the whole level at p was taken, so were we.

Latency (`Latency`): an order sent at t arrives at ``t + entry``; it cannot fill before,
and it joins the queue as the exchange's book stands at arrival. A cancel sent at t lands
at ``t + cancel``; until then the order can still fill. A post-only order whose price
would cross the opposite best on arrival is rejected. Sizes are contracts, a multiple
of the lot (`round_to_lot`).

Event order: book deltas and trades merged by ``ts_event``, a trade before a book delta
at the same timestamp (the delta that reflects a trade must not count it twice; the
order hftbacktest's tardis converter gives them); requests landing at time r are applied
after every event with ``ts_event <= r``.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from book.order_book import (
    ST_IN_SNAP,
    ST_NA,
    ST_NB,
    _search,
    apply_message_kernel,
    new_book,
    new_state,
)
from core import schema
from core.numba_cache import njit

TOUCH = 0
TRADE_THROUGH = 1
RISK_AVERSE = 2
POWER_PROB = 3
QUEUE_MODELS: dict[str, int] = {
    "touch": TOUCH,
    "trade_through": TRADE_THROUGH,
    "risk_averse": RISK_AVERSE,
    "power_prob": POWER_PROB,
}

BUY = 1
SELL = -1
_KIND_BOOK = 0
_KIND_TRADE = 1
MAX_ORDERS = 16  # own orders live at once (slots of the event kernel)
_FILL_BUFFER = 4096


@dataclass(frozen=True)
class QueueModel:
    """A named queue-position model; `power` is PowerProb's exponent n (>0)."""

    name: str = "risk_averse"
    power: float = 2.0

    def __post_init__(self) -> None:
        if self.name not in QUEUE_MODELS:
            raise ValueError(f"unknown queue model {self.name!r}: one of {', '.join(QUEUE_MODELS)}")
        if not self.power > 0:
            raise ValueError(f"power_prob exponent must be > 0, got {self.power}")

    @property
    def code(self) -> int:
        return QUEUE_MODELS[self.name]


@dataclass(frozen=True)
class Latency:
    """Order entry and cancel latency in milliseconds (exchange arrival = sent + latency)."""

    entry_ms: float = 0.0
    cancel_ms: float = 0.0

    def __post_init__(self) -> None:
        if self.entry_ms < 0 or self.cancel_ms < 0:
            raise ValueError("latency must be >= 0 ms")

    @property
    def entry_ns(self) -> int:
        return round(self.entry_ms * 1_000_000)

    @property
    def cancel_ns(self) -> int:
        return round(self.cancel_ms * 1_000_000)


def round_to_lot(contracts: int, lot: int) -> int:
    """`contracts` rounded down to a multiple of `lot`; raises ValueError below one lot."""
    if lot <= 0:
        raise ValueError(f"lot size must be > 0, got {lot}")
    out = (int(contracts) // lot) * lot
    if out <= 0:
        raise ValueError(f"order size {contracts} is below one lot ({lot} contracts)")
    return out


# ------------------------------------------------------------------ queue models (scalars)
@njit(cache=True)
def prob_behind(front: float, back: float, n: float) -> float:
    """PowerProb: probability that a cancelled quantity was behind us, f(back) / (f(back) +
    f(front)) with f(x) = x^n; 1 when both are 0 (nothing ahead to advance past)."""
    fb = max(back, 0.0) ** n
    ff = max(front, 0.0) ** n
    if fb + ff == 0.0:
        return 1.0
    return fb / (fb + ff)


@njit(cache=True)
def queue_on_join(model: int, level_qty: float) -> float:
    """Quantity ahead of an order that joins a level holding `level_qty` (at the back)."""
    if model == TOUCH:
        return 0.0
    return level_qty


@njit(cache=True)
def queue_on_trade(model: int, ahead: float, traded: float, qty: float) -> tuple[float, float]:
    """(ahead, traded since the last size change) after a trade of `qty` at our price."""
    if model == TRADE_THROUGH:
        return ahead, traded
    return ahead - qty, traded + qty


@njit(cache=True)
def queue_on_depth(
    model: int, ahead: float, traded: float, prev_qty: float, new_qty: float, power: float
) -> tuple[float, float]:
    """(ahead, traded since the last size change) after the level at our price changes
    from `prev_qty` to `new_qty` contracts."""
    if model in (TRADE_THROUGH, TOUCH):
        return ahead, 0.0
    if model == RISK_AVERSE:
        return min(ahead, new_qty), 0.0
    # POWER_PROB: the decrease not explained by the trades at our price since the last change
    chg = prev_qty - new_qty - traded
    if chg < 0.0:
        return min(ahead, new_qty), 0.0
    front = ahead
    back = prev_qty - front
    prob = prob_behind(front, back, power)
    est = front - (1.0 - prob) * chg + min(back - prob * chg, 0.0)
    return min(est, new_qty), 0.0


@njit(cache=True)
def executable_qty(ahead: float, lot: int) -> int:
    """Contracts that can fill once the queue ahead is consumed (ahead < 0): whole lots."""
    if round(ahead / lot) < 0:
        return int(np.floor(-ahead / lot)) * lot
    return 0


# ------------------------------------------------------------------ the one book, read
@njit(cache=True)
def level_qty(book: np.ndarray, st: np.ndarray, side: int, price: np.int64) -> np.int64:
    """Size of the level (side, price) of a `features.book` array; 0 when absent."""
    row = 0 if side > 0 else 2
    n = st[ST_NB] if side > 0 else st[ST_NA]
    key = price if side > 0 else -price
    pos = _search(book, row, n, key)
    if pos < n and book[row, pos] == key:
        return book[row + 1, pos]
    return np.int64(0)


@njit(cache=True)
def best_price(book: np.ndarray, st: np.ndarray, side: int) -> np.int64:
    """Best price (ticks) of one side of a `features.book` array; 0 when the side is empty."""
    if side > 0:
        n = st[ST_NB]
        return book[0, n - 1] if n > 0 else np.int64(0)
    n = st[ST_NA]
    return -book[2, n - 1] if n > 0 else np.int64(0)


# ------------------------------------------------------------------ the event loop
@njit(cache=True)
def _fill(
    k: int,
    qty: int,
    ts: np.int64,
    lot: int,
    o_leaves: np.ndarray,
    o_live: np.ndarray,
    f_ts: np.ndarray,
    f_slot: np.ndarray,
    f_qty: np.ndarray,
    nfill: int,
) -> int:
    f_ts[nfill] = ts
    f_slot[nfill] = k
    f_qty[nfill] = qty
    o_leaves[k] -= qty
    if o_leaves[k] < lot:
        o_live[k] = 0
    return nfill + 1


@njit(cache=True)
def replay_exchange(
    book: np.ndarray,
    st: np.ndarray,
    ts: np.ndarray,
    kind: np.ndarray,
    side: np.ndarray,
    price: np.ndarray,
    size: np.ndarray,
    snap: np.ndarray,
    i: int,
    t_end: np.int64,
    o_side: np.ndarray,
    o_price: np.ndarray,
    o_leaves: np.ndarray,
    o_ahead: np.ndarray,
    o_traded: np.ndarray,
    o_live: np.ndarray,
    model: int,
    power: float,
    lot: int,
    f_ts: np.ndarray,
    f_slot: np.ndarray,
    f_qty: np.ndarray,
) -> tuple[int, np.ndarray, int]:
    """Apply exchange events i.. with ts <= t_end to the book and the live own orders.

    Returns (next event index, book array, fills written to f_*). Stops early when the
    fill buffer could overflow; the caller drains it and calls again.
    """
    n = ts.shape[0]
    nfill = 0
    cap = f_ts.shape[0] - o_side.shape[0]
    while i < n and ts[i] <= t_end and nfill < cap:
        s = side[i]
        p = price[i]
        if kind[i] == _KIND_TRADE:
            # a taker sell (s = -1) hits resting buys, a taker buy resting sells
            for k in range(o_side.shape[0]):
                if o_live[k] == 0 or o_side[k] != -s:
                    continue
                through = o_side[k] * (o_price[k] - p)
                if through > 0:
                    nfill = _fill(
                        k, o_leaves[k], ts[i], lot, o_leaves, o_live, f_ts, f_slot, f_qty, nfill
                    )
                elif through == 0:
                    a, tr = queue_on_trade(model, o_ahead[k], o_traded[k], float(size[i]))
                    o_ahead[k] = a
                    o_traded[k] = tr
                    ex = executable_qty(a, lot)
                    if ex > 0:
                        q = min(ex, size[i], o_leaves[k])
                        nfill = _fill(
                            k, q, ts[i], lot, o_leaves, o_live, f_ts, f_slot, f_qty, nfill
                        )
        else:
            # a snapshot's first row clears the book: every level's previous size is then 0
            prev = np.int64(0)
            if not (snap[i] and st[ST_IN_SNAP] == 0):
                prev = level_qty(book, st, s, p)
            book = apply_message_kernel(book, st, side, price, size, snap, i, i + 1)
            touch = best_price(book, st, s)  # the best of the side that changed
            for k in range(o_side.shape[0]):
                if o_live[k] == 0:
                    continue
                if o_side[k] == s and o_price[k] == p:
                    a, tr = queue_on_depth(
                        model, o_ahead[k], o_traded[k], float(prev), float(size[i]), power
                    )
                    o_ahead[k] = a
                    o_traded[k] = tr
                elif o_side[k] == -s and touch != 0 and o_side[k] * (touch - o_price[k]) <= 0:
                    # the opposite best reached our price: the level was taken through us
                    nfill = _fill(
                        k, o_leaves[k], ts[i], lot, o_leaves, o_live, f_ts, f_slot, f_qty, nfill
                    )
        i += 1
    return i, book, nfill


# ------------------------------------------------------------------ the replay
@dataclass(frozen=True)
class Fill:
    """One execution of an own order: exchange time (ns), order id, price, contracts."""

    ts_ns: int
    order_id: int
    price_ticks: int
    qty: int


@dataclass
class OrderState:
    """What the account knows of one own order (fills are known at once: no response
    latency). status: pending (in flight) | live | filled | cancelled | rejected."""

    order_id: int
    side: int
    price_ticks: int
    qty: int
    sent_ns: int
    status: str = "pending"
    filled: int = 0
    cancel_sent: bool = False


@dataclass(order=True)
class _Request:
    land_ns: int
    seq: int
    kind: str = field(compare=False)  # "new" | "cancel"
    order_id: int = field(compare=False)


def exchange_events(book: pl.DataFrame, trades: pl.DataFrame) -> dict[str, np.ndarray]:
    """Canonical book deltas and trades merged in exchange order (ts_event; a trade before
    a book delta at the same timestamp; otherwise receive order kept): arrays ts, kind
    (0 book, 1 trade), side, price, size, snap."""
    nb, nt = book.height, trades.height
    ts = np.concatenate([trades[schema.TS_EVENT].to_numpy(), book[schema.TS_EVENT].to_numpy()])
    kind = np.concatenate([np.full(nt, _KIND_TRADE), np.full(nb, _KIND_BOOK)]).astype(np.int64)
    order = np.lexsort((np.arange(nt + nb), kind == _KIND_BOOK, ts))
    cols = {
        "ts": ts.astype(np.int64),
        "kind": kind,
        "side": np.concatenate([trades[schema.SIDE].to_numpy(), book[schema.SIDE].to_numpy()]),
        "price": np.concatenate(
            [trades[schema.PRICE_TICKS].to_numpy(), book[schema.PRICE_TICKS].to_numpy()]
        ),
        "size": np.concatenate([trades[schema.SIZE].to_numpy(), book[schema.SIZE].to_numpy()]),
        "snap": np.concatenate(
            [np.zeros(nt, dtype=np.bool_), book[schema.IS_SNAPSHOT].to_numpy().astype(np.bool_)]
        ),
    }
    out = {k: np.ascontiguousarray(v[order]) for k, v in cols.items()}
    for k in ("kind", "side", "price", "size", "ts"):
        out[k] = out[k].astype(np.int64)
    return out


class ExchangeReplay:
    """The exchange replaying canonical events in ts_event order, with own orders.

    `submit` / `cancel` take the time the request is SENT (ns); it lands after the
    latency. `run_until(t)` applies every event and request up to t (inclusive) and
    returns the fills in that span. `orders` holds every order's state.
    """

    def __init__(
        self,
        book: pl.DataFrame,
        trades: pl.DataFrame,
        *,
        model: QueueModel,
        latency: Latency,
        lot: int,
    ) -> None:
        self.model = model
        self.latency = latency
        self.lot = int(lot)
        self._ev = exchange_events(book, trades)
        self._i = 0
        self._book = new_book(256)
        self._st = new_state()
        self._o_side = np.zeros(MAX_ORDERS, dtype=np.int64)
        self._o_price = np.zeros(MAX_ORDERS, dtype=np.int64)
        self._o_leaves = np.zeros(MAX_ORDERS, dtype=np.int64)
        self._o_ahead = np.zeros(MAX_ORDERS, dtype=np.float64)
        self._o_traded = np.zeros(MAX_ORDERS, dtype=np.float64)
        self._o_live = np.zeros(MAX_ORDERS, dtype=np.int64)
        self._slot_order = [-1] * MAX_ORDERS
        self._f_ts = np.zeros(_FILL_BUFFER, dtype=np.int64)
        self._f_slot = np.zeros(_FILL_BUFFER, dtype=np.int64)
        self._f_qty = np.zeros(_FILL_BUFFER, dtype=np.int64)
        self._requests: list[_Request] = []
        self._seq = 0
        self.orders: dict[int, OrderState] = {}
        self.now_ns = np.iinfo(np.int64).min
        self.n_rejected = 0

    # -------------------------------------------------- requests
    def submit(self, order_id: int, side: int, price_ticks: int, qty: int, sent_ns: int) -> None:
        """Send a post-only limit order of `qty` contracts (a multiple of the lot)."""
        if order_id in self.orders:
            raise ValueError(f"order id {order_id} already used")
        if side not in (BUY, SELL):
            raise ValueError("side must be +1 (buy) or -1 (sell)")
        if qty <= 0 or qty % self.lot:
            raise ValueError(f"order size {qty} is not a positive multiple of the lot {self.lot}")
        self.orders[order_id] = OrderState(order_id, side, int(price_ticks), int(qty), sent_ns)
        self._push(sent_ns + self.latency.entry_ns, "new", order_id)

    def cancel(self, order_id: int, sent_ns: int) -> None:
        """Send a cancel; the order can still fill until it lands."""
        self.orders[order_id].cancel_sent = True
        self._push(sent_ns + self.latency.cancel_ns, "cancel", order_id)

    def _push(self, land_ns: int, kind: str, order_id: int) -> None:
        self._seq += 1
        heapq.heappush(self._requests, _Request(int(land_ns), self._seq, kind, order_id))

    # -------------------------------------------------- time
    def run_until(self, t_ns: int) -> list[Fill]:
        """Apply events and landed requests up to `t_ns` (inclusive); return the fills."""
        fills: list[Fill] = []
        while self._requests and self._requests[0].land_ns <= t_ns:
            req = heapq.heappop(self._requests)
            fills += self._events_until(req.land_ns)
            if req.kind == "new":
                if self.orders[req.order_id].status == "pending":  # not cancelled in flight
                    self._arrive(self.orders[req.order_id])
            else:
                self._land_cancel(self.orders[req.order_id])
        fills += self._events_until(t_ns)
        self.now_ns = max(self.now_ns, int(t_ns))
        return fills

    def _events_until(self, t_ns: int) -> list[Fill]:
        ev = self._ev
        out: list[Fill] = []
        while True:
            self._i, self._book, nfill = replay_exchange(
                self._book,
                self._st,
                ev["ts"],
                ev["kind"],
                ev["side"],
                ev["price"],
                ev["size"],
                ev["snap"],
                self._i,
                np.int64(t_ns),
                self._o_side,
                self._o_price,
                self._o_leaves,
                self._o_ahead,
                self._o_traded,
                self._o_live,
                self.model.code,
                float(self.model.power),
                self.lot,
                self._f_ts,
                self._f_slot,
                self._f_qty,
            )
            done_slots = set()
            for j in range(nfill):
                slot = int(self._f_slot[j])
                o = self.orders[self._slot_order[slot]]
                qty = int(self._f_qty[j])
                o.filled += qty
                out.append(Fill(int(self._f_ts[j]), o.order_id, o.price_ticks, qty))
                if self._o_live[slot] == 0:
                    done_slots.add(slot)
            for slot in done_slots:  # a slot may fill several times in one call
                self.orders[self._slot_order[slot]].status = "filled"
                self._slot_order[slot] = -1
            done = self._i >= ev["ts"].shape[0] or ev["ts"][self._i] > t_ns
            if done:
                return out

    def _arrive(self, o: OrderState) -> None:
        opp = int(best_price(self._book, self._st, -o.side))
        if opp != 0 and o.side * (opp - o.price_ticks) <= 0:
            o.status = "rejected"  # post-only: it would take liquidity
            self.n_rejected += 1
            return
        if -1 not in self._slot_order:
            raise RuntimeError(f"more than {MAX_ORDERS} own orders live at once")
        k = self._slot_order.index(-1)
        self._slot_order[k] = o.order_id
        self._o_side[k] = o.side
        self._o_price[k] = o.price_ticks
        self._o_leaves[k] = o.qty
        level = float(level_qty(self._book, self._st, o.side, np.int64(o.price_ticks)))
        self._o_ahead[k] = queue_on_join(self.model.code, level)
        self._o_traded[k] = 0.0
        self._o_live[k] = 1
        o.status = "live"

    def _land_cancel(self, o: OrderState) -> None:
        if o.status == "pending":  # cancelled before it arrived: it never rests
            o.status = "cancelled"
            return
        if o.status != "live":
            return  # already filled or rejected: the cancel is refused
        k = self._slot_order.index(o.order_id)
        self._o_live[k] = 0
        self._slot_order[k] = -1
        o.status = "cancelled"

    # -------------------------------------------------- queries
    def queue_ahead(self, order_id: int) -> float | None:
        """Estimated contracts ahead of a live order (None when it is not live)."""
        if order_id not in self._slot_order:
            return None
        return float(self._o_ahead[self._slot_order.index(order_id)])

    def best(self, side: int) -> int:
        """The exchange book's best price on `side` now (0 when empty)."""
        return int(best_price(self._book, self._st, side))
