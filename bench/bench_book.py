"""Benchmark: canonical book deltas -> sampled top-N bars (book.sampler.sample_bars),
side by side with a straightforward pure-Python baseline (dict book, sorted top-N at
every bar close) in the same run, on the same synthetic deltas.

    NUMBA_NUM_THREADS=1 POLARS_MAX_THREADS=1 .venv/bin/python bench/bench_book.py [--hours 24] [--baseline-rows 300000]

Target (#3): >= 2 million deltas per second on one core.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("NUMBA_NUM_THREADS", "1")
os.environ.setdefault("POLARS_MAX_THREADS", "1")

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from book.sampler import sample_bars  # noqa: E402
from core.config.features import FeatureSpec  # noqa: E402
from core.config.market import SyntheticMarketConfig  # noqa: E402
from ingest.synthetic import generate_market  # noqa: E402


def baseline(book: pl.DataFrame, trades: pl.DataFrame, dt: int, depth: int) -> int:
    """Pure Python: dict per side, top-N by sorting at each bar close. Returns bars."""
    bids: dict[int, int] = {}
    asks: dict[int, int] = {}
    rows = book.select("ts_recv", "side", "price_ticks", "size", "is_snapshot").rows()
    t_close = None
    in_snap = False
    out = []
    for ts, side, px, sz, snap in rows:
        if t_close is None:
            t_close = -(-ts // dt) * dt
        while ts > t_close:
            b = sorted(bids.items(), reverse=True)[:depth]
            a = sorted(asks.items())[:depth]
            out.append((t_close, b, a))
            t_close += dt
        if snap and not in_snap:
            bids.clear()
            asks.clear()
        in_snap = snap
        d = bids if side > 0 else asks
        if sz:
            d[px] = sz
        else:
            d.pop(px, None)
    return len(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--days", type=int, default=3)
    ap.add_argument("--baseline-rows", type=int, default=300_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    cfg = SyntheticMarketConfig(days=args.days, day_hours=args.hours)
    parts = list(generate_market(cfg))
    book = pl.concat([b for _, b, _ in parts])
    trades = pl.concat([t for _, _, t in parts])
    spec = FeatureSpec()
    sample_bars(book.head(1000), trades.head(10), spec)  # compile / load the numba cache
    times, cpus = [], []
    for _ in range(args.repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        bars = sample_bars(book, trades, spec)
        times.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    best, cpu = min(times), min(cpus)
    n = book.height
    print(f"load average at start: {os.getloadavg()[0]:.1f}")
    print(
        f"chappie sample_bars: {n:,} deltas + {trades.height:,} trades -> {bars.height:,} bars "
        f"(depth {spec.depth}): wall {best:.3f} s = {n / best / 1e6:.2f} M deltas/s; "
        f"CPU {cpu:.3f} s = {n / cpu / 1e6:.2f} M deltas/s per core (best of {args.repeat})"
    )
    sub = book.head(args.baseline_rows)
    t0, c0 = time.perf_counter(), time.process_time()
    nb = baseline(sub, trades, spec.interval_ns, spec.depth)
    tb, cb = time.perf_counter() - t0, time.process_time() - c0
    print(
        f"pure-Python baseline: {sub.height:,} deltas -> {nb:,} bars: wall {tb:.3f} s = "
        f"{sub.height / tb / 1e6:.3f} M deltas/s; CPU {sub.height / cb / 1e6:.3f} M deltas/s"
    )
    print(f"speed-up (CPU): {(n / cpu) / (sub.height / cb):.1f}x")
    from bench.bench_ingest import machine, write_section

    body = "\n".join(
        [
            "### book deltas -> sampled top-10 bars (`book.sampler.sample_bars`)",
            "",
            f"{machine()}; `NUMBA_NUM_THREADS=1 POLARS_MAX_THREADS=1`; best of {args.repeat}; synthetic market, {args.days} days x {args.hours:g} h; 1 s bars. Deltas/s of process CPU time, wall clock beside it.",
            "",
            "| implementation | deltas | bars | M deltas/s (CPU) | M deltas/s (wall) | vs baseline (CPU) |",
            "|---|---:|---:|---:|---:|---:|",
            f"| chappie numba book + resumable sampler kernel | {n:,} | {bars.height:,} | {n / cpu / 1e6:.2f} | {n / best / 1e6:.2f} | {(n / cpu) / (sub.height / cb):.1f}x |",
            f"| pure-Python dict book, sorted top-10 per bar | {sub.height:,} | {nb:,} | {sub.height / cb / 1e6:.3f} | {sub.height / tb / 1e6:.3f} | 1.0x |",
            "",
            f"Target (>= 2 M deltas/s on one core): {'met' if n / cpu >= 2e6 else 'NOT met'} (CPU time; one thread).",
            "",
            f"Command: `.venv/bin/python -m bench.bench_book --days {args.days} --hours {args.hours:g}`",
        ]
    )
    write_section("book", body)
    assert np.all(np.diff(bars["ts"].to_numpy()) == spec.interval_ns)


if __name__ == "__main__":
    main()
