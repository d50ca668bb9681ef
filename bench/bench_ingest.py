"""Benchmark: tardis incremental_book_L2 CSV and CSV.gz -> canonical book deltas
(ingest.tardis.read_tardis: header check, ragged-line check, symbol filter, tick
conversion with off-grid rejection, reasons), side by side with a straightforward
pure-Python baseline (csv module, per-row conversion) in the same run, same files.

    POLARS_MAX_THREADS=1 .venv/bin/python bench/bench_ingest.py [--days 3]

Target (#3): CSV and CSV.gz parsing >= 1 million rows per second.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import os
import tempfile
import time
from decimal import Decimal
from pathlib import Path

os.environ.setdefault("POLARS_MAX_THREADS", "1")

import polars as pl  # noqa: E402

from core.config.market import SyntheticMarketConfig  # noqa: E402
from core.instrument import InstrumentSpec  # noqa: E402
from ingest.synthetic import generate_market  # noqa: E402
from ingest.tardis import read_tardis  # noqa: E402


def make_csv(days: int, hours: float) -> bytes:
    book = pl.concat(
        [b for _, b, _ in generate_market(SyntheticMarketConfig(days=days, day_hours=hours))]
    )
    df = book.select(
        pl.lit("bitmex").alias("exchange"),
        pl.lit("XBTUSD").alias("symbol"),
        (pl.col("ts_event") // 1000).alias("timestamp"),
        (pl.col("ts_recv") // 1000).alias("local_timestamp"),
        pl.when(pl.col("is_snapshot"))
        .then(pl.lit("true"))
        .otherwise(pl.lit("false"))
        .alias("is_snapshot"),
        pl.when(pl.col("side") == 1).then(pl.lit("bid")).otherwise(pl.lit("ask")).alias("side"),
        (pl.col("price_ticks") * 0.5).alias("price"),
        pl.col("size").alias("amount"),
    )
    buf = io.BytesIO()
    df.write_csv(buf)
    return buf.getvalue()


def baseline(path: Path, tick: float = 0.5) -> int:
    """csv module + per-row conversion (the obvious implementation)."""
    opener = gzip.open if path.suffix == ".gz" else open
    n = 0
    out = []
    with opener(path, "rt", newline="") as fh:  # type: ignore[operator]
        r = csv.reader(fh)
        header = next(r)
        assert header[0] == "exchange"
        for row in r:
            if row[1] != "XBTUSD":
                continue
            ticks = Decimal(row[6]) / Decimal(str(tick))
            if ticks != ticks.to_integral_value():
                continue
            out.append(
                (
                    int(row[2]) * 1000,
                    int(row[3]) * 1000,
                    1 if row[5] == "bid" else -1,
                    int(ticks),
                    int(float(row[7])),
                    row[4] == "true",
                )
            )
            n += 1
    return n


RESULTS = Path(__file__).resolve().parent / "RESULTS_ingest.md"
TITLE = "## ingest: book replay + sampling, raw CSV parsing"


def write_section(key: str, body: str) -> None:
    """Replace this benchmark's block in bench/RESULTS_ingest.md, keeping the other one."""
    blocks: dict[str, str] = {}
    if RESULTS.exists():
        text = RESULTS.read_text()
        for part in text.split("<!-- section:")[1:]:
            name, _, rest = part.partition(" -->")
            blocks[name] = rest.split("<!-- end -->")[0].strip()
    blocks[key] = body.strip()
    out = [TITLE, ""]
    for name in sorted(blocks):
        out += [f"<!-- section:{name} -->", blocks[name], "<!-- end -->", ""]
    RESULTS.write_text("\n".join(out))


def machine() -> str:
    import platform

    return (
        f"machine `{platform.node()}` ({platform.machine()}, {os.cpu_count()} cores, shared), "
        f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, "
        f"load average {os.getloadavg()[0]:.1f}"
    )


def timed(fn, *a):  # type: ignore[no-untyped-def]
    t0, c0 = time.perf_counter(), time.process_time()
    res = fn(*a)
    return res, time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=int, default=3)
    ap.add_argument("--hours", type=float, default=24.0)
    args = ap.parse_args()
    data = make_csv(args.days, args.hours)
    tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    plain, gz = tmp / "inc.csv", tmp / "inc.csv.gz"
    plain.write_bytes(data)
    gz.write_bytes(gzip.compress(data, compresslevel=6))
    inst = InstrumentSpec()
    read_tardis(plain, "XBTUSD", inst)  # warm-up (numba cache, polars init)
    print(
        f"load average at start: {os.getloadavg()[0]:.1f}; POLARS_MAX_THREADS={os.environ['POLARS_MAX_THREADS']}"
    )
    table = [
        "| file | reader | rows | M rows/s (CPU) | M rows/s (wall) | vs baseline (CPU) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    ok = True
    for p in (plain, gz):
        best = None
        for _ in range(3):
            fr, wall, cpu = timed(read_tardis, p, "XBTUSD", inst)
            best = (wall, cpu) if best is None or wall < best[0] else best
        assert fr.ok and fr.rows_rejected == 0
        n = fr.rows_in
        print(
            f"chappie read_tardis {p.name} ({p.stat().st_size / 1e6:.0f} MB): {n:,} rows wall {best[0]:.3f} s = {n / best[0] / 1e6:.2f} M rows/s; CPU {n / best[1] / 1e6:.2f} M rows/s"
        )
        nb, wb, cb = timed(baseline, p)
        print(
            f"pure-Python baseline {p.name}: {nb:,} rows wall {wb:.3f} s = {nb / wb / 1e6:.3f} M rows/s; CPU {nb / cb / 1e6:.3f} M rows/s; speed-up (CPU) {(n / best[1]) / (nb / cb):.1f}x"
        )
        size = f"{p.name} ({p.stat().st_size / 1e6:.0f} MB)"
        table.append(
            f"| {size} | chappie `read_tardis` (polars, typed fast path) | {n:,} | {n / best[1] / 1e6:.2f} | {n / best[0] / 1e6:.2f} | {(n / best[1]) / (nb / cb):.1f}x |"
        )
        table.append(
            f"| {size} | pure-Python `csv` + Decimal ticks | {nb:,} | {nb / cb / 1e6:.3f} | {nb / wb / 1e6:.3f} | 1.0x |"
        )
        ok = ok and n / best[1] >= 1e6
    body = "\n".join(
        [
            "### tardis incremental_book_L2 CSV and CSV.gz -> canonical deltas",
            "",
            f"{machine()}; `POLARS_MAX_THREADS=1`; best of 3; rows/s of process CPU time (robust to the other jobs on the shared machine), wall clock beside it. The synthetic market's deltas written as a tardis file; the reader checks the header, every line's field count, the symbol, ticks (off-grid rejected) and sizes.",
            "",
            *table,
            "",
            f"Target (CSV and CSV.gz parsing >= 1 M rows/s): {'met' if ok else 'NOT met'} (CPU time, one thread).",
            "",
            f"Command: `POLARS_MAX_THREADS=1 .venv/bin/python -m bench.bench_ingest --days {args.days}`",
        ]
    )
    write_section("csv", body)


if __name__ == "__main__":
    main()
