"""Benchmark: canonical book deltas -> sampled top-N bars (book.sampler.sample_bars),
side by side with a straightforward pure-Python baseline (dict book, sorted top-N at
every bar close) in the same run, on the same synthetic deltas.

    NUMBA_NUM_THREADS=1 POLARS_MAX_THREADS=1 .venv/bin/python bench/bench_book.py [--hours 24] [--baseline-rows 300000]

Target (#3): >= 2 million deltas per second on one core.

``--vs-hftbacktest`` (#19) instead replays one realistic tardis day (`bench.tardis_days`,
seed 7: ~18 M book rows, 1 M trades) side by side with hftbacktest's depth replay, each
a child process, interleaved (the order alternates each repeat), both sampling the top
10 levels of each side every second:
- chappie: the day as `chappie ingest tardis` stored it (read untimed), then
  `book.sampler.sample_bars` (book replay, 1 s bars with top-10 levels, OFI, trades);
- hftbacktest: the day as its `tardis.convert` wrote it (loaded untimed), then a
  `HashMapMarketDepthBacktest` (no orders; latency 0) that elapses 1 s at a time and
  reads the top 10 non-empty price levels of each side (`bid_qty_at_tick` walking away
  from the best tick) in a numba loop, as its examples do.
CPU = the child's process CPU time around the replay only (not the load; numba compiled
and loaded before, on a few rows). Both children also write the best bid/ask tick of
every bar, and the run reports how many of the common bar closes agree. Target (#19):
our CPU rate at least hftbacktest's (stretch: 10 M deltas/s on one core).

    .venv/bin/python -m bench.bench_book --vs-hftbacktest [--repeats 5]
        [--work /work/scratch/ingest-peer]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

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


#: hftbacktest's depth replay with top-10 sampling (run by the peer venv's python):
#: argv = npz, first bar close (ns), out .npy of best bid/ask ticks per bar
PEER_REPLAY = """
import json, sys, time
import numpy as np
from numba import njit
from hftbacktest import BacktestAsset, HashMapMarketDepthBacktest

DEPTH = 10
NS = 1_000_000_000


@njit
def replay(hbt, out):
    # top DEPTH non-empty levels of each side at every 1 s close
    k = 0
    while k < out.shape[0]:
        if hbt.elapse(NS) != 0:
            break
        d = hbt.depth(0)
        bb = d.best_bid_tick
        ba = d.best_ask_tick
        out[k, 0] = hbt.current_timestamp
        c = 0
        t = bb
        while c < DEPTH and t > bb - 262144:
            q = d.bid_qty_at_tick(t)
            if q > 0:
                out[k, 1 + 4 * c] = t
                out[k, 2 + 4 * c] = np.int64(q)
                c += 1
            t -= 1
        c = 0
        t = ba
        while c < DEPTH and t < ba + 262144:
            q = d.ask_qty_at_tick(t)
            if q > 0:
                out[k, 3 + 4 * c] = t
                out[k, 4 + 4 * c] = np.int64(q)
                c += 1
            t += 1
        k += 1
    return k


def backtest(data):
    asset = (
        BacktestAsset()
        .data([data])
        .linear_asset(1.0)
        .constant_order_latency(0, 0)
        .no_partial_fill_exchange()
        .risk_adverse_queue_model()
        .trading_value_fee_model(0.0, 0.0)
        .tick_size(0.5)
        .lot_size(1.0)
        .last_trades_capacity(0)
    )
    return HashMapMarketDepthBacktest([asset])


def run(data, first_close, n_bars):
    hbt = backtest(data)
    hbt.elapse(1)
    hbt.elapse(first_close - NS - hbt.current_timestamp)  # the next elapse closes first_close
    out = np.zeros((n_bars, 1 + 4 * DEPTH), dtype=np.int64)
    c0, t0 = time.process_time(), time.perf_counter()
    k = replay(hbt, out)
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    hbt.close()
    return out[:k], cpu, wall


data = np.load(sys.argv[1])["data"]
first_close = int(sys.argv[2])
run(data[:20000], first_close, 3)  # compile the numba loop
n_bars = int((int(data["local_ts"].max()) - first_close) // NS + 1)
out, cpu, wall = run(data, first_close, n_bars)
np.save(sys.argv[3], out[:, [0, 1, 3]])
print(json.dumps({"cpu": cpu, "wall": wall, "bars": int(out.shape[0]), "events": int(data.shape[0])}))
"""


def _child_ours(data_dir: Path, out: Path) -> None:
    """The chappie side of --vs-hftbacktest (a child): sample the stored day, print JSON."""
    from core.paths import DataLayout
    from ingest.events import read_events

    book, trades = read_events(DataLayout(data_dir), "XBTUSD")
    spec = FeatureSpec()
    # numba cache, for the types of the timed call: frames of several chunks give
    # writeable copies (one chunk, read-only views: another specialisation to load)
    sample_bars(
        pl.concat([book.head(10_000), book.slice(10_000, 10_000)], rechunk=False),
        pl.concat([trades.head(500), trades.slice(500, 500)], rechunk=False),
        spec,
    )
    c0, t0 = time.process_time(), time.perf_counter()
    bars = sample_bars(book, trades, spec)
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    np.save(out, bars.select("ts", "bid_px_0", "ask_px_0").to_numpy())
    print(json.dumps({"cpu": cpu, "wall": wall, "bars": bars.height, "deltas": book.height}))


def vs_hftbacktest(work: Path, repeats: int, book_rows: int, n_trades: int) -> str:
    """Interleaved CPU of book.sampler.sample_bars and hftbacktest's depth replay on one
    realistic day, both sampling the top 10 levels every second; the RESULTS block."""
    from bench.bench_ingest import CONVERT, HFTBACKTEST, REPO, machine, peer_python
    from bench.tardis_days import day_paths, generate_days, write_day

    work.mkdir(parents=True, exist_ok=True)
    raw = work / f"raw-7-{book_rows}-{n_trades}"
    (day,) = generate_days(1, seed=7, book_rows=book_rows, trades=n_trades)
    book_file, trades_file = day_paths(raw, day.day)
    if not (book_file.exists() and trades_file.exists()):
        write_day(day, raw)
    n_deltas = day.book.height
    del day
    py = peer_python(work)
    data = work / "book-data"
    npz = work / "book-hftbacktest.npz"
    if not (data / "events").exists():  # the stored day, as the CLI writes it
        cmd = [sys.executable, "-m", "flows.cli", "ingest", "tardis", str(book_file)]
        cmd += [str(trades_file), "--data-dir", str(data), "--json"]
        subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    if not npz.exists():
        subprocess.run(
            [str(py), "-c", CONVERT, str(npz), str(trades_file), str(book_file)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    first = int(
        pl.scan_parquet(str(data / "events" / "**" / "book*.parquet"))
        .select(pl.col("ts_recv").min())
        .collect()
        .item()
    )
    first_close = -(-first // 1_000_000_000) * 1_000_000_000
    env = {
        **os.environ,
        "NUMBA_NUM_THREADS": "1",
        "POLARS_MAX_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(REPO),
    }
    cmds = {
        "chappie": [
            sys.executable,
            "-m",
            "bench.bench_book",
            "--child-ours",
            str(data),
            str(work / "bars-chappie.npy"),
        ],
        "hftbacktest": [
            str(py),
            "-c",
            PEER_REPLAY,
            str(npz),
            str(first_close),
            str(work / "bars-hftbacktest.npy"),
        ],
    }

    def run(who: str) -> dict[str, float]:
        r = subprocess.run(cmds[who], cwd=REPO, env=env, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"{who} failed:\n{r.stderr[-3000:]}")
        got = json.loads(r.stdout.strip().splitlines()[-1])
        print(f"{who}: {got['cpu']:.2f} s CPU, {got['wall']:.2f} s wall", flush=True)
        return got

    started = machine()
    loads = [os.getloadavg()[0]]
    got: dict[str, list[dict[str, float]]] = {"chappie": [], "hftbacktest": []}
    for k in range(repeats):
        for who in ("chappie", "hftbacktest") if k % 2 == 0 else ("hftbacktest", "chappie"):
            got[who].append(run(who))
            loads.append(os.getloadavg()[0])
    ours = np.load(work / "bars-chappie.npy")
    theirs = np.load(work / "bars-hftbacktest.npy")
    common, io_, it_ = np.intersect1d(ours[:, 0], theirs[:, 0], return_indices=True)
    same = int(np.sum(np.all(ours[io_, 1:] == theirs[it_, 1:], axis=1)))
    med = {w: statistics.median(g["cpu"] for g in v) for w, v in got.items()}
    rate = {w: n_deltas / med[w] / 1e6 for w in med}
    ratio = med["hftbacktest"] / med["chappie"]
    table = [
        "| | CPU s per repeat | median CPU s | M deltas / CPU s | wall s per repeat |",
        "|---|---|---:|---:|---|",
    ]
    for who, label in (
        ("chappie", "chappie `book.sampler.sample_bars` (1 s bars: top 10, OFI, trades)"),
        ("hftbacktest", "hftbacktest `HashMapMarketDepthBacktest`, elapse 1 s + top 10 read"),
    ):
        cpus = ", ".join(f"{g['cpu']:.2f}" for g in got[who])
        walls = ", ".join(f"{g['wall']:.2f}" for g in got[who])
        table.append(f"| {label} | {cpus} | {med[who]:.2f} | {rate[who]:.2f} | {walls} |")
    return "\n".join(
        [
            "### book replay + top-10 sampling: chappie vs hftbacktest's depth replay (#19)",
            "",
            f"{started} at the start; load {min(loads):.1f}-{max(loads):.1f} during the runs "
            "(other jobs share the 2 cores: the runs are interleaved, the order alternating). "
            f"One day of `bench/tardis_days.py` (seed 7): {n_deltas:,} book deltas; ours "
            "from the partition `chappie ingest tardis` stored, theirs from the .npz of "
            f"`tardis.convert` ({HFTBACKTEST}). One thread each; CPU = process CPU time "
            "of the replay alone (data loaded and numba compiled before).",
            "",
            *table,
            "",
            f"Their CPU / ours: median {ratio:.2f}x. Target (at least hftbacktest's rate): "
            f"{'met' if ratio >= 1.0 else 'NOT met'}; stretch (>= 10 M deltas/s on one core): "
            f"{'met' if rate['chappie'] >= 10 else 'NOT met'} ({rate['chappie']:.2f}). "
            f"Best bid and ask ticks agree at {same:,} of the {len(common):,} common bar "
            f"closes ({ours.shape[0]:,} bars ours, {theirs.shape[0]:,} theirs).",
            "",
            f"Command: `.venv/bin/python -m bench.bench_book --vs-hftbacktest --repeats {repeats}`",
        ]
    )


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child-ours":
        _child_ours(Path(sys.argv[2]), Path(sys.argv[3]))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--days", type=int, default=3)
    ap.add_argument("--baseline-rows", type=int, default=300_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--vs-hftbacktest", action="store_true", help="the #19 comparison")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--work", type=Path, default=Path("/work/scratch/ingest-peer"))
    ap.add_argument("--book-rows", type=int, default=18_000_000)
    ap.add_argument("--trades", type=int, default=1_000_000)
    args = ap.parse_args()
    if args.vs_hftbacktest:
        from bench.bench_ingest import write_section

        body = vs_hftbacktest(args.work, args.repeats, args.book_rows, args.trades)
        write_section("peer-book", body)
        print(body)
        return
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
