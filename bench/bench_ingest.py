"""Benchmark: tardis incremental_book_L2 CSV and CSV.gz -> canonical book deltas
(ingest.tardis.read_tardis: header check, ragged-line check, symbol filter, tick
conversion with off-grid rejection, reasons), side by side with a straightforward
pure-Python baseline (csv module, per-row conversion) in the same run, same files.

    POLARS_MAX_THREADS=1 .venv/bin/python bench/bench_ingest.py [--days 3]

Target (#3): CSV and CSV.gz parsing >= 1 million rows per second.

``--vs-hftbacktest`` (#19) instead times ``chappie ingest tardis`` through the CLI beside
hftbacktest's ``tardis.convert`` on the same generated tardis day (`bench.tardis_days`:
trades + incremental_book_L2 CSV.gz), each a child process, interleaved (the order
alternates each repeat), after one untimed run of each (numba caches). CPU = user +
system seconds of the child and every process it waited for (``RUSAGE_CHILDREN``:
chappie's Prefect server included). hftbacktest 2.4.4 pins numpy < 2.3, so it is
pip-installed into its own venv under ``--work`` (not the project's); Prefect and polars
threads run as configured (no POLARS_MAX_THREADS). Target (#19): our CPU rate at least
1.5x theirs, i.e. their CPU seconds / ours >= 1.5.

    .venv/bin/python -m bench.bench_ingest --vs-hftbacktest [--repeats 3]
        [--work /work/scratch/ingest-peer] [--book-rows 18000000] [--trades 1000000]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

_POLARS_THREADS = os.environ.get("POLARS_MAX_THREADS")  # the caller's, for the CLI runs
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
TITLE = "## ingest: book replay + sampling, raw CSV parsing, tardis CLI vs hftbacktest (#19)"


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


REPO = Path(__file__).resolve().parents[1]
HFTBACKTEST = "hftbacktest==2.4.4"
#: hftbacktest's converter as its docs call it: trades first, then the book
CONVERT = (
    "import sys\n"
    "from hftbacktest.data.utils import tardis\n"
    "tardis.convert(sys.argv[2:], output_filename=sys.argv[1])\n"
)


def peer_python(work: Path) -> Path:
    """A python with hftbacktest: its own venv under `work`, made once (pip install)."""
    venv = work / "hftbacktest-venv"
    py = venv / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", HFTBACKTEST], check=True)
    return py


def child_cpu(
    cmd: list[str], cwd: Path, log: Path, env_extra: dict[str, str]
) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of `cmd` and every process it waited for. Raises
    RuntimeError with the log's tail when it fails."""
    env = {**os.environ, "TQDM_DISABLE": "1", **env_extra}
    if _POLARS_THREADS is None:  # as a user runs them, not the parsing benchmark's one thread
        env.pop("POLARS_MAX_THREADS", None)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        rc = subprocess.call(cmd, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if rc != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} failed ({rc}):\n{log.read_text()[-3000:]}")
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return cpu, wall


def vs_hftbacktest(work: Path, repeats: int, book_rows: int, trades: int) -> str:
    """Interleaved CPU of our CLI and hftbacktest's converter on one day; the RESULTS
    block (markdown)."""
    from bench.tardis_days import day_paths, generate_days, write_day

    work.mkdir(parents=True, exist_ok=True)
    raw = work / f"raw-7-{book_rows}-{trades}"
    (day,) = generate_days(1, seed=7, book_rows=book_rows, trades=trades)
    book, trades_file = day_paths(raw, day.day)
    if not (book.exists() and trades_file.exists()):
        write_day(day, raw)
    rows_in = day.book.height + day.trades.height
    del day
    py = peer_python(work)
    data = work / "data"
    ours = [sys.executable, "-m", "flows.cli", "ingest", "tardis", str(book), str(trades_file)]
    ours += ["--data-dir", str(data), "--json"]
    theirs = [str(py), "-c", CONVERT, str(work / "hftbacktest.npz"), str(trades_file), str(book)]

    def run(who: str, k: int) -> tuple[float, float]:
        shutil.rmtree(data, ignore_errors=True)
        cmd = ours if who == "chappie" else theirs
        # a Prefect home of its own, as on a user's machine (the untimed run creates its
        # database): the shared one's other users would be measured too
        env = {"PREFECT_HOME": str(work / "prefect-home")} if who == "chappie" else {}
        cpu, wall = child_cpu(cmd, REPO, work / f"{who}-{k}.log", env)
        print(f"{who} #{k}: {cpu:.1f} s CPU, {wall:.1f} s wall", flush=True)
        return cpu, wall

    started = machine()
    loads = [os.getloadavg()[0]]
    run("chappie", -1), run("hftbacktest", -1)  # untimed: numba caches, venvs, page cache
    got: dict[str, list[tuple[float, float]]] = {"chappie": [], "hftbacktest": []}
    for k in range(repeats):
        for who in ("chappie", "hftbacktest") if k % 2 == 0 else ("hftbacktest", "chappie"):
            got[who].append(run(who, k))
            loads.append(os.getloadavg()[0])
    shutil.rmtree(data, ignore_errors=True)
    med = {w: statistics.median(c for c, _ in v) for w, v in got.items()}
    ratio = med["hftbacktest"] / med["chappie"]
    pairs = [t[0] / o[0] for o, t in zip(got["chappie"], got["hftbacktest"], strict=True)]
    table = [
        "| | CPU s per repeat | median CPU s | M rows / CPU s | wall s per repeat |",
        "|---|---|---:|---:|---|",
    ]
    for who, label in (
        ("chappie", "`chappie ingest tardis` (CLI: Prefect server, flow, stored partition)"),
        ("hftbacktest", f"hftbacktest `tardis.convert` ({HFTBACKTEST}, .npz written)"),
    ):
        cpus = ", ".join(f"{c:.1f}" for c, _ in got[who])
        walls = ", ".join(f"{w:.0f}" for _, w in got[who])
        table.append(
            f"| {label} | {cpus} | {med[who]:.1f} | {rows_in / med[who] / 1e6:.2f} | {walls} |"
        )
    return "\n".join(
        [
            "### tardis day -> stored events: `chappie ingest tardis` (CLI) vs hftbacktest (#19)",
            "",
            f"{started} at the start; load {min(loads):.1f}-{max(loads):.1f} during the runs "
            f"(other jobs share the 2 cores: the runs are interleaved). One day of "
            f"`bench/tardis_days.py` (seed 7): {book.stat().st_size / 1e6:.0f} MB + "
            f"{trades_file.stat().st_size / 1e6:.0f} MB of CSV.gz, {rows_in:,} rows. CPU = user + "
            "system of the child and every process it waited for; one untimed run of each "
            "first; the order alternates each repeat; chappie with a PREFECT_HOME of its own.",
            "",
            *table,
            "",
            f"Their CPU / ours: median {ratio:.2f}x (per repeat: "
            f"{', '.join(f'{r:.2f}' for r in pairs)}). Target (>= 1.5x): "
            f"{'met' if ratio >= 1.5 else 'NOT met'}.",
            "",
            f"Command: `.venv/bin/python -m bench.bench_ingest --vs-hftbacktest --repeats {repeats}`",
        ]
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=int, default=3)
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--vs-hftbacktest", action="store_true", help="the #19 CLI comparison")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work", type=Path, default=Path("/work/scratch/ingest-peer"))
    ap.add_argument("--book-rows", type=int, default=18_000_000)
    ap.add_argument("--trades", type=int, default=1_000_000)
    args = ap.parse_args()
    if args.vs_hftbacktest:
        body = vs_hftbacktest(args.work, args.repeats, args.book_rows, args.trades)
        write_section("peer", body)
        print(body)
        return
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
