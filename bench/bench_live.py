"""Live loop speed: message -> decision latency, and replay speed vs real time.

    python -m bench.bench_live [--hours 1.0] [--repeats 3]

1. Message -> decision latency (target p99 <= 1 ms). The synthetic market (default
   FeatureSpec: 1 s bars, window 16, 26 features) is fed through `LiveSession` exactly as
   the loop does: every message through `on_message`, and the ticker's `on_tick` at every
   bar close. A call that produced a decision is timed from its start to the decision
   record (book + sampler + streaming features + frozen stats + encoder + a 64x64 numpy
   policy). Baseline in the same run: the straightforward alternative, recomputing the
   decision's features with the batch pipeline (`sample_bars` + `compute_features` over
   the events of the look-back) at every bar close.
2. Replay speed (target >= 50x real time): the real capture's XBTUSD stream served by the
   replay server at full speed over a websocket on 127.0.0.1, received by the feed and
   processed by `LiveSession`; side by side with the same messages fed in-process.

Writes bench/RESULTS_live.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from book.sampler import sample_bars  # noqa: E402
from core import schema as S  # noqa: E402
from core.config.features import FeatureSpec  # noqa: E402
from core.config.market import SyntheticMarketConfig  # noqa: E402
from core.instrument import XBTUSD  # noqa: E402
from envs.observation import observation_size  # noqa: E402
from features.compute import compute_features  # noqa: E402
from features.stats import FrozenStats  # noqa: E402
from ingest.synthetic import generate_market  # noqa: E402
from live.feed import BitmexFeed, FeedMessage  # noqa: E402
from live.loop import LiveSession  # noqa: E402
from live.predictor import Predictor  # noqa: E402
from live.recording import load_recording  # noqa: E402
from registry.policy import NumpyPolicy, PolicyArchitecture  # noqa: E402
from sim.replay_server import ReplayServer, canonical_to_messages  # noqa: E402

HERE = Path(__file__).resolve().parent
CAPTURE = HERE.parent.parent / "shared" / "data" / "bitmex_ws_XBTUSD_2021-07-22.txt"


def _policy(spec: FeatureSpec) -> NumpyPolicy:
    rng = np.random.default_rng(0)
    d = observation_size(len(spec.names), spec.window)
    arch = PolicyArchitecture(obs_dim=d, hidden=(64, 64), n_actions=3, activation="tanh")
    shapes = arch.layer_shapes
    arrays = {}
    for i, (o, n) in enumerate(shapes):
        arrays[f"w{i}"] = rng.normal(0, 1 / np.sqrt(n), (o, n)).astype(np.float32)
        arrays[f"b{i}"] = np.zeros(o, np.float32)
    return NumpyPolicy(arch, arrays)


def _market(hours: float) -> tuple[pl.DataFrame, pl.DataFrame, list]:
    cfg = SyntheticMarketConfig(seed=7, days=1, day_hours=hours)
    _day, book, trades = next(iter(generate_market(cfg)))
    return book, trades, canonical_to_messages(book, trades, "XBTUSD", XBTUSD.tick_size)


def _stats(book: pl.DataFrame, trades: pl.DataFrame, spec: FeatureSpec) -> FrozenStats:
    f = compute_features(sample_bars(book, trades, spec).lazy(), spec).collect()
    x = f.filter(~pl.col(S.WARMUP)).select(spec.names).to_numpy()
    x = x[np.isfinite(x).all(axis=1)]
    return FrozenStats.fit(x, spec.names, spec.spec_hash, spec.sigma_floor, [])


def latency(hours: float, clock: str = "cpu") -> dict[str, float]:
    """Per-call times of the calls that produced a decision. `clock="cpu"`: thread CPU time
    (robust to other jobs on a shared machine); "wall": perf_counter."""
    now = time.thread_time_ns if clock == "cpu" else time.perf_counter_ns
    spec = FeatureSpec()
    book, trades, messages = _market(hours)
    stats = _stats(book, trades, spec)
    warm = LiveSession(spec, stats, Predictor(_policy(spec), "bench"), max_skew_s=None)
    for ts, msg in messages[:3000]:  # JIT-compile the numba kernels before timing
        warm.on_message(ts, msg)
    session = LiveSession(spec, stats, Predictor(_policy(spec), "bench"), max_skew_s=None)
    dt = spec.interval_ns
    per_decision: list[float] = []
    per_message: list[float] = []
    next_close = (messages[0][0] // dt + 1) * dt
    for ts, msg in messages:
        while next_close < ts:  # the ticker closes the bar at its boundary
            t0 = now()
            out = session.on_tick(next_close)
            el = now() - t0
            if out:
                per_decision.append(el / len(out))
            next_close += dt
        t0 = now()
        out = session.on_message(ts, msg)
        el = now() - t0
        per_message.append(el)
        if out:
            per_decision.append(el / len(out))
    d = np.array(per_decision) / 1e3
    m = np.array(per_message) / 1e3
    return {
        "decisions": len(d),
        "messages": len(m),
        "p50_us": float(np.percentile(d, 50)),
        "p99_us": float(np.percentile(d, 99)),
        "max_us": float(d.max()),
        "msg_p50_us": float(np.percentile(m, 50)),
        "msg_p99_us": float(np.percentile(m, 99)),
    }


def latency_baseline(hours: float, n_decisions: int = 200) -> dict[str, float]:
    """Recompute the decision bar's features with the batch pipeline over its look-back."""
    spec = FeatureSpec()
    book, trades, _ = _market(hours)
    stats = _stats(book, trades, spec)
    policy = _policy(spec)
    bars = sample_bars(book, trades, spec)
    closes = bars[S.TS].to_list()[spec.lookback_bars + spec.window + 5 :][:n_decisions]
    span = (spec.lookback_bars + spec.window + 2) * spec.interval_ns
    snap_end = int(book.filter(pl.col(S.IS_SNAPSHOT))[S.TS_RECV].max())
    times = []
    for t in closes:
        t0 = time.perf_counter_ns()
        # the book state needs every delta since the snapshot; trades only the look-back
        b = book.filter(pl.col(S.TS_RECV) <= t)
        tr = trades.filter((pl.col(S.TS_RECV) <= t) & (pl.col(S.TS_RECV) > min(t - span, snap_end)))
        f = compute_features(
            sample_bars(b, tr, spec).tail(spec.lookback_bars + spec.window).lazy(), spec
        ).collect()
        x = stats.normalize(f.select(spec.names).to_numpy()[-spec.window :], 10.0)
        obs = np.concatenate([x.reshape(-1), np.zeros(7)]).astype(np.float32)
        policy.predict(np.nan_to_num(obs))
        times.append(time.perf_counter_ns() - t0)
    d = np.array(times) / 1e3
    return {
        "decisions": len(d),
        "p50_us": float(np.percentile(d, 50)),
        "p99_us": float(np.percentile(d, 99)),
    }


def _xbt_span_s(messages: list) -> float:
    ts = [
        t
        for t, m in messages
        if m.get("table") in ("orderBookL2", "trade")
        and any(r.get("symbol") == "XBTUSD" for r in m.get("data", []) if isinstance(r, dict))
    ]
    return (max(ts) - min(ts)) / 1e9


def replay_socket(messages: list) -> tuple[float, int]:
    spec = FeatureSpec(windows_s=(2, 5), return_horizons_s=(1, 2), window=4)

    async def main() -> tuple[float, int]:
        async with ReplayServer(messages, speed=0) as srv:
            n_expected = sum(
                1
                for e in srv.timeline
                if e.symbol == "XBTUSD" and e.table in ("orderBookL2", "trade")
            )
            session = LiveSession(
                spec, None, Predictor(None, None, ""), max_skew_s=None, stale_after_s=1e9
            )
            feed = BitmexFeed(srv.url, "XBTUSD", tables=("orderBookL2", "trade"))
            n = 0
            t0 = 0.0
            async for ev in feed.events():
                if not isinstance(ev, FeedMessage):
                    t0 = time.perf_counter()
                    continue
                session.on_message(ev.ts_recv, ev.msg)
                if "table" in ev.msg:
                    n += 1
                    if n >= n_expected:
                        break
            el = time.perf_counter() - t0
            await feed.close()
            return el, n

    return asyncio.run(main())


def replay_inprocess(messages: list) -> float:
    spec = FeatureSpec(windows_s=(2, 5), return_horizons_s=(1, 2), window=4)
    session = LiveSession(spec, None, Predictor(None, None, ""), max_skew_s=None, stale_after_s=1e9)
    t0 = time.perf_counter()
    for ts, msg in messages:
        session.on_message(ts, msg)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--hours", type=float, default=1.0, help="hours of synthetic market for the latency run"
    )
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    lat = min((latency(args.hours, "cpu") for _ in range(args.repeats)), key=lambda r: r["p99_us"])
    wall = min(
        (latency(args.hours, "wall") for _ in range(args.repeats)), key=lambda r: r["p99_us"]
    )
    base = latency_baseline(args.hours)
    messages = load_recording(CAPTURE)
    span = _xbt_span_s(messages)
    sock = min(replay_socket(messages)[0] for _ in range(args.repeats))
    inproc = min(replay_inprocess(messages) for _ in range(args.repeats))

    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lat_ok = "met" if lat["p99_us"] <= 1000 else "NOT met"
    rep_ok = "met" if span / sock >= 50 else "NOT met"
    text = f"""## live: message -> decision latency and replay speed

Machine `{platform.node()}` ({platform.machine()}, {os.cpu_count()} cores, shared with other jobs), Python {sys.version.split()[0]}, {now}. Best of {args.repeats} runs (by p99).

**Message -> decision** ({args.hours:g} h of the synthetic market, default FeatureSpec: 1 s bars, {len(FeatureSpec().names)} features, window 16; numpy policy 64x64; the loop's own path: decoder, one order book + sampler, streaming features, frozen stats, encoder, policy; bar closes by the ticker as live):

| path | decisions | p50 | p99 |
|---|---:|---:|---:|
| chappie LiveSession (streaming), thread CPU time | {lat["decisions"]:,} | {lat["p50_us"]:.0f} µs | {lat["p99_us"]:.0f} µs |
| chappie LiveSession (streaming), wall clock | {wall["decisions"]:,} | {wall["p50_us"]:.0f} µs | {wall["p99_us"]:.0f} µs |
| baseline: batch recompute of the look-back per decision, wall clock | {base["decisions"]:,} | {base["p50_us"]:.0f} µs | {base["p99_us"]:.0f} µs |

Per message (all {lat["messages"]:,} messages, most close no bar): p50 {lat["msg_p50_us"]:.0f} µs, p99 {lat["msg_p99_us"]:.0f} µs. Target p99 <= 1 ms: **{lat_ok}** (on thread CPU time; the wall-clock p99 includes
preemption by the other jobs sharing the 2 cores).

**Replay speed** (the real capture's XBTUSD stream, {span:.1f} s of market):

| path | wall time | x real time |
|---|---:|---:|
| replay server -> websocket on 127.0.0.1 -> feed -> LiveSession | {sock * 1e3:.0f} ms | {span / sock:,.0f}x |
| the same messages fed in-process (no socket) | {inproc * 1e3:.0f} ms | {span / inproc:,.0f}x |

Target >= 50x real time: **{rep_ok}**.

Command: `.venv/bin/python -m bench.bench_live --hours {args.hours:g} --repeats {args.repeats}`
"""
    (HERE / "RESULTS_live.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
