"""Run every benchmark in its own process, then collect the figures into BENCHMARKS.md.

    python -m bench.run_all            # all benchmarks (make bench)
    python -m bench.run_all --collect  # only rebuild BENCHMARKS.md from bench/RESULTS_*.md

Each `bench/bench_*.py` measures one target side by side with its baseline in one run and
writes its own `bench/RESULTS_<area>.md` section (figures, machine, the exact command).
Each runs in a fresh process: `gym_trading_env` turns every warning into an error, and
timings must not share a warmed-up interpreter.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

HEADER = """# Benchmarks

Speed and memory targets are measured here, never asserted in unit tests. Each script in
`bench/` runs its target side by side with a baseline in the same run, on one core
(`OMP_NUM_THREADS=1`, one torch thread), and records the figures and the exact command.

Reproduce everything with `make bench` (= `.venv/bin/python -m bench.run_all`), or one
benchmark with the command given in its section.

"""


def collect() -> Path:
    sections = [p.read_text().strip() for p in sorted(HERE.glob("RESULTS_*.md"))]
    text = HEADER + "\n\n".join(sections) + "\n"
    out = ROOT / "BENCHMARKS.md"
    out.write_text(text)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--collect", action="store_true", help="only rebuild BENCHMARKS.md")
    parser.add_argument("names", nargs="*", help="benchmark module names (default: all)")
    args = parser.parse_args()
    if not args.collect:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        names = args.names or sorted(p.stem for p in HERE.glob("bench_*.py"))
        failed = []
        for name in names:
            print(f"== {name} ({platform.node()}, {time.strftime('%Y-%m-%d %H:%M')})", flush=True)
            rc = subprocess.call([sys.executable, "-m", f"bench.{name}"], cwd=ROOT, env=env)
            if rc:
                failed.append(name)
        if failed:
            print(f"failed: {failed}", file=sys.stderr)
    print(f"wrote {collect()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
