"""The env's step: one numba call over the packed state (`envs.kernels`) and the slice's
bars (`envs.broker`), run by `envs.management.ManagementEnv` (pure ring).

`env_step` runs the broker's order rules (`envs.broker`: act, then each bar, then the
flatten), refreshes the position summary cached in the header, and `env_observe` writes
the observation (the normalised feature window and the 7 management values), the reward
terms (`envs.kernels.reward_terms`) and the info log row (G_* columns).
"""

from __future__ import annotations

import numpy as np

from core.numba_cache import njit
from envs.broker import Terms, act, bar_at, flatten, on_bar, resting
from envs.kernels import (
    A_BAL,
    A_FEES,
    A_FUND,
    A_MFEE,
    A_MVOL,
    A_REAL,
    A_TFEE,
    A_TVOL,
    BAD_ACTION,
    BAD_BALANCE,
    F_BAL0,
    F_CAP,
    F_DRIFT,
    F_DSTEP,
    F_EQ0,
    F_HC,
    F_LOT,
    F_MULT,
    F_PC,
    F_POWER,
    F_PSCALE,
    F_RW,
    F_SC,
    F_SEXP,
    F_SK,
    F_SMEAN,
    F_STAKE,
    F_TICK,
    F_UPNL0,
    G_BAL,
    G_BAR,
    G_EQ,
    G_EXP,
    G_FEES,
    G_FUND,
    G_LONG,
    G_MFEE,
    G_MVOL,
    G_PNL,
    G_PSCALE,
    G_PSIZE,
    G_PWF,
    G_REAL,
    G_SHORT,
    G_SIDE,
    G_TERMS,
    G_TFEE,
    G_TS,
    G_TVOL,
    G_UPNL,
    G_WIDTH,
    H_ASK,
    H_BID,
    H_BUDGET,
    H_CANCEL,
    H_ENTRY,
    H_FLAT,
    H_FLATTEN,
    H_FUNDING,
    H_INVERSE,
    H_LAST,
    H_MODEL,
    H_N,
    H_NF,
    H_ROLL,
    H_SKIP,
    H_SLAST,
    H_SSIDE,
    H_STEPS,
    H_T,
    H_TARGET,
    H_W,
    N_REWARD_PARAMS,
    _views,
    management_values,
    reward_terms,
    summarize,
    unrealized,
)


@njit(cache=True, nogil=True)
def terms_of(I: np.ndarray, F: np.ndarray) -> Terms:  # noqa: E741
    """The env account's terms (`envs.broker.Terms`), from the header."""
    return Terms(
        F[F_STAKE], F[F_CAP], F[F_TICK], F[F_MULT], I[H_INVERSE] != 0, F[F_LOT], I[H_MODEL],
        F[F_POWER], I[H_ENTRY], I[H_CANCEL], I[H_ROLL] != 0, I[H_FUNDING] != 0,
        I[H_TARGET] != 0,
    )  # fmt: skip


@njit(cache=True, nogil=True)
def env_summarize(I: np.ndarray, F: np.ndarray) -> None:  # noqa: E741
    """Refresh the summary cached in the headers from the lots."""
    lot_i, lot_f, _, _, acct_i, _ = _views(I, F)
    side, exp, c, k, mean, last = summarize(acct_i, lot_i, lot_f, F[F_TICK], I[H_INVERSE] != 0)
    I[H_SSIDE] = side
    I[H_SLAST] = last
    F[F_SEXP] = exp
    F[F_SC] = c
    F[F_SK] = k
    F[F_SMEAN] = mean


@njit(cache=True, nogil=True)
def env_observe(
    I: np.ndarray,  # noqa: E741
    F: np.ndarray,
    bars: np.ndarray,
    norm: np.ndarray,
    obs: np.ndarray,
    log: np.ndarray,
    row: int,
    with_reward: bool,
    episode_end: bool,
    realized: float,
    fees: float,
    funding: float,
) -> float:
    """Write the observation at bar I[H_T] (of the bars' rows, `envs.broker.bar_rows`)
    into `obs` and the info values into `log[row]`; with_reward: evaluate the reward
    terms (else all zero) with the balance at the start of the step, F[F_BAL0] (> 0,
    checked by the caller). Returns the total."""
    t = I[H_T]
    bar = bar_at(bars, t)
    now = bar.ts
    mark = bar.mid * F[F_TICK]
    mult = F[F_MULT]
    side = I[H_SSIDE]
    exp = F[F_SEXP]
    k = F[F_SK]
    upnl = unrealized(side, mult, I[H_INVERSE] != 0, k, F[F_SC], mark)
    bid = I[H_BID]
    ask = I[H_ASK]
    s0, s1, s2, s3, s4, s5, s6 = management_values(
        side, exp, k, F[F_SMEAN], I[H_SLAST], mult, I[H_FLAT], now, bid != 0, ask != 0,
        F[F_CAP], F[F_HC], F[F_PC], upnl,
    )  # fmt: skip
    w = I[H_W]
    nf = I[H_NF]
    m = w * nf
    src = (t - w + 1) * nf
    for j in range(m):
        obs[j] = norm[src + j]
    obs[m] = s0
    obs[m + 1] = s1
    obs[m + 2] = s2
    obs[m + 3] = s3
    obs[m + 4] = s4
    obs[m + 5] = s5
    obs[m + 6] = s6
    lg = log[row]
    lf = log.view(np.float64)[row]
    total = 0.0
    if with_reward:
        balance = F[F_BAL0]
        base = mult * k
        terms = reward_terms(
            F[F_RW : F_RW + N_REWARD_PARAMS], balance, exp, upnl / base if base > 0.0 else 0.0,
            realized, fees, funding, s4, s6, episode_end, F[F_PSCALE], upnl - F[F_UPNL0],
            side * exp * F[F_DSTEP],
        )  # fmt: skip
        for j in range(8):
            lf[G_TERMS + j] = terms[j]
        total = terms[7]
    else:
        for j in range(G_TERMS, G_WIDTH):
            lf[j] = 0.0
    F[F_UPNL0] = upnl
    bal = F[A_BAL]
    eq = bal + upnl
    x = exp / F[F_CAP]
    lg[G_TS] = now
    lg[G_BAR] = t
    lg[G_SIDE] = side
    lg[G_LONG] = bid
    lg[G_SHORT] = ask
    lf[G_EQ] = eq
    lf[G_BAL] = bal
    lf[G_PNL] = eq - F[F_EQ0]
    lf[G_REAL] = F[A_REAL]
    lf[G_UPNL] = upnl
    lf[G_PWF] = F[A_REAL] + upnl
    lf[G_FEES] = F[A_FEES]
    lf[G_FUND] = F[A_FUND]
    lf[G_PSIZE] = side * (1.0 if x > 1.0 else x)  # side * min(x, 1.0)
    lf[G_EXP] = exp
    lf[G_PSCALE] = F[F_PSCALE]
    lf[G_MVOL] = F[A_MVOL]
    lf[G_TVOL] = F[A_TVOL]
    lf[G_MFEE] = F[A_MFEE]
    lf[G_TFEE] = F[A_TFEE]
    return total


@njit(cache=True, nogil=True)
def env_step(
    a: int,
    I: np.ndarray,  # noqa: E741
    F: np.ndarray,
    bars: np.ndarray,
    norm: np.ndarray,
    obs: np.ndarray,
    log: np.ndarray,
    row: int,
) -> tuple[float, int]:
    """One ManagementEnv step (see envs.management): the broker's rules (`envs.broker`):
    the action at the close of bar t, each of bars t+1..t+skip (fills, funding, roll),
    the flatten at the end of an evaluation slice; then `env_observe`. Returns (reward,
    status code: BAD_ACTION, BAD_BALANCE, or bit 0 terminated, bit 1 truncated, bits 2+
    the trades closed, in the account's trade buffer)."""
    t = I[H_T]
    bar = bar_at(bars, t)
    terms = terms_of(I, F)
    if not act(I, F, terms, a, bar):
        return 0.0, BAD_ACTION
    last = I[H_LAST]
    end = t + I[H_SKIP]
    if end > last:
        end = last
    F[F_DSTEP] = F[F_DRIFT] * (end - t)
    F[F_BAL0] = F[A_BAL]
    real0 = F[A_REAL]
    fees0 = F[A_FEES]
    fund0 = F[A_FUND]
    changed = False
    ntr = 0
    if terms.funding or resting(I):
        for k in range(t + 1, end + 1):
            ntr, moved = on_bar(I, F, terms, bar_at(bars, k), ntr)
            changed = changed or moved
    I[H_T] = end
    steps = I[H_STEPS] + 1
    I[H_STEPS] = steps
    terminated = end == last
    budget = I[H_BUDGET]
    truncated = (not terminated) and budget >= 0 and steps >= budget
    if terminated and I[H_FLATTEN] != 0 and I[H_N] > 0:
        ntr = flatten(I, F, terms, bar_at(bars, end), ntr)
        changed = True
    if changed:
        env_summarize(I, F)
        realized = F[A_REAL] - real0
        fees = F[A_FEES] - fees0
        fund = F[A_FUND] - fund0
    else:
        realized = fees = fund = 0.0
    if not F[F_BAL0] > 0:
        return 0.0, BAD_BALANCE
    total = env_observe(
        I,
        F,
        bars,
        norm,
        obs,
        log,
        row,
        True,
        terminated or truncated,
        realized,
        fees,
        fund,
    )
    return total, (1 if terminated else 0) | (2 if truncated else 0) | (ntr << 2)
