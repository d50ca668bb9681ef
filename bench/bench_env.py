"""Env step speed: ManagementEnv vs gym-anytrading (and gym-trading-env), same data, one run.

    .venv/bin/python -m bench.bench_env            # writes bench/RESULTS_envs.md
    .venv/bin/python -m bench.bench_env --rows 20000 --repeats 3 --pairs 60 --block 2000

Data: one synthetic XBTUSD-like slice (random-walk book around 80,000 ticks, taker prints
on both sides, the features of the default FeatureSpec), written once in the slice schema. Every
env steps through the whole slice with the same pre-drawn random actions (80 % hold),
window 16, in a single process on one core; the figure is the best of `--repeats` full
passes (steps / wall-clock second, reset excluded). gym-trading-env runs in its own
subprocess because importing it turns every warning into an error.

The target (#17: ManagementEnv's step rate through SB3's DummyVecEnv at or above
gym-anytrading's) is judged side by side (`--pairs` rounds of `--block` vec steps of
each env, ABBA order, in one process): on a shared machine a best-of-N pass of one env
and then of the other see different loads (at load 5 the table's ratio moved from 0.96x
to 1.26x between two runs of the same code), the median ratio of adjacent short blocks
does not.
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
ENV_KW: dict[str, Any] = {}  # extra ManagementEnv keywords (--reward-terms-in-info)
NOTE = """Reading the figures. gym-anytrading's step returns a view into its precomputed
(window, 2) array, does no order or fee accounting and keeps three info keys: it is close
to the floor of a Python env. ManagementEnv per step returns a fresh observation
(16 x the FeatureSpec's features + 7 management values; never an aliased buffer), checks
resting maker orders against the bar's prints and book, marks the stacked position and
evaluates every reward term, all in one numba call (`envs.step.env_step`: the order rules
of `envs.broker`, which the live paper account runs too, and the kernels `envs.position` /
`envs.rewards` wrap for the live loop and the backtest). Its
`info` (equity, pnl with and without fees, closed trades, 21 keys; the reward terms only
with `reward_terms_in_info=True`, else `env.last_reward_terms()`) is built every step
from the info records of the env's named state (#17 removed the lazily filled dict that
deferred it to the first read); the "info read every step" row adds a gymnasium Wrapper
that reads `info["equity"]`, what the backtest does. "Via SB3 DummyVecEnv" is how PPO
consumes an env: the observation is copied into the vec buffer, a key is added to every
info and every info is deep-copied (`StepInfo.__deepcopy__` copies its trades list).
The env calls the step kernel's compiled code for its own argument types
(`envs.step.step_kernel`), not numba's dispatcher, which typed the seven arguments on
every call.

Where a DummyVecEnv step of ManagementEnv goes (2026-12-06 20:00-20:20 UTC, load 3-5.7,
variants of the env stepped side by side in one process, 30-40 ABBA rounds of 1000-2000
vec steps; perf: the numba kernel's own code is 2.3 % of the samples, the dispatcher
1.4 %, the rest CPython): an empty info instead of the real one gives 1.40-1.49x
gym-anytrading where the env gives 1.01-1.06x, so the info is about 30 % of the vec
step; of it, building it (~2 us at load 5 in isolation: two `tolist`, a 22-key dict and
the 8-key reward terms, as it then was) is worth ~13 % (the same info without the build: 1.13-1.21x)
and its deep copy beyond a one-key dict's ~6 %. The build is at CPython's per-key cost:
the 22 keywords, a template dict copied and set key by key (-8 % of the build, not
measurable through DummyVecEnv), `dict(zip(...))` (+60 %) or a tuple returned by the
kernel instead of `tolist` (-0.1 us) do not change the vec rate beyond the noise, nor do
a leaner `__deepcopy__`, the build inlined into `step` and the kernel's arguments bound
once (all together 1.01-1.03x against 1.01-1.03x). What would: fewer keys. Without the
nested reward terms the vec rate is 1.12-1.15x gym-anytrading, with an 11-key info
1.21x (those variants, 20:00-20:20 UTC). No production code read `reward_terms`: since
82d6915 the breakdown is opt-in (`ManagementEnv(..., reward_terms_in_info=True)`, or
`env.last_reward_terms()`), the golden rollouts re-recorded without it (every record the
one before minus that key). Measured after it (20:48-21:05 UTC, load 5.2-7.3) the gain
is smaller than that variant promised: 2-5 % over the env before, in direct A/B.

History: the pure-Python step (stacked Position dataclasses, eager info; commit
fe37b33) measured 159,447 steps/s, 0.40x gym-anytrading raw and 0.67x via DummyVecEnv.
The numba step with the lazy info (cc24df9, before #17's queue, latency and lot rules and
the eager info) measured 1.57x raw and 1.20x via DummyVecEnv.
#17 then built the info every step and added the queue, latency and lot rules: 0.72x raw,
0.98x via DummyVecEnv (670c1f0); the named state (f8ac09a: structured records instead of
two packed arrays, ~0.15 us more to unbox) measured 0.78x and 0.95x in one run.
Calling the kernel's compiled entry point (7cf9a4a) instead of the dispatcher: +3 to
+10 % through DummyVecEnv in A/B rounds against the dispatcher at load 3.
The reward terms out of the default info (82d6915): see the run summary above.
The numba step returns bit-identical observations, rewards and infos
(tests/envs/test_golden_rollout.py, recorded from the Python step).
"""


def _n_features() -> int:
    from core.config.features import FeatureSpec

    return len(FeatureSpec().names)


def _actions(n: int, k: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = [0.8] + [0.2 / (k - 1)] * (k - 1)
    return rng.choice(k, size=n, p=p)


def _timed(fn: Any) -> tuple[float, float]:
    """(process CPU seconds, wall seconds) spent in fn()."""
    c, w = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - c, time.perf_counter() - w


def _time_passes(env: Any, actions: np.ndarray, repeats: int, reset: Any) -> dict[str, float]:
    """Best of `repeats` full episodes through env.step: steps per CPU and wall second."""
    best_cpu = best_wall = 0.0
    steps = 0
    for _ in range(repeats):
        reset()

        def one_pass() -> None:
            nonlocal steps
            n, done = 0, False
            while not done:
                out = env.step(actions[n])
                done = out[2] or out[3]
                n += 1
            steps = n

        cpu, wall = _timed(one_pass)
        best_cpu, best_wall = max(best_cpu, steps / cpu), max(best_wall, steps / wall)
    return {"cpu": best_cpu, "wall": best_wall, "steps": steps}


def _time_vec(make: Any, actions: np.ndarray, steps: int, repeats: int) -> dict[str, float]:
    """The same through SB3's DummyVecEnv (one env), the way PPO consumes an env: obs
    copied into the vec buffer, every info deep-copied, auto-reset at episode end."""
    from stable_baselines3.common.vec_env import DummyVecEnv

    vec = DummyVecEnv([make])
    best_cpu = best_wall = 0.0
    for _ in range(repeats):
        vec.reset()

        def one_pass() -> None:
            for n in range(steps):
                vec.step(actions[n : n + 1])

        cpu, wall = _timed(one_pass)
        best_cpu, best_wall = max(best_cpu, steps / cpu), max(best_wall, steps / wall)
    return {"cpu": best_cpu, "wall": best_wall}


def interleaved_vec(
    makes: dict[str, Any], n_actions: dict[str, int], block: int, pairs: int
) -> dict[str, Any]:
    """Two envs through SB3's DummyVecEnv side by side in this process: `pairs` rounds, each
    `block` vec steps of each env (each env running on through its episodes from the
    shared action draw, DummyVecEnv resetting it), the order alternating (ABBA), CPU time.
    Short blocks keep the two envs of a round under the same load; each round's ratio
    (the first env's steps/s over the second's) and their median compare them. Returns
    those, the median rates and the load average before and after."""
    from stable_baselines3.common.vec_env import DummyVecEnv

    names = list(makes)
    vecs = {k: DummyVecEnv([makes[k]]) for k in names}
    acts = {k: _actions(200_000, n_actions[k]) for k in names}
    at = dict.fromkeys(names, 0)
    for k in names:
        vecs[k].reset()

    def run(k: str) -> float:
        """Steps/s of CPU time over the next `block` steps of env k."""
        vec, a, n0 = vecs[k], acts[k], at[k]
        if n0 + block > len(a):
            n0 = 0
        at[k] = n0 + block

        def one_block() -> None:
            for n in range(n0, n0 + block):
                vec.step(a[n : n + 1])

        cpu, _ = _timed(one_block)
        return block / cpu

    for k in names:  # warm-up, untimed
        run(k)
    load0 = os.getloadavg()
    ratios, rates = [], {k: [] for k in names}
    for r in range(pairs):
        for k in names if r % 2 == 0 else names[::-1]:
            rates[k].append(run(k))
        ratios.append(rates[names[0]][-1] / rates[names[1]][-1])
    return {
        "ratios": ratios,
        "median": float(np.median(ratios)),
        "rates": {k: float(np.median(v)) for k, v in rates.items()},
        "load": (load0[0], os.getloadavg()[0]),
    }


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


def _measure(
    name: str, make: Any, n_actions: int, repeats: int, reset_options: dict | None = None
) -> dict[str, Any]:
    """Time full passes of `make()` with the shared action draw, raw and via DummyVecEnv."""
    env = make()
    actions = _actions(200_000, n_actions)
    raw = _time_passes(env, actions, repeats, lambda: env.reset(seed=0, options=reset_options))
    vec = _time_vec(make, actions, int(raw["steps"]), repeats)
    return {"env": name, "raw": raw, "vec": vec, "steps": int(raw["steps"])}


def bench_management(data: dict[str, str], repeats: int) -> dict[str, Any]:
    from envs.management import ManagementEnv

    return _measure(
        f"chappie ManagementEnv (stacked maker fills, fees, 7-value state, {_n_features()} features)",
        lambda: ManagementEnv(data["slice"], data["stats"], {"window": WINDOW}, **ENV_KW),
        3,
        repeats,
        {"full": True},
    )


def bench_management_info_read(data: dict[str, str], repeats: int) -> dict[str, Any]:
    """ManagementEnv with its info read on every step (the backtest's use)."""
    import gymnasium as gym

    from envs.management import ManagementEnv

    class ReadInfo(gym.Wrapper):
        def step(self, action: Any) -> Any:
            out = self.env.step(action)
            out[4]["equity"]
            return out

    return _measure(
        "chappie ManagementEnv, info read every step (via a Wrapper)",
        lambda: ReadInfo(ManagementEnv(data["slice"], data["stats"], {"window": WINDOW}, **ENV_KW)),
        3,
        repeats,
        {"full": True},
    )


def bench_anytrading(data: dict[str, str], repeats: int) -> dict[str, Any]:
    import pandas as pd
    from gym_anytrading.envs import StocksEnv

    df = pd.DataFrame({"Close": np.load(Path(data["root"]) / "mid_usd.npy")})
    return _measure(
        "gym-anytrading StocksEnv (2 actions, close + diff)",
        lambda: StocksEnv(df=df, window_size=WINDOW, frame_bound=(WINDOW, len(df))),
        2,
        repeats,
    )


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
    return _measure(
        f"gym-trading-env TradingEnv (3 positions, {_n_features()} features)",
        lambda: TradingEnv(
            df=df,
            positions=[-1, 0, 1],
            windows=WINDOW,
            trading_fees=0.00075,
            initial_position=0,
            verbose=0,
        ),
        3,
        repeats,
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--peer", help=argparse.SUPPRESS)  # internal: run one peer, print JSON
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument(
        "--pairs",
        type=int,
        default=60,
        help="ABBA rounds of ManagementEnv vs gym-anytrading through DummyVecEnv (0: none)",
    )
    parser.add_argument("--block", type=int, default=2000, help="vec steps per env per round")
    parser.add_argument(
        "--no-write", action="store_true", help="print only, do not write RESULTS_envs.md"
    )
    parser.add_argument(
        "--reward-terms-in-info",
        action="store_true",
        help="ManagementEnv built with reward_terms_in_info=True (the info before 82d6915)",
    )
    args = parser.parse_args()
    if args.peer == "gym_trading_env":
        print(json.dumps(bench_trading_env(json.loads(args.data), args.repeats)))
        return 0

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.reward_terms_in_info:
        ENV_KW["reward_terms_in_info"] = True
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="chappie-bench-env-") as tmp:
        data = write_data(Path(tmp), args.rows)
        results = [
            bench_management(data, args.repeats),
            bench_management_info_read(data, args.repeats),
            bench_anytrading(data, args.repeats),
        ]
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
            results.append({"env": "gym-trading-env", "error": proc.stderr[-300:]})
        side = None
        if args.pairs > 0:
            import pandas as pd
            from gym_anytrading.envs import StocksEnv

            from envs.management import ManagementEnv

            df = pd.DataFrame({"Close": np.load(Path(data["root"]) / "mid_usd.npy")})
            side = interleaved_vec(
                {
                    "ours": lambda: ManagementEnv(
                        data["slice"], data["stats"], {"window": WINDOW}, **ENV_KW
                    ),
                    "anytrading": lambda: StocksEnv(
                        df=df, window_size=WINDOW, frame_bound=(WINDOW, len(df))
                    ),
                },
                {"ours": 3, "anytrading": 2},
                args.block,
                args.pairs,
            )
    load_end = os.getloadavg()

    base = results[2]  # gym-anytrading
    lines = [
        "## envs: ManagementEnv step speed",
        "",
        f"Single process, {args.rows} bars, window {WINDOW}, the same pre-drawn random actions "
        f"(80 % hold), best of {args.repeats} full passes; machine `{platform.node()}` "
        f"({platform.processor() or platform.machine()}, {os.cpu_count()} cores, shared), "
        f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"load average {load_start[0]:.1f} at the start, {load_end[0]:.1f} at the end. "
        "Steps per second of process CPU time (robust to the other jobs on the machine); "
        "wall-clock figures in brackets.",
        "",
        "| env | env.step steps/s | vs gym-anytrading | via SB3 DummyVecEnv steps/s | vs gym-anytrading |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['env']} | failed: `{r['error'].strip()[-120:]}` | | | |")
            continue
        lines.append(
            f"| {r['env']} | {r['raw']['cpu']:,.0f} ({r['raw']['wall']:,.0f}) | "
            f"{r['raw']['cpu'] / base['raw']['cpu']:.2f}x | "
            f"{r['vec']['cpu']:,.0f} ({r['vec']['wall']:,.0f}) | "
            f"{r['vec']['cpu'] / base['vec']['cpu']:.2f}x |"
        )
    ours = results[0]
    # #17: "the env step rate through DummyVecEnv stays at or above gym-anytrading's": judged
    # on the side-by-side rounds when run (both envs under the same load), else on the table
    vec_ratio = side["median"] if side else ours["vec"]["cpu"] / base["vec"]["cpu"]
    verdict = (
        "Target (ManagementEnv steps/s through SB3 DummyVecEnv >= gym-anytrading's): "
        + ("met" if vec_ratio >= 1.0 else "NOT met")
        + f" ({ours['raw']['cpu'] / base['raw']['cpu']:.2f}x raw, "
        f"{ours['vec']['cpu'] / base['vec']['cpu']:.2f}x through DummyVecEnv in the table"
        + (f", {side['median']:.2f}x side by side" if side else "")
        + ")."
    )
    lines += ["", verdict]
    if side:
        rates = side["rates"]
        q1, q3 = np.percentile(side["ratios"], [25, 75])
        lines += [
            "",
            f"Side by side through DummyVecEnv ({args.pairs} rounds, ABBA order, {args.block} "
            "vec steps of each env a round (each env running on through its episodes), CPU "
            "time; load average "
            f"{side['load'][0]:.1f} -> {side['load'][1]:.1f}): ManagementEnv / gym-anytrading "
            f"median **{side['median']:.2f}x** (quartiles {q1:.2f} / {q3:.2f}, range "
            f"{min(side['ratios']):.2f} - {max(side['ratios']):.2f}); median rates "
            f"{rates['ours']:,.0f} vs {rates['anytrading']:,.0f} steps/s.",
        ]
    lines += [
        "",
        f"Command: `.venv/bin/python -m bench.bench_env --rows {args.rows} --repeats {args.repeats}"
        f" --pairs {args.pairs} --block {args.block}"
        + (" --reward-terms-in-info" if args.reward_terms_in_info else "")
        + "`",
        "",
        NOTE,
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        (HERE / "RESULTS_envs.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
