"""The env's step: one numba call over the env's named state and the slice's bars
(`envs.broker`), run by `envs.management.ManagementEnv` (pure ring).

The state is one ENV_DTYPE record (below): the account at the broker (`broker`, an
`envs.broker.BROKER_DTYPE` record: terms, account, orders), the episode around it
(cursor, budget, step size, the observation window), the position summary cached from
the lots, the reward constants and the step's info values; beside it the account's lot
and trade tables (`envs.kernels.LOT_DTYPE`, `TRADE_DTYPE`). `env_step` runs the broker's
order rules (act, then each bar, then the flatten), refreshes the summary, and
`env_observe` writes the observation (the normalised feature window and the 7
management values), the reward terms (`envs.kernels.reward_terms`) and the info values.

The three entry points Python calls (`env_step`, `env_observe`, `env_summarize`) hold the
GIL: releasing and retaking it costs ~0.08 us a call, a tenth of the step's kernel, and
no env is stepped from two threads. The env calls `env_step` through `step_kernel`, its
compiled code for the env's own argument types, not through numba's dispatcher.
"""

from __future__ import annotations

from collections.abc import Callable

import numba
import numpy as np

from core.numba_cache import njit
from envs.broker import (
    BROKER_DTYPE,
    LIVE_BUY,
    LIVE_SELL,
    act,
    bar_at,
    flatten,
    on_bar,
    resting,
)
from envs.kernels import (
    REWARD_DTYPE,
    management_values,
    reward_terms,
    summarize,
    unrealized,
)

# the open lots' aggregates (`envs.kernels.summarize`), refreshed when the lots change
SUMMARY_DTYPE = np.dtype(
    [
        ("side", np.int64),
        ("exposure", np.float64),
        ("contracts", np.float64),
        ("k_sum", np.float64),
        ("mean_ts_ns", np.float64),
        ("last_ts_ns", np.int64),
    ],
    align=True,
)
# the step's reward terms (`envs.rewards.TERM_NAMES`, then their total)
REWARD_TERMS_DTYPE = np.dtype(
    [
        ("unrealized", np.float64),
        ("realized", np.float64),
        ("fees", np.float64),
        ("funding", np.float64),
        ("open_penalty", np.float64),
        ("close_penalty", np.float64),
        ("terminal_penalty", np.float64),
        ("total", np.float64),
    ],
    align=True,
)
# the info values of the last observation (`envs.management`'s info keys): the integer
# ones, then the float ones; each record is of one type, so Python reads it as one plain
# array of its values in this order (`record_values`)
INFO_INTS_DTYPE = np.dtype(
    [
        ("ts", np.int64),
        ("bar", np.int64),
        ("side", np.int64),
        ("long_order", np.int64),
        ("short_order", np.int64),
    ],
    align=True,
)
INFO_FLOATS_DTYPE = np.dtype(
    [
        ("equity", np.float64),
        ("balance", np.float64),
        ("pnl", np.float64),
        ("realized_pnl", np.float64),
        ("unrealized_pnl", np.float64),
        ("pnl_without_fees", np.float64),
        ("fees", np.float64),
        ("funding", np.float64),
        ("position_size", np.float64),
        ("exposure", np.float64),
        ("punishment_scale", np.float64),
        ("reward_terms", REWARD_TERMS_DTYPE),
        ("maker_volume", np.float64),
        ("taker_volume", np.float64),
        ("maker_fees", np.float64),
        ("taker_fees", np.float64),
    ],
    align=True,
)
# the env's state. t: the decision bar (row of the bars); steps: taken this episode;
# budget: steps allowed (-1: none); last: the last bar a step may reach; step_skip: bars
# per step; window, n_features: the observation's feature window; flatten: close the lots
# at the end of the slice; hours_clip, pct_clip: the management state's clips;
# initial_equity: the balance an episode starts with; punishment_scale: the penalties'
# multiplier (the curriculum's); drift: the slice's mean log return per bar
# (RewardConfig.detrend), drift_step: drift x the bars of the current step; balance0: the
# balance at the start of the step; upnl0: the unrealised pnl at the last observation
ENV_DTYPE = np.dtype(
    [
        ("broker", BROKER_DTYPE),
        ("t", np.int64),
        ("steps", np.int64),
        ("budget", np.int64),
        ("last", np.int64),
        ("step_skip", np.int64),
        ("window", np.int64),
        ("n_features", np.int64),
        ("flatten", np.bool_),
        ("hours_clip", np.float64),
        ("pct_clip", np.float64),
        ("initial_equity", np.float64),
        ("punishment_scale", np.float64),
        ("drift", np.float64),
        ("drift_step", np.float64),
        ("balance0", np.float64),
        ("upnl0", np.float64),
        ("summary", SUMMARY_DTYPE),
        ("reward", REWARD_DTYPE),
        ("info_ints", INFO_INTS_DTYPE),
        ("info", INFO_FLOATS_DTYPE),
    ],
    align=True,
)
# env_step status codes (>= 0: bit 0 terminated, bit 1 truncated, bits 2+: closed trades)
BAD_ACTION, BAD_BALANCE = -1, -2


def record_values(records: np.ndarray, name: str, dtype: type) -> np.ndarray:
    """The field `name` of the 1-row structured array `records`, a record whose fields
    are all of `dtype` (nested ones too), as a plain array of its values in declared
    order: a view, what Python reads the info through (`.tolist()` of a plain array
    costs a fifth of a record's `.item()`). Raises ValueError on a record of mixed types
    or with padding."""
    fields = records.dtype.fields
    if fields is None or name not in fields:
        raise ValueError(f"no record field {name!r}")
    sub, offset = fields[name][:2]
    width = np.dtype(dtype).itemsize

    def leaves(dt: np.dtype) -> list[np.dtype]:
        if dt.names is None:
            return [dt]
        return [leaf for n in dt.names for leaf in leaves(dt[n])]

    found = leaves(sub)
    if any(d != np.dtype(dtype) for d in found) or len(found) * width != sub.itemsize:
        raise ValueError(f"record field {name!r} is not an array of {dtype}")
    return np.ndarray((len(found),), dtype, records, offset)


@njit(cache=True, nogil=True)
def _summarize(st: np.record, lots: np.ndarray) -> None:
    """Refresh the summary of the lots cached in the state."""
    b = st.broker
    side, exp, c, k, mean, last = summarize(b.account, lots, b.terms.tick, b.terms.inverse)
    sm = st.summary
    sm.side = side
    sm.exposure = exp
    sm.contracts = c
    sm.k_sum = k
    sm.mean_ts_ns = mean
    sm.last_ts_ns = last


@njit(cache=True)  # holds the GIL: see the module docstring
def env_summarize(state: np.ndarray, lots: np.ndarray) -> None:
    """Refresh the summary of the lots cached in `state` (a 1-row ENV_DTYPE array)."""
    _summarize(state[0], lots)


@njit(cache=True, nogil=True)
def _observe(
    st: np.record,
    bars: np.ndarray,
    norm: np.ndarray,
    obs: np.ndarray,
    with_reward: bool,
    episode_end: bool,
    realized: float,
    fees: float,
    funding: float,
) -> float:
    b = st.broker
    terms = b.terms
    acct = b.account
    t = st.t
    bar = bar_at(bars, t)
    now = bar.ts
    mark = bar.mid * terms.tick
    mult = terms.multiplier
    sm = st.summary
    side = sm.side
    exp = sm.exposure
    k = sm.k_sum
    upnl = unrealized(side, mult, terms.inverse, k, sm.contracts, mark)
    bid = b.orders[LIVE_BUY].price
    ask = b.orders[LIVE_SELL].price
    s0, s1, s2, s3, s4, s5, s6 = management_values(
        side, exp, k, sm.mean_ts_ns, sm.last_ts_ns, mult, acct.flat_since_ns, now, bid != 0,
        ask != 0, terms.max_exposure, st.hours_clip, st.pct_clip, upnl,
    )  # fmt: skip
    w = st.window
    nf = st.n_features
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
    info = st.info
    rt = info.reward_terms
    total = 0.0
    if with_reward:
        base = mult * k
        r = reward_terms(
            st.reward, st.balance0, exp, upnl / base if base > 0.0 else 0.0, realized, fees,
            funding, s4, s6, episode_end, st.punishment_scale, upnl - st.upnl0,
            side * exp * st.drift_step,
        )  # fmt: skip
        rt.unrealized = r[0]
        rt.realized = r[1]
        rt.fees = r[2]
        rt.funding = r[3]
        rt.open_penalty = r[4]
        rt.close_penalty = r[5]
        rt.terminal_penalty = r[6]
        rt.total = r[7]
        total = r[7]
    else:
        rt.unrealized = rt.realized = rt.fees = rt.funding = 0.0
        rt.open_penalty = rt.close_penalty = rt.terminal_penalty = rt.total = 0.0
    st.upnl0 = upnl
    bal = acct.balance
    eq = bal + upnl
    x = exp / terms.max_exposure
    ints = st.info_ints
    ints.ts = now
    ints.bar = t
    ints.side = side
    ints.long_order = bid
    ints.short_order = ask
    info.equity = eq
    info.balance = bal
    info.pnl = eq - st.initial_equity
    info.realized_pnl = acct.realized_pnl
    info.unrealized_pnl = upnl
    info.pnl_without_fees = acct.realized_pnl + upnl
    info.fees = acct.fees
    info.funding = acct.funding
    info.position_size = side * (1.0 if x > 1.0 else x)  # side * min(x, 1.0)
    info.exposure = exp
    info.punishment_scale = st.punishment_scale
    info.maker_volume = acct.maker_volume
    info.taker_volume = acct.taker_volume
    info.maker_fees = acct.maker_fees
    info.taker_fees = acct.taker_fees
    return total


@njit(cache=True)  # holds the GIL: see the module docstring
def env_observe(
    state: np.ndarray,
    bars: np.ndarray,
    norm: np.ndarray,
    obs: np.ndarray,
    with_reward: bool,
    episode_end: bool,
    realized: float,
    fees: float,
    funding: float,
) -> float:
    """Write the observation at bar `t` of `state` (a 1-row ENV_DTYPE array; bars: the
    rows of `envs.broker.bar_rows`) into `obs` and the info values into the state;
    with_reward: evaluate the reward terms (else all zero) with the balance at the start
    of the step, `balance0` (> 0, checked by the caller). Returns the total."""
    return _observe(state[0], bars, norm, obs, with_reward, episode_end, realized, fees, funding)


@njit(cache=True)  # holds the GIL: see the module docstring
def env_step(
    a: int,
    state: np.ndarray,
    lots: np.ndarray,
    trades: np.ndarray,
    bars: np.ndarray,
    norm: np.ndarray,
    obs: np.ndarray,
) -> tuple[float, int]:
    """One ManagementEnv step (see envs.management) on `state` (a 1-row ENV_DTYPE array)
    and the account's lot and trade tables: the broker's rules (`envs.broker`): the
    action at the close of bar t, each of bars t+1..t+skip (fills, funding, roll), the
    flatten at the end of an evaluation slice; then the observation (`env_observe`).
    Returns (reward, status code: BAD_ACTION, BAD_BALANCE, or bit 0 terminated, bit 1
    truncated, bits 2+ the trades closed, the first rows of `trades`)."""
    st = state[0]
    b = st.broker
    acct = b.account
    t = st.t
    if not act(b, lots, a, bar_at(bars, t)):
        return 0.0, BAD_ACTION
    last = st.last
    end = t + st.step_skip
    if end > last:
        end = last
    st.drift_step = st.drift * (end - t)
    st.balance0 = acct.balance
    real0 = acct.realized_pnl
    fees0 = acct.fees
    fund0 = acct.funding
    changed = False
    ntr = 0
    if b.terms.funding or resting(b):
        for k in range(t + 1, end + 1):
            ntr, moved = on_bar(b, lots, trades, bar_at(bars, k), ntr)
            changed = changed or moved
    st.t = end
    steps = st.steps + 1
    st.steps = steps
    terminated = end == last
    budget = st.budget
    truncated = (not terminated) and budget >= 0 and steps >= budget
    if terminated and st.flatten and acct.n_lots > 0:
        ntr = flatten(b, lots, trades, bar_at(bars, end), ntr)
        changed = True
    if changed:
        _summarize(st, lots)
        realized = acct.realized_pnl - real0
        fees = acct.fees - fees0
        fund = acct.funding - fund0
    else:
        realized = fees = fund = 0.0
    if not st.balance0 > 0:
        return 0.0, BAD_BALANCE
    total = _observe(st, bars, norm, obs, True, terminated or truncated, realized, fees, fund)
    return total, (1 if terminated else 0) | (2 if truncated else 0) | (ntr << 2)


def step_kernel(
    state: np.ndarray, lots: np.ndarray, trades: np.ndarray, bars: np.ndarray, norm: np.ndarray
) -> Callable[..., tuple[float, int]]:
    """`env_step` compiled for an env's own arrays (its state, lot and trade tables, bar
    rows and normalised features, fixed when the env is built), an int action and a
    float32 observation: numba's compiled entry point for that one signature
    (`Dispatcher.get_overload`). Calling it skips the dispatcher's resolution of the seven
    argument types on every call (~0.3 us of a ~1 us kernel call; three of the arguments
    are structured arrays, the slowest to type), about 5 % of a DummyVecEnv step.
    Without the dispatcher nothing checks the types: the caller passes exactly these
    arrays, an int and a 1-D C-contiguous float32 array on every call."""
    obs = np.empty(1, np.float32)
    sig = (numba.int64, *(numba.typeof(a) for a in (state, lots, trades, bars, norm, obs)))
    env_step.compile(sig)  # loads the cached code, or compiles it, once per signature
    kernel: Callable[..., tuple[float, int]] = env_step.get_overload(sig)
    return kernel
