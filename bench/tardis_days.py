"""Realistic-density tardis.dev days (incremental_book_L2 + trades CSV.gz) for tests and
benchmarks (#19), calibrated to the real BitMEX capture in ``../shared/data``.

    .venv/bin/python -m bench.tardis_days OUT_DIR [--days 1] [--book-rows 18000000]
        [--trades 1000000] [--seed 7] [--start 2019-03-01] [--level 1]

Writes ``bitmex_incremental_book_L2_<day>_XBTUSD.csv.gz`` and
``bitmex_trades_<day>_XBTUSD.csv.gz`` per day, in the columns and order tardis ships and
``chappie ingest tardis`` reads (`ingest.tardis`). Deterministic per (seed, days, sizes):
the same arguments give the same bytes. Days follow each other (the book, the price and
the activity carry over midnight); each day's book file opens with a full-book snapshot
at 00:00, as tardis' do.

Calibration (the XBTUSD ``orderBookL2`` of ``bitmex_ws_XBTUSD_2021-07-22.txt``, 28 s
after the partial: 1,712 rows in 1,299 messages; measured by replaying the capture's
insert/update/delete actions on its partial, tick 0.5):
- message mix by rows: update 74.4 %, insert 13.0 %, delete 12.6 %; rows per message
  1.40 (update), 1.10 (insert), 1.13 (delete); one action and one side per message.
  The generator draws inserts and deletes at 12.8 % each (`GEN_MIX`) and keeps each
  side's level count within 0.8-1.2 times its day-0 count, so the book keeps its shape
  over days (at the capture's own rates it would grow by ~70,000 levels a day).
- distance from the touch (ticks, same side, before the message): the percentiles
  below (`_DIST`); updates sit at the touch (median 16 ticks), inserts and deletes
  farther (median ~90-100), a tail to ~10,000 ticks; 2 % of inserts improve the touch.
- sizes (contracts): the percentiles of updates, inserts/deletes and resting levels.
- book shape (the partial, 9,346 levels): occupancy of price ticks by distance from
  the touch, 0.55 within 10 ticks, 0.70 within 100, 0.48 within 1,000, 0.23 within
  10,000, 0.022 beyond (up to the grid, 2**18 ticks).
- trades come in messages of ~3 (the capture: 15 trades in 5 messages), at the touch
  (a taker buy at the best ask, a sell at the best bid), sizes from its percentiles.
Activity: the capture's 61 rows/s is a quiet half minute; a day of 17-19 M rows (the
density of XBTUSD in 2019-2021 on tardis) is ~210 rows/s on average. The rate varies
by minute (log-normal AR(1), sd 0.5, corr 0.97, normalised to the day's total), so the
day has calm and busy hours.

Speed (measured on the 2-core VM, one day of 18 M book rows and 1 M trades): see
BENCHMARKS.md (#19 section); the book is simulated by one numba kernel, the CSV is
formatted and gzip-compressed by polars (level 1 by default: these are test inputs).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from numba import njit

from core.clock import NS_PER_DAY, iso_day, parse_day

TICK = 0.5
GRID = 1 << 18  # price ticks simulated: [0, GRID)
START_MID = 64_000  # ticks (32,000 USD at 0.5)
SYMBOL = "XBTUSD"
EXCHANGE = "bitmex"

# measured on the capture (module doc): row shares, rows per message, percentiles
MIX = {"update": 0.744, "insert": 0.130, "delete": 0.126}
ROWS_PER_MSG = {"update": 1.405, "insert": 1.104, "delete": 1.131}
_Q = np.array([0, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 98, 99, 100], dtype=np.float64)
_DIST = {
    "update": [0, 0, 0, 0, 3, 6, 16, 31, 58, 84, 293, 604, 2028, 2723, 32123],
    "insert": [-6, 2, 4, 23, 38, 54, 101, 221, 381, 458, 2318, 8366, 8411, 10002, 32787],
    "delete": [0, 3, 5, 19, 37, 59, 89, 227, 417, 500, 2411, 8381, 9531, 10014, 32787],
}
_SIZE = {
    "update": [100, 300, 1660, 12960, 35800, 60300, 91000, 183560, 385880, 965140,
               1292080, 1433495, 1553612, 1620008, 1773400],
    "insert": [100, 100, 200, 1480, 5000, 11440, 19950, 42760, 51470, 65820, 188700,
               191200, 191200, 245616, 300000],
    "level": [100, 100, 100, 200, 400, 700, 1000, 1700, 3000, 8400, 30000, 94755,
              280000, 407141, 7513600],
}  # fmt: skip
_TRADE_SIZE_Q = np.array([0, 40, 60, 70, 80, 90, 100], dtype=np.float64)
_TRADE_SIZE = [100, 100, 200, 300, 1000, 7300, 24300]
TRADES_PER_MSG = 3.0
# occupancy of the ticks by distance from the touch (upper bound, fraction)
_OCCUPANCY = ((10, 0.55), (100, 0.70), (1_000, 0.48), (10_000, 0.23), (GRID, 0.022))
#: the generator's message mix: the capture's, with inserts and deletes at their mean
#: (0.128 each): the capture's 222 inserts to 216 deletes in 28 s, kept for a day, would
#: add ~70,000 levels a day (a book of 600,000 levels after 8 days, each replay slower)
GEN_MIX = {"update": MIX["update"], "insert": 0.128, "delete": 0.128}
#: each side's level count stays within this band of its day-0 count: an insert at the
#: top of the band deletes instead, a delete at its bottom inserts instead
LEVEL_BAND = (0.8, 1.2)

ACT_UPDATE, ACT_INSERT, ACT_DELETE = 0, 1, 2


def _draw(rng: np.random.Generator, q: np.ndarray, values: list[int], n: int) -> np.ndarray:
    """n draws from the piecewise-linear inverse CDF through (q percentiles, values)."""
    return np.interp(rng.random(n) * 100.0, q, np.asarray(values, dtype=np.float64))


def _round_lots(x: np.ndarray) -> np.ndarray:
    """Sizes in whole lots of 100 contracts (XBTUSD's lot size then), at least one lot."""
    return np.maximum(100, np.round(x / 100.0).astype(np.int64) * 100)


@njit(cache=True)
def _scan(levels: np.ndarray, p: int, step: int, want: bool) -> int:
    """First price from p in direction `step` whose occupancy is `want`; -1 off grid."""
    n = levels.shape[0]
    while 0 <= p < n:
        if (levels[p] > 0) == want:
            return p
        p += step
    return -1


@njit(cache=True)
def _book_kernel(
    bids: np.ndarray,
    asks: np.ndarray,
    touch: np.ndarray,
    counts: np.ndarray,
    bounds: np.ndarray,
    msg_act: np.ndarray,
    msg_first: np.ndarray,
    row_side: np.ndarray,
    row_dist: np.ndarray,
    row_size: np.ndarray,
    out_px: np.ndarray,
    out_sz: np.ndarray,
) -> None:
    """Apply every message to the book arrays (size per price tick, 0 = no level) and
    write each row's price and new absolute size (0 = delete). `touch` = [best bid,
    best ask]; `counts` = [bid levels, ask levels]. Messages never cross the book and
    only update or delete levels that exist."""
    n_msg = msg_act.shape[0]
    for m in range(n_msg):
        act = msg_act[m]
        for r in range(msg_first[m], msg_first[m + 1]):
            s = row_side[r]
            d = row_dist[r]
            lv = bids if s > 0 else asks
            out = -1 if s > 0 else 1  # away from the touch
            bb = touch[0]
            ba = touch[1]
            ref = bb if s > 0 else ba
            k = 0 if s > 0 else 1
            a = act
            if a == ACT_DELETE and counts[k] <= bounds[k, 0]:
                a = ACT_INSERT
            elif a == ACT_INSERT and counts[k] >= bounds[k, 1]:
                a = ACT_DELETE
            if a == ACT_INSERT:
                p = min(max(ref + out * d, 1), lv.shape[0] - 1)
                if s > 0 and p >= ba:
                    p = ba - 1
                if s < 0 and p <= bb:
                    p = bb + 1
                q = _scan(lv, p, out, False)
                if q < 0:
                    a = ACT_UPDATE
                else:
                    lv[q] = row_size[r]
                    counts[k] += 1
                    if (s > 0 and q > bb) or (s < 0 and q < ba):
                        touch[k] = q
                    out_px[r] = q
                    out_sz[r] = row_size[r]
                    continue
            p = min(max(ref + out * max(d, 0), 0), lv.shape[0] - 1)
            q = _scan(lv, p, out, True)
            if q < 0:
                q = _scan(lv, p, -out, True)
            if a == ACT_UPDATE:
                lv[q] = row_size[r]
                out_px[r] = q
                out_sz[r] = row_size[r]
            else:
                lv[q] = 0
                counts[k] -= 1
                out_px[r] = q
                out_sz[r] = 0
                if q == ref:
                    touch[k] = _scan(lv, q, out, True)


@dataclass
class DayFrames:
    """One generated day: canonical-like columns (ticks, contracts, microseconds)."""

    day: str
    book: pl.DataFrame  # timestamp, local_timestamp, is_snapshot, side, price_ticks, amount
    trades: pl.DataFrame  # timestamp, local_timestamp, id, side, price_ticks, amount


def _initial_book(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bid and ask size arrays with the capture's occupancy by distance, touch spread 1."""
    bids = np.zeros(GRID, dtype=np.int64)
    asks = np.zeros(GRID, dtype=np.int64)
    bb, ba = START_MID - 1, START_MID
    for arr, ref, sign in ((bids, bb, -1), (asks, ba, 1)):
        dist = np.arange(GRID, dtype=np.int64)
        prices = ref + sign * dist
        ok = (prices > 0) & (prices < GRID)
        occ = np.zeros(GRID)
        lo = 0
        for hi, frac in _OCCUPANCY:
            occ[lo:hi] = frac
            lo = hi
        occ[0] = 1.0  # the touch itself
        present = ok & (rng.random(GRID) < occ)
        sizes = _round_lots(_draw(rng, _Q, _SIZE["level"], int(present.sum())))
        arr[prices[present]] = sizes
    return bids, asks, np.array([bb, ba], dtype=np.int64)


def _minute_rates(rng: np.random.Generator, minutes: int) -> np.ndarray:
    """Activity by minute: log-normal AR(1) (sd 0.5, corr 0.97), mean 1."""
    x = np.empty(minutes)
    e = rng.standard_normal(minutes) * 0.5 * np.sqrt(1 - 0.97**2)
    x[0] = rng.standard_normal() * 0.5
    for i in range(1, minutes):
        x[i] = 0.97 * x[i - 1] + e[i]
    w = np.exp(x)
    return w / w.mean()


def _times(rng: np.random.Generator, n: int, weights: np.ndarray, day0_us: int) -> np.ndarray:
    """n strictly increasing microsecond times in the day, spread by minute weights."""
    minutes = weights.shape[0]
    per = rng.multinomial(n, weights / weights.sum())
    start = np.repeat(np.arange(minutes, dtype=np.int64) * 60_000_000, per)
    t = start + (rng.random(n) * 60_000_000).astype(np.int64)
    t.sort()
    # strictly increasing (one message per microsecond at most), inside the day
    idx = np.arange(n, dtype=np.int64)
    t = np.maximum.accumulate(t - idx) + idx
    return day0_us + np.minimum(t, 86_400_000_000 - n + idx)


class Generator:
    """Days of a continuous synthetic XBTUSD market (see the module doc)."""

    def __init__(self, seed: int = 7, book_rows: int = 18_000_000, trades: int = 1_000_000) -> None:
        self.rng = np.random.default_rng(seed)
        self.book_rows = int(book_rows)
        self.n_trades = int(trades)
        self.bids, self.asks, self.touch = _initial_book(self.rng)
        self.counts = np.array(
            [int((self.bids > 0).sum()), int((self.asks > 0).sum())], dtype=np.int64
        )
        self.bounds = np.array(
            [[round(n * LEVEL_BAND[0]), round(n * LEVEL_BAND[1])] for n in self.counts],
            dtype=np.int64,
        )
        self.trade_no = 0

    def _snapshot(self, t_us: int) -> tuple[np.ndarray, ...]:
        bp = np.flatnonzero(self.bids)[::-1]
        ap = np.flatnonzero(self.asks)
        side = np.concatenate([np.ones(bp.size, np.int8), -np.ones(ap.size, np.int8)])
        px = np.concatenate([bp, ap]).astype(np.int64)
        sz = np.concatenate([self.bids[bp], self.asks[ap]])
        ts = np.full(px.size, t_us, dtype=np.int64)
        return ts, side, px, sz

    def day(self, day: str) -> DayFrames:
        rng = self.rng
        day0_us = parse_day(day) // 1000
        acts = np.array([ACT_UPDATE, ACT_INSERT, ACT_DELETE], dtype=np.int8)
        names = ("update", "insert", "delete")
        per_msg = np.array([GEN_MIX[a] / ROWS_PER_MSG[a] for a in names])
        msg_p = per_msg / per_msg.sum()
        rows_per_msg = 1.0 / per_msg.sum()
        snap = self._snapshot(day0_us)
        n_msg = max(1, round((self.book_rows - snap[0].size) / rows_per_msg))
        weights = _minute_rates(rng, 1440)
        msg_ts = _times(rng, n_msg, weights, day0_us + 1)
        msg_act = acts[rng.choice(3, size=n_msg, p=msg_p)]
        extra = np.array([ROWS_PER_MSG[a] - 1.0 for a in names])[msg_act]
        n_rows = 1 + rng.poisson(extra)
        first = np.zeros(n_msg + 1, dtype=np.int64)
        np.cumsum(n_rows, out=first[1:])
        total = int(first[-1])
        row_act = np.repeat(msg_act, n_rows)
        row_side = np.repeat(np.where(rng.random(n_msg) < 0.5, 1, -1).astype(np.int8), n_rows)
        row_dist = np.zeros(total, dtype=np.int64)
        row_size = np.zeros(total, dtype=np.int64)
        for a, name in zip(acts, names, strict=True):
            sel = row_act == a
            k = int(sel.sum())
            row_dist[sel] = np.round(_draw(rng, _Q, _DIST[name], k)).astype(np.int64)
            table = _SIZE["update"] if name == "update" else _SIZE["insert"]
            row_size[sel] = _round_lots(_draw(rng, _Q, table, k))
        px = np.zeros(total, dtype=np.int64)
        sz = np.zeros(total, dtype=np.int64)
        bb0, ba0 = int(self.touch[0]), int(self.touch[1])
        bids0, asks0 = self.bids.copy(), self.asks.copy()
        _book_kernel(
            self.bids,
            self.asks,
            self.touch,
            self.counts,
            self.bounds,
            msg_act,
            first,
            row_side.astype(np.int64),
            row_dist,
            row_size,
            px,
            sz,
        )
        row_ts = np.repeat(msg_ts, n_rows)
        # trades: messages of ~3 at the touch of the book just before them
        n_tmsg = max(1, round(self.n_trades / TRADES_PER_MSG))
        t_ts = _times(rng, n_tmsg, weights, day0_us + 1)
        t_n = 1 + rng.poisson(TRADES_PER_MSG - 1.0, n_tmsg)
        trade_ts = np.repeat(t_ts, t_n)
        trade_side = np.repeat(np.where(rng.random(n_tmsg) < 0.5, 1, -1), t_n).astype(np.int64)
        tpx = np.zeros(trade_ts.size, dtype=np.int64)
        _trade_touch(bids0, asks0, bb0, ba0, row_ts, row_side, px, sz, trade_ts, trade_side, tpx)
        tsz = _round_lots(_draw(rng, _TRADE_SIZE_Q, _TRADE_SIZE, trade_ts.size))
        ts_all = np.concatenate([snap[0], row_ts])
        lat_book = self._latency(ts_all.size)
        book = pl.DataFrame(
            {
                "timestamp": _exchange_time(ts_all, lat_book),
                "local_timestamp": ts_all,
                "is_snapshot": np.concatenate(
                    [np.ones(snap[0].size, np.bool_), np.zeros(total, np.bool_)]
                ),
                "side": np.concatenate([snap[1], row_side]),
                "price_ticks": np.concatenate([snap[2], px]),
                "amount": np.concatenate([snap[3], sz]),
            }
        )
        ids = np.arange(self.trade_no, self.trade_no + trade_ts.size, dtype=np.int64)
        self.trade_no += trade_ts.size
        trades = pl.DataFrame(
            {
                "timestamp": _exchange_time(trade_ts, self._latency(trade_ts.size)),
                "local_timestamp": trade_ts,
                "id": ids,
                "side": trade_side.astype(np.int8),
                "price_ticks": tpx,
                "amount": tsz,
            }
        )
        return DayFrames(day, book, trades)

    def _latency(self, n: int) -> np.ndarray:
        """Exchange-to-receive latency in microseconds (exponential, mean 4 ms)."""
        return (self.rng.exponential(4000.0, n)).astype(np.int64) + 200


def _exchange_time(local_us: np.ndarray, latency_us: np.ndarray) -> np.ndarray:
    """BitMEX stamps in milliseconds: (local - latency) floored to the ms, in us."""
    return (local_us - latency_us) // 1000 * 1000


def _trade_touch(
    bids0: np.ndarray,
    asks0: np.ndarray,
    bb0: int,
    ba0: int,
    row_ts: np.ndarray,
    row_side: np.ndarray,
    px: np.ndarray,
    sz: np.ndarray,
    trade_ts: np.ndarray,
    trade_side: np.ndarray,
    out: np.ndarray,
) -> None:
    _trade_kernel(bids0, asks0, bb0, ba0, row_ts, row_side.astype(np.int64), px, sz,
                  trade_ts, trade_side, out)  # fmt: skip


@njit(cache=True)
def _trade_kernel(
    bids: np.ndarray,
    asks: np.ndarray,
    bb: int,
    ba: int,
    row_ts: np.ndarray,
    row_side: np.ndarray,
    px: np.ndarray,
    sz: np.ndarray,
    trade_ts: np.ndarray,
    trade_side: np.ndarray,
    out: np.ndarray,
) -> None:
    """Replay the day's rows on a copy of the day-start book and price each trade at
    the touch its taker hits just before it (buy: best ask, sell: best bid)."""
    i = 0
    nb = row_ts.shape[0]
    n = bids.shape[0]
    for j in range(trade_ts.shape[0]):
        while i < nb and row_ts[i] < trade_ts[j]:
            p = px[i]
            if row_side[i] > 0:
                bids[p] = sz[i]
                if sz[i] > 0 and p > bb:
                    bb = p
                elif sz[i] == 0 and p == bb:
                    while bb > 0 and bids[bb] == 0:
                        bb -= 1
            else:
                asks[p] = sz[i]
                if sz[i] > 0 and p < ba:
                    ba = p
                elif sz[i] == 0 and p == ba:
                    while ba < n - 1 and asks[ba] == 0:
                        ba += 1
            i += 1
        out[j] = ba if trade_side[j] > 0 else bb


def tardis_frames(d: DayFrames) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The day as tardis' incremental_book_L2 and trades tables (text columns)."""
    common = [
        pl.lit(EXCHANGE).alias("exchange"),
        pl.lit(SYMBOL).alias("symbol"),
        pl.col("timestamp"),
        pl.col("local_timestamp"),
    ]
    price = (pl.col("price_ticks").cast(pl.Float64) * TICK).alias("price")
    book = d.book.select(
        *common,
        pl.when(pl.col("is_snapshot")).then(pl.lit("true")).otherwise(pl.lit("false"))
        .alias("is_snapshot"),
        pl.when(pl.col("side") > 0).then(pl.lit("bid")).otherwise(pl.lit("ask")).alias("side"),
        price,
        pl.col("amount").cast(pl.Float64),
    )  # fmt: skip
    trades = d.trades.select(
        *common,
        pl.format("{}{}", pl.lit("t"), pl.col("id")).alias("id"),
        pl.when(pl.col("side") > 0).then(pl.lit("buy")).otherwise(pl.lit("sell")).alias("side"),
        price,
        pl.col("amount").cast(pl.Float64),
    )
    return book, trades


def day_paths(folder: Path, day: str) -> tuple[Path, Path]:
    return (
        folder / f"{EXCHANGE}_incremental_book_L2_{day}_{SYMBOL}.csv.gz",
        folder / f"{EXCHANGE}_trades_{day}_{SYMBOL}.csv.gz",
    )


def write_day(d: DayFrames, folder: Path, level: int = 1) -> tuple[Path, Path]:
    """Write one day as tardis CSV.gz files (atomically: temp file, rename)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = day_paths(folder, d.day)
    for df, path in zip(tardis_frames(d), paths, strict=True):
        tmp = path.with_name(path.name + ".tmp")
        df.write_csv(tmp, compression="gzip", compression_level=level, check_extension=False)
        tmp.replace(path)
    return paths


def generate_days(
    days: int,
    start: str = "2019-03-01",
    seed: int = 7,
    book_rows: int = 18_000_000,
    trades: int = 1_000_000,
) -> Iterator[DayFrames]:
    """`days` consecutive days from `start` (deterministic per arguments)."""
    gen = Generator(seed, book_rows, trades)
    t0 = parse_day(start)
    for k in range(days):
        yield gen.day(iso_day(t0 + k * NS_PER_DAY))


def write_days(
    folder: Path,
    days: int,
    start: str = "2019-03-01",
    seed: int = 7,
    book_rows: int = 18_000_000,
    trades: int = 1_000_000,
    level: int = 1,
) -> list[Path]:
    """Generate and write `days` days; returns every file written."""
    out: list[Path] = []
    for d in generate_days(days, start, seed, book_rows, trades):
        out += write_day(d, folder, level)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--days", type=int, default=1)
    ap.add_argument("--start", default="2019-03-01")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--book-rows", type=int, default=18_000_000)
    ap.add_argument("--trades", type=int, default=1_000_000)
    ap.add_argument("--level", type=int, default=1, help="gzip level")
    a = ap.parse_args(argv)
    gen = Generator(a.seed, a.book_rows, a.trades)
    t0 = parse_day(a.start)
    for k in range(a.days):
        c0, w0 = time.process_time(), time.perf_counter()
        d = gen.day(iso_day(t0 + k * NS_PER_DAY))
        c1 = time.process_time()
        write_day(d, a.out, a.level)
        c2, w2 = time.process_time(), time.perf_counter()
        print(
            f"{d.day}: {d.book.height:,} book rows, {d.trades.height:,} trades; "
            f"generate {c1 - c0:.1f} s CPU, write {c2 - c1:.1f} s CPU, wall {w2 - w0:.1f} s",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
