"""Stacked partial positions and their accounting (pure ring).

A position is two stacks of lots (open longs, open shorts); at most one of them is
non-empty. Every fill adds or removes one *stake* (a fraction of the balance): a fill on
the side of the stack (or on a flat book) opens a new lot, a fill on the opposite side
reduces the stack first, oldest lot first (FIFO), and never flips it. Exposure (the sum
of the open lots' stakes) never exceeds `max_exposure`.

Accounting, all amounts in the settle currency (XBT for XBTUSD):

- inverse (XBTUSD): contracts = stake * balance * price / multiplier (USD contracts);
  pnl = side * contracts * multiplier * (1/entry - 1/exit); notional = contracts *
  multiplier / price.
- linear: contracts = stake * balance / (price * multiplier); pnl = side * contracts *
  multiplier * (exit - entry); notional = contracts * multiplier * price.
- fee = rate * notional at the fill price, `rate` = the maker or taker rate of the
  account's `core.fees.FeeConfig` in force at the fill's time (negative = rebate, which
  *raises* the balance). The notional of every fill is summed per liquidity
  (`maker_volume`, `taker_volume`), so the same fills can be re-scored at another fee.

The balance moves only on realised pnl, fees and funding; unrealised pnl is marked on
demand. Every function here is pure: it returns new values and never mutates.

The live loop uses the same functions (`apply_fill`, `management_state`) so that its
observation matches the env's bit for bit. The arithmetic itself lives in the numba
kernels of `envs.kernels` (the one implementation, also run by the env's step); the
functions here validate, convert the dataclasses to arrays and back.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal, NamedTuple

import numpy as np

from core.fees import DEFAULT_FEES, FeeConfig
from core.instrument import InstrumentSpec
from envs import kernels as K

LONG, FLAT, SHORT = 1, 0, -1
_EPS = 1e-12


class ExposureError(ValueError):
    """A fill would push the exposure beyond its cap."""


@dataclass(frozen=True, slots=True)
class Lot:
    """One open fill: side (+1 long / -1 short), price in ticks, fill time (ns),
    stake (fraction of the balance at entry), contracts, and the entry fee that was paid
    (settle currency, negative = rebate received)."""

    side: int
    price_ticks: int
    ts_ns: int
    stake: float
    contracts: float
    entry_fee: float


@dataclass(frozen=True, slots=True)
class ClosedTrade:
    """A lot (or part of it) closed by an opposite fill. `pnl` excludes fees; `fees` is
    the entry-fee share plus the exit fee (negative = net rebate)."""

    side: int
    entry_ts_ns: int
    exit_ts_ns: int
    entry_price_ticks: int
    exit_price_ticks: int
    stake: float
    contracts: float
    pnl: float
    fees: float

    @property
    def pnl_plus_fees(self) -> float:
        """Net result of the trade: pnl minus fees (settle currency)."""
        return self.pnl - self.fees

    def as_dict(self) -> dict[str, float | int]:
        return {
            "side": self.side,
            "entry_ts_ns": self.entry_ts_ns,
            "exit_ts_ns": self.exit_ts_ns,
            "entry_price_ticks": self.entry_price_ticks,
            "exit_price_ticks": self.exit_price_ticks,
            "stake": self.stake,
            "contracts": self.contracts,
            "pnl": self.pnl,
            "fees": self.fees,
            "pnl_plus_fees": self.pnl_plus_fees,
        }


@dataclass(frozen=True, slots=True)
class Position:
    """Open lots plus the account they live in.

    longs / shorts: open lots, oldest first (at most one stack is non-empty).
    balance: settle currency, after realised pnl, fees and funding.
    realized_pnl / fees / funding: cumulative since the account was opened
    (fees and funding positive = paid).
    flat_since_ns: when the position last became flat (or the account was opened).
    maker_volume / taker_volume: cumulative notional of the maker / taker fills (settle
    currency, what the fee rate multiplies); maker_fees / taker_fees: the fees paid on
    them (fees = maker_fees + taker_fees).
    """

    balance: float
    flat_since_ns: int
    longs: tuple[Lot, ...] = ()
    shorts: tuple[Lot, ...] = ()
    realized_pnl: float = 0.0
    fees: float = 0.0
    funding: float = 0.0
    maker_volume: float = 0.0
    taker_volume: float = 0.0
    maker_fees: float = 0.0
    taker_fees: float = 0.0

    @property
    def side(self) -> int:
        """+1 long, -1 short, 0 flat."""
        return LONG if self.longs else (SHORT if self.shorts else FLAT)

    @property
    def lots(self) -> tuple[Lot, ...]:
        return self.longs or self.shorts

    @property
    def exposure(self) -> float:
        """Sum of the open lots' stakes (fraction of the balance, >= 0)."""
        return sum(lot.stake for lot in self.lots)

    @property
    def signed_exposure(self) -> float:
        return self.side * self.exposure

    @property
    def contracts(self) -> float:
        return sum(lot.contracts for lot in self.lots)


def open_account(balance: float, now_ns: int) -> Position:
    """A flat account with `balance` (settle currency, > 0) opened at `now_ns`."""
    if not balance > 0:
        raise ValueError(f"balance must be > 0, got {balance}")
    return Position(balance=float(balance), flat_since_ns=int(now_ns))


# ------------------------------------------------------------------ contract arithmetic
def contracts_for(stake: float, balance: float, price: float, instrument: InstrumentSpec) -> float:
    """Contracts worth `stake * balance` (settle currency) at `price` (quote currency)."""
    return K.contracts_for(
        float(stake), float(balance), float(price), instrument.is_inverse, instrument.multiplier
    )


def notional(contracts: float, price: float, instrument: InstrumentSpec) -> float:
    """Value of `contracts` at `price`, in the settle currency (>= 0 for contracts >= 0)."""
    return K.notional(float(contracts), float(price), instrument.is_inverse, instrument.multiplier)


def lot_pnl(
    side: int, contracts: float, entry: float, exit_: float, instrument: InstrumentSpec
) -> float:
    """Pnl (settle currency, without fees) of `contracts` opened at `entry` and closed
    at `exit_` (quote currency prices). Inverse: side * c * m * (1/entry - 1/exit)."""
    return K.lot_pnl(
        int(side),
        float(contracts),
        float(entry),
        float(exit_),
        instrument.is_inverse,
        instrument.multiplier,
    )


def fee_for(contracts: float, price: float, instrument: InstrumentSpec, rate: float) -> float:
    """Fee paid on a fill of `contracts` at `price` charged `rate` (a fraction of notional,
    e.g. `FeeConfig.rates_at(ts)`): settle currency, negative = rebate."""
    return K.fee_for(
        float(rate), float(contracts), float(price), instrument.is_inverse, instrument.multiplier
    )


# ------------------------------------------------------------------ array form
def _arrays(position: Position, spare: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(account, lots) of `position` as the kernels hold them: a 1-row
    `envs.kernels.ACCOUNT_DTYPE` array and a `LOT_DTYPE` table with room for `spare`
    more lots."""
    lots = position.lots
    p = position
    account = np.array(
        [(p.balance, p.realized_pnl, p.fees, p.funding, p.maker_volume, p.taker_volume,
          p.maker_fees, p.taker_fees, p.flat_since_ns, len(lots))],
        K.ACCOUNT_DTYPE,
    )  # fmt: skip
    table = np.zeros(len(lots) + spare, K.LOT_DTYPE)
    if lots:
        table[: len(lots)] = [
            (x.side, x.price_ticks, x.ts_ns, x.stake, x.contracts, x.entry_fee) for x in lots
        ]
    return account, table


def lots_from_arrays(n: int, lots: np.ndarray) -> tuple[Lot, ...]:
    """The first `n` lots of a kernels' lot table, as Lot values (Python scalars)."""
    return tuple(Lot(*row) for row in lots[:n].tolist())


def position_from_arrays(account: np.ndarray, lots: np.ndarray) -> Position:
    """The Position held in a kernels' account (a 1-row ACCOUNT_DTYPE array) and lots."""
    return _position(account, lots_from_arrays(int(account["n_lots"][0]), lots))


def _position(account: np.ndarray, lots: tuple[Lot, ...]) -> Position:
    """A Position from a kernels' account (1-row array) and its lots (all on one side)."""
    (bal, real, fees, funding, mvol, tvol, mfee, tfee, flat, _) = account.tolist()[0]
    side = lots[0].side if lots else FLAT
    longs = lots if side == LONG else ()
    shorts = lots if side == SHORT else ()
    return Position(bal, flat, longs, shorts, real, fees, funding, mvol, tvol, mfee, tfee)


def trades_from_arrays(ntr: int, trades: np.ndarray) -> tuple[ClosedTrade, ...]:
    """The first `ntr` closed trades of a kernels' trade table."""
    return tuple(ClosedTrade(*row) for row in trades[:ntr].tolist())


# ------------------------------------------------------------------ fills
def _check_side(side: int) -> None:
    if side not in (LONG, SHORT):
        raise ValueError(f"side must be +1 or -1, got {side}")


def can_fill(position: Position, side: int, stake: float, max_exposure: float) -> bool:
    """True when a fill of `stake` on `side` is allowed: it reduces an opposite stack,
    or the new exposure stays within `max_exposure`."""
    _check_side(side)
    account, lots = _arrays(position)
    return bool(K.can_fill(account[0], lots, int(side), float(stake), float(max_exposure)))


def apply_fill(
    position: Position,
    side: int,
    price_ticks: int,
    ts_ns: int,
    instrument: InstrumentSpec,
    stake: float,
    max_exposure: float,
    liquidity: Literal["maker", "taker"] = "maker",
    fees: FeeConfig = DEFAULT_FEES,
) -> tuple[Position, tuple[ClosedTrade, ...]]:
    """Apply one fill of `stake` (fraction of the balance) on `side` at `price_ticks`,
    charged the `liquidity` rate of `fees` in force at `ts_ns` (the env charges a bar's
    fill at the bar's close; pass that time to charge the same rate).

    Opposite stack present: reduce it FIFO by `stake` (never flips; a smaller remainder
    is closed entirely), realise pnl, pay the exit fee, return the closed trades.
    Otherwise: open a new lot sized on the current balance and pay the entry fee.
    Raises ExposureError when opening would exceed `max_exposure`, ValueError on a bad
    side, stake or price.
    """
    if not stake > 0:
        raise ValueError(f"stake must be > 0, got {stake}")
    if price_ticks <= 0:
        raise ValueError(f"price_ticks must be > 0, got {price_ticks}")
    _check_side(side)
    account, lots = _arrays(position, spare=1)
    acct = account[0]  # a view: the kernels write through it
    if not K.can_fill(acct, lots, int(side), float(stake), float(max_exposure)):
        raise ExposureError(
            f"fill of {stake} on side {side} would raise exposure {position.exposure} above {max_exposure}"
        )
    trades = np.zeros(len(lots), K.TRADE_DTYPE)
    maker, taker = fees.rates_at(int(ts_ns))
    liq = K.MAKER if liquidity == "maker" else K.TAKER
    tick, mult = float(instrument.tick_size), float(instrument.multiplier)
    contracts = K.contracts_for(
        float(stake), float(acct["balance"]), int(price_ticks) * tick, instrument.is_inverse, mult
    )
    ntr = K.fill(
        acct, lots, trades, 0, int(side), int(price_ticks), int(ts_ns), float(stake), contracts,
        False, maker if liq == K.MAKER else taker, liq, tick, instrument.is_inverse, mult,
    )  # fmt: skip
    return _after_fill(position, account, lots), trades_from_arrays(ntr, trades)


def _after_fill(before: Position, account: np.ndarray, lots: np.ndarray) -> Position:
    """`position_from_arrays` after one fill of `before`, reusing the (immutable) Lot
    values the fill left unchanged: a fill appends one lot, or removes lots from the
    front and may shrink the new front lot."""
    old = before.lots
    n = int(account["n_lots"][0])
    if n == len(old) + 1:
        kept = (*old, *lots_from_arrays(1, lots[n - 1 :]))
    else:
        kept = old[len(old) - n :] if n else ()
        front = lots[0]
        if kept and (front["stake"], front["contracts"], front["entry_fee"]) != (
            kept[0].stake,
            kept[0].contracts,
            kept[0].entry_fee,
        ):
            kept = (*lots_from_arrays(1, lots), *kept[1:])
    return _position(account, kept)


def apply_funding(
    position: Position, rate: float, mark_ticks: float, instrument: InstrumentSpec
) -> tuple[Position, float]:
    """Settle one funding payment at `rate` (fraction of notional per interval; positive =
    longs pay shorts) marked at `mark_ticks`. Returns the new position and the amount paid
    (settle currency, positive = paid)."""
    if position.side == FLAT or rate == 0.0:
        return position, 0.0
    account, lots = _arrays(position)
    acct = account[0]
    paid = K.pay_funding(
        acct, lots, float(rate), float(mark_ticks), float(instrument.tick_size),
        instrument.is_inverse, float(instrument.multiplier),
    )  # fmt: skip
    return replace(position, balance=float(acct["balance"]), funding=float(acct["funding"])), paid


# ------------------------------------------------------------------ marking
class PositionSummary(NamedTuple):
    """Aggregates of the open lots that make marking O(1) (see `summarize`).

    side: +1 / -1 / 0; exposure: sum of stakes; contracts: sum of contracts; k_sum:
    sum of contracts / entry price (inverse) or contracts * entry price (linear), so the
    entry value is multiplier * k_sum; mean_ts_ns: stake-weighted mean entry time;
    last_ts_ns: entry time of the newest lot (0 when flat).
    """

    side: int
    exposure: float
    contracts: float
    k_sum: float
    mean_ts_ns: float
    last_ts_ns: int
    multiplier: float
    is_inverse: bool

    @property
    def entry_value(self) -> float:
        """Value of the open lots at their entry prices (settle currency)."""
        return self.multiplier * self.k_sum

    def unrealized(self, mark: float) -> float:
        """Pnl (settle currency, without fees) if every lot closed at `mark` (quote
        currency). Inverse: side * m * (sum c/entry - sum c / mark)."""
        return K.unrealized(
            self.side, self.multiplier, self.is_inverse, self.k_sum, self.contracts, float(mark)
        )


def summarize(position: Position, instrument: InstrumentSpec) -> PositionSummary:
    """O(lots) aggregates of `position` for O(1) marking and management state."""
    account, lots = _arrays(position)
    side, exposure, contracts, k_sum, mean_ts, last_ts = K.summarize(
        account[0], lots, float(instrument.tick_size), instrument.is_inverse
    )
    return PositionSummary(
        side,
        exposure,
        contracts,
        k_sum,
        mean_ts,
        last_ts,
        instrument.multiplier,
        instrument.is_inverse,
    )


def unrealized_pnl(position: Position, mark_ticks: float, instrument: InstrumentSpec) -> float:
    """Pnl (settle currency, without fees) of the open lots if closed at `mark_ticks`."""
    return summarize(position, instrument).unrealized(mark_ticks * instrument.tick_size)


def unrealized_return(position: Position, mark_ticks: float, instrument: InstrumentSpec) -> float:
    """Unrealised pnl as a fraction of the open lots' entry value (0 when flat)."""
    return summary_return(summarize(position, instrument), mark_ticks * instrument.tick_size)


def summary_return(summary: PositionSummary, mark: float) -> float:
    """Unrealised return of a summarised position at `mark` (quote currency); 0 when flat."""
    base = summary.entry_value
    return summary.unrealized(mark) / base if base > 0.0 else 0.0


def equity(position: Position, mark_ticks: float, instrument: InstrumentSpec) -> float:
    """Balance plus unrealised pnl at `mark_ticks` (settle currency)."""
    return position.balance + unrealized_pnl(position, mark_ticks, instrument)


@dataclass(frozen=True, slots=True)
class StateLimits:
    """Clips that keep the management state finite (observation bounds).

    max_exposure: position_size is signed exposure / max_exposure, in [-1, 1].
    hours_clip: every hours value is clipped to [0, hours_clip].
    pct_clip: unrealised % is clipped to [-pct_clip, pct_clip].
    """

    max_exposure: float = 1.0
    hours_clip: float = 24.0
    pct_clip: float = 100.0


def management_state(
    position: Position,
    now_ns: int,
    mark_ticks: float,
    instrument: InstrumentSpec,
    long_order: bool,
    short_order: bool,
    limits: StateLimits,
) -> np.ndarray:
    """The 7 management values in `core.schema.MANAGEMENT_STATE` order, float64:

    0 long_state: 1.0 when a long (buy) maker order rests, else 0.0
    1 short_state: 1.0 when a short (sell) maker order rests, else 0.0
    2 position_size: signed exposure / max_exposure, in [-1, 1] (long > 0)
    3 unrealized_pct: unrealised return of the open lots in %, clipped to +-pct_clip
    4 avg_open_position_hours: stake-weighted mean age of the open lots (0 when flat)
    5 last_open_position_hours: age of the newest open lot (0 when flat)
    6 hours_since_close: hours flat since the position last closed (0 while holding)

    Hours are clipped to [0, hours_clip]. Pure.
    """
    values = management_values(
        summarize(position, instrument),
        position.flat_since_ns,
        now_ns,
        mark_ticks * instrument.tick_size,
        long_order,
        short_order,
        limits,
    )
    return np.array(values, dtype=np.float64)


def management_values(
    summary: PositionSummary,
    flat_since_ns: int,
    now_ns: int,
    mark: float,
    long_order: bool,
    short_order: bool,
    limits: StateLimits,
    unrealized: float | None = None,
) -> list[float]:
    """`management_state` from a summarised position, as a list (`mark` in quote
    currency; `unrealized` = `summary.unrealized(mark)` when the caller already has it)."""
    upnl = summary.unrealized(mark) if unrealized is None else unrealized
    return list(
        K.management_values(
            summary.side,
            summary.exposure,
            summary.k_sum,
            summary.mean_ts_ns,
            summary.last_ts_ns,
            float(summary.multiplier),
            int(flat_since_ns),
            int(now_ns),
            bool(long_order),
            bool(short_order),
            float(limits.max_exposure),
            float(limits.hours_clip),
            float(limits.pct_clip),
            float(upnl),
        )  # fmt: skip
    )
