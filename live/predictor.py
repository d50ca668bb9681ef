"""Observation rebuilding and the champion's action, one bar at a time.

Orchestration of pure parts: the shared sampler (`features.sampler.BarSampler`, which holds
the one order book), the streaming features (`features.stream.FeatureStream`, bit-equal to
the batch), the frozen stats (`normalize(x, clip)`) and the one encoder
(`envs.observation.encode_observation`). No I/O, no clock: times are given.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from book.sampler import BarSampler
from core import schema
from core.config.features import FeatureSpec
from core.instrument import InstrumentSpec
from envs.broker import BrokerAccount, BrokerRules
from envs.observation import encode_observation
from envs.position import (
    LONG,
    SHORT,
    StateLimits,
    apply_fill,
    can_fill,
    management_state,
    open_account,
)
from features.stream import FeatureStream
from live.decode import Decoded


class Normalizer(Protocol):
    def normalize(self, x: np.ndarray, clip: float) -> np.ndarray: ...


class Policy(Protocol):
    def predict(self, obs: np.ndarray) -> int: ...


@dataclass
class BarUpdate:
    """One closed bar: its raw features, and the normalised row when stats are loaded."""

    ts: int
    bar: dict[str, int | bool]  # the closed bar: column -> int, book_ok a bool
    features: np.ndarray
    warmup: bool
    book_ok: bool
    mid_ticks: float
    norm_row: np.ndarray | None

    @property
    def finite(self) -> bool:
        row = self.norm_row if self.norm_row is not None else self.features
        return bool(np.isfinite(row).all())


class ObservationBuilder:
    """Canonical events in, closed bars with features and the observation window out."""

    def __init__(self, spec: FeatureSpec, stats: Normalizer | None, obs_clip: float) -> None:
        self.spec = spec
        self.stats = stats
        self.obs_clip = float(obs_clip)
        self.reset()

    def reset(self) -> None:
        """Start over (reconnect, desync): a new sampler, a new feature stream, an empty window."""
        self.sampler = BarSampler(self.spec)
        self.stream = FeatureStream(self.spec)
        self.window: deque[np.ndarray] = deque(maxlen=self.spec.window)
        self.bars = 0

    def on_decoded(self, ts_recv: int, d: Decoded) -> None:
        """Feed one decoded message (all rows share `ts_recv`)."""
        for side, px, size, _ts_event in d.trades:
            self.sampler.on_trade(ts_recv, side, px, size)
        if d.book:
            sides = [r[0] for r in d.book]
            prices = [r[1] for r in d.book]
            sizes = [r[2] for r in d.book]
            self.sampler.on_message(ts_recv, sides, prices, sizes, d.is_snapshot)

    def advance(self, now_ns: int) -> Iterator[BarUpdate]:
        """Close every bar with close time <= now_ns (all events up to now_ns were fed).

        A generator: each bar enters the window only when the consumer asks for it, so a
        decision on bar k never sees bar k+1 even when several bars close at once."""
        for bar in self.sampler.advance(now_ns):
            feats = self.stream.update(bar)
            norm = None
            if self.stats is not None:
                norm = self.stats.normalize(feats, self.obs_clip)
                self.window.append(norm)
            else:
                self.window.append(feats)
            self.bars += 1
            yield BarUpdate(
                ts=int(bar[schema.TS]),
                bar=bar,
                features=feats,
                warmup=bool(self.stream.warmup),
                book_ok=bool(bar[schema.BOOK_OK]),
                mid_ticks=float(self.stream.mid_ticks),
                norm_row=norm,
            )

    def observation(self, state: np.ndarray) -> np.ndarray:
        """The encoded observation of the current window (requires stats and a full window)."""
        if self.stats is None:
            raise ValueError("no frozen stats: an observation needs the model's stats")
        if len(self.window) < self.spec.window:
            raise ValueError(f"window holds {len(self.window)} of {self.spec.window} rows")
        return encode_observation(np.stack(self.window), state)


def warm_up_kernels(spec: FeatureSpec) -> None:
    """Compile the numba kernels a live loop calls before the market clock starts: a first
    compile takes seconds (no cache on a fresh machine), and a live loop must not spend
    them in its first bar. Runs a two-level book and one trade through a throwaway
    builder (the sampler), then a maker fill opened and closed on a throwaway account
    (the position kernels trade mode calls and the state), and a resting buy and sell
    filled on a throwaway paper account (the broker's kernels, `envs.broker`)."""
    b = ObservationBuilder(spec, None, obs_clip=float("inf"))  # no stats: nothing is clipped
    dt = spec.interval_ns
    b.on_decoded(dt, Decoded(book=[(1, 100, 1), (-1, 101, 1)], is_snapshot=True))
    b.on_decoded(dt + 1, Decoded(book=[(1, 100, 2)]))
    b.on_decoded(dt + 2, Decoded(trades=[(1, 101, 1, dt + 2)]))
    for _ in b.advance(4 * dt):
        pass
    inst, limits = InstrumentSpec(), StateLimits()
    # XBTUSD-like prices (80,000 ticks = 40,000 USD): a 10 % stake is thousands of
    # contracts, whole lots, so every order is placed and filled (a price of 100 ticks
    # would round the stake to 0 lots and compile nothing)
    bid, ask = 80_000, 80_001
    pos = open_account(1.0, 0)
    for side, px in ((LONG, bid), (SHORT, ask)):  # open a lot, then close it
        if can_fill(pos, side, 0.1, 1.0):
            pos, _ = apply_fill(pos, side, px, dt, inst, 0.1, 1.0)
        management_state(pos, 2 * dt, bid + 0.5, inst, True, False, limits)
    paper = BrokerAccount(BrokerRules(), inst, open_account(1.0, 0))
    paper.state(dt, bid + 0.5)
    paper.act(1, bid, ask)  # a buy rests at the bid
    paper.on_bar(2 * dt, bid - 1, bid, 0, bid - 1)  # traded through: filled
    paper.act(2, bid, ask)  # a sell rests at the ask
    paper.on_bar(3 * dt, ask, ask + 1, ask + 1, 0)  # traded through: the lot closes


class Predictor:
    """The champion's policy, or none (observe-only: the action is None).

    `action_mode` is the model's `EnvConfig.action_mode` (its env_spec.json; absent means
    "toggle"): it says how many actions the policy has and what they mean
    (`core.schema.ACTION_NAMES`)."""

    def __init__(
        self,
        policy: Policy | None,
        version: str | None,
        reason: str = "",
        action_mode: str = "toggle",
    ) -> None:
        if action_mode not in schema.ACTION_NAMES:
            raise ValueError(
                f"action_mode {action_mode!r}: expected one of {sorted(schema.ACTION_NAMES)}"
            )
        self.policy = policy
        self.version = version
        self.reason = reason
        self.action_mode = action_mode

    @property
    def action_names(self) -> tuple[str, ...]:
        return schema.ACTION_NAMES[self.action_mode]

    def name(self, action: int | None) -> str | None:
        """The action's name in this model's mode (None for no action)."""
        return None if action is None else self.action_names[action]

    def act(self, obs: np.ndarray | None) -> int | None:
        if self.policy is None or obs is None:
            return None
        action = int(self.policy.predict(obs))
        n = len(self.action_names)
        if not 0 <= action < n:
            raise ValueError(
                f"policy returned action {action}, expected 0..{n - 1} (action_mode "
                f"{self.action_mode!r})"
            )
        return action
