"""Seeded fault campaign: the live session in trade mode against the stand-in BitMEX.

One cycle is one 1 s bar of a seeded stand-in market (`tests.live.market`): its messages go
through `LiveSession.on_message`, the clock ticks through `LiveSession.on_timer` (exactly
what `live.loop.run_live` calls, minus the socket), a random policy toggles orders, the
exchange fills some of them (a toggle-mode policy by default; `action_mode="target"` draws
the resting orders wanted instead), and the fake exchange (`sim.fake_exchange`, real HTTP on
127.0.0.1) answers with seeded REST faults: 503 after or before a create commits, creates
answered after the client's timeout (committed at once or queued and committed late),
lookups and polls answered 503 or late, cancels answered 503 after or before they took
effect, amends, positions and `cancelAllAfter` answered 503. Feed faults start at random:
silence (stale data; a long one replaces the socket), clock skew (+45 s exchange times), a
desync (an update of an unknown level) and malformed messages.

Measured after every cycle, from the exchange's side: own orders live on one side (> 1 is
a duplicate), own orders live that the manager does not track (untracked), exceptions that
escaped the session (a loop exit), `cancelAllAfter` re-armed while the harness knows the
data is bad, and how long an own order rested while the data was bad.

Run (figures in RELIABILITY.md):
    OMP_NUM_THREADS=1 .venv/bin/python -m tests.live.fault_campaign --seeds 0 1 2 3 4 --cycles 200
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.clock import NS_PER_S
from live.loop import LiveSession
from live.orders import FatalTradingError, OrderManager
from live.predictor import Predictor
from sim.fake_exchange import FakeBitmexRest, FaultPlan
from tests.live.market import StandInMarket
from tests.live.support import (
    KEY,
    SECRET,
    SMALL_SPEC,
    ClipStats,
    SimClock,
    make_manager,
    trade_risk,
)

T0 = 1_626_912_000 * NS_PER_S  # 2021-07-22T00:00:00Z
SKEW_NS = 45 * NS_PER_S
FEED_DROP_AFTER_S = 9.5  # the feed replaces a silent socket after ping + pong timeout


@dataclass(frozen=True)
class CampaignConfig:
    seed: int = 0
    cycles: int = 200
    rest_fault_rate: float = 0.15  # each 503 fault, per request of its route
    late_answer_rate: float = 0.02  # answers after the client's timeout
    client_timeout_s: float = 0.1
    late_by_s: float = 0.15
    feed_fault_rate: float = 0.04  # chance per cycle that a feed fault starts
    fill_rate: float = 0.15  # chance per cycle that a live own order (part-)fills
    stale_after_s: float = 3.0
    max_skew_s: float = 5.0
    action_mode: str = "toggle"  # the policy's EnvConfig.action_mode


@dataclass
class CampaignResult:
    seed: int
    cycles: int = 0
    decisions: int = 0
    orders_sent: int = 0
    creates_committed: int = 0
    fills: int = 0
    rest_faults: dict[str, int] = field(default_factory=dict)
    feed_faults: dict[str, int] = field(default_factory=dict)
    duplicate_cycles: int = 0  # cycles ending with > 1 own live order on one side
    untracked_cycles: int = 0  # cycles ending with an own live order the manager does not track
    untracked_examples: list[str] = field(default_factory=list)
    loop_exits: int = 0  # exceptions that escaped on_message / on_timer
    exit_errors: list[str] = field(default_factory=list)
    fatal: str = ""
    dead_man_arms_while_bad: int = 0
    bad_data_rest_max_s: float = 0.0  # longest an own order rested once the data was known bad
    quotes_pulled: int = 0
    unknown_resolved: int = 0
    given_up: int = 0
    strays_cancelled: int = 0
    adopted: int = 0
    dropped_messages: int = 0
    desyncs: int = 0
    own_left_after_shutdown: int = 0
    own_left_after_dead_man: int = 0
    actions: dict[str, int] = field(default_factory=dict)  # decisions by action name
    wall_s: float = 0.0


class RandomPolicy:
    """Seeded actions. Toggle mode: hold 40 %, toggle long 30 %, toggle short 30 %. Target
    mode: the current target kept 40 % of bars, else a new one of none / bid / ask / both."""

    def __init__(self, seed: int, action_mode: str = "toggle") -> None:
        self.rng = np.random.default_rng(seed)
        self.action_mode = action_mode
        self.target = 0

    def predict(self, obs: np.ndarray) -> int:
        if self.action_mode == "target":
            if self.rng.random() >= 0.4:
                self.target = int(self.rng.integers(4))
            return self.target
        return int(self.rng.choice(3, p=(0.4, 0.3, 0.3)))


class _Stop(Exception):
    pass


class Campaign:
    """One seeded campaign (see module docstring)."""

    def __init__(
        self, cfg: CampaignConfig, workdir: Path, manager_cls: type[OrderManager] = OrderManager
    ) -> None:
        self.cfg = cfg
        self.manager_cls = manager_cls
        self.r = CampaignResult(seed=cfg.seed)
        self.sim = SimClock(T0 / NS_PER_S)
        plan = FaultPlan.uniform(cfg.seed, cfg.rest_fault_rate, cfg.late_answer_rate, cfg.late_by_s)
        self.fake = FakeBitmexRest(KEY, SECRET, faults=plan, now_s=self.sim)
        self.workdir = workdir
        self.market = StandInMarket(cfg.seed)
        self.rng = random.Random(cfg.seed + 1)
        self.feed_faults: Counter[str] = Counter()
        self.bad_from: float | None = None  # sim seconds since when the data is known bad
        self.bad_until = -1.0
        self.resting_since: float | None = None

    # ------------------------------------------------------------------ the harness's truth
    def _bad(self, t: float) -> bool:
        return self.bad_from is not None and self.bad_from <= t < self.bad_until

    def _own_open(self) -> list[dict[str, Any]]:
        return [o for o in self.fake.open_orders() if o["clOrdID"].startswith("chappie-")]

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """A session call as the loop makes it: an exception here would end run_live."""
        arms = self.fake.dead_man_calls
        try:
            out = fn(*args)
        except FatalTradingError as exc:
            self.r.fatal = str(exc)
            raise _Stop from exc
        except Exception as exc:  # noqa: BLE001 - counted: the figure the campaign measures
            self.r.loop_exits += 1
            self.r.exit_errors.append(f"{type(exc).__name__}: {exc}"[:200])
            out = None
        t = self.sim.t
        if self.fake.dead_man_calls > arms and self._bad(t):
            self.r.dead_man_arms_while_bad += 1
        if self._bad(t) and self._own_open():
            self.resting_since = t if self.resting_since is None else self.resting_since
            rested = round(t - self.resting_since, 3)
            self.r.bad_data_rest_max_s = max(self.r.bad_data_rest_max_s, rested)
        else:
            self.resting_since = None
        return out

    def _deliver(self, ts: int, msg: Any) -> None:
        self.sim.t = ts / NS_PER_S
        out = self._call(self.session.on_message, ts, msg)
        self.r.decisions += len(out or [])
        if self.session.pending_resubscribe:  # the feed resubscribes: fresh partials
            self.session.pending_resubscribe = False
            for p in self.market.partials():
                self._call(self.session.on_message, ts, p)
        self.r.decisions += len(self._call(self.session.on_timer, ts) or [])

    # ------------------------------------------------------------------ one run
    def run(self) -> CampaignResult:
        cfg = self.cfg
        t_wall = time.perf_counter()
        with self.fake:
            risk = trade_risk(
                max_position_contracts=100_000,
                max_orders_per_minute=1000,
                max_drawdown_xbt=100.0,
                stale_after_s=cfg.stale_after_s,
            )
            self.m = make_manager(
                self.fake.url,
                self.workdir / f"journal-{cfg.seed}.jsonl",
                session=f"camp{cfg.seed:04d}",
                timeout_s=cfg.client_timeout_s,
                wall=self.sim,  # api-expires in the exchange's (simulated) time
                risk=risk,
                mono=self.sim,
                sleep=lambda s: None,
                cls=self.manager_cls,
            )
            self.session = LiveSession(
                SMALL_SPEC,
                ClipStats(),
                Predictor(
                    RandomPolicy(cfg.seed, cfg.action_mode),
                    "campaign@v1",
                    action_mode=cfg.action_mode,
                ),
                max_skew_s=cfg.max_skew_s,
                stale_after_s=cfg.stale_after_s,
                orders=self.m,
                mode="trade",
            )
            with contextlib.suppress(_Stop):  # a fatal error: recorded, then shut down
                self._run_cycles()
            self._finish()
        self.r.wall_s = round(time.perf_counter() - t_wall, 2)
        return self.r

    def _run_cycles(self) -> None:
        cfg = self.cfg
        t = T0
        self.sim.t = t / NS_PER_S
        self._call(self.m.reconcile, t)
        self._call(self.m.refresh_dead_man)
        for p in self.market.partials():
            self._deliver(t, p)
        silence_end = skew_end = -1
        silence_s = 0
        for _ in range(cfg.cycles):
            now_s = t / NS_PER_S
            if t >= max(silence_end, skew_end) and self.rng.random() < cfg.feed_fault_rate:
                kind = self.rng.choice(("silence", "skew", "desync", "garbage"))
                self.feed_faults[kind] += 1
                if kind == "silence":
                    silence_s = self.rng.randint(4, 12)
                    silence_end = t + silence_s * NS_PER_S
                    # known bad once the staleness bound (plus one timer tick) has passed
                    self.bad_from = now_s + cfg.stale_after_s + 0.25
                    self.bad_until = silence_end / NS_PER_S
                elif kind == "skew":
                    skew_end = t + self.rng.randint(4, 8) * NS_PER_S
                    self.market.skew_ns = SKEW_NS
                    self.bad_from, self.bad_until = None, skew_end / NS_PER_S
                elif kind == "desync":
                    self._deliver(t + 1, self.market.desync())
                else:
                    for _ in range(self.rng.randint(1, 3)):
                        self._deliver(t + 1, self.market.garbage())
            if t < silence_end:
                for k in range(1, 5):  # the exchange is quiet: only the clock ticks
                    self.sim.t = (t + k * NS_PER_S // 5) / NS_PER_S
                    self._call(self.session.on_timer, t + k * NS_PER_S // 5)
                if t + NS_PER_S >= silence_end and silence_s > FEED_DROP_AFTER_S:
                    # a long silence: the feed replaced the socket, the new one sends partials
                    self._call(self.session.on_feed_status, "disconnected", "silent", t, False)
                    self._call(self.session.on_feed_status, "connected", "", t, True)
                    for p in self.market.partials():
                        self._deliver(t + NS_PER_S - 1, p)
            else:
                if t >= skew_end and self.market.skew_ns:
                    self.market.skew_ns = 0
                for ts, msg in self.market.bar(t):
                    if self.market.skew_ns and self.bad_from is None:
                        self.bad_from = ts / NS_PER_S  # the first skewed exchange time
                    self._deliver(ts, msg)
            t += NS_PER_S
            self.sim.t = t / NS_PER_S
            self.r.decisions += len(self._call(self.session.on_timer, t) or [])
            self._exchange_fills()
            self._check_cycle()
            self.r.cycles += 1

    def _exchange_fills(self) -> None:
        for o in self._own_open():
            filled = self.rng.random() < self.cfg.fill_rate and self.fake.fill(
                o["clOrdID"], self.rng.choice((None, 30))
            )
            self.r.fills += bool(filled)

    def _check_cycle(self) -> None:
        own = self._own_open()
        sides = Counter(o["side"] for o in own)
        if any(n > 1 for n in sides.values()):
            self.r.duplicate_cycles += 1
        tracked = {o.cl_ord_id for o in self.m.slots.values()}
        untracked = [o["clOrdID"] for o in own if o["clOrdID"] not in tracked]
        if untracked:
            self.r.untracked_cycles += 1
            if len(self.r.untracked_examples) < 5:
                self.r.untracked_examples.append(f"cycle {self.r.cycles}: {untracked}")

    def _finish(self) -> None:
        m = self.m
        m.shutdown(int(self.sim.t * NS_PER_S))  # with the faults still on
        m.journal.close()
        self.fake.faults = None
        self.r.own_left_after_shutdown = len(self._own_open())
        self.sim.t += m.dead_man_timeout_ms / 1000 + 1  # the exchange's switch, if left armed
        self.r.own_left_after_dead_man = len(self._own_open())
        self.r.orders_sent = m.orders_sent
        self.r.creates_committed = self.fake.creates_committed
        self.r.rest_faults = dict(sorted(self.fake.faults_injected.items()))
        self.r.feed_faults = dict(sorted(self.feed_faults.items()))
        self.r.quotes_pulled = self.session.quotes_pulled
        self.r.unknown_resolved = m.stats.unknown_resolved
        self.r.given_up = m.stats.given_up
        self.r.strays_cancelled = m.stats.strays_cancelled
        self.r.adopted = m.stats.adopted
        self.r.dropped_messages = sum(self.session.dropped.values())
        self.r.desyncs = self.session.desyncs
        self.r.actions = dict(sorted(self.session.actions.items()))


def run_campaign(
    cfg: CampaignConfig, workdir: Path, manager_cls: type[OrderManager] = OrderManager
) -> CampaignResult:
    """One seeded campaign; journals go to `workdir`."""
    return Campaign(cfg, workdir, manager_cls).run()


def totals(results: list[CampaignResult]) -> dict[str, Any]:
    """Sums over campaigns of the figures RELIABILITY.md reports."""
    keys = (
        "cycles",
        "decisions",
        "orders_sent",
        "fills",
        "duplicate_cycles",
        "untracked_cycles",
        "loop_exits",
        "dead_man_arms_while_bad",
        "quotes_pulled",
        "unknown_resolved",
        "given_up",
        "strays_cancelled",
        "dropped_messages",
        "desyncs",
        "own_left_after_shutdown",
        "own_left_after_dead_man",
    )
    out: dict[str, Any] = {k: sum(getattr(r, k) for r in results) for k in keys}
    rest: Counter[str] = Counter()
    feed: Counter[str] = Counter()
    for r in results:
        rest.update(r.rest_faults)
        feed.update(r.feed_faults)
    out["rest_faults"] = sum(rest.values())
    out["rest_faults_by_kind"] = dict(sorted(rest.items()))
    out["feed_faults_by_kind"] = dict(sorted(feed.items()))
    out["fatal_exits"] = sum(1 for r in results if r.fatal)
    out["bad_data_rest_max_s"] = max((r.bad_data_rest_max_s for r in results), default=0.0)
    out["wall_s"] = round(sum(r.wall_s for r in results), 1)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--cycles", type=int, default=200, help="cycles per seed")
    ap.add_argument("--rest-fault-rate", type=float, default=CampaignConfig.rest_fault_rate)
    ap.add_argument("--late-answer-rate", type=float, default=CampaignConfig.late_answer_rate)
    ap.add_argument("--action-mode", choices=("toggle", "target"), default="toggle")
    ap.add_argument("--json", type=Path, help="write every campaign's figures here")
    ap.add_argument("--verbose", action="store_true", help="log every retried REST error")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.verbose else logging.ERROR)
    results = []
    with tempfile.TemporaryDirectory(prefix="chappie-faults-") as tmp:
        for seed in args.seeds:
            cfg = CampaignConfig(
                seed=seed,
                cycles=args.cycles,
                rest_fault_rate=args.rest_fault_rate,
                late_answer_rate=args.late_answer_rate,
                action_mode=args.action_mode,
            )
            r = run_campaign(cfg, Path(tmp))
            results.append(r)
            print(
                f"seed {seed}: {r.cycles} cycles, {r.orders_sent} creates sent, "
                f"{sum(r.rest_faults.values())} REST faults, duplicates {r.duplicate_cycles}, "
                f"untracked {r.untracked_cycles}, loop exits {r.loop_exits}, "
                f"fatal {r.fatal or 'none'}, {r.wall_s} s",
                flush=True,
            )
    tot = totals(results)
    print(json.dumps(tot, indent=2))
    if args.json:
        args.json.write_text(
            json.dumps({"totals": tot, "campaigns": [asdict(r) for r in results]}, indent=2)
        )
    ok = (
        tot["duplicate_cycles"]
        == tot["untracked_cycles"]
        == tot["loop_exits"]
        == tot["fatal_exits"]
        == 0
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
