"""Env step speed: ManagementEnv vs gym-anytrading (and gym-trading-env), same data, one run.

    .venv/bin/python -m bench.bench_env            # writes bench/RESULTS_envs.md
    .venv/bin/python -m bench.bench_env --rows 20000 --repeats 3

Data: one synthetic XBTUSD-like slice (random-walk book around 80,000 ticks, taker prints
on both sides, the 26 features of FeatureSpec v1), written once in the slice schema. Every
env steps through the whole slice with the same pre-drawn random actions (80 % hold),
window 16, in a single process on one core; the figure is the best of `--repeats` full
passes (steps / wall-clock second, reset excluded). gym-trading-env runs in its own
subprocess because importing it turns every warning into an error.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WINDOW = 16


def _actions(n: int, k: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = [0.8] + [0.2 / (k - 1)] * (k - 1)
    return rng.choice(k, size=n, p=p)


def _time_passes(env: Any, actions: np.ndarray, repeats: int, reset: Any) -> tuple[float, int]:
    best, steps = 0.0, 0
    for _ in range(repeats):
        reset()
        n, done = 0, False
        t = time.perf_counter()
        while not done:
            out = env.step(actions[n])
            done = out[2] or out[3]
            n += 1
        best = max(best, n / (time.perf_counter() - t))
        steps = n
    return best, steps


def write_data(root: Path, rows: int) -> dict[str, str]:
    """The slice + stats (for ManagementEnv) and a CSV of mid prices and features (peers)."""
    sys.path.insert(0, str(ROOT))
    from tests.envs.conftest import NAMES, make_market_files

    files = make_market_files(root, n=rows, seed=1)
    import pyarrow.parquet as pq

    table = pq.read_table(files.slice_path)
    mid_usd = table.column("mid_ticks").to_numpy() * 0.5
    feats = np.column_stack([table.column(c).to_numpy() for c in NAMES])
    np.save(root / "mid_usd.npy", mid_usd)
    np.save(root / "features.npy", feats)
    return {"slice": str(files.slice_path), "stats": str(files.stats_dir), "root": str(root)}


def bench_management(data: dict[str, str], repeats: int) -> dict[str, Any]:
    from envs.management import ManagementEnv

    env = ManagementEnv(data["slice"], data["stats"], {"window": WINDOW})
    actions = _actions(env.n_rows + 1, 3)
    sps, steps = _time_passes(env, actions, repeats, lambda: env.reset(options={"full": True}))
    return {
        "env": "chappie ManagementEnv (stacked maker fills, fees, 7-value state)",
        "steps_per_s": sps,
        "steps": steps,
    }


def bench_anytrading(data: dict[str, str], repeats: int) -> dict[str, Any]:
    import pandas as pd
    from gym_anytrading.envs import StocksEnv

    mid = np.load(Path(data["root"]) / "mid_usd.npy")
    df = pd.DataFrame({"Close": mid})
    env = StocksEnv(df=df, window_size=WINDOW, frame_bound=(WINDOW, len(df)))
    actions = _actions(len(df) + 1, 2)
    sps, steps = _time_passes(env, actions, repeats, lambda: env.reset(seed=0))
    return {
        "env": "gym-anytrading StocksEnv (2 actions, close + diff)",
        "steps_per_s": sps,
        "steps": steps,
    }


def bench_trading_env(data: dict[str, str], repeats: int) -> dict[str, Any]:
    """Runs in its own process: `import gym_trading_env` turns warnings into errors."""
    import pandas as pd
    from gym_trading_env.environments import TradingEnv

    root = Path(data["root"])
    mid = np.load(root / "mid_usd.npy")
    feats = np.load(root / "features.npy")
    df = pd.DataFrame(
        {"open": mid, "high": mid, "low": mid, "close": mid},
        index=pd.date_range("2021-07-22", periods=len(mid), freq="1s"),
    )
    for j in range(feats.shape[1]):
        df[f"feature_{j}"] = feats[:, j]
    env = TradingEnv(
        df=df,
        positions=[-1, 0, 1],
        windows=WINDOW,
        trading_fees=0.00075,
        initial_position=0,
        verbose=0,
    )
    actions = _actions(len(df) + 1, 3)
    sps, steps = _time_passes(env, actions, repeats, lambda: env.reset(seed=0))
    return {
        "env": "gym-trading-env TradingEnv (3 positions, 26 features)",
        "steps_per_s": sps,
        "steps": steps,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--peer", help=argparse.SUPPRESS)  # internal: run one peer, print JSON
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument(
        "--no-write", action="store_true", help="print only, do not write RESULTS_envs.md"
    )
    args = parser.parse_args()
    if args.peer == "gym_trading_env":
        print(json.dumps(bench_trading_env(json.loads(args.data), args.repeats)))
        return 0

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory(prefix="chappie-bench-env-") as tmp:
        data = write_data(Path(tmp), args.rows)
        results = [bench_management(data, args.repeats), bench_anytrading(data, args.repeats)]
        cmd = [
            sys.executable,
            "-m",
            "bench.bench_env",
            "--peer",
            "gym_trading_env",
            "--data",
            json.dumps(data),
        ]
        cmd += ["--repeats", str(args.repeats)]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
        if proc.returncode == 0:
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        else:
            results.append(
                {
                    "env": "gym-trading-env",
                    "steps_per_s": float("nan"),
                    "steps": 0,
                    "error": proc.stderr[-300:],
                }
            )

    base = results[1]["steps_per_s"]
    lines = [
        "## envs: ManagementEnv step speed",
        "",
        f"Single process, one core, {args.rows} bars, window {WINDOW}, same random actions (80 % hold), "
        f"best of {args.repeats} full passes; machine `{platform.node()}` ({platform.processor() or platform.machine()}), "
        f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        "| env | steps/s | steps per pass | vs gym-anytrading |",
        "|---|---:|---:|---:|",
    ]
    for r in results:
        ratio = r["steps_per_s"] / base if base else float("nan")
        lines.append(f"| {r['env']} | {r['steps_per_s']:,.0f} | {r['steps']:,} | {ratio:.2f}x |")
        if "error" in r:
            lines.append(f"\ngym-trading-env failed: `{r['error']}`\n")
    lines += [
        "",
        f"Command: `.venv/bin/python -m bench.bench_env --rows {args.rows} --repeats {args.repeats}`",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        (HERE / "RESULTS_envs.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
