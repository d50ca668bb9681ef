"""Numba kernels: the ONE implementation of fills, accounting, marking, the management
state and the reward terms (pure ring, plain arrays in, plain arrays out).

`envs.position` and `envs.rewards` (used by the live loop and the backtest) wrap these
kernels for their dataclass API; the broker's order rules (`envs.broker`) and the env's
step (`envs.step`) run the same kernels over the packed state laid out below. There is
no second copy of the arithmetic anywhere: a change here changes the env, the backtest
and the live loop alike.

Arithmetic is written in exactly the order of the original Python (IEEE double, no
fastmath), so the results are bit-identical to it.

Array layouts (all C-contiguous):
  acct_f float64[8]: balance, realized_pnl, fees, funding, maker_volume, taker_volume,
    maker_fees, taker_fees (settle currency; volume = notional of the fills, what the fee
    rate multiplies; fees = maker_fees + taker_fees, each summed in fill order)
  acct_i int64[2]: flat_since_ns, number of open lots
  lot_i int64[cap, 3]: side, price_ticks, ts_ns (oldest lot first)
  lot_f float64[cap, 3]: stake, contracts, entry_fee
  tr_i int64[cap, 5]: side, entry_ts_ns, exit_ts_ns, entry_price_ticks, exit_price_ticks
  tr_f float64[cap, 4]: stake, contracts, pnl, fees (closed trades)
  rw float64[9]: reward params (see R_* below)
Kernels check their buffer capacities and raise instead of writing out of bounds.
"""

from __future__ import annotations

import numpy as np

from core.clock import NS_PER_HOUR
from core.numba_cache import njit

EPS = 1e-12
CAP_TOL = 1e-9

A_BAL, A_REAL, A_FEES, A_FUND, A_MVOL, A_TVOL, A_MFEE, A_TFEE = range(8)
N_ACCT = 8
MAKER, TAKER = 0, 1  # liquidity of a fill: acct_f[A_MVOL + liq], acct_f[A_MFEE + liq]
A_FLAT, A_N = 0, 1
L_SIDE, L_PX, L_TS = 0, 1, 2
L_STAKE, L_C, L_FEE = 0, 1, 2
T_SIDE, T_ENTRY_TS, T_EXIT_TS, T_ENTRY_PX, T_EXIT_PX = 0, 1, 2, 3, 4
T_STAKE, T_C, T_PNL, T_FEES = 0, 1, 2, 3
# reward params
R_UNREAL, R_REAL, R_FEE, R_FUND, R_OPEN_H, R_OPEN_PEN, R_CLOSE_H, R_CLOSE_PEN, R_TERM = range(9)
R_MARK = 9  # 1: reward spec r2 (the unrealized term is the step's change, marked to market)
R_DETREND = 10  # 1: r2 less the slice's average drift earned by the position (RewardConfig.detrend)
N_REWARD_PARAMS = 11


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
def side_of(acct_i: np.ndarray, lot_i: np.ndarray) -> int:
    return lot_i[0, L_SIDE] if acct_i[A_N] > 0 else 0


@njit(cache=True, nogil=True)
def exposure_of(acct_i: np.ndarray, lot_f: np.ndarray) -> float:
    e = 0.0
    for i in range(acct_i[A_N]):
        e += lot_f[i, L_STAKE]
    return e


@njit(cache=True, nogil=True)
def can_fill(
    acct_i: np.ndarray, lot_i: np.ndarray, lot_f: np.ndarray, side: int, stake: float, cap: float
) -> bool:
    if side_of(acct_i, lot_i) == -side:
        return True
    return exposure_of(acct_i, lot_f) + stake <= cap + CAP_TOL


@njit(cache=True, nogil=True)
def fill(
    acct_f: np.ndarray,
    acct_i: np.ndarray,
    lot_i: np.ndarray,
    lot_f: np.ndarray,
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
    tr_i: np.ndarray,
    tr_f: np.ndarray,
    ntr: int,
) -> int:
    """Apply one fill in place (the caller has checked `can_fill`): reduce the opposite
    stack FIFO by `stake` (closed trades appended at `ntr`) or open a lot of `stake` and
    `contracts` (merge: add them to the newest lot instead, the rest of a partly filled
    order), charging `rate` (the fee rate of this fill's liquidity `liq`, MAKER or TAKER)
    on its notional. Returns the new ntr."""
    price = price_ticks * tick
    n = acct_i[A_N]
    if n > 0 and lot_i[0, L_SIDE] == -side:
        return _reduce(
            acct_f, acct_i, lot_i, lot_f, price_ticks, price, ts_ns, stake, rate, liq, tick,
            inverse, mult, tr_i, tr_f, ntr,
        )  # fmt: skip
    c = contracts
    vol = notional(c, price, inverse, mult)
    fee = rate * vol  # = fee_for(rate, c, price, ...), the same arithmetic
    if merge and n > 0:
        lot_f[n - 1, L_STAKE] = lot_f[n - 1, L_STAKE] + stake
        lot_f[n - 1, L_C] = lot_f[n - 1, L_C] + c
        lot_f[n - 1, L_FEE] = lot_f[n - 1, L_FEE] + fee
    else:
        if n >= lot_i.shape[0]:
            raise ValueError("lot buffer full")
        lot_i[n, L_SIDE] = side
        lot_i[n, L_PX] = price_ticks
        lot_i[n, L_TS] = ts_ns
        lot_f[n, L_STAKE] = stake
        lot_f[n, L_C] = c
        lot_f[n, L_FEE] = fee
        acct_i[A_N] = n + 1
    acct_f[A_BAL] = acct_f[A_BAL] - fee
    acct_f[A_FEES] = acct_f[A_FEES] + fee
    acct_f[A_MVOL + liq] = acct_f[A_MVOL + liq] + vol
    acct_f[A_MFEE + liq] = acct_f[A_MFEE + liq] + fee
    return ntr


@njit(cache=True, nogil=True)
def _reduce(
    acct_f: np.ndarray,
    acct_i: np.ndarray,
    lot_i: np.ndarray,
    lot_f: np.ndarray,
    price_ticks: int,
    price: float,
    ts_ns: int,
    stake: float,
    rate: float,
    liq: int,
    tick: float,
    inverse: bool,
    mult: float,
    tr_i: np.ndarray,
    tr_f: np.ndarray,
    ntr: int,
) -> int:
    n = acct_i[A_N]
    head = 0
    remaining = stake
    pnl_sum = 0.0
    fee_sum = 0.0
    vol_sum = 0.0
    while head < n and remaining > EPS:
        lstake = lot_f[head, L_STAKE]
        lc = lot_f[head, L_C]
        lfee = lot_f[head, L_FEE]
        lside = lot_i[head, L_SIDE]
        entry_ticks = lot_i[head, L_PX]
        entry_ts = lot_i[head, L_TS]
        take = remaining if remaining < lstake else lstake  # min(lstake, remaining)
        frac = take / lstake
        if frac >= 1.0 - 1e-9:
            frac, take = 1.0, lstake
            head += 1
        else:
            lot_f[head, L_STAKE] = lstake - take
            lot_f[head, L_C] = lc * (1 - frac)
            lot_f[head, L_FEE] = lfee * (1 - frac)
        c = lc * frac
        entry = entry_ticks * tick
        pnl = lot_pnl(lside, c, entry, price, inverse, mult)
        vol = notional(c, price, inverse, mult)
        exit_fee = rate * vol  # = fee_for(rate, c, price, ...)
        if ntr >= tr_i.shape[0]:
            raise ValueError("trade buffer full")
        tr_i[ntr, T_SIDE] = lside
        tr_i[ntr, T_ENTRY_TS] = entry_ts
        tr_i[ntr, T_EXIT_TS] = ts_ns
        tr_i[ntr, T_ENTRY_PX] = entry_ticks
        tr_i[ntr, T_EXIT_PX] = price_ticks
        tr_f[ntr, T_STAKE] = take
        tr_f[ntr, T_C] = c
        tr_f[ntr, T_PNL] = pnl
        tr_f[ntr, T_FEES] = lfee * frac + exit_fee
        ntr += 1
        pnl_sum += pnl
        fee_sum += exit_fee
        vol_sum += vol
        remaining -= take
    m = n - head
    if head:
        for i in range(m):
            for j in range(3):
                lot_i[i, j] = lot_i[i + head, j]
                lot_f[i, j] = lot_f[i + head, j]
    acct_i[A_N] = m
    if m == 0:
        acct_i[A_FLAT] = ts_ns
    acct_f[A_BAL] = acct_f[A_BAL] + pnl_sum - fee_sum
    acct_f[A_REAL] = acct_f[A_REAL] + pnl_sum
    acct_f[A_FEES] = acct_f[A_FEES] + fee_sum
    acct_f[A_MVOL + liq] = acct_f[A_MVOL + liq] + vol_sum
    acct_f[A_MFEE + liq] = acct_f[A_MFEE + liq] + fee_sum
    return ntr


@njit(cache=True, nogil=True)
def pay_funding(
    acct_f: np.ndarray,
    acct_i: np.ndarray,
    lot_i: np.ndarray,
    lot_f: np.ndarray,
    rate: float,
    mark_ticks: float,
    tick: float,
    inverse: bool,
    mult: float,
) -> float:
    """Settle one funding payment in place on a non-flat position; returns the amount
    paid (positive = paid). The caller skips flat positions and a zero rate."""
    c = 0.0
    for i in range(acct_i[A_N]):
        c += lot_f[i, L_C]
    paid = lot_i[0, L_SIDE] * rate * notional(c, mark_ticks * tick, inverse, mult)
    acct_f[A_BAL] = acct_f[A_BAL] - paid
    acct_f[A_FUND] = acct_f[A_FUND] + paid
    return paid


# ------------------------------------------------------------------ marking and state
@njit(cache=True, nogil=True)
def summarize(
    acct_i: np.ndarray, lot_i: np.ndarray, lot_f: np.ndarray, tick: float, inverse: bool
) -> tuple[int, float, float, float, float, int]:
    """(side, exposure, contracts, k_sum, stake-weighted mean entry ts, newest entry ts)."""
    n = acct_i[A_N]
    if n == 0:
        return 0, 0.0, 0.0, 0.0, 0.0, 0
    ref = lot_i[0, L_TS]
    stake = c_sum = k_sum = age = 0.0
    for i in range(n):
        price = lot_i[i, L_PX] * tick
        s = lot_f[i, L_STAKE]
        c = lot_f[i, L_C]
        stake += s
        c_sum += c
        k_sum += c / price if inverse else c * price
        age += s * (lot_i[i, L_TS] - ref)
    return lot_i[0, L_SIDE], stake, c_sum, k_sum, ref + age / stake, lot_i[n - 1, L_TS]


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
    rw: np.ndarray,
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
    unrealized_change: the unrealised pnl's change over the step (settle currency), read
    instead of the unrealised return under spec r2 (rw[R_MARK] == 1); drift: what the
    slice's average drift paid the position over the step (a fraction of the balance),
    taken off it when rw[R_DETREND] == 1."""
    holding = exposure > 0.0
    if rw[R_MARK] != 0.0:
        unreal = rw[R_UNREAL] * (unrealized_change / balance - rw[R_DETREND] * drift)
    else:
        unreal = rw[R_UNREAL] * unrealized_return * exposure
    real = rw[R_REAL] * realized_pnl / balance
    fee = -rw[R_FEE] * fees / balance
    fund = -rw[R_FUND] * funding / balance
    open_pen = close_pen = terminal = 0.0
    if holding:
        if avg_open_hours > rw[R_OPEN_H]:
            open_pen = -rw[R_OPEN_PEN] * scale
        if episode_end:
            terminal = -rw[R_TERM] * scale * exposure
    elif hours_since_close > rw[R_CLOSE_H]:
        close_pen = -rw[R_CLOSE_PEN] * scale
    total = unreal + real + fee + fund + open_pen + close_pen + terminal
    return unreal, real, fee, fund, open_pen, close_pen, terminal, total


# ------------------------------------------------------------------ the packed state
# One account at the broker (its resting orders, account, lots, the trades a step closed
# and what the last bar filled: `envs.broker`) and the env's episode around it
# (`envs.step`: cursor, budget, the terms the broker runs under as `envs.step.terms_of`
# reads them, the position summary, reward parameters), in two flat arrays I (int64) and
# F (float64); `_views` cuts the account's arrays out of them.
# I (int64) header
H_T, H_STEPS, H_BUDGET, H_LAST, H_SKIP, H_W, H_NF = range(7)
# H_MODEL: the fill model, envs.queue.QUEUE_MODELS' code of EnvConfig.fill_model
H_MODEL, H_ROLL, H_FUNDING, H_FLATTEN, H_INVERSE = 9, 10, 11, 12, 13
H_FLAT, H_N = 14, 15  # acct_i = I[H_FLAT:H_FLAT + 2]
H_SSIDE, H_SLAST, H_LOTCAP, H_TRCAP = 16, 17, 18, 19
H_TARGET = 20  # 1: actions name the resting orders wanted (EnvConfig.action_mode "target")
H_ENTRY, H_CANCEL = 21, 22  # order entry and cancel latency (ns)
# what the last bar the broker ran (envs.broker.on_bar) filled: the number of fills (0..4:
# each side's cancelling order, then its live one, the buy first) and for fill j its side
# and price, I[H_FILLS + 2j], I[H_FILLS + 2j + 1]
H_NFILLS, H_FILLS = 23, 24
MAX_FILLS = 4
# the account's orders (envs.broker): N_ORDERS slots, each O_INTS int64 values from
# I[H_ORD + O_INTS * slot] and O_FLOATS float64 values from F[F_ORD + O_FLOATS * slot]
# (`orders` views them as two small tables); slot 0 / 1: the live buy / sell, 2 / 3: a
# buy / sell whose cancel is in flight. Per order: its price (ticks, 0 = none), when it
# reaches the exchange, when its cancel lands (0 = none sent), the close it was last
# brought up to, 1 when it was cancelled by a re-price (the live order of its side
# replaced it), the ts of the lot its fills open (0 = none yet); the stake it still
# carries, the contracts ahead of it in the queue, and the size at its price at the last
# close (-1: its price was not the best of its side there)
N_ORDERS = 4
O_PX, O_ARRIVE, O_CANCEL, O_SINCE, O_LINK, O_LOT = range(6)
O_INTS = 6
O_STAKE, O_AHEAD, O_LEVEL = range(3)
O_FLOATS = 3
H_ORD = H_FILLS + 2 * MAX_FILLS
H_BID, H_ASK = H_ORD + O_PX, H_ORD + O_INTS + O_PX  # the live buy's and sell's prices
H_SIZE = H_ORD + O_INTS * N_ORDERS
# F (float64) header; acct_f = F[0:N_ACCT]
# F_FRATE: the config's constant funding rate (the step reads the bar's funding_rate)
F_STAKE, F_CAP, F_TICK, F_MULT, F_FRATE = range(N_ACCT, N_ACCT + 5)
F_HC, F_PC, F_EQ0, F_PSCALE, F_SEXP, F_SC, F_SK, F_SMEAN, F_BAL0 = range(N_ACCT + 5, N_ACCT + 14)
F_UPNL0 = N_ACCT + 14  # the unrealised pnl at the last observation (reward spec r2)
F_DRIFT = N_ACCT + 15  # the slice's average log return per bar (RewardConfig.detrend)
F_DSTEP = N_ACCT + 16  # F_DRIFT x the bars of the current step
F_RW = N_ACCT + 17  # reward params F[F_RW:F_RW + N_REWARD_PARAMS]
# the last bar the broker ran: the funding it paid, and for fill j the contracts it opened
# or closed, its notional, its fee and the stake it filled (F[F_FILLS + 4j], + 1, + 2, + 3)
F_PAID = F_RW + N_REWARD_PARAMS
F_FILLS = F_PAID + 1
F_LOT = F_FILLS + 4 * MAX_FILLS  # the instrument's lot (contracts; 0: no rounding)
F_POWER = F_LOT + 1  # power_prob's exponent n
F_ORD = F_POWER + 1
F_SIZE = F_ORD + O_FLOATS * N_ORDERS
# the slice's bars are not in the packed state: the kernels read bar k by name
# (`envs.broker.bar_at`) from the bars' own arrays
# info log row (int64; float columns through a float64 view of the same row)
G_TS, G_BAR, G_SIDE, G_LONG, G_SHORT = range(5)
G_EQ, G_BAL, G_PNL, G_REAL, G_UPNL, G_PWF, G_FEES, G_FUND, G_PSIZE, G_EXP, G_PSCALE = range(5, 16)
G_TERMS = 16  # 8 reward terms (total last)
G_MVOL, G_TVOL, G_MFEE, G_TFEE = range(G_TERMS + 8, G_TERMS + 12)  # cumulative, as acct_f
G_WIDTH = G_TERMS + 12
# env_step status codes (>= 0: bit 0 terminated, bit 1 truncated, bits 2+: closed trades)
BAD_ACTION, BAD_BALANCE = -1, -2


@njit(cache=True, nogil=True)
def _views(
    I: np.ndarray,  # noqa: E741
    F: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(lot_i, lot_f, tr_i, tr_f, acct_i, acct_f) as views of the packed arrays (these
    views cost ~20 ns each: the step builds them only when it touches the lots)."""
    lc = I[H_LOTCAP]
    tc = I[H_TRCAP]
    o = H_SIZE
    lot_i = I[o : o + 3 * lc].reshape((lc, 3))
    tr_i = I[o + 3 * lc : o + 3 * lc + 5 * tc].reshape((tc, 5))
    o = F_SIZE
    lot_f = F[o : o + 3 * lc].reshape((lc, 3))
    tr_f = F[o + 3 * lc : o + 3 * lc + 4 * tc].reshape((tc, 4))
    return lot_i, lot_f, tr_i, tr_f, I[H_FLAT : H_FLAT + 2], F[0:N_ACCT]


@njit(cache=True, nogil=True)
def orders(I: np.ndarray, F: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # noqa: E741
    """The order slots as two views (N_ORDERS, O_INTS) int64 and (N_ORDERS, O_FLOATS)
    float64 of the packed arrays (columns O_*)."""
    oi = I[H_ORD : H_ORD + O_INTS * N_ORDERS].reshape((N_ORDERS, O_INTS))
    of = F[F_ORD : F_ORD + O_FLOATS * N_ORDERS].reshape((N_ORDERS, O_FLOATS))
    return oi, of


def packed_sizes(lot_cap: int, trade_cap: int) -> tuple[int, int]:
    """Lengths of the env's packed int64 and float64 state arrays: the headers, the lots
    (3 values each) and the closed trades (5 ints, 4 floats each)."""
    return H_SIZE + 3 * lot_cap + 5 * trade_cap, F_SIZE + 3 * lot_cap + 4 * trade_cap
