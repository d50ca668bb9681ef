"""Training-area speed targets, each side by side with its baseline in one run:

1. seed sweep on 2 worker processes vs 1 (target >= 1.7x), through the code production
   runs: `flows.train.train_flow` (Prefect's process-pool task runner), the same PPO tasks;
2. PPO training throughput on the ManagementEnv vs SB3's on CartPole-v1 with the same
   PPO settings (target >= 90 %), one process, one torch thread;
3. vectorised backtest (every slice of a model in lockstep, one batched forward pass per
   step) vs one env per slice stepped to the end with SB3's `model.predict` per step
   (target >= 5x); the lockstep pass is also checked to produce identical equity curves.

    .venv/bin/python -m bench.bench_training                 # all three, writes bench/RESULTS_training.md
    .venv/bin/python -m bench.bench_training --only ppo      # one of: sweep, ppo, backtest

Data: slices in the real slice schema (random-walk XBTUSD book, 22 features of the tiny
FeatureSpec, window 16), written to a temp folder by the training tests' fixture builder.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))


def _machine() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"machine `{platform.node()}` ({platform.machine()}, {os.cpu_count()} cores, shared), Python "
        f"{platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"1-min load average at the end {load:.1f}"
    )


def _data(rows: int) -> Any:
    from core.config.experiment import load_config
    from tests.training.conftest import TINY, build_data_dir

    cfg = load_config(TINY)
    return build_data_dir(Path(tempfile.mkdtemp(prefix="bench-training-")), cfg, rows=rows)


def _task(data: Any, seed: int, timesteps: int, fold: int = 0) -> Any:
    from features.slices import load_fold_index, manifest_path
    from training.sweep import TrainTask

    spec = data.cfg.features.spec
    f = load_fold_index(data.layout, spec.spec_hash).folds[fold]
    return TrainTask(
        trial=data.cfg.sweep.trials[0],
        seed=seed,
        timesteps=timesteps,
        fold=fold,
        train_slice=str(manifest_path(data.layout, spec.spec_hash, f.train)),
        stats_dir=str(data.layout.stats(f.stats_id)),
        out_dir=str(data.root / "runs" / f"s{seed}-t{timesteps}-{time.time_ns()}"),
    )


# ---------------------------------------------------------------- 1. seed sweep scaling
def _sweep_config(cfg: Any, executor: str, workers: int, n_seeds: int, timesteps: int) -> Any:
    sweep = cfg.sweep.model_copy(
        update={
            "executor": executor,
            "n_workers": workers,
            "retries": 0,
            "seeds": tuple(range(n_seeds)),
            "timesteps": (timesteps,),
        }
    )
    return cfg.model_copy(update={"sweep": sweep})


def _children_cpu_s() -> float:
    """CPU seconds of this process's live children (the temporary Prefect API server):
    RUSAGE_CHILDREN counts a child only once it has exited."""
    me, total = str(os.getpid()), 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me:  # ppid
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def bench_sweep(n_seeds: int, timesteps: int, repeats: int = 1) -> str:
    """The seed sweep as production runs it: `flows.train.train_flow` (the train-policies
    flow on Prefect's process-pool task runner, MLflow child runs, sweep.json), with 1 and
    with 2 workers, each on a fresh copy of the same data folder (nothing cached), in the
    order 1, 2 (then 2, 1, ... for more repeats: drifting load falls on both alike)."""
    import resource
    import statistics

    from core.config.experiment import load_config
    from tests.training.conftest import TINY, build_data_dir

    base = Path(tempfile.mkdtemp(prefix="bench-training-sweep-"))
    # a Prefect home of its own, set before prefect is imported (as `chappie` would find it)
    os.environ["PREFECT_HOME"] = str(base / "prefect")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no telemetry writes
    from flows.api_server import prefect_api

    cfg = load_config(TINY)
    uri = f"sqlite:///{base}/mlflow.db"
    order = [w for k in range(repeats) for w in ((1, 2) if k % 2 == 0 else (2, 1))]
    runs: list[dict[str, float]] = []
    n_tasks = 0
    with prefect_api():  # one temporary Prefect server for every run, as a command starts
        from flows.train import train_flow
        from registry import tracking

        tracking.configure(uri)  # MLflow's schema is made before any clock starts
        # untimed warm-up (in-process, shortest run): Prefect's first flow and task
        # registration and the flow's first imports are paid by neither measured run
        warm = build_data_dir(base / "warm-up", cfg, rows=300)
        train_flow(_sweep_config(cfg, "sequential", 1, 1, 256), str(warm.root), uri)
        for k, workers in enumerate(order):
            data = build_data_dir(base / f"run{k}-workers-{workers}", cfg, rows=4000)
            run_cfg = _sweep_config(cfg, "process", workers, n_seeds, timesteps)
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            server0, l0, e0 = _children_cpu_s(), os.getloadavg()[0], time.time()
            t0 = time.perf_counter()
            out = train_flow(run_cfg, str(data.root), uri)
            wall = time.perf_counter() - t0
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            assert not out.failed, [(t.run_name, t.error) for t in out.tasks if not t.ok]
            first = min(Path(t.task_json).stat().st_mtime for t in out.tasks if t.task_json)
            runs.append(
                {
                    "workers": workers,
                    "wall": wall,
                    "cpu": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
                    "train_cpu": sum(getattr(t, "cpu_s", 0.0) for t in out.tasks),
                    "server_cpu": _children_cpu_s() - server0,
                    "first_task_s": first - e0,
                    "load0": l0,
                    "load1": os.getloadavg()[0],
                }
            )
            n_tasks = len(out.tasks)

    def med(workers: int, key: str) -> float:
        return statistics.median(r[key] for r in runs if r["workers"] == workers)

    speedup = med(1, "wall") / med(2, "wall")
    n_folds = n_tasks // n_seeds
    rows = [
        f"| {int(r['workers'])} | {r['wall']:.1f} | {med(1, 'wall') / r['wall']:.2f}x "
        f"| {r['first_task_s']:.1f} | {r['cpu']:.1f} | {r['train_cpu']:.1f} | {r['cpu'] - r['train_cpu']:.1f} "
        f"| {r['server_cpu']:.1f} | {r['cpu'] / r['wall']:.2f} | {r['load0']:.1f} -> {r['load1']:.1f} |"
        for r in runs
    ]
    return "\n".join(
        [
            "### Seed sweep: 2 worker processes vs 1",
            "",
            f"The train flow as production runs it (`flows.train.train_flow`: the train-policies "
            f"Prefect flow on its process-pool task runner, MLflow parent and child runs, sweep.json), "
            f"{n_tasks} PPO tasks ({n_seeds} seeds x {n_folds} folds) x {timesteps} timesteps on the "
            "tiny trial (n_steps 256, batch 64, 2 epochs, MLP 64x64), one torch thread per worker, "
            "each run on a fresh copy of the same data folder (nothing reused or cached), one "
            "temporary Prefect server for all runs, after one untimed warm-up flow run; runs in the "
            f"order {', '.join(str(w) for w in order)} workers. Wall clock of the whole flow call, "
            "including worker start-up and MLflow logging. First task: seconds from the call to "
            "the first task's training start (flow start, MLflow set-up, worker spawn and imports). "
            "Worker CPU s: all pool workers together; training CPU s: the tasks' own "
            "(`TrainResult.cpu_s`: env, PPO, saving), the rest is worker start-up (imports) and "
            "Prefect's task engine; Prefect server: the API server's CPU during the run. The "
            "wall-clock speed-up needs 2 idle cores, so the 1-minute load average of the machine "
            "is recorded before and after each run.",
            "",
            "| workers | wall s | speed-up (vs median 1-worker wall) | first task s | worker CPU s "
            "| training CPU s | start-up + engine CPU s | Prefect server CPU s "
            "| cores obtained (worker CPU / wall) | load avg before -> after |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
            *rows,
            "",
            "Projected on 2 idle cores (1 worker gets one core, 2 workers get two): "
            f"{med(1, 'cpu') / (med(2, 'cpu') / 2):.2f}x = worker CPU s with 1 worker / (worker "
            "CPU s with 2 workers / 2), medians. A projection from measured CPU time (the "
            "parent's and the server's serial work left out), not the target's wall-clock measure.",
            "",
            f"Target (>= 1.7x on 2 workers, median wall): {'met' if speedup >= 1.7 else 'NOT met'} "
            f"({speedup:.2f}x).",
            "",
            f"Command: `.venv/bin/python -m bench.bench_training --only sweep --seeds {n_seeds} "
            f"--timesteps {timesteps} --repeats {repeats}`",
        ]
    )


# ---------------------------------------------------------------- 2. PPO throughput
def _ppo_fps(env: Any, kwargs: dict[str, Any], timesteps: int) -> tuple[float, float]:
    from stable_baselines3 import PPO

    model = PPO("MlpPolicy", env, seed=0, device="cpu", verbose=0, **kwargs)
    model.learn(total_timesteps=kwargs["n_steps"])  # warm-up: first rollout + update
    c, w = time.process_time(), time.perf_counter()
    model.learn(total_timesteps=timesteps, reset_num_timesteps=False)
    return timesteps / (time.process_time() - c), timesteps / (time.perf_counter() - w)


def bench_ppo(timesteps: int, repeats: int) -> str:
    import gymnasium as gym
    import torch

    from training.sweep import _training_env, ppo_kwargs

    torch.set_num_threads(1)
    data = _data(rows=6000)
    task = _task(data, 0, timesteps)
    kw = ppo_kwargs(task.trial)
    best: dict[str, tuple[float, float]] = {"management": (0.0, 0.0), "cartpole": (0.0, 0.0)}
    for _ in range(repeats):  # interleaved, so both see the same machine load
        mg = _ppo_fps(_training_env(task), kw, timesteps)  # exactly what train_one trains on
        cp = _ppo_fps(gym.make("CartPole-v1"), kw, timesteps)
        best["management"] = max(best["management"], mg)
        best["cartpole"] = max(best["cartpole"], cp)
    ratio_cpu = best["management"][0] / best["cartpole"][0]
    ratio_wall = best["management"][1] / best["cartpole"][1]
    p = task.trial.ppo
    return "\n".join(
        [
            "### PPO training throughput: ManagementEnv vs CartPole-v1",
            "",
            f"SB3 PPO, identical settings for both (n_steps {p.n_steps}, batch {p.batch_size}, epochs "
            f"{p.n_epochs}, MLP {list(p.net_arch)} {p.activation}, one env, CPU, one torch thread), "
            f"{timesteps} timesteps after a one-rollout warm-up, best of {repeats} interleaved runs. "
            "Timesteps per second of process CPU time (robust to other jobs); wall clock in brackets. "
            f"ManagementEnv observation: {len(data.cfg.features.spec.names)} features x window 16 + 7 = "
            f"{len(data.cfg.features.spec.names) * 16 + 7} floats; CartPole: 4.",
            "",
            "| env | timesteps/s | vs CartPole |",
            "|---|---:|---:|",
            f"| chappie ManagementEnv | {best['management'][0]:,.0f} ({best['management'][1]:,.0f}) | "
            f"{ratio_cpu:.2f}x ({ratio_wall:.2f}x) |",
            f"| CartPole-v1 | {best['cartpole'][0]:,.0f} ({best['cartpole'][1]:,.0f}) | 1.00x |",
            "",
            f"Target (>= 90 % of CartPole's): {'met' if ratio_cpu >= 0.9 else 'NOT met'} ({ratio_cpu:.0%}).",
            "",
            f"Command: `.venv/bin/python -m bench.bench_training --only ppo --timesteps {timesteps} "
            f"--repeats {repeats}`",
        ]
    )


# ---------------------------------------------------------------- 3. backtest
def bench_backtest(rows: int, n_slices: int, repeats: int) -> str:
    import numpy as np
    import torch
    from stable_baselines3 import PPO

    from envs.management import ManagementEnv
    from features.slices import load_fold_index, manifest_path
    from training.backtest import SliceInput, backtest, sb3_batch_policy
    from training.sweep import ppo_kwargs

    torch.set_num_threads(1)
    data = _data(rows=rows)
    spec = data.cfg.features.spec
    idx = load_fold_index(data.layout, spec.spec_hash)
    ids = [f.test for f in idx.folds] + list(idx.stress)
    base = [manifest_path(data.layout, spec.spec_hash, i) for i in ids]
    paths = [base[i % len(base)] for i in range(n_slices)]
    inputs = [SliceInput(str(p), f"s{i}", "test", i) for i, p in enumerate(paths)]
    stats = str(data.layout.stats(idx.folds[-1].stats_id))
    trial = data.cfg.sweep.trials[0]
    model = PPO(
        "MlpPolicy",
        ManagementEnv(paths[0], stats, trial.env),
        seed=0,
        device="cpu",
        **ppo_kwargs(trial),
    )
    model.learn(512)  # a policy that trades, not the all-hold initialisation

    def predict_one(obs: np.ndarray) -> np.ndarray:
        return np.array([model.predict(obs[0], deterministic=True)[0]])

    batch = sb3_batch_policy(model)
    runs = {
        "lockstep": lambda: backtest(batch, inputs, stats, trial.env),
        "sequential": lambda: backtest(predict_one, inputs, stats, trial.env, lockstep=False),
    }
    best = {k: float("inf") for k in runs}
    out: dict[str, Any] = {}
    for _ in range(repeats):
        for k, fn in runs.items():
            t0 = time.perf_counter()
            out[k] = fn()
            best[k] = min(best[k], time.perf_counter() - t0)
    same = all(
        np.array_equal(a.equity, b.equity)
        for a, b in zip(out["lockstep"], out["sequential"], strict=True)
    )
    steps = sum(r.actions.size for r in out["lockstep"])
    trades = sum(len(r.trades) for r in out["lockstep"])
    speedup = best["sequential"] / best["lockstep"]
    return "\n".join(
        [
            "### Vectorised walk-forward backtest",
            "",
            f"One model over {n_slices} slices of {rows // 2} bars ({steps} env steps, {trades} trades in "
            "total), deterministic policy, best of "
            f"{repeats}. Lockstep: every slice's ManagementEnv advances together and the policy sees one "
            "(N, D) batch per step (`training.backtest.backtest` with `sb3_batch_policy`). Baseline: one env "
            "per slice stepped to the end, SB3 `model.predict(obs, deterministic=True)` per step.",
            "",
            "| path | wall s | env steps/s | speed-up |",
            "|---|---:|---:|---:|",
            f"| sequential, model.predict per step | {best['sequential']:.2f} | {steps / best['sequential']:,.0f} "
            "| 1.00x |",
            f"| lockstep, one batched forward per step | {best['lockstep']:.2f} | {steps / best['lockstep']:,.0f} "
            f"| {speedup:.2f}x |",
            "",
            f"Identical equity curves on both paths: {'yes' if same else 'NO'}. Target (>= 5x): "
            f"{'met' if speedup >= 5 else 'NOT met'} ({speedup:.2f}x).",
            "",
            f"Command: `.venv/bin/python -m bench.bench_training --only backtest --rows {rows} --slices {n_slices} "
            f"--repeats {repeats}`",
        ]
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=["sweep", "ppo", "backtest"], default=None)
    ap.add_argument("--seeds", type=int, default=2, help="sweep: seeds (tasks = seeds x folds)")
    ap.add_argument("--timesteps", type=int, default=8192)
    ap.add_argument("--rows", type=int, default=8000)
    ap.add_argument("--slices", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=str(HERE / "RESULTS_training.md"))
    args = ap.parse_args()
    sections = []
    if args.only in (None, "backtest"):
        sections.append(bench_backtest(args.rows, args.slices, args.repeats))
        print(sections[-1], flush=True)
    if args.only in (None, "ppo"):
        sections.append(bench_ppo(args.timesteps, args.repeats))
        print(sections[-1], flush=True)
    if args.only in (None, "sweep"):
        sections.append(bench_sweep(args.seeds, args.timesteps, args.repeats))
        print(sections[-1], flush=True)
    out = Path(args.out)
    header = "## training: sweep scaling, PPO throughput, vectorised backtest\n\n"
    if args.only is None or not out.exists():
        out.write_text(header + _machine() + "\n\n" + "\n\n".join(sections) + "\n")
    else:  # replace only this benchmark's section, stamped with its own machine line
        head, *parts = out.read_text().split("\n### ")
        title = sections[0].split("\n", 1)[0].removeprefix("### ")
        fresh = sections[0].removeprefix("### ") + f"\n\n({_machine()})"
        parts = [fresh if p.split("\n", 1)[0] == title else p.rstrip("\n") for p in parts]
        out.write_text("\n### ".join([head.rstrip("\n") + "\n", *[p + "\n" for p in parts]]))
    print(f"written {out}")


if __name__ == "__main__":
    main()
