"""Numba kernels: the ONE implementation of fills, accounting, marking, the management
state and the reward terms (pure ring, named records in, named records out).

`envs.position` and `envs.rewards` (used by the live loop and the backtest) wrap these
kernels for their dataclass API; the broker's order rules (`envs.broker`) and the env's
step (`envs.step`) run the same kernels on the account of their own state. There is no
second copy of the arithmetic anywhere: a change here changes the env, the backtest and
the live loop alike.

Arithmetic is written in exactly the order of the original Python (IEEE double, no
fastmath), so the results are bit-identical to it.

State. An account, its open lots and the trades a fill closed are numpy structured
arrays, read and written by field name on both sides (`acct.balance` in a kernel,
`account["balance"]` in Python); a kernel takes one record (`account[0]`, or the account
inside a broker's record) and the lot and trade tables:
  ACCOUNT_DTYPE: balance, realized_pnl, fees, funding, maker_volume, taker_volume,
    maker_fees, taker_fees (settle currency; volume = notional of the fills, what the fee
    rate multiplies; fees = maker_fees + taker_fees, each summed in fill order),
    flat_since_ns, n_lots (the open lots: the first n_lots rows of the lot table)
  LOT_DTYPE (oldest lot first): the fields of `envs.position.Lot`
  TRADE_DTYPE (closed trades): the fields of `envs.position.ClosedTrade` but pnl_plus_fees
  REWARD_DTYPE: the reward constants of a `RewardConfig` (`envs.rewards.reward_params`)
Kernels check their tables' capacities and raise instead of writing out of bounds.
A record passed from Python (`account[0]`) is a view: the kernel writes through to it.
"""

from __future__ import annotations

import numpy as np

from core.clock import NS_PER_HOUR
from core.numba_cache import njit

EPS = 1e-12
CAP_TOL = 1e-9
MAKER, TAKER = 0, 1  # liquidity of a fill: which volume and fee sum it adds to

ACCOUNT_DTYPE = np.dtype(
    [
        ("balance", np.float64),
        ("realized_pnl", np.float64),
        ("fees", np.float64),
        ("funding", np.float64),
        ("maker_volume", np.float64),
        ("taker_volume", np.float64),
        ("maker_fees", np.float64),
        ("taker_fees", np.float64),
        ("flat_since_ns", np.int64),
        ("n_lots", np.int64),
    ],
    align=True,
)
LOT_DTYPE = np.dtype(
    [
        ("side", np.int64),
        ("price_ticks", np.int64),
        ("ts_ns", np.int64),
        ("stake", np.float64),
        ("contracts", np.float64),
        ("entry_fee", np.float64),
    ],
    align=True,
)
TRADE_DTYPE = np.dtype(
    [
        ("side", np.int64),
        ("entry_ts_ns", np.int64),
        ("exit_ts_ns", np.int64),
        ("entry_price_ticks", np.int64),
        ("exit_price_ticks", np.int64),
        ("stake", np.float64),
        ("contracts", np.float64),
        ("pnl", np.float64),
        ("fees", np.float64),
    ],
    align=True,
)
# the reward constants (RewardConfig's names); mark_to_market: spec r2 (the unrealized
# term is the step's change, marked to market); detrend 1.0 / 0.0: r2 less the slice's
# average drift earned by the position (RewardConfig.detrend; a factor, not a switch)
REWARD_DTYPE = np.dtype(
    [
        ("unrealized_scale", np.float64),
        ("realized_scale", np.float64),
        ("fee_scale", np.float64),
        ("funding_scale", np.float64),
        ("open_position_hours", np.float64),
        ("open_position_penalty", np.float64),
        ("close_position_hours", np.float64),
        ("close_position_penalty", np.float64),
        ("terminal_penalty", np.float64),
        ("detrend", np.float64),
        ("mark_to_market", np.bool_),
    ],
    align=True,
)


def new_account(balance: float, flat_since_ns: int) -> np.ndarray:
    """One flat account (a 1-row ACCOUNT_DTYPE array) holding `balance`."""
    account = np.zeros(1, ACCOUNT_DTYPE)
    account["balance"] = balance
    account["flat_since_ns"] = flat_since_ns
    return account


# ------------------------------------------------------------------ contract arithmetic
@njit(cache=True, nogil=True)
def contracts_for(stake: float, balance: float, price: float, inverse: bool, mult: float) -> float:
    if inverse:
        return stake * balance * price / mult
    return stake * balance / (price * mult)


@njit(cache=True, nogil=True)
def notional(contracts: float, price: float, inverse: bool, mult: float) -> float:
    if inverse:
        return contracts * mult / price
    return contracts * mult * price


@njit(cache=True, nogil=True)
def lot_pnl(
    side: int, contracts: float, entry: float, exit_: float, inverse: bool, mult: float
) -> float:
    if inverse:
        return side * contracts * mult * (1.0 / entry - 1.0 / exit_)
    return side * contracts * mult * (exit_ - entry)


@njit(cache=True, nogil=True)
def fee_for(rate: float, contracts: float, price: float, inverse: bool, mult: float) -> float:
    return rate * notional(contracts, price, inverse, mult)


# ------------------------------------------------------------------ position
@njit(cache=True, nogil=True)
def side_of(acct: np.record, lots: np.ndarray) -> int:
    return lots[0].side if acct.n_lots > 0 else 0


@njit(cache=True, nogil=True)
def exposure_of(acct: np.record, lots: np.ndarray) -> float:
    e = 0.0
    for i in range(acct.n_lots):
        e += lots[i].stake
    return e


@njit(cache=True, nogil=True)
def contracts_of(acct: np.record, lots: np.ndarray) -> float:
    c = 0.0
    for i in range(acct.n_lots):
        c += lots[i].contracts
    return c


@njit(cache=True, nogil=True)
def can_fill(acct: np.record, lots: np.ndarray, side: int, stake: float, cap: float) -> bool:
    if side_of(acct, lots) == -side:
        return True
    return exposure_of(acct, lots) + stake <= cap + CAP_TOL


@njit(cache=True, nogil=True)
def _add_volume(acct: np.record, liq: int, vol: float, fee: float) -> None:
    """Add a fill's notional and fee to the sums of its liquidity."""
    if liq == MAKER:
        acct.maker_volume = acct.maker_volume + vol
        acct.maker_fees = acct.maker_fees + fee
    else:
        acct.taker_volume = acct.taker_volume + vol
        acct.taker_fees = acct.taker_fees + fee


@njit(cache=True, nogil=True)
def fill(
    acct: np.record,
    lots: np.ndarray,
    trades: np.ndarray,
    ntr: int,
    side: int,
    price_ticks: int,
    ts_ns: int,
    stake: float,
    contracts: float,
    merge: bool,
    rate: float,
    liq: int,
    tick: float,
    inverse: bool,
    mult: float,
) -> int:
    """Apply one fill in place (the caller has checked `can_fill`): reduce the opposite
    stack FIFO by `stake` (closed trades written to `trades` from row `ntr`) or open a lot
    of `stake` and `contracts` (merge: add them to the newest lot instead, the rest of a
    partly filled order), charging `rate` (the fee rate of this fill's liquidity `liq`,
    MAKER or TAKER) on its notional. Returns the new ntr."""
    price = price_ticks * tick
    n = acct.n_lots
    if n > 0 and lots[0].side == -side:
        return _reduce(
            acct, lots, trades, ntr, price_ticks, price, ts_ns, stake, rate, liq, tick,
            inverse, mult,
        )  # fmt: skip
    c = contracts
    vol = notional(c, price, inverse, mult)
    fee = rate * vol  # = fee_for(rate, c, price, ...), the same arithmetic
    if merge and n > 0:
        newest = lots[n - 1]
        newest.stake = newest.stake + stake
        newest.contracts = newest.contracts + c
        newest.entry_fee = newest.entry_fee + fee
    else:
        if n >= lots.shape[0]:
            raise ValueError("lot buffer full")
        lot = lots[n]
        lot.side = side
        lot.price_ticks = price_ticks
        lot.ts_ns = ts_ns
        lot.stake = stake
        lot.contracts = c
        lot.entry_fee = fee
        acct.n_lots = n + 1
    acct.balance = acct.balance - fee
    acct.fees = acct.fees + fee
    _add_volume(acct, liq, vol, fee)
    return ntr


@njit(cache=True, nogil=True)
def _reduce(
    acct: np.record,
    lots: np.ndarray,
    trades: np.ndarray,
    ntr: int,
    price_ticks: int,
    price: float,
    ts_ns: int,
    stake: float,
    rate: float,
    liq: int,
    tick: float,
    inverse: bool,
    mult: float,
) -> int:
    n = acct.n_lots
    head = 0
    remaining = stake
    pnl_sum = 0.0
    fee_sum = 0.0
    vol_sum = 0.0
    while head < n and remaining > EPS:
        lot = lots[head]
        lstake = lot.stake
        lc = lot.contracts
        lfee = lot.entry_fee
        take = remaining if remaining < lstake else lstake  # min(lstake, remaining)
        frac = take / lstake
        if frac >= 1.0 - 1e-9:
            frac, take = 1.0, lstake
            head += 1
        else:
            lot.stake = lstake - take
            lot.contracts = lc * (1 - frac)
            lot.entry_fee = lfee * (1 - frac)
        c = lc * frac
        pnl = lot_pnl(lot.side, c, lot.price_ticks * tick, price, inverse, mult)
        vol = notional(c, price, inverse, mult)
        exit_fee = rate * vol  # = fee_for(rate, c, price, ...)
        if ntr >= trades.shape[0]:
            raise ValueError("trade buffer full")
        tr = trades[ntr]
        tr.side = lot.side
        tr.entry_ts_ns = lot.ts_ns
        tr.exit_ts_ns = ts_ns
        tr.entry_price_ticks = lot.price_ticks
        tr.exit_price_ticks = price_ticks
        tr.stake = take
        tr.contracts = c
        tr.pnl = pnl
        tr.fees = lfee * frac + exit_fee
        ntr += 1
        pnl_sum += pnl
        fee_sum += exit_fee
        vol_sum += vol
        remaining -= take
    m = n - head
    if head:
        for i in range(m):
            lots[i] = lots[i + head]
    acct.n_lots = m
    if m == 0:
        acct.flat_since_ns = ts_ns
    acct.balance = acct.balance + pnl_sum - fee_sum
    acct.realized_pnl = acct.realized_pnl + pnl_sum
    acct.fees = acct.fees + fee_sum
    _add_volume(acct, liq, vol_sum, fee_sum)
    return ntr


@njit(cache=True, nogil=True)
def pay_funding(
    acct: np.record,
    lots: np.ndarray,
    rate: float,
    mark_ticks: float,
    tick: float,
    inverse: bool,
    mult: float,
) -> float:
    """Settle one funding payment in place on a non-flat position; returns the amount
    paid (positive = paid). The caller skips flat positions and a zero rate."""
    c = contracts_of(acct, lots)
    paid = lots[0].side * rate * notional(c, mark_ticks * tick, inverse, mult)
    acct.balance = acct.balance - paid
    acct.funding = acct.funding + paid
    return paid


# ------------------------------------------------------------------ marking and state
@njit(cache=True, nogil=True)
def summarize(
    acct: np.record, lots: np.ndarray, tick: float, inverse: bool
) -> tuple[int, float, float, float, float, int]:
    """(side, exposure, contracts, k_sum, stake-weighted mean entry ts, newest entry ts)."""
    n = acct.n_lots
    if n == 0:
        return 0, 0.0, 0.0, 0.0, 0.0, 0
    ref = lots[0].ts_ns
    stake = c_sum = k_sum = age = 0.0
    for i in range(n):
        lot = lots[i]
        price = lot.price_ticks * tick
        s = lot.stake
        c = lot.contracts
        stake += s
        c_sum += c
        k_sum += c / price if inverse else c * price
        age += s * (lot.ts_ns - ref)
    return lots[0].side, stake, c_sum, k_sum, ref + age / stake, lots[n - 1].ts_ns


@njit(cache=True, nogil=True)
def unrealized(
    side: int, mult: float, inverse: bool, k_sum: float, contracts: float, mark: float
) -> float:
    if side == 0:
        return 0.0
    if inverse:
        return side * mult * (k_sum - contracts / mark)
    return side * mult * (contracts * mark - k_sum)


@njit(cache=True, nogil=True)
def management_values(
    side: int,
    exposure: float,
    k_sum: float,
    mean_ts: float,
    last_ts: int,
    mult: float,
    flat_since_ns: int,
    now_ns: int,
    long_order: bool,
    short_order: bool,
    max_exposure: float,
    hours_clip: float,
    pct_clip: float,
    upnl: float,
) -> tuple[float, float, float, float, float, float, float]:
    """The 7 management values (see `envs.position.management_state`)."""
    lo = 1.0 if long_order else 0.0
    so = 1.0 if short_order else 0.0
    hc = hours_clip
    if side == 0:
        since = (now_ns - flat_since_ns) / NS_PER_HOUR
        since = 0.0 if since < 0.0 else (hc if since > hc else since)
        return lo, so, 0.0, 0.0, 0.0, 0.0, since
    size = exposure / max_exposure
    base = mult * k_sum
    pct = 100.0 * upnl / base if base > 0.0 else 0.0
    pc = pct_clip
    avg = (now_ns - mean_ts) / NS_PER_HOUR
    last = (now_ns - last_ts) / NS_PER_HOUR
    return (
        lo,
        so,
        side * (1.0 if size > 1.0 else size),
        -pc if pct < -pc else (pc if pct > pc else pct),
        0.0 if avg < 0.0 else (hc if avg > hc else avg),
        0.0 if last < 0.0 else (hc if last > hc else last),
        0.0,
    )


# ------------------------------------------------------------------ reward
@njit(cache=True, nogil=True)
def reward_terms(
    rw: np.record,
    balance: float,
    exposure: float,
    unrealized_return: float,
    realized_pnl: float,
    fees: float,
    funding: float,
    avg_open_hours: float,
    hours_since_close: float,
    episode_end: bool,
    scale: float,
    unrealized_change: float,
    drift: float,
) -> tuple[float, float, float, float, float, float, float, float]:
    """(unrealized, realized, fees, funding, open_penalty, close_penalty,
    terminal_penalty, total); see `envs.rewards`. balance > 0 is the caller's check.
    rw: a REWARD_DTYPE record. unrealized_change: the unrealised pnl's change over the
    step (settle currency), read instead of the unrealised return under spec r2
    (rw.mark_to_market); drift: what the slice's average drift paid the position over the
    step (a fraction of the balance), taken off it times rw.detrend."""
    holding = exposure > 0.0
    if rw.mark_to_market:
        unreal = rw.unrealized_scale * (unrealized_change / balance - rw.detrend * drift)
    else:
        unreal = rw.unrealized_scale * unrealized_return * exposure
    real = rw.realized_scale * realized_pnl / balance
    fee = -rw.fee_scale * fees / balance
    fund = -rw.funding_scale * funding / balance
    open_pen = close_pen = terminal = 0.0
    if holding:
        if avg_open_hours > rw.open_position_hours:
            open_pen = -rw.open_position_penalty * scale
        if episode_end:
            terminal = -rw.terminal_penalty * scale * exposure
    elif hours_since_close > rw.close_position_hours:
        close_pen = -rw.close_position_penalty * scale
    total = unreal + real + fee + fund + open_pen + close_pen + terminal
    return unreal, real, fee, fund, open_pen, close_pen, terminal, total
