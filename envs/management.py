"""ManagementEnv: a gymnasium env over one slice file, stacked maker positions and a
time-aware management state (registered as `chappie/Management-v0`).

Data. One slice parquet (`ts`, `mid_ticks`, the FeatureSpec features raw, then
`core.schema.EXEC_COLUMNS`), normalised once at construction with the frozen stats of
`stats_dir` (`clip((x - mean) / sigma, -obs_clip, obs_clip)`). Everything `step` reads
is a numpy array prepared in `__init__`: no polars or pandas in the step.
Contract: the slice's prices are ticks of the contract its manifest records (`instrument`,
its day's: XBTUSD's tick went 0.5 -> 0.1 USD on 2024-07-31), so the env prices, rounds
lots and reports in that tick and lot size (`slice_instrument`; `self.instrument`), with
the fees and funding of `EnvConfig`; a slice recording none uses `EnvConfig.instrument`.

Implementation. The step is one call of `envs.step.env_step` over the env's named state
(`envs.step.ENV_DTYPE`: the account at the broker with its terms and resting orders, the
episode's cursor and budget, the reward constants and the step's info values), the
account's lot and closed-trade tables and the slice's bars (one `envs.broker.BAR_DTYPE`
array, read by field name): the order rules of the broker (`envs.broker`, which the live
loop's paper account runs too) and the numba kernels that `envs.position` and
`envs.rewards` wrap for the live loop and the backtest, so there is one implementation
of orders, fills, accounting, state and reward.

Time. The agent decides at the close of bar t (it has seen rows <= t). A step then
advances `step_skip` bars; in each bar k the resting orders may fill against bar k's
trades and book, and unfilled orders roll to bar k's best price of their side.

Actions, by `EnvConfig.action_mode`:
  toggle (default), Discrete(3):
    0 hold;
    1 toggle a long (buy) maker order at the best bid: cancel it if one rests, else place
      one (ignored when the long exposure is already at its cap);
    2 toggle a short (sell) maker order at the best ask, likewise.
  target, Discrete(4): the resting orders the agent wants after this step:
    0 none, 1 a bid only, 2 an ask only, 3 both. An unwanted order is cancelled, a wanted
    one placed at its side's best price unless one rests already (it keeps its price) or
    the side is at its exposure cap. Repeating an action changes nothing, so an argmax
    policy cannot flip its own order on and off as a toggle policy can.
A buy fill on a short stack reduces it first (FIFO, see `envs.position`), and likewise.
Both sides may rest at once (quoting); in a bar where both fill, the buy is applied first.

Fill models (`EnvConfig.fill_model`, `entry_latency_ms`, `cancel_latency_ms`): the
broker's rules (`envs.broker`'s docstring: queue position, latency, partial fills, lot
rounding). In short, for a resting buy at p (the sell mirrors it):
  trade_through (default): a taker sell printed below p (`sell_lo_ticks` in (0, p)) or the
    best ask crossed down to p (`best_ask_ticks <= p`) fills the whole order;
  touch: a taker sell printed at or below p, or the best ask reached p;
  risk_averse / power_prob: as trade_through, and the volume sold at p
    (`sell_at_bid_vol`) fills it in part once the queue ahead of it is consumed.
These two, and any latency, read #17's bar columns (`bid_sz_0`, ..., `buy_thru_ask_last_ts`):
a slice without them is refused for them; touch / trade_through with zero latency run
on older slices. Orders are rounded down to the instrument's lot.
A fill is a maker fill at p, charged the maker rate in force at bar k's close (the env's
`EnvConfig.fees`, core.fees: by default BitMEX XBTUSD's rates by date; negative = rebate);
the flatten at the end of an evaluation slice is a taker fill at that bar's taker rate.
The schedule is resolved to per-bar rates once, when the env is built (`fee_rates`).

Funding (`EnvConfig.funding`, off by default): a bar whose (previous close, close] holds
one of the instrument's funding times (`core.instrument.funding_settles`; XBTUSD: 04:00,
12:00, 20:00 UTC) settles it on the open position, marked at the bar's mid, after the
bar's fills: at the rate of the funding table `funding_rates_path` (ingest.funding) for
that funding time, or the constant `funding_rate` (no table, or a time it lacks). Rates
are resolved once, when the env is built: `funding_schedule` lists them, `funding_note`
says when the table lacked some.

Episodes. Training: random start, a budget of `mean_steps_per_episode` steps (or drawn
from N(mean, std), floored at `min_steps_per_episode`), optional random initial position;
terminated at the end of the slice, truncated at the budget. Evaluation (the backtest):
`reset(options={"full": True})` starts at the first row with a full window (or at
`options["start"]`, clamped to it), never truncates, starts flat, and at the end of the
slice closes any open lots at the touch as a taker (`options["flatten_at_end"]`, default
True) so that every trade is reported.

`info` (a `StepInfo` dict, built from the state's info records) on reset and every step,
amounts in the settle currency (XBT for XBTUSD), cumulative since reset unless said otherwise:
  ts (bar close, ns), bar (row index), equity (balance + unrealised), balance, pnl (equity
  - initial), realized_pnl and unrealized_pnl (before fees), pnl_without_fees (realised +
  unrealised), fees (paid; negative = net rebates), funding (paid), maker_volume /
  taker_volume (notional of the maker / taker fills: contracts * multiplier / price for
  XBTUSD, exactly what each fee rate multiplies), maker_fees / taker_fees (paid on them;
  fees = maker_fees + taker_fees), position_size (signed
  exposure / max_exposure, in [-1, 1]), exposure, side (+1/0/-1), long_order / short_order
  (resting price in ticks, 0 = none), trades (closed in this step: side, entry/exit ts and
  price ticks, stake, contracts, pnl, fees, pnl_plus_fees), punishment_scale (INFO_ORDER).
The reward's breakdown (this step's terms and their total, see `envs.rewards`) is
`last_reward_terms()`; `ManagementEnv(..., reward_terms_in_info=True)` also puts it in
every info as `reward_terms` (before punishment_scale, INFO_ORDER_WITH_TERMS). It is
opt-in (#17): nothing but tests and debugging read it, and every info key costs each
DummyVecEnv step (this one 2-5 %, bench/RESULTS_envs.md).
Invariants: equity = initial + pnl_without_fees - fees - funding; under a constant fee
(m, t), fees = maker_volume * m + taker_volume * t (re-scoring the same fills at another
fee needs only the volumes).

Curriculum: `set_punishment_scale(x)` / `set_curriculum_cycle(k)`, callable through
`VecEnv.env_method`; the attribute `punishment_scale` starts at cycle 0's value.

Copies: an env cannot be pickled or copied (`copy.copy` / `copy.deepcopy` / `pickle`
raise TypeError): its step is numba code compiled for, and bound to, its own arrays.
Build another from the same slice (`ManagementEnv(env.slice_path, env.stats_dir,
env.config)`); SB3's SubprocVecEnv pickles env factories, not envs, and works.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, NoReturn

import gymnasium as gym
import numpy as np

from core.clock import NS_PER_HOUR
from core.config.env import EnvConfig
from core.instrument import InstrumentSpec, family_mismatch, funding_time
from core.schema import (
    ACTION_NAMES,
    BEST_ASK_TICKS,
    BEST_BID_TICKS,
    BUY_HI_TICKS,
    EXEC_COLUMNS,
    MID_TICKS,
    SELL_LO_TICKS,
    TS,
)
from envs import step as S
from envs.broker import (
    LIVE_BUY,
    LIVE_SELL,
    MAX_FILLS,
    SLICE_COLUMNS,
    bar_array,
    bar_rows,
    fields_needed,
    funding_due,
    terms_for,
)
from envs.kernels import LOT_DTYPE, TRADE_DTYPE, new_account
from envs.observation import observation_bounds, observation_size
from envs.position import (
    LONG,
    SHORT,
    ClosedTrade,
    Position,
    StateLimits,
    contracts_for,
    position_from_arrays,
)
from envs.queue import TOUCH, TRADE_THROUGH
from envs.rewards import TERM_NAMES, check_version, punishment_scale, reward_params
from features.stats import FrozenStats
from features.store import manifest_for, slice_table
from ingest.funding import FundingHistory

HOLD, TOGGLE_LONG, TOGGLE_SHORT = 0, 1, 2  # action_mode "toggle"
NO_ORDERS, BID_ONLY, ASK_ONLY, BOTH_SIDES = 0, 1, 2, 3  # action_mode "target"
_empty = np.empty  # the step allocates a fresh observation with these: a prebuilt dtype
_F32 = np.dtype(np.float32)  # and a module-level name save ~0.1 us a step over np.float32


_IMMUTABLE = (bool, int, float, str, type(None))
# keys of every step's info (scalars, except the list "trades"), in order
INFO_ORDER: list[str] = [
    "ts",
    "bar",
    "equity",
    "balance",
    "pnl",
    "realized_pnl",
    "unrealized_pnl",
    "pnl_without_fees",
    "fees",
    "funding",
    "maker_volume",
    "taker_volume",
    "maker_fees",
    "taker_fees",
    "position_size",
    "exposure",
    "side",
    "long_order",
    "short_order",
    "trades",
    "punishment_scale",
]
INFO_KEYS = frozenset(INFO_ORDER)
# with reward_terms_in_info=True: the dict of the step's reward terms before the last key
INFO_ORDER_WITH_TERMS: list[str] = [*INFO_ORDER[:-1], "reward_terms", INFO_ORDER[-1]]
INFO_KEYS_WITH_TERMS = frozenset(INFO_ORDER_WITH_TERMS)
_LAST_KEY = INFO_ORDER[-1]


def _copy_rest(info: dict, out: dict, memo: dict[int, Any], keys: frozenset[str]) -> None:
    """Into `out` (a shallow copy of `info`, whose env keys are `keys`): a copy of the
    closed trades and a deep copy of every mutable value under a key a wrapper added."""
    trades = info.get("trades")
    if type(trades) is list:
        out["trades"] = [t.copy() for t in trades] if trades else []
    # the keys wrappers added (SB3: TimeLimit.truncated, terminal_observation, ...): in the
    # common case those after the env's own, read from the end up to the env's last key (a
    # dict keeps insertion order); when that key is not the env's last or the count shows
    # the env's keys were removed or re-added, every key not the env's
    extra: Any = []
    for key in reversed(info):
        if key in keys:
            if key != _LAST_KEY or len(info) - len(extra) != len(keys):
                extra = info.keys() - keys
            break
        extra.append(key)
    for key in extra:
        value = info[key]
        if type(value) not in _IMMUTABLE:
            out[key] = copy.deepcopy(value, memo)


class StepInfo(dict):
    """The env's `info` dict (keys INFO_ORDER), with a cheap exact `__deepcopy__`.

    SB3's VecEnvs deep-copy every info on every step; a generic deepcopy of ~20 float
    entries costs more than the env step itself. Every value the env puts under
    INFO_KEYS is an immutable scalar or a list of dicts of scalars ("trades"), so copying
    that list one level is an exact deep copy; any key a wrapper adds (e.g.
    "terminal_observation") goes through `copy.deepcopy`. (The wrappers' keys are found
    from the end of the dict, up to the env's last key; a wrapper that removed one of the
    env's keys, added its own and then re-set the env's last key would pass for the env's
    order, and its key be copied by reference as the env's own values are.)
    """

    __slots__ = ()

    def __deepcopy__(self, memo: dict[int, Any]) -> StepInfo:
        out = StepInfo(self)
        _copy_rest(self, out, memo, INFO_KEYS)
        return out


class TermsStepInfo(StepInfo):
    """The info of an env built with `reward_terms_in_info=True` (keys
    INFO_ORDER_WITH_TERMS): a StepInfo whose deep copy also copies the dict of scalars
    "reward_terms"."""

    __slots__ = ()

    def __deepcopy__(self, memo: dict[int, Any]) -> TermsStepInfo:
        out = TermsStepInfo(self)
        terms = self.get("reward_terms")
        if type(terms) is dict:
            out["reward_terms"] = terms.copy()
        _copy_rest(self, out, memo, INFO_KEYS_WITH_TERMS)
        return out


_TRADE_KEYS = tuple(f.name for f in fields(ClosedTrade))  # the kernels' trade columns, in order


# _build_info unpacks the info records' values positionally; this pins the order it assumes
assert S.INFO_INTS_DTYPE.names == ("ts", "bar", "side", "long_order", "short_order")
assert S.INFO_FLOATS_DTYPE.names == (
    "equity", "balance", "pnl", "realized_pnl", "unrealized_pnl", "pnl_without_fees", "fees",
    "funding", "position_size", "exposure", "punishment_scale", "reward_terms",
    "maker_volume", "taker_volume", "maker_fees", "taker_fees",
) and S.REWARD_TERMS_DTYPE.names == (*TERM_NAMES, "total")  # fmt: skip
assert TERM_NAMES == (
    "unrealized", "realized", "fees", "funding", "open_penalty", "close_penalty",
    "terminal_penalty",
)  # fmt: skip


_TERM_KEYS = (*TERM_NAMES, "total")  # the reward breakdown's keys, in order
# where they sit in the info floats' values (after the scalars before reward_terms)
_TERMS_FROM = S.INFO_FLOATS_DTYPE.names.index("reward_terms")
_TERMS_AT = slice(_TERMS_FROM, _TERMS_FROM + len(_TERM_KEYS))


def _build_info(ints: np.ndarray, floats: np.ndarray, trades: list[tuple] | None) -> StepInfo:
    """The info of the step just observed (`ints`, `floats`: the values of the state's
    `info_ints` and `info` records, `envs.step.INFO_INTS_DTYPE` / `INFO_FLOATS_DTYPE`, in
    their declared order; `trades`, the step's closed trades as `envs.kernels.TRADE_DTYPE`
    rows, or None), keys in INFO_ORDER."""
    ts, bar, side, long_order, short_order = ints.tolist()
    (
        eq, bal, pnl, real, upnl, pwf, fees, funding, psize, exposure, pscale,
        _, _, _, _, _, _, _, _,  # the reward terms: `_terms`
        mvol, tvol, mfee, tfee,
    ) = floats.tolist()  # fmt: skip
    closed = []
    if trades is not None:
        for row in trades:
            d = dict(zip(_TRADE_KEYS, row, strict=True))
            d["pnl_plus_fees"] = d["pnl"] - d["fees"]
            closed.append(d)
    # keywords, not a dict literal: the info is built once, not built and then copied
    # into the StepInfo (~0.2 us a step)
    return StepInfo(
        ts=ts,
        bar=bar,
        equity=eq,
        balance=bal,
        pnl=pnl,
        realized_pnl=real,
        unrealized_pnl=upnl,
        pnl_without_fees=pwf,
        fees=fees,
        funding=funding,
        maker_volume=mvol,
        taker_volume=tvol,
        maker_fees=mfee,
        taker_fees=tfee,
        position_size=psize,
        exposure=exposure,
        side=side,
        long_order=long_order,
        short_order=short_order,
        trades=closed,
        punishment_scale=pscale,
    )


def _terms(floats: np.ndarray) -> dict[str, float]:
    """The step's reward terms and their total (a fresh dict, keys TERM_NAMES + total)
    from the values of the state's `info` record."""
    return dict(zip(_TERM_KEYS, floats[_TERMS_AT].tolist(), strict=True))


def _build_info_with_terms(
    ints: np.ndarray, floats: np.ndarray, trades: list[tuple] | None
) -> TermsStepInfo:
    """`_build_info` with the step's reward terms under "reward_terms", keys in
    INFO_ORDER_WITH_TERMS (reward_terms_in_info=True: debugging a shaped reward, where
    the step's speed does not matter)."""
    info = _build_info(ints, floats, trades)
    last = info.pop(_LAST_KEY)
    return TermsStepInfo(info, reward_terms=_terms(floats), **{_LAST_KEY: last})


class SliceDataError(ValueError):
    """A slice or stats directory that the env cannot use (named in the message)."""


def _load_stats(stats_dir: Path) -> FrozenStats:
    """The frozen stats of `stats_dir`; any unreadable or inconsistent dir is a
    SliceDataError naming it."""
    try:
        return FrozenStats.load(stats_dir)
    except (OSError, KeyError, ValueError) as exc:
        raise SliceDataError(f"cannot load frozen stats from {stats_dir}: {exc}") from exc


def _slice_manifest(slice_path: Path) -> dict[str, Any]:
    """A slice's manifest (the path itself, or the `<stem>.manifest.json` beside a plain
    slice file), {} when it has none."""
    manifest = manifest_for(slice_path)
    return json.loads(manifest.read_text()) if manifest.exists() else {}


def slice_instrument(manifest: dict[str, Any], default: InstrumentSpec) -> InstrumentSpec:
    """The contract a slice is priced in: `default` (the experiment's `EnvConfig.
    instrument`: its fees and funding times) with the tick and lot size its manifest
    records (`instrument`: the contract of its day; XBTUSD's tick went 0.5 -> 0.1 USD on
    2024-07-31), `default` itself when it records none. Raises SliceDataError when the
    recorded contract is another instrument (`core.instrument.FAMILY_FIELDS`)."""
    recorded = manifest.get("instrument")
    if not recorded:
        return default
    other = family_mismatch(recorded, default)
    if other:
        raise SliceDataError(
            f"slice {manifest.get('slice_id')} was recorded under another instrument "
            f"({other}) than the env's"
        )
    update = {k: recorded[k] for k in ("tick_size", "lot_size") if k in recorded}
    if all(getattr(default, k) == v for k, v in update.items()):
        return default
    return InstrumentSpec.model_validate({**default.model_dump(), **update})


@dataclass(frozen=True)
class FundingSchedule:
    """The funding the env settles, one entry per bar that settles it (with `funding` on;
    empty when off): the bar's close, the rate, and whether the rate came from the funding
    table (False: the constant `funding_rate`)."""

    bar_ts: np.ndarray  # int64 ns
    rate: np.ndarray  # float64, fraction of notional, positive = longs pay shorts
    from_history: np.ndarray  # bool

    def between(self, t0_ns: int, t1_ns: int) -> FundingSchedule:
        """The entries of bars closing in (t0_ns, t1_ns]."""
        m = (self.bar_ts > t0_ns) & (self.bar_ts <= t1_ns)
        return FundingSchedule(self.bar_ts[m], self.rate[m], self.from_history[m])


class ManagementEnv(gym.Env[np.ndarray, np.int64]):
    """See the module docstring. Raises SliceDataError on a slice/stats mismatch (naming
    both sides), a non-finite feature, a bad book row or a slice shorter than window + 1."""

    metadata = {"render_modes": []}

    def __init__(
        self,
        slice_path: str | Path,
        stats_dir: str | Path,
        config: EnvConfig | dict[str, Any] | None = None,
        *,
        reward_terms_in_info: bool = False,
    ) -> None:
        super().__init__()
        if config is None:
            cfg = EnvConfig()
        elif isinstance(config, EnvConfig):
            cfg = config
        else:
            cfg = EnvConfig.model_validate(config)
        check_version(cfg.reward)
        self.config = cfg
        self.slice_path = Path(slice_path)
        self.stats_dir = Path(stats_dir)
        manifest = _slice_manifest(self.slice_path)
        # the contract of the slice's own day (tick and lot), the experiment's fees/funding
        self.instrument = slice_instrument(manifest, cfg.instrument)
        # the broker's terms (envs.broker), copied into the state's broker record
        self._terms = terms_for(
            cfg.fill_model, cfg.power_prob_n, cfg.entry_latency_ms, cfg.cancel_latency_ms,
            cfg.stake_fraction, cfg.max_exposure, self.instrument, cfg.roll_orders, cfg.funding,
            cfg.action_mode == "target",
        )  # fmt: skip
        self.limits = StateLimits(
            max_exposure=cfg.max_exposure, hours_clip=cfg.hours_clip, pct_clip=cfg.pct_clip
        )
        self._load(self.slice_path, self.stats_dir, manifest.get("spec_hash"))
        low, high = observation_bounds(self.n_features, cfg.window, cfg.obs_clip, self.limits)
        self.observation_space = gym.spaces.Box(low=low, high=high, dtype=np.float32)
        self.action_space = gym.spaces.Discrete(len(ACTION_NAMES[cfg.action_mode]))
        self._obs_size = observation_size(self.n_features, cfg.window)
        self.punishment_scale = punishment_scale(0, cfg.reward)
        # the step writes its info values into the state's info records; `_build_info`
        # reads them back through plain views of them (made once: slicing costs each step)
        self._info_ints = S.record_values(self._state, "info_ints", np.int64)
        self._info_floats = S.record_values(self._state, "info", np.float64)
        # not an EnvConfig field: how the info is reported, not what the env does (the
        # config's fingerprint, run names and caches do not depend on it)
        self.reward_terms_in_info = bool(reward_terms_in_info)
        self._info = _build_info_with_terms if reward_terms_in_info else _build_info
        # env_step's compiled code for these arrays, called without numba's dispatcher
        self._step_kernel = S.step_kernel(
            self._state, self._lots, self._trades, self._bar_rows, self._norm_flat
        )
        self._start(cfg.window - 1, None, False)

    def _pack(self, cols: dict[str, np.ndarray], mid: np.ndarray) -> None:
        """The step's state (`envs.step.ENV_DTYPE`: the account at the broker, the
        episode, the reward constants), the account's lot and closed-trade tables, and
        the slice's bars as one `envs.broker.BAR_DTYPE` array."""
        cfg = self.config
        inst = self.instrument
        n = self.n_rows
        full = int((cfg.max_exposure + 1e-9) / cfg.stake_fraction)
        # partial fills (the queue models) open lots smaller than a stake
        queue = int(self._terms["model"][0]) not in (TOUCH, TRADE_THROUGH)
        lot_cap = 2 * full + 4 if queue else full + 2
        # a bar's fills (MAX_FILLS) close at most every lot each, and the flatten
        trade_cap = lot_cap * (MAX_FILLS * cfg.step_skip + 1)
        state = np.zeros(1, S.ENV_DTYPE)
        state["broker"]["terms"] = self._terms
        state["budget"] = -1
        state["last"] = n - 1
        state["step_skip"] = cfg.step_skip
        state["window"] = cfg.window
        state["n_features"] = self.n_features
        state["hours_clip"] = cfg.hours_clip
        state["pct_clip"] = cfg.pct_clip
        state["initial_equity"] = cfg.initial_equity_xbt
        state["reward"] = reward_params(cfg.reward)
        if n > 1 and mid[0] > 0 and mid[-1] > 0:  # the slice's mean log return per bar
            state["drift"] = float(np.log(mid[-1] / mid[0])) / (n - 1)
        self._state = state
        self._broker = state["broker"]  # views of the state
        self._account = self._broker["account"]
        self._lots = np.zeros(lot_cap, LOT_DTYPE)
        self._trades = np.zeros(trade_cap, TRADE_DTYPE)
        # bar k settles funding when one of the instrument's funding times lies in
        # (ts[k-1], ts[k]] (XBTUSD 04/12/20 UTC), at the rate resolved once here; the fee
        # in force at each bar's close is resolved once too (the step reads the bar)
        ts = cols[TS]
        maker, taker = cfg.fees.resolve(ts)
        self._bars = bar_array(
            ts, cols[BEST_BID_TICKS], cols[BEST_ASK_TICKS], cols[BUY_HI_TICKS],
            cols[SELL_LO_TICKS], mid, maker, taker,
            self._funding_rates(ts, funding_due(ts, inst)),
            **{f: cols[SLICE_COLUMNS[f]] for f in SLICE_COLUMNS if SLICE_COLUMNS[f] in cols},
        )  # fmt: skip
        self._bar_rows = bar_rows(self._bars)

    def _funding_rates(self, ts: np.ndarray, due: np.ndarray) -> np.ndarray:
        """The funding rate each bar settles at (0 where none is due), resolved once: with
        `funding` on, the rate of the funding table (`funding_rates_path`) at the bar's
        funding time, else (no table, or a time the table lacks) the constant
        `funding_rate`. Records what was used (`funding_schedule`, `funding_note`).
        Raises SliceDataError when the table cannot be read."""
        cfg = self.config
        rates = np.where(due, cfg.funding_rate, 0.0)
        bars = np.flatnonzero(due) if cfg.funding else np.zeros(0, np.int64)
        found = np.zeros(bars.size, dtype=bool)
        if cfg.funding_rates_path is not None and bars.size:
            try:
                history = FundingHistory.load(cfg.funding_rates_path, self.instrument.symbol)
            except (OSError, ValueError) as exc:
                raise SliceDataError(f"funding_rates_path: {exc}") from exc
            hist, found = history.rates_at(funding_time(ts[bars], self.instrument))
            rates[bars[found]] = hist[found]
        self.funding_schedule = FundingSchedule(
            bar_ts=ts[bars].astype(np.int64),
            rate=rates[bars],
            from_history=found,
        )
        missing = int(bars.size - found.sum())
        self.funding_note = (
            f"{missing} of {bars.size} funding times in {self.slice_path.name} have no rate "
            f"in {cfg.funding_rates_path}: the constant funding_rate {cfg.funding_rate} was used"
            if cfg.funding_rates_path is not None and missing
            else None
        )
        return rates

    # ------------------------------------------------------------------ data
    def _load(self, slice_path: Path, stats_dir: Path, slice_hash: str | None) -> None:
        if not slice_path.exists():
            raise SliceDataError(f"slice not found: {slice_path}")
        stats = _load_stats(stats_dir)
        names, stats_hash = list(stats.feature_names), stats.spec_hash
        if stats_hash and slice_hash and stats_hash != slice_hash:
            raise SliceDataError(
                f"spec_hash mismatch: slice {slice_path.name} has {slice_hash}, stats {stats_dir} has {stats_hash}"
            )
        try:
            table = slice_table(slice_path)
        except (ValueError, OSError) as exc:  # SliceReadError and pyarrow's are ValueErrors
            raise SliceDataError(f"cannot read slice {slice_path}: {exc}") from exc
        cols = table.column_names
        cfg = self.config
        events = set(SLICE_COLUMNS.values())
        fixed = {TS, MID_TICKS, *EXEC_COLUMNS, *events}
        # the bar fields the fill model and latency read: older slices lack them, and run
        # touch / trade_through with zero latency without them
        needed = [
            SLICE_COLUMNS[f]
            for f in fields_needed(cfg.fill_model, cfg.entry_latency_ms, cfg.cancel_latency_ms)
        ]
        base = [c for c in (TS, MID_TICKS, *EXEC_COLUMNS) if c not in events]
        missing = [c for c in base if c not in cols]
        if missing:
            raise SliceDataError(f"slice {slice_path} lacks columns {missing}")
        lacking = [c for c in needed if c not in cols]
        if lacking:
            raise SliceDataError(
                f"slice {slice_path} lacks columns {lacking}, which fill_model "
                f"{cfg.fill_model!r} with entry/cancel latency {cfg.entry_latency_ms}/"
                f"{cfg.cancel_latency_ms} ms reads (slices built before #17: rebuild them, "
                "or use touch / trade_through with zero latency)"
            )
        slice_features = [c for c in cols if c not in fixed]
        if slice_features != names:
            raise SliceDataError(
                f"feature mismatch: slice {slice_path} has {slice_features}, stats {stats_dir} has {names}"
            )
        n = table.num_rows
        if n < self.config.window + 1:
            raise SliceDataError(
                f"slice {slice_path} has {n} rows, needs at least window + 1 = {self.config.window + 1}"
            )

        def col(name: str, dtype: type) -> np.ndarray:
            return np.ascontiguousarray(table.column(name).to_numpy(), dtype=dtype)

        raw = np.column_stack([col(c, np.float64) for c in names]) if names else np.empty((n, 0))
        if not np.isfinite(raw).all():
            bad = int(np.argwhere(~np.isfinite(raw))[0][0])
            raise SliceDataError(f"slice {slice_path} has a non-finite feature at row {bad}")
        ts = col(TS, np.int64)
        mid = col(MID_TICKS, np.float64)
        bid = col(BEST_BID_TICKS, np.int64)
        ask = col(BEST_ASK_TICKS, np.int64)
        ok = (bid > 0) & (bid < ask)
        if not ok.all():
            bad = int(np.argmax(~ok))
            raise SliceDataError(
                f"slice {slice_path} row {bad}: bad book bid={bid[bad]} ask={ask[bad]}"
            )
        if (np.diff(ts) <= 0).any():
            raise SliceDataError(f"slice {slice_path}: ts is not strictly increasing")
        self.feature_names = tuple(names)
        self.n_features = len(names)
        self.n_rows = n
        self.ts = ts  # int64 ns bar close times (read-only use)
        norm = stats.normalize(raw, self.config.obs_clip)
        self._norm32 = np.ascontiguousarray(norm, dtype=np.float32)
        self._norm_flat = self._norm32.reshape(-1)
        cols = {TS: ts, BEST_BID_TICKS: bid, BEST_ASK_TICKS: ask}
        cols[BUY_HI_TICKS] = col(BUY_HI_TICKS, np.int64)
        cols[SELL_LO_TICKS] = col(SELL_LO_TICKS, np.int64)
        for c in needed:
            cols[c] = col(c, np.int64)
        self._pack(cols, mid)

    @property
    def fee_rates(self) -> tuple[np.ndarray, np.ndarray]:
        """(maker, taker) fee rate charged at each bar (copies; row k = bar k's close)."""
        return self._bars["maker"].copy(), self._bars["taker"].copy()

    # ------------------------------------------------------------------ curriculum
    @property
    def punishment_scale(self) -> float:
        """The penalty multiplier of the reward (>= 0)."""
        return float(self._state["punishment_scale"][0])

    @punishment_scale.setter
    def punishment_scale(self, scale: float) -> None:
        self._state["punishment_scale"] = scale

    def set_punishment_scale(self, scale: float) -> None:
        """Set the penalty multiplier (>= 0); a training callback drives it via env_method."""
        if not scale >= 0:
            raise ValueError(f"punishment scale must be >= 0, got {scale}")
        self.punishment_scale = float(scale)

    def set_curriculum_cycle(self, cycle: int) -> float:
        """Set the penalty multiplier for curriculum `cycle` (see rewards.punishment_scale)."""
        self.punishment_scale = punishment_scale(cycle, self.config.reward)
        return self.punishment_scale

    # ------------------------------------------------------------------ gym API
    @property
    def position(self) -> Position:
        """The account and open lots now (a fresh immutable value)."""
        return position_from_arrays(self._account, self._lots)

    @property
    def resting_orders(self) -> tuple[int, int]:
        """The prices of the resting buy and sell (ticks, 0 = none)."""
        price = self._broker["orders"]["price"][0]
        return int(price[LIVE_BUY]), int(price[LIVE_SELL])

    @property
    def _t(self) -> int:
        return int(self._state["t"][0])

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict]:
        """Start an episode. options: {"full": bool, "start": int, "flatten_at_end": bool}
        (see the module docstring)."""
        super().reset(seed=seed)
        cfg = self.config
        opts = options or {}
        first = cfg.window - 1
        last = self.n_rows - 2  # at least one step left
        full = bool(opts.get("full", False))
        budget: int | None
        if full:
            budget = None
            t = min(max(int(opts.get("start", first)), first), last)
            flatten = bool(opts.get("flatten_at_end", True))
        else:
            if cfg.std_steps_per_episode > 0:
                drawn = round(
                    self.np_random.normal(cfg.mean_steps_per_episode, cfg.std_steps_per_episode)
                )
                budget = max(cfg.min_steps_per_episode, int(drawn))
            else:
                budget = cfg.mean_steps_per_episode
            if "start" in opts:
                t = min(max(int(opts["start"]), first), last)
            elif cfg.random_start:
                hi = max(first, self.n_rows - 1 - budget * cfg.step_skip)
                t = int(self.np_random.integers(first, hi + 1))
            else:
                t = first
            flatten = bool(opts.get("flatten_at_end", False))
        self._start(t, budget, flatten)
        if cfg.random_initial_position and not full:
            self._random_position(int(self.ts[t]))
            S.env_summarize(self._state, self._lots)
        obs = _empty(self._obs_size, _F32)
        S.env_observe(
            self._state, self._bar_rows, self._norm_flat, obs, False, False, 0.0, 0.0, 0.0
        )
        return obs, self._info(self._info_ints, self._info_floats, None)

    def _start(self, t: int, budget: int | None, flatten: bool) -> None:
        """A flat account at bar t with no resting orders."""
        state = self._state
        state["t"] = t
        state["budget"] = -1 if budget is None else budget
        state["flatten"] = flatten
        state["steps"] = 0
        self._broker["orders"]["price"] = 0
        # no lots, pnl, fees, funding or fill volume yet
        self._account[:] = new_account(float(self.config.initial_equity_xbt), int(self.ts[t]))
        S.env_summarize(state, self._lots)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        """Apply `action` at the close of the current bar, advance `step_skip` bars (the
        arithmetic is `envs.step.env_step`, the order rules `envs.broker`)."""
        obs = _empty(self._obs_size, _F32)  # fresh each step: the caller may keep it
        reward, code = self._step_kernel(
            int(action), self._state, self._lots, self._trades, self._bar_rows, self._norm_flat,
            obs,
        )  # fmt: skip
        if code < 0:
            self._refuse(code, action)
        trades = None
        if code > 3:  # code >> 2 trades closed in this step
            n = code >> 2
            trades = self._trades[:n].tolist()
        info = self._info(self._info_ints, self._info_floats, trades)
        return obs, reward, code & 1 == 1, code & 2 == 2, info

    def last_reward_terms(self) -> dict[str, float]:
        """The reward of the last step (or reset: all 0.0) term by term (`envs.rewards.
        TERM_NAMES`, penalties already scaled by punishment_scale) and their "total" (the
        reward `step` returned): a fresh dict, what `info["reward_terms"]` holds with
        reward_terms_in_info=True."""
        return _terms(self._info_floats)

    # ------------------------------------------------------------------ copies
    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        # pickle, copy.copy and copy.deepcopy all come here (no __copy__/__deepcopy__):
        # a copy of the arrays would come apart from the compiled step bound to them
        raise TypeError(
            f"a {type(self).__name__} cannot be pickled or copied (its compiled step is bound "
            "to its own arrays): build a new one from its slice, ManagementEnv(env.slice_path, "
            "env.stats_dir, env.config)"
        )

    def __reduce__(self) -> NoReturn:
        self.__reduce_ex__(None)

    # ------------------------------------------------------------------ internals
    def _refuse(self, code: int, action: Any) -> NoReturn:
        if code == S.BAD_ACTION:
            n = len(ACTION_NAMES[self.config.action_mode])
            raise ValueError(f"action must be one of 0..{n - 1}, got {action!r}")
        balance = float(self._state["balance0"][0])
        raise ValueError(f"balance must be > 0, got {balance}")

    def _random_position(self, now: int) -> None:
        """1..cap lots on a random side at the current touch, aged uniformly up to
        `initial_position_max_hours`, fee-free (the agent inherits risk, not a fee bill),
        each the stake's contracts rounded down to the lot (none when that is 0)."""
        cfg = self.config
        cap = int(cfg.max_exposure / cfg.stake_fraction + 1e-9)
        if cap < 1:
            return
        t = self._t
        side = LONG if self.np_random.random() < 0.5 else SHORT
        n = int(self.np_random.integers(1, cap + 1))
        price = int(self._bars[t]["bid" if side == LONG else "ask"])
        px = price * self.instrument.tick_size
        span = cfg.initial_position_max_hours * NS_PER_HOUR
        ages = np.sort(self.np_random.uniform(0.0, span, size=n))[::-1]
        balance = float(self._account["balance"][0])
        c = contracts_for(cfg.stake_fraction, balance, px, self.instrument)
        lot = float(self._broker["terms"]["lot"][0])  # whole lots, as the broker's orders
        if lot > 0.0:
            c = float(np.floor(c / lot + 1e-9) * lot)
            if c <= 0.0:
                return
        for i, age in enumerate(ages):
            self._lots[i] = (side, price, now - int(age), cfg.stake_fraction, c, 0.0)
        self._account["n_lots"] = n
