"""ManagementEnv: a gymnasium env over one slice file, stacked maker positions and a
time-aware management state (registered as `chappie/Management-v0`).

Data. One slice parquet (`ts`, `mid_ticks`, the FeatureSpec features raw, then
`core.schema.EXEC_COLUMNS`), normalised once at construction with the frozen stats of
`stats_dir` (`clip((x - mean) / sigma, -obs_clip, obs_clip)`). Everything `step` reads
is a numpy array prepared in `__init__`: no polars or pandas in the step.

Time. The agent decides at the close of bar t (it has seen rows <= t). A step then
advances `step_skip` bars; in each bar k the resting orders may fill against bar k's
trades and book, and unfilled orders roll to bar k's best price of their side.

Actions, Discrete(3):
  0 hold;
  1 toggle a long (buy) maker order at the best bid: cancel it if one rests, else place
    one (ignored when the long exposure is already at its cap);
  2 toggle a short (sell) maker order at the best ask, likewise.
A buy fill on a short stack reduces it first (FIFO, see `envs.position`), and likewise.
Both sides may rest at once (quoting); in a bar where both fill, the buy is applied first.

Fill models (bar k, resting buy at price p; the sell side mirrors it):
  trade_through (default): a taker sell printed below p (`sell_lo_ticks` in (0, p)) or the
    best ask crossed down to p (`best_ask_ticks <= p`);
  touch: a taker sell printed at or below p, or the best ask reached p.
A fill is a maker fill at p (instrument maker fee; negative = rebate).

Episodes. Training: random start, a budget of `mean_steps_per_episode` steps (or drawn
from N(mean, std), floored at `min_steps_per_episode`), optional random initial position;
terminated at the end of the slice, truncated at the budget. Evaluation (the backtest):
`reset(options={"full": True})` starts at the first row with a full window (or at
`options["start"]`, clamped to it), never truncates, starts flat, and at the end of the
slice closes any open lots at the touch as a taker (`options["flatten_at_end"]`, default
True) so that every trade is reported.

`info` (a `StepInfo` dict) on reset and every step, amounts in the settle currency
(XBT for XBTUSD), cumulative since reset unless said otherwise:
  ts (bar close, ns), bar (row index), equity (balance + unrealised), balance, pnl (equity
  - initial), realized_pnl and unrealized_pnl (before fees), pnl_without_fees (realised +
  unrealised), fees (paid; negative = net rebates), funding (paid), position_size (signed
  exposure / max_exposure, in [-1, 1]), exposure, side (+1/0/-1), long_order / short_order
  (resting price in ticks, 0 = none), trades (closed in this step: side, entry/exit ts and
  price ticks, stake, contracts, pnl, fees, pnl_plus_fees), reward_terms (this step's
  terms and total, see `envs.rewards`), punishment_scale.
Invariant: equity = initial + pnl_without_fees - fees - funding.

Curriculum: `set_punishment_scale(x)` / `set_curriculum_cycle(k)`, callable through
`VecEnv.env_method`; the attribute `punishment_scale` starts at cycle 0's value.
"""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pyarrow.parquet as pq

from core.clock import NS_PER_HOUR
from core.config.env import EnvConfig
from core.schema import (
    BEST_ASK_TICKS,
    BEST_BID_TICKS,
    BUY_HI_TICKS,
    EXEC_COLUMNS,
    MID_TICKS,
    SELL_LO_TICKS,
    TS,
)
from envs.observation import encode_observation, observation_bounds
from envs.position import (
    LONG,
    SHORT,
    ClosedTrade,
    Lot,
    Position,
    PositionSummary,
    StateLimits,
    apply_fill,
    apply_funding,
    can_fill,
    contracts_for,
    management_values,
    open_account,
    summarize,
)
from envs.rewards import ZERO_TERMS, check_version, punishment_scale, reward_terms
from features.stats import FrozenStats

HOLD, TOGGLE_LONG, TOGGLE_SHORT = 0, 1, 2


_IMMUTABLE = (bool, int, float, str, type(None))
# keys of every step's info (scalars, except the two containers)
INFO_KEYS = frozenset(
    (
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
        "position_size",
        "exposure",
        "side",
        "long_order",
        "short_order",
        "trades",
        "reward_terms",
        "punishment_scale",
    )
)


class StepInfo(dict):
    """The env's `info` dict, with a cheap exact `__deepcopy__`.

    SB3's VecEnvs deep-copy every info on every step; a generic deepcopy of ~20 float
    entries costs more than the env step itself. Every value the env puts under
    INFO_KEYS is an immutable scalar, a dict of scalars ("reward_terms") or a list of
    dicts of scalars ("trades"), so copying those two containers one level is an exact
    deep copy; any key a wrapper adds (e.g. "terminal_observation") goes through
    `copy.deepcopy`.
    """

    __slots__ = ()

    def __deepcopy__(self, memo: dict[int, Any]) -> StepInfo:
        out = StepInfo(self)
        terms = self.get("reward_terms")
        if type(terms) is dict:
            out["reward_terms"] = dict(terms)
        trades = self.get("trades")
        if type(trades) is list:
            out["trades"] = [dict(t) for t in trades]
        for key in self.keys() - INFO_KEYS:  # added by wrappers (SB3: TimeLimit.truncated, ...)
            value = self[key]
            if type(value) not in _IMMUTABLE:
                out[key] = copy.deepcopy(value, memo)
        return out


class SliceDataError(ValueError):
    """A slice or stats directory that the env cannot use (named in the message)."""


def _load_stats(stats_dir: Path) -> FrozenStats:
    """The frozen stats of `stats_dir`; any unreadable or inconsistent dir is a
    SliceDataError naming it."""
    try:
        return FrozenStats.load(stats_dir)
    except (OSError, KeyError, ValueError) as exc:
        raise SliceDataError(f"cannot load frozen stats from {stats_dir}: {exc}") from exc


def _slice_spec_hash(slice_path: Path) -> str | None:
    manifest = slice_path.with_name(slice_path.stem + ".manifest.json")
    if manifest.exists():
        return json.loads(manifest.read_text()).get("spec_hash")
    return None


class ManagementEnv(gym.Env[np.ndarray, np.int64]):
    """See the module docstring. Raises SliceDataError on a slice/stats mismatch (naming
    both sides), a non-finite feature, a bad book row or a slice shorter than window + 1."""

    metadata = {"render_modes": []}

    def __init__(
        self,
        slice_path: str | Path,
        stats_dir: str | Path,
        config: EnvConfig | dict[str, Any] | None = None,
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
        self.instrument = cfg.instrument
        self.limits = StateLimits(
            max_exposure=cfg.max_exposure, hours_clip=cfg.hours_clip, pct_clip=cfg.pct_clip
        )
        ts = self._load(self.slice_path, self.stats_dir)
        self._stake = cfg.stake_fraction
        self._cap = cfg.max_exposure
        self._skip = cfg.step_skip
        self._w = cfg.window
        self._last = self.n_rows - 1
        self._touch = cfg.fill_model == "touch"
        self._roll = cfg.roll_orders
        self._funding = cfg.funding
        self._equity0 = cfg.initial_equity_xbt
        self._reward_cfg = cfg.reward
        low, high = observation_bounds(self.n_features, cfg.window, cfg.obs_clip, self.limits)
        self.observation_space = gym.spaces.Box(low=low, high=high, dtype=np.float32)
        self.action_space = gym.spaces.Discrete(3)
        self.punishment_scale = punishment_scale(0, cfg.reward)
        # bar k settles funding when a funding time (multiple of the interval) lies in (ts[k-1], ts[k]]
        funding_ns = int(self.instrument.funding_interval_hours * NS_PER_HOUR)
        due = np.zeros(self.n_rows, dtype=bool)
        if funding_ns > 0:
            due[1:] = ts[1:] // funding_ns != ts[:-1] // funding_ns
        self._funding_due: list[bool] = due.tolist()
        self._pos: Position = open_account(cfg.initial_equity_xbt, self._ts_l[0])
        self._summary: PositionSummary = summarize(self._pos, self.instrument)
        self._t = cfg.window - 1
        self._bid = 0
        self._ask = 0
        self._steps = 0
        self._budget: int | None = None
        self._flatten_at_end = False

    # ------------------------------------------------------------------ data
    def _load(self, slice_path: Path, stats_dir: Path) -> np.ndarray:
        if not slice_path.exists():
            raise SliceDataError(f"slice not found: {slice_path}")
        stats = _load_stats(stats_dir)
        names, stats_hash = list(stats.feature_names), stats.spec_hash
        slice_hash = _slice_spec_hash(slice_path)
        if stats_hash and slice_hash and stats_hash != slice_hash:
            raise SliceDataError(
                f"spec_hash mismatch: slice {slice_path.name} has {slice_hash}, stats {stats_dir} has {stats_hash}"
            )
        table = pq.read_table(slice_path)
        cols = table.column_names
        fixed = {TS, MID_TICKS, *EXEC_COLUMNS}
        missing = [c for c in (TS, MID_TICKS, *EXEC_COLUMNS) if c not in cols]
        if missing:
            raise SliceDataError(f"slice {slice_path} lacks columns {missing}")
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
        # The step reads Python lists (fast scalar access) and one float32 feature block.
        self._ts_l: list[int] = ts.tolist()
        self._mid_l: list[float] = mid.tolist()
        self._mark_l: list[float] = (mid * self.instrument.tick_size).tolist()
        self._bid_l: list[int] = bid.tolist()
        self._ask_l: list[int] = ask.tolist()
        self._buy_hi_l: list[int] = col(BUY_HI_TICKS, np.int64).tolist()
        self._sell_lo_l: list[int] = col(SELL_LO_TICKS, np.int64).tolist()
        norm = stats.normalize(raw, self.config.obs_clip)
        self._norm32 = np.ascontiguousarray(norm, dtype=np.float32)
        return ts

    # ------------------------------------------------------------------ curriculum
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
        return self._pos

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
        if full:
            self._budget = None
            self._t = min(max(int(opts.get("start", first)), first), last)
            self._flatten_at_end = bool(opts.get("flatten_at_end", True))
        else:
            if cfg.std_steps_per_episode > 0:
                drawn = round(
                    self.np_random.normal(cfg.mean_steps_per_episode, cfg.std_steps_per_episode)
                )
                self._budget = max(cfg.min_steps_per_episode, int(drawn))
            else:
                self._budget = cfg.mean_steps_per_episode
            if "start" in opts:
                self._t = min(max(int(opts["start"]), first), last)
            elif cfg.random_start:
                hi = max(first, self.n_rows - 1 - self._budget * cfg.step_skip)
                self._t = int(self.np_random.integers(first, hi + 1))
            else:
                self._t = first
            self._flatten_at_end = bool(opts.get("flatten_at_end", False))
        self._steps = 0
        self._bid = 0
        self._ask = 0
        now = self._ts_l[self._t]
        self._pos = open_account(cfg.initial_equity_xbt, now)
        if cfg.random_initial_position and not full:
            self._pos = self._random_position(now)
        self._summary = summarize(self._pos, self.instrument)
        obs, upnl = self._observe()
        return obs, self._info((), dict(ZERO_TERMS), upnl)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        """Apply `action` at the close of the current bar, advance `step_skip` bars."""
        a = int(action)
        t = self._t
        if a:
            if a == TOGGLE_LONG:
                if self._bid:
                    self._bid = 0
                elif can_fill(self._pos, LONG, self._stake, self._cap):
                    self._bid = self._bid_l[t]
            elif a == TOGGLE_SHORT:
                if self._ask:
                    self._ask = 0
                elif can_fill(self._pos, SHORT, self._stake, self._cap):
                    self._ask = self._ask_l[t]
            else:
                raise ValueError(f"action must be 0, 1 or 2, got {action!r}")
        end = t + self._skip
        if end > self._last:
            end = self._last
        before = self._pos
        closed: list[ClosedTrade] = []
        if self._bid or self._ask or self._funding:
            self._advance(t, end, closed)
        self._t = end
        self._steps += 1
        terminated = end == self._last
        truncated = (not terminated) and self._budget is not None and self._steps >= self._budget
        if terminated and self._flatten_at_end and self._pos.lots:
            closed.extend(self._flatten(self._ts_l[end]))
            self._bid = self._ask = 0
        pos = self._pos
        s = self._summary
        if pos is not before:
            s = self._summary = summarize(pos, self.instrument)
        # observation (inlined _observe for speed: this is the hot path)
        mark = self._mark_l[end]
        upnl = s.unrealized(mark)
        state = management_values(
            s,
            pos.flat_since_ns,
            self._ts_l[end],
            mark,
            self._bid != 0,
            self._ask != 0,
            self.limits,
            upnl,
        )
        obs = encode_observation(self._norm32[end - self._w + 1 : end + 1], state, validate=False)
        base = s.entry_value
        if pos is before:
            realized = fees = funding = 0.0
        else:
            realized = pos.realized_pnl - before.realized_pnl
            fees = pos.fees - before.fees
            funding = pos.funding - before.funding
        terms = reward_terms(
            self._reward_cfg,
            balance=before.balance,
            exposure=s.exposure,
            unrealized_return=upnl / base if base > 0.0 else 0.0,
            realized_pnl=realized,
            fees=fees,
            funding=funding,
            avg_open_hours=state[4],
            hours_since_close=state[6],
            episode_end=terminated or truncated,
            scale=self.punishment_scale,
        )
        return obs, terms["total"], terminated, truncated, self._info(closed, terms, upnl)

    # ------------------------------------------------------------------ internals
    def _advance(self, t: int, end: int, closed: list[ClosedTrade]) -> None:
        """Bars t+1..end: fills against each bar's prints and book, funding, rolling."""
        touch = self._touch
        for k in range(t + 1, end + 1):
            p = self._bid
            if p:
                lo = self._sell_lo_l[k]
                if (lo > 0 and (lo <= p if touch else lo < p)) or self._ask_l[k] <= p:
                    closed.extend(self._fill(LONG, p, self._ts_l[k]))
                    self._bid = 0
            p = self._ask
            if p:
                hi = self._buy_hi_l[k]
                if (hi > 0 and (hi >= p if touch else hi > p)) or self._bid_l[k] >= p:
                    closed.extend(self._fill(SHORT, p, self._ts_l[k]))
                    self._ask = 0
            if self._funding and self._funding_due[k]:
                self._pos, _ = apply_funding(
                    self._pos, self.config.funding_rate, self._mid_l[k], self.instrument
                )
            if self._roll:
                if self._bid:
                    self._bid = self._bid_l[k]
                if self._ask:
                    self._ask = self._ask_l[k]

    def _fill(
        self, side: int, price: int, ts: int, stake: float | None = None, liquidity: str = "maker"
    ) -> tuple[ClosedTrade, ...]:
        """Fill one order of `stake` (default: the config's stake) unless the cap forbids it."""
        stake = self._stake if stake is None else stake
        if not can_fill(self._pos, side, stake, self._cap):
            return ()
        self._pos, closed = apply_fill(
            self._pos,
            side,
            price,
            ts,
            self.instrument,
            stake,
            self._cap,
            "taker" if liquidity == "taker" else "maker",
        )
        return closed

    def _flatten(self, ts: int) -> tuple[ClosedTrade, ...]:
        """Close every open lot at the touch as a taker (longs sell at the bid)."""
        side = -self._pos.side
        price = self._bid_l[self._t] if side == SHORT else self._ask_l[self._t]
        return self._fill(side, price, ts, self._pos.exposure, "taker")

    def _random_position(self, now: int) -> Position:
        """1..cap lots on a random side at the current touch, aged uniformly up to
        `initial_position_max_hours`, fee-free (the agent inherits risk, not a fee bill)."""
        cfg = self.config
        cap = int(cfg.max_exposure / cfg.stake_fraction + 1e-9)
        if cap < 1:
            return self._pos
        side = LONG if self.np_random.random() < 0.5 else SHORT
        n = int(self.np_random.integers(1, cap + 1))
        price = self._bid_l[self._t] if side == LONG else self._ask_l[self._t]
        px = price * self.instrument.tick_size
        span = cfg.initial_position_max_hours * NS_PER_HOUR
        ages = np.sort(self.np_random.uniform(0.0, span, size=n))[::-1]
        c = contracts_for(cfg.stake_fraction, self._pos.balance, px, self.instrument)
        lots = tuple(Lot(side, price, now - int(age), cfg.stake_fraction, c, 0.0) for age in ages)
        if side == LONG:
            return replace(self._pos, longs=lots)
        return replace(self._pos, shorts=lots)

    def _observe(self) -> tuple[np.ndarray, float]:
        t = self._t
        mark = self._mark_l[t]
        upnl = self._summary.unrealized(mark)
        state = management_values(
            self._summary,
            self._pos.flat_since_ns,
            self._ts_l[t],
            mark,
            self._bid != 0,
            self._ask != 0,
            self.limits,
            upnl,
        )
        return encode_observation(
            self._norm32[t - self._w + 1 : t + 1], state, validate=False
        ), upnl

    def _info(self, closed: Any, terms: dict[str, float], upnl: float) -> StepInfo:
        pos = self._pos
        s = self._summary
        eq = pos.balance + upnl
        return StepInfo(
            {
                "ts": self._ts_l[self._t],
                "bar": self._t,
                "equity": eq,
                "balance": pos.balance,
                "pnl": eq - self._equity0,
                "realized_pnl": pos.realized_pnl,
                "unrealized_pnl": upnl,
                "pnl_without_fees": pos.realized_pnl + upnl,
                "fees": pos.fees,
                "funding": pos.funding,
                "position_size": s.side * min(s.exposure / self._cap, 1.0),  # as in the state
                "exposure": s.exposure,
                "side": s.side,
                "long_order": self._bid,
                "short_order": self._ask,
                "trades": [c.as_dict() for c in closed] if closed else [],
                "reward_terms": terms,
                "punishment_scale": self.punishment_scale,
            }
        )
