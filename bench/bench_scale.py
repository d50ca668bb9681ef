"""Benchmark (#19): CPU and peak RSS of `chappie ingest tardis` and `chappie features`
through the CLI, on 1, 4 and 8 realistic-density tardis days (`bench.tardis_days`).

    .venv/bin/python -m bench.bench_scale [--days 1,4,8] [--label after]
        [--work /work/scratch/scale] [--book-rows 18000000] [--trades 1000000]

Each step runs in a child process under ``/usr/bin/time -v`` (CPU = user + system
seconds of the command and every process it waited for; peak RSS = the largest
resident set of any of them, the Prefect server included). Each process of the tree is
also sampled every 0.5 s (`/proc/<pid>/status` VmHWM, its own peak), so the tables give
the command's own peak and the temporary Prefect server's apart. Every day count starts from
a fresh data folder. The days are generated once (seed 7, 2019-03-01 on) and reused
(with ``--keep``, or written beforehand by `bench.tardis_days` into the same folder);
generated data and data folders live under ``--work`` and are deleted at the end
unless ``--keep``.

The features config: the default FeatureSpec (1 s bars, depth 10, windows 10/60 s),
walk-forward 12 h train, 3 h test, 3 h step, 3 folds (they fit in one day, so every
day count builds the same slices; what grows with the days is the history sampled).
The nightly column (unless ``--no-nightly``): after the N-day run, day N+1 is
ingested into the same data folder and `chappie features` run again; its CPU should
not grow with N (#19: nothing earlier is recomputed).
Results: bench/RESULTS_scale.md, one block per `--label`.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "RESULTS_scale.md"
TITLE = "## scale: ingest and features over 1, 4 and 8 realistic tardis days (#19)"
CHAPPIE = REPO / ".venv" / "bin" / "chappie"
START = "2019-03-01"  # the first generated day

CONFIG = """\
name: bench-scale
ingest:
  source: tardis
  symbol: XBTUSD
features:
  walk_forward:
    train_hours: 12
    test_hours: 3
    step_hours: 3
    n_folds: 3
    embargo_s: 120
"""


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                out += [int(x) for x in fh.read().split()]
    except OSError:  # gone meanwhile
        pass
    return out


def _hwm_kb(pid: int) -> tuple[int, str] | None:
    """(VmHWM in kB, command line) of a live process; None when it is gone."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]), cmd
    except OSError:
        pass
    return None


class TreePeaks:
    """Samples the VmHWM (peak resident set) of every process under `pid` every
    `period_s` until stopped; `peaks` maps pid -> (kB, command line). A process's peak
    after its last sample is missed: 0.5 s at the end of a command that frees its
    memory as it ends."""

    def __init__(self, pid: int, period_s: float = 0.5) -> None:
        self.pid, self.period_s = pid, period_s
        self.peaks: dict[int, tuple[int, str]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            todo = [self.pid]
            while todo:
                pid = todo.pop()
                todo += _children(pid)
                got = _hwm_kb(pid)
                if got is not None and got[1]:
                    self.peaks[pid] = (max(got[0], self.peaks.get(pid, (0, ""))[0]), got[1])
            self._stop.wait(self.period_s)

    def stop(self) -> tuple[float, float]:
        """(peak GB of the `chappie` process, peak GB of the Prefect server; 0.0 when it
        was not seen)."""
        self._stop.set()
        self._thread.join()
        cli = [kb for kb, cmd in self.peaks.values() if "bin/chappie" in cmd]
        server = [kb for kb, cmd in self.peaks.values() if "flows.api_server" in cmd]
        return max(cli, default=0) / 1024**2, max(server, default=0) / 1024**2


def timed_cli(args: list[str], log: Path) -> dict[str, float]:
    """Run `args` under /usr/bin/time -v; return cpu_s, peak_rss_gb, wall_s and the
    peaks of the command's own process (cli_rss_gb) and of the Prefect server
    (server_rss_gb, `TreePeaks`). Raises RuntimeError (with the log's tail) when the
    command fails."""
    env = {**os.environ, "TQDM_DISABLE": "1"}
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            ["/usr/bin/time", "-v", *args], stdout=fh, stderr=subprocess.STDOUT, env=env
        )
        peaks = TreePeaks(proc.pid)
        rc = proc.wait()
        cli_gb, server_gb = peaks.stop()
    wall = time.perf_counter() - t0
    text = log.read_text()
    if rc != 0:
        raise RuntimeError(f"{' '.join(args[:3])} failed ({rc}):\n{text[-3000:]}")

    def field(name: str) -> float:
        m = re.search(rf"{re.escape(name)}: ([0-9.]+)", text)
        if m is None:
            raise RuntimeError(f"no {name!r} in {log}")
        return float(m.group(1))

    return {
        "cpu_s": field("User time (seconds)") + field("System time (seconds)"),
        "peak_rss_gb": field("Maximum resident set size (kbytes)") / 1024**2,
        "wall_s": wall,
        "cli_rss_gb": cli_gb,
        "server_rss_gb": server_gb,
    }


def write_block(label: str, body: str) -> None:
    """Replace the `label` block of RESULTS_scale.md, keeping the others."""
    blocks: dict[str, str] = {}
    if RESULTS.exists():
        for part in RESULTS.read_text().split("<!-- section:")[1:]:
            name, _, rest = part.partition(" -->")
            blocks[name] = rest.split("<!-- end -->")[0].strip()
    blocks[label] = body.strip()
    out = [TITLE, ""]
    for name in sorted(blocks):
        out += [f"<!-- section:{name} -->", blocks[name], "<!-- end -->", ""]
    RESULTS.write_text("\n".join(out))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", default="1,4,8", help="comma-separated day counts")
    ap.add_argument("--label", default="run", help="block name in RESULTS_scale.md")
    ap.add_argument("--work", type=Path, default=Path("/work/scratch/scale"))
    ap.add_argument("--book-rows", type=int, default=18_000_000)
    ap.add_argument("--trades", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--keep", action="store_true", help="keep generated data and folders")
    ap.add_argument(
        "--no-nightly",
        action="store_true",
        help="skip the nightly step (add day N+1 to the store of N days, ingest + features)",
    )
    a = ap.parse_args(argv)
    counts = sorted({int(x) for x in a.days.split(",") if x})
    raw = a.work / f"raw-{a.seed}-{a.book_rows}-{a.trades}"
    a.work.mkdir(parents=True, exist_ok=True)
    from bench.tardis_days import day_paths, generate_days, write_day
    from core.clock import NS_PER_DAY, iso_day, parse_day

    t_gen = time.perf_counter()
    n_gen = max(counts) + (0 if a.no_nightly else 1)
    t0 = parse_day(START)
    days = [iso_day(t0 + k * NS_PER_DAY) for k in range(n_gen)]
    # the generator carries its book and random state from day to day: a day cannot be
    # made alone, so every day is generated unless all were written before (files are
    # written whole, under a folder named by the generator's arguments)
    generated = not all(p.exists() for d in days for p in day_paths(raw, d))
    if generated:
        for d in generate_days(
            n_gen, start=START, seed=a.seed, book_rows=a.book_rows, trades=a.trades
        ):
            if not all(p.exists() for p in day_paths(raw, d.day)):
                write_day(d, raw)
    t_gen = time.perf_counter() - t_gen
    (a.work / "scale.yaml").write_text(CONFIG)
    rows = []
    try:
        for n in counts:
            data = a.work / f"data-{n}"
            shutil.rmtree(data, ignore_errors=True)
            files = [str(p) for d in days[:n] for p in day_paths(raw, d)]
            common = ["--data-dir", str(data)]
            ing = timed_cli(
                [str(CHAPPIE), "ingest", "tardis", *files, *common, "--json"],
                a.work / f"ingest-{n}.log",
            )
            feat = timed_cli(
                [str(CHAPPIE), "features", "--config", str(a.work / "scale.yaml"), *common],
                a.work / f"features-{n}.log",
            )
            night: tuple[dict[str, float], dict[str, float]] | None = None
            if not a.no_nightly:  # day N+1 into the store of N days
                new = [str(p) for p in day_paths(raw, days[n])]
                night = (
                    timed_cli(
                        [str(CHAPPIE), "ingest", "tardis", *new, *common, "--json"],
                        a.work / f"nightly-ingest-{n}.log",
                    ),
                    timed_cli(
                        [str(CHAPPIE), "features", "--config", str(a.work / "scale.yaml"), *common],
                        a.work / f"nightly-features-{n}.log",
                    ),
                )
            rows.append((n, ing, feat, night))
            print(
                f"{n} day(s): ingest {ing['cpu_s']:.1f} s CPU / {ing['peak_rss_gb']:.2f} GB; "
                f"features {feat['cpu_s']:.1f} s CPU / {feat['peak_rss_gb']:.2f} GB "
                f"(command / server: ingest {_apart(ing)}, features {_apart(feat)})"
                + (
                    f"; +1 day: ingest {night[0]['cpu_s']:.1f} s, features "
                    f"{night[1]['cpu_s']:.1f} s CPU"
                    if night
                    else ""
                ),
                flush=True,
            )
            if not a.keep:
                shutil.rmtree(data, ignore_errors=True)
    finally:
        if not a.keep:
            shutil.rmtree(raw, ignore_errors=True)
    lines = [
        f"### {a.label}",
        "",
        f"`{' '.join(['.venv/bin/python -m bench.bench_scale', *sys.argv[1:]] if argv is None else argv)}`"
        f" (code {_git_head()}); {a.book_rows:,} book rows and {a.trades:,} trades per day "
        f"(`bench/tardis_days.py`, seed {a.seed}, "
        f"{'generated' if generated else 'written before, found'} in {t_gen:.0f} s wall); "
        f"machine `{platform.node()}`, {os.cpu_count()} cores shared, load "
        f"{os.getloadavg()[0]:.1f}, {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC.",
        "",
        "| days | `chappie ingest tardis` CPU / peak RSS | `chappie features` CPU / peak RSS "
        "| peak RSS of the command / of its Prefect server: ingest; features "
        "| nightly: day N+1 into that store, ingest / features CPU (peak RSS) |",
        "|---:|---|---|---|---|",
    ]
    for n, ing, feat, night in rows:
        nightly = (
            f"{night[0]['cpu_s']:.1f} s ({night[0]['peak_rss_gb']:.2f} GB) / "
            f"{night[1]['cpu_s']:.1f} s ({night[1]['peak_rss_gb']:.2f} GB)"
            if night
            else "-"
        )
        lines.append(
            f"| {n} | {ing['cpu_s']:.1f} s / {ing['peak_rss_gb']:.2f} GB | "
            f"{feat['cpu_s']:.1f} s / {feat['peak_rss_gb']:.2f} GB | "
            f"{_apart(ing)}; {_apart(feat)} | {nightly} |"
        )
    write_block(a.label, "\n".join(lines))
    print("\n".join(lines))
    return 0


def _apart(m: dict[str, float]) -> str:
    return f"{m['cli_rss_gb']:.2f} / {m['server_rss_gb']:.2f} GB"


def _git_head() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


if __name__ == "__main__":
    raise SystemExit(main())
