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

`info` on every step: ts, bar, equity, balance, pnl, realized_pnl, unrealized_pnl,
pnl_without_fees, fees, funding, position_size, exposure, side, long_order, short_order,
trades (closed in this step, as dicts), reward_terms, punishment_scale.
"""

from __future__ import annotations

import json
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
    StateLimits,
    apply_fill,
    apply_funding,
    can_fill,
    contracts_for,
    management_state,
    open_account,
    unrealized_pnl,
    unrealized_return,
)
from envs.rewards import punishment_scale, reward_terms

HOLD, TOGGLE_LONG, TOGGLE_SHORT = 0, 1, 2


class SliceDataError(ValueError):
    """A slice or stats directory that the env cannot use (named in the message)."""


def _load_normalizer(stats_dir: Path) -> tuple[list[str], Any, str | None]:
    """(feature names, normalize(x, clip) callable, spec_hash) of a frozen-stats dir.

    Uses `features.stats.FrozenStats` when it exists, else reads the fixed file format
    (mean.npy, sigma.npy, stats.json) directly."""
    meta_path = stats_dir / "stats.json"
    if not meta_path.exists():
        raise SliceDataError(f"no stats.json in {stats_dir}")
    meta = json.loads(meta_path.read_text())
    names = list(meta["feature_names"])
    try:
        from features.stats import FrozenStats
    except ImportError:
        FrozenStats = None  # noqa: N806
    if FrozenStats is not None:
        stats = FrozenStats.load(stats_dir)
        return names, stats.normalize, meta.get("spec_hash")
    mean = np.load(stats_dir / "mean.npy", allow_pickle=False).astype(np.float64)
    sigma = np.load(stats_dir / "sigma.npy", allow_pickle=False).astype(np.float64)
    if mean.shape != (len(names),) or sigma.shape != (len(names),):
        raise SliceDataError(
            f"{stats_dir}: mean {mean.shape} / sigma {sigma.shape} do not match {len(names)} features"
        )
    if not (np.isfinite(sigma).all() and (sigma > 0).all()):
        raise SliceDataError(f"{stats_dir}: sigma must be finite and > 0")

    def normalize(x: np.ndarray, clip: float) -> np.ndarray:
        return np.clip((x - mean) / sigma, -clip, clip)

    return names, normalize, meta.get("spec_hash")


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
        self.config = cfg
        self.slice_path = Path(slice_path)
        self.stats_dir = Path(stats_dir)
        self.instrument = cfg.instrument
        self.limits = StateLimits(
            max_exposure=cfg.max_exposure, hours_clip=cfg.hours_clip, pct_clip=cfg.pct_clip
        )
        self._load(self.slice_path, self.stats_dir)
        low, high = observation_bounds(self.n_features, cfg.window, cfg.obs_clip, self.limits)
        self.observation_space = gym.spaces.Box(low=low, high=high, dtype=np.float32)
        self.action_space = gym.spaces.Discrete(3)
        self.punishment_scale = punishment_scale(0, cfg.reward)
        # bar k settles funding when a funding time (multiple of the interval) lies in (ts[k-1], ts[k]]
        funding_ns = int(self.instrument.funding_interval_hours * NS_PER_HOUR)
        self._funding_due = np.zeros(self.n_rows, dtype=bool)
        if funding_ns > 0:
            self._funding_due[1:] = (self._ts[1:] - 1) // funding_ns != (
                self._ts[:-1] - 1
            ) // funding_ns
        self._pos: Position = open_account(cfg.initial_equity_xbt, int(self._ts[0]))
        self._t = cfg.window - 1
        self._bid = 0
        self._ask = 0
        self._steps = 0
        self._budget: int | None = None
        self._flatten_at_end = False

    # ------------------------------------------------------------------ data
    def _load(self, slice_path: Path, stats_dir: Path) -> None:
        if not slice_path.exists():
            raise SliceDataError(f"slice not found: {slice_path}")
        names, normalize, stats_hash = _load_normalizer(stats_dir)
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
        self._ts = col(TS, np.int64)
        self._mid = col(MID_TICKS, np.float64)
        self._bid_px = col(BEST_BID_TICKS, np.int64)
        self._ask_px = col(BEST_ASK_TICKS, np.int64)
        self._buy_hi = col(BUY_HI_TICKS, np.int64)
        self._sell_lo = col(SELL_LO_TICKS, np.int64)
        if not ((self._bid_px > 0) & (self._bid_px < self._ask_px)).all():
            bad = int(np.argmax(~((self._bid_px > 0) & (self._bid_px < self._ask_px))))
            raise SliceDataError(
                f"slice {slice_path} row {bad}: bad book bid={self._bid_px[bad]} ask={self._ask_px[bad]}"
            )
        if (np.diff(self._ts) <= 0).any():
            raise SliceDataError(f"slice {slice_path}: ts is not strictly increasing")
        self.feature_names = tuple(names)
        self.n_features = len(names)
        self.n_rows = n
        self._norm = np.ascontiguousarray(normalize(raw, self.config.obs_clip), dtype=np.float64)

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
        now = int(self._ts[self._t])
        self._pos = open_account(cfg.initial_equity_xbt, now)
        if cfg.random_initial_position and not full:
            self._pos = self._random_position(now)
        return self._observe(), self._info((), self._zero_terms())

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        a = int(action)
        if a not in (HOLD, TOGGLE_LONG, TOGGLE_SHORT):
            raise ValueError(f"action must be 0, 1 or 2, got {action!r}")
        cfg = self.config
        t = self._t
        if a == TOGGLE_LONG:
            if self._bid:
                self._bid = 0
            elif can_fill(self._pos, LONG, cfg.stake_fraction, cfg.max_exposure):
                self._bid = int(self._bid_px[t])
        elif a == TOGGLE_SHORT:
            if self._ask:
                self._ask = 0
            elif can_fill(self._pos, SHORT, cfg.stake_fraction, cfg.max_exposure):
                self._ask = int(self._ask_px[t])

        before = self._pos
        closed: list[ClosedTrade] = []
        end = min(t + cfg.step_skip, self.n_rows - 1)
        touch = cfg.fill_model == "touch"
        for k in range(t + 1, end + 1):
            if self._bid:
                p = self._bid
                lo = self._sell_lo[k]
                hit = (lo > 0 and (lo <= p if touch else lo < p)) or self._ask_px[k] <= p
                if hit:
                    closed.extend(self._fill(LONG, p, int(self._ts[k])))
                    self._bid = 0
            if self._ask:
                p = self._ask
                hi = self._buy_hi[k]
                hit = (hi > 0 and (hi >= p if touch else hi > p)) or self._bid_px[k] >= p
                if hit:
                    closed.extend(self._fill(SHORT, p, int(self._ts[k])))
                    self._ask = 0
            if cfg.funding and self._funding_due[k]:
                self._pos, _ = apply_funding(
                    self._pos, cfg.funding_rate, float(self._mid[k]), self.instrument
                )
            if cfg.roll_orders:
                if self._bid:
                    self._bid = int(self._bid_px[k])
                if self._ask:
                    self._ask = int(self._ask_px[k])
        self._t = end
        self._steps += 1
        terminated = end >= self.n_rows - 1
        truncated = (not terminated) and self._budget is not None and self._steps >= self._budget
        if terminated and self._flatten_at_end and self._pos.lots:
            closed.extend(self._flatten(int(self._ts[end])))
            self._bid = self._ask = 0

        pos = self._pos
        state = self._state()
        terms = reward_terms(
            cfg.reward,
            balance=before.balance,
            exposure=pos.exposure,
            unrealized_return=unrealized_return(pos, float(self._mid[end]), self.instrument),
            realized_pnl=pos.realized_pnl - before.realized_pnl,
            fees=pos.fees - before.fees,
            funding=pos.funding - before.funding,
            avg_open_hours=float(state[4]),
            hours_since_close=float(state[6]),
            episode_end=terminated or truncated,
            scale=self.punishment_scale,
        )
        obs = encode_observation(self._norm[end - cfg.window + 1 : end + 1], state)
        return obs, float(terms["total"]), terminated, truncated, self._info(closed, terms)

    # ------------------------------------------------------------------ internals
    def _fill(
        self, side: int, price: int, ts: int, stake: float | None = None, liquidity: str = "maker"
    ) -> tuple[ClosedTrade, ...]:
        """Fill one order of `stake` (default: the config's stake) unless the cap forbids it."""
        cfg = self.config
        stake = cfg.stake_fraction if stake is None else stake
        if not can_fill(self._pos, side, stake, cfg.max_exposure):
            return ()
        self._pos, closed = apply_fill(
            self._pos,
            side,
            price,
            ts,
            self.instrument,
            stake,
            cfg.max_exposure,
            "taker" if liquidity == "taker" else "maker",
        )
        return closed

    def _flatten(self, ts: int) -> tuple[ClosedTrade, ...]:
        """Close every open lot at the touch as a taker (longs sell at the bid)."""
        side = -self._pos.side
        price = int(self._bid_px[self._t] if side == SHORT else self._ask_px[self._t])
        return self._fill(side, price, ts, self._pos.exposure, "taker")

    def _random_position(self, now: int) -> Position:
        """1..cap lots on a random side at the current touch, aged up to 2 x
        open_position_hours, fee-free (the agent inherits risk, not a fee bill)."""
        cfg = self.config
        cap = int(cfg.max_exposure / cfg.stake_fraction + 1e-9)
        if cap < 1:
            return self._pos
        side = LONG if self.np_random.random() < 0.5 else SHORT
        n = int(self.np_random.integers(1, cap + 1))
        price = int(self._bid_px[self._t] if side == LONG else self._ask_px[self._t])
        px = price * self.instrument.tick_size
        span = 2.0 * cfg.reward.open_position_hours * NS_PER_HOUR
        ages = np.sort(self.np_random.uniform(0.0, span, size=n))[::-1]
        lots = tuple(
            Lot(
                side,
                price,
                now - int(age),
                cfg.stake_fraction,
                contracts_for(cfg.stake_fraction, self._pos.balance, px, self.instrument),
                0.0,
            )
            for age in ages
        )
        if side == LONG:
            return Position(
                balance=self._pos.balance, flat_since_ns=self._pos.flat_since_ns, longs=lots
            )
        return Position(
            balance=self._pos.balance, flat_since_ns=self._pos.flat_since_ns, shorts=lots
        )

    def _state(self) -> np.ndarray:
        t = self._t
        return management_state(
            self._pos,
            int(self._ts[t]),
            float(self._mid[t]),
            self.instrument,
            bool(self._bid),
            bool(self._ask),
            self.limits,
        )

    def _observe(self) -> np.ndarray:
        t = self._t
        return encode_observation(self._norm[t - self.config.window + 1 : t + 1], self._state())

    @staticmethod
    def _zero_terms() -> dict[str, float]:
        from envs.rewards import TERM_NAMES

        return {**dict.fromkeys(TERM_NAMES, 0.0), "total": 0.0}

    def _info(self, closed: Any, terms: dict[str, float]) -> dict[str, Any]:
        pos = self._pos
        t = self._t
        upnl = float(unrealized_pnl(pos, float(self._mid[t]), self.instrument))
        eq = pos.balance + upnl
        return {
            "ts": int(self._ts[t]),
            "bar": t,
            "equity": eq,
            "balance": pos.balance,
            "pnl": eq - self.config.initial_equity_xbt,
            "realized_pnl": pos.realized_pnl,
            "unrealized_pnl": upnl,
            "pnl_without_fees": pos.realized_pnl + upnl,
            "fees": pos.fees,
            "funding": pos.funding,
            "position_size": float(pos.signed_exposure / self.config.max_exposure),
            "exposure": float(pos.exposure),
            "side": pos.side,
            "long_order": self._bid,
            "short_order": self._ask,
            "trades": [c.as_dict() for c in closed],
            "reward_terms": terms,
            "punishment_scale": self.punishment_scale,
        }
