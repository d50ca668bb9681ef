"""Risk limits that do not depend on the model. Pure ring: decisions from the given state.

Every new order passes `check_new_order`; cancels always pass (`check_cancel`), even on
stale data or after the kill switch, because removing exposure is always allowed.

Limits (`core.config.live.RiskConfig`):
- max order size: 0 < qty <= max_order_contracts;
- max position: the worst case after the order, |position + all resting orders of that
  side + this order|, stays <= max_position_contracts (resting orders may all fill);
- max orders per minute: fewer than max_orders_per_minute accepted orders in the trailing
  60 s `(now - 60 s, now]`;
- price band: |price - mid| <= mid * price_band_bps / 1e4;
- stale data: no market message within stale_after_s blocks new orders;
- drawdown kill switch: once equity fell max_drawdown_xbt below its peak, every new order
  is refused until a human restarts the loop (sticky).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from core.clock import NS_PER_S
from core.config.live import RiskConfig

MINUTE_NS = 60 * NS_PER_S


@dataclass(frozen=True)
class OrderIntent:
    """A new order: side +1 buy / -1 sell, limit price in ticks, qty in contracts."""

    side: int
    price_ticks: int
    qty: int


@dataclass(frozen=True)
class RiskState:
    """What the risk check needs to know. `resting` = (side, qty) of open orders."""

    position: int = 0
    resting: tuple[tuple[int, int], ...] = ()
    accepted_ns: tuple[int, ...] = ()  # times of accepted new orders (trailing window)
    equity_peak: float | None = None
    killed: bool = False
    kill_reason: str = ""


@dataclass(frozen=True)
class RiskDecision:
    allowed: bool
    reason: str
    state: RiskState = field(default_factory=RiskState)


def update_equity(state: RiskState, equity: float, cfg: RiskConfig) -> RiskState:
    """Track the equity peak; trip the (sticky) kill switch on a drawdown >= the limit."""
    peak = equity if state.equity_peak is None else max(state.equity_peak, equity)
    if state.killed:
        return replace(state, equity_peak=peak)
    if peak - equity >= cfg.max_drawdown_xbt:
        return replace(
            state,
            equity_peak=peak,
            killed=True,
            kill_reason=f"drawdown {peak - equity:.8f} XBT >= limit {cfg.max_drawdown_xbt}",
        )
    return replace(state, equity_peak=peak)


def worst_case_position(state: RiskState, side: int, qty: int) -> int:
    """|position| if every resting order of `side` and the new order filled."""
    same = sum(q for s, q in state.resting if s == side)
    return abs(state.position + side * (same + qty))


def check_new_order(
    intent: OrderIntent,
    state: RiskState,
    *,
    mid_ticks: float,
    now_ns: int,
    last_data_ns: int,
    cfg: RiskConfig,
) -> RiskDecision:
    """Accept or refuse a new order. When accepted, the returned state records it
    (its time and its resting qty); when refused, the state is unchanged."""
    recent = tuple(t for t in state.accepted_ns if t > now_ns - MINUTE_NS)
    state = replace(state, accepted_ns=recent)

    def no(reason: str) -> RiskDecision:
        return RiskDecision(False, reason, state)

    if state.killed:
        return no(f"kill switch: {state.kill_reason}")
    if last_data_ns < 0 or now_ns - last_data_ns > cfg.stale_after_s * NS_PER_S:
        return no("stale market data")
    if intent.side not in (1, -1):
        return no(f"bad side {intent.side}")
    if intent.qty <= 0 or intent.qty > cfg.max_order_contracts:
        return no(f"order size {intent.qty} outside (0, {cfg.max_order_contracts}]")
    if not mid_ticks > 0:
        return no("no mid price")
    if abs(intent.price_ticks - mid_ticks) > mid_ticks * cfg.price_band_bps / 1e4:
        return no(f"price {intent.price_ticks} outside {cfg.price_band_bps} bps of mid {mid_ticks}")
    if worst_case_position(state, intent.side, intent.qty) > cfg.max_position_contracts:
        return no(f"worst-case position would exceed {cfg.max_position_contracts}")
    if len(recent) >= cfg.max_orders_per_minute:
        return no(f"{len(recent)} orders in the last minute (limit {cfg.max_orders_per_minute})")
    new_state = replace(
        state,
        accepted_ns=(*recent, now_ns),
        resting=(*state.resting, (intent.side, intent.qty)),
    )
    return RiskDecision(True, "", new_state)


def check_cancel() -> RiskDecision:
    """Cancels always pass: removing exposure is allowed on stale data and after a kill."""
    return RiskDecision(True, "cancels always allowed")
