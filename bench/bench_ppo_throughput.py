"""PPO training throughput on ManagementEnv vs SB3's CartPole-v1, same PPO settings (#17).

    .venv/bin/python -m bench.bench_ppo_throughput --data-dir /tmp/ppo-bench-data
    .venv/bin/python -m bench.bench_ppo_throughput --quick      # 2 short pairs, ~1 min + data
    .venv/bin/python -m bench.bench_ppo_throughput --data-dir D --profile   # + where time goes

#17's bar: PPO throughput on the env stays at or above 90 % of SB3's CartPole with the
same PPO settings, measured side by side.

Both sides train the way `training.sweep.train_one` trains: `PPO("MlpPolicy", env,
seed, device="cpu", **ppo_kwargs(trial))` on one env (SB3 wraps it in Monitor and
DummyVecEnv), one torch thread, OMP/MKL/OpenBLAS at one thread, the batched metrics
logger of production. The trial is the config's first (default: `conf/default.yaml`'s
`base`, i.e. `core.config.training.PPOConfig`'s defaults). ManagementEnv is the task the
train flow plans first (trial 0, seed 0, fold 0: `training.candidates.plan_tasks` on the
folder's `load_catalog`), through `training.sweep._training_env` (the info-dropping
wrapper train_one uses) and with train_one's curriculum callback; CartPole-v1 gets
neither (it has no curriculum), so the env side is charged for both.

Data: the slices a default nightly trains on, made by the user's commands `chappie
ingest synthetic` and `chappie features` with `--config` (subprocesses with a Prefect
home of their own) in `--data-dir`, which is reused when it already holds that config's
slices (building takes minutes on a shared machine).

Timing: both models are built and warmed up (one rollout + one update, untimed: torch
and numba first calls), then timed `model.learn` chunks of `--timesteps` alternate
between the two in one process (ABBA order: each pair of runs sees the same machine
load, and drift cancels), `--repeats` pairs. Rates are env steps per second of process
CPU time (what the code costs, less sensitive to other jobs on the machine) and per
wall-clock second; reported as median and min-max over the repeats, and the ratio per
pair (median, min-max): the verdict is the median per-pair ratio of CPU-time rates.

`--profile` adds where the time goes: cProfile of one rollout + update per side, and the
parts of a PPO step (VecEnv step, policy forward, PPO update) timed on their own.
`--quick` only prints (the results file is left as it is).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import platform
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_CONFIG = ROOT / "conf" / "default.yaml"
RESULTS = HERE / "RESULTS_ppo.md"
KEEP_MARKER = "### Reading it"  # the hand-written part of the results file, kept on rewrite
TARGET = 0.9


# ---------------------------------------------------------------- data
def ensure_data(config: Path, data_dir: Path) -> bool:
    """The config's slices in `data_dir`: reused when folds.json is there, else built by
    `chappie ingest synthetic` + `chappie features` (the nightly's first two steps)."""
    from core.config.experiment import load_config
    from core.paths import DataLayout

    cfg = load_config(config)
    folds = DataLayout(data_dir.resolve()).slices(cfg.features.spec.spec_hash) / "folds.json"
    if folds.exists():
        return False
    data_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(
        PREFECT_HOME=str(data_dir.resolve().parent / f"{data_dir.name}-prefect"),
        PREFECT_LOGGING_LEVEL="WARNING",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
    )
    chappie = [sys.executable, "-m", "flows.cli"]  # `chappie`, of this checkout's code
    for cmd in (["ingest", "synthetic"], ["features"]):
        argv = [*cmd, "--config", str(config), "--data-dir", str(data_dir)]
        proc = subprocess.run(
            [*chappie, "--quiet", *argv], cwd=ROOT, env=env, capture_output=True, text=True
        )
        if proc.returncode != 0:
            raise SystemExit(f"chappie {' '.join(argv)} failed: {proc.stderr.strip()[-400:]}")
    return True


def production_task(config: Path, data_dir: Path) -> Any:
    """The first TrainTask the train flow plans on this folder (trial 0, seed 0, fold 0)."""
    from core.config.experiment import load_config
    from core.paths import DataLayout
    from training.candidates import load_catalog, plan_tasks, training_root

    cfg = load_config(config)
    layout = DataLayout(data_dir.resolve())
    spec_hash = cfg.features.spec.spec_hash
    catalog = load_catalog(layout, spec_hash)  # nothing is written to the tasks' out dirs
    return plan_tasks(cfg.sweep, catalog.folds, training_root(layout, spec_hash))[0]


# ---------------------------------------------------------------- models
@dataclass
class Side:
    """One env's model and its timed chunks (steps, CPU s, wall s)."""

    name: str
    model: Any
    callback: Any
    runs: list[tuple[int, float, float]] = field(default_factory=list)

    def learn(self, timesteps: int) -> None:
        self.model.learn(
            total_timesteps=timesteps, callback=self.callback, reset_num_timesteps=False
        )

    def timed(self, timesteps: int) -> None:
        n0 = self.model.num_timesteps
        c, w = time.process_time(), time.perf_counter()
        self.learn(timesteps)
        cpu, wall = time.process_time() - c, time.perf_counter() - w
        self.runs.append((self.model.num_timesteps - n0, cpu, wall))

    def rates(self, i: int) -> list[float]:
        """Steps/s per run, of CPU time (i=1) or wall clock (i=2)."""
        return [r[0] / r[i] for r in self.runs]


def build_sides(task: Any, total: int) -> tuple[Side, Side]:
    """(ManagementEnv, CartPole-v1) PPO models, both as train_one builds its model."""
    import gymnasium as gym
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.logger import Logger

    from training.sweep import (
        _make_callbacks,
        _record_writer,
        _training_env,
        local_inputs,
        ppo_kwargs,
    )

    torch.set_num_threads(1)

    def model(env: Any) -> Any:
        m = PPO("MlpPolicy", env, seed=task.seed, device="cpu", verbose=0, **ppo_kwargs(task.trial))
        m.set_logger(Logger(folder=None, output_formats=[_record_writer()]))
        return m

    curriculum = _make_callbacks(total, task.trial.env.reward.punishment_suppression_cycles)
    management = Side("chappie ManagementEnv", model(_training_env(local_inputs(task))), curriculum)
    cartpole = Side("CartPole-v1", model(gym.make("CartPole-v1")), None)
    return management, cartpole


def interleave(sides: tuple[Side, Side], timesteps: int, repeats: int) -> None:
    """Warm both up (untimed), then `repeats` timed pairs in ABBA order."""
    n_steps = sides[0].model.n_steps
    for s in sides:
        s.learn(n_steps)
    for i in range(repeats):
        for s in sides if i % 2 == 0 else sides[::-1]:
            s.timed(timesteps)


# ---------------------------------------------------------------- profile
# (label, pstats key suffix (file tail, function name)); cumulative time of each
PROFILE_ROWS: tuple[tuple[str, str, str], ...] = (
    ("model.learn (all)", "on_policy_algorithm.py", "learn"),
    (
        "collect_rollouts (env + policy forward + buffer)",
        "on_policy_algorithm.py",
        "collect_rollouts",
    ),
    ("  policy forward (actions, values, log-probs)", "policies.py", "forward"),
    ("  VecEnv step (DummyVecEnv.step_wait)", "dummy_vec_env.py", "step_wait"),
    ("    Monitor.step", "monitor.py", "step"),
    ("    info-dropping Wrapper.step (training.sweep)", "sweep.py", "step"),
    ("      ManagementEnv.step", "management.py", "step"),
    ("    obs copy into the vec buffer (_save_obs)", "dummy_vec_env.py", "_save_obs"),
    ("    info deep copy (copy.deepcopy)", "copy.py", "deepcopy"),
    ("    CartPoleEnv.step (under gymnasium's wrappers)", "cartpole.py", "step"),
    ("  rollout buffer add", "buffers.py", "add"),
    ("  obs_as_tensor", "utils.py", "obs_as_tensor"),
    ("  callback.on_step", "callbacks.py", "on_step"),
    ("train (PPO update: epochs x minibatches)", "ppo.py", "train"),
)


def profile(side: Side, timesteps: int) -> tuple[float, dict[str, float]]:
    """cProfile one `learn` of `timesteps`: total CPU seconds and each PROFILE_ROWS entry's
    cumulative CPU seconds (process time: other jobs' load is not counted; cProfile's own
    overhead still inflates Python-call-heavy parts)."""
    prof = cProfile.Profile(time.process_time)
    prof.enable()
    side.learn(timesteps)
    prof.disable()
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    out: dict[str, float] = {}
    for label, file_tail, func in PROFILE_ROWS:
        out[label] = sum(
            v[3] for (f, _line, name), v in stats.items() if name == func and f.endswith(file_tail)
        )
    return out["model.learn (all)"], out


def profile_table(sides: tuple[Side, Side], timesteps: int) -> str:
    prof = [profile(s, timesteps) for s in sides]
    lines = [
        f"cProfile of one `model.learn({timesteps})` per side (cumulative CPU seconds; per env "
        "step in brackets; an indented row is part of the row above it; profiling overhead "
        "inflates every row, most those with many Python calls).",
        "",
        f"| part | {sides[0].name} | {sides[1].name} | difference per step |",
        "|---|---:|---:|---:|",
    ]
    for label, _, _ in PROFILE_ROWS:
        a, b = prof[0][1][label], prof[1][1][label]
        if a == 0 and b == 0:
            continue
        lines.append(
            f"| {label} | {a:.2f} s ({1e6 * a / timesteps:.0f} µs) | {b:.2f} s "
            f"({1e6 * b / timesteps:.0f} µs) | {1e6 * (a - b) / timesteps:+.0f} µs |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------- report
def _spread(xs: list[float], fmt: Callable[[float], str]) -> str:
    return f"{fmt(statistics.median(xs))} ({fmt(min(xs))}-{fmt(max(xs))})"


def parts_us(sides: tuple[Side, Side], steps: int, repeats: int = 3) -> list[dict[str, float]]:
    """CPU µs per env step of the parts of a PPO step, each timed on its own without a
    profiler, median of `repeats` interleaved passes: the side's own training VecEnv
    stepped with random actions (Monitor, DummyVecEnv and, for ManagementEnv, the
    info-dropping wrapper), the policy's forward pass on one observation (what
    collect_rollouts runs per step), and one PPO update (`model.train()` on the last
    rollout) divided by the rollout's steps. Run last: it moves the envs and weights on."""
    import numpy as np
    import torch

    cost: list[dict[str, list[float]]] = [{}, {}]

    def clock(k: int, part: str, n: int, fn: Callable[[], None]) -> None:
        c = time.process_time()
        fn()
        cost[k].setdefault(part, []).append(1e6 * (time.process_time() - c) / n)

    for _ in range(repeats):
        for k, s in enumerate(sides):
            vec, policy = s.model.get_env(), s.model.policy
            vec.action_space.seed(0)
            actions = [np.array([vec.action_space.sample()]) for _ in range(steps)]
            obs = policy.obs_to_tensor(s.model._last_obs)[0]

            def env_steps(vec: Any = vec, actions: list[Any] = actions) -> None:
                for a in actions:
                    vec.step(a)

            def forwards(policy: Any = policy, obs: Any = obs) -> None:
                with torch.no_grad():
                    for _ in range(steps):
                        policy(obs)

            clock(k, "env", steps, env_steps)
            clock(k, "forward", steps, forwards)
            clock(k, "update", s.model.n_steps, s.model.train)
    return [{part: statistics.median(v) for part, v in c.items()} for c in cost]


def parts_table(sides: tuple[Side, Side], steps: int) -> str:
    parts = parts_us(sides, steps)
    learn = [1e6 / statistics.median(s.rates(1)) for s in sides]
    labels = {
        "env": "VecEnv step (random actions, no policy)",
        "forward": "policy forward, one observation",
        "update": "PPO update / rollout steps",
    }
    rows = [
        f"| {label} | {parts[0][p]:.0f} | {parts[1][p]:.0f} | {parts[0][p] - parts[1][p]:+.0f} |"
        for p, label in labels.items()
    ]
    rest = [learn[k] - sum(parts[k].values()) for k in (0, 1)]
    return "\n".join(
        [
            "CPU µs per env step, each part timed on its own without a profiler (median of 3 "
            "interleaved passes); the rest is SB3's rollout glue (obs to tensor, buffer, "
            "action clipping, callbacks) and timing noise.",
            "",
            f"| part | {sides[0].name} | {sides[1].name} | difference |",
            "|---|---:|---:|---:|",
            *rows,
            f"| rest (by difference) | {rest[0]:.0f} | {rest[1]:.0f} | {rest[0] - rest[1]:+.0f} |",
            f"| `model.learn` per env step (median rate above) | {learn[0]:.0f} | {learn[1]:.0f} | "
            f"{learn[0] - learn[1]:+.0f} |",
        ]
    )


def table(sides: tuple[Side, Side]) -> tuple[str, float]:
    """Markdown rows and the median per-pair CPU-time ratio (the verdict's measure)."""
    mg, cp = sides
    n = min(len(mg.runs), len(cp.runs))
    ratio = {i: [mg.rates(i)[k] / cp.rates(i)[k] for k in range(n)] for i in (1, 2)}

    def rate(x: float) -> str:
        return f"{x:,.0f}"

    def pct(x: float) -> str:
        return f"{x:.0%}"

    lines = [
        "| env | steps/s of CPU time, median (min-max) | steps/s of wall clock, median (min-max) |",
        "|---|---:|---:|",
        *(
            f"| {s.name} | {_spread(s.rates(1), rate)} | {_spread(s.rates(2), rate)} |"
            for s in sides
        ),
        f"| **ratio ManagementEnv / CartPole, per pair** | **{_spread(ratio[1], pct)}** | "
        f"{_spread(ratio[2], pct)} |",
    ]
    return "\n".join(lines), statistics.median(ratio[1])


def _code_version() -> str:
    """The commit measured, and whether envs/ or training/ differ from it."""
    git = ["git", "-C", str(ROOT)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        return "not a git checkout"
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "--", "envs", "training"], capture_output=True, text=True
    ).stdout.strip()
    return f"commit {head.stdout.strip()}" + (
        " with uncommitted changes in envs/ or training/" if dirty else ""
    )


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "load average {:.2f}, {:.2f}, {:.2f}".format(*os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="experiment YAML")
    ap.add_argument(
        "--data-dir", type=Path, help="data folder holding (or to hold) the config's slices"
    )
    ap.add_argument("--timesteps", type=int, help="env steps per timed chunk (default 4 rollouts)")
    ap.add_argument("--repeats", type=int, default=6, help="timed pairs, ABBA order")
    ap.add_argument("--quick", action="store_true", help="2 pairs of one rollout each")
    ap.add_argument("--profile", action="store_true", help="also cProfile one chunk per side")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results file (markdown)")
    ap.add_argument("--no-write", action="store_true", help="print only (implied by --quick)")
    args = ap.parse_args(argv)
    if not args.config.exists():
        ap.error(f"--config {args.config}: no such file")
    if args.repeats < 1 or (args.timesteps is not None and args.timesteps < 1):
        ap.error("--repeats and --timesteps must be positive")

    from core.settings import ensure_single_thread_math

    ensure_single_thread_math()
    if args.data_dir is not None:
        return run(args, args.data_dir, argv)
    with tempfile.TemporaryDirectory(prefix="bench-ppo-data-") as tmp:  # ~200 MB of data
        return run(args, Path(tmp) / "data", argv)


def run(args: argparse.Namespace, data_dir: Path, argv: list[str] | None) -> int:
    """Build or reuse the slices, measure, print (and write) the markdown."""
    t0 = time.perf_counter()
    built = ensure_data(args.config, data_dir)
    build_s = time.perf_counter() - t0
    task = production_task(args.config, data_dir)
    p = task.trial.ppo
    repeats = 2 if args.quick else args.repeats
    timesteps = args.timesteps or p.n_steps * (1 if args.quick else 4)
    sides = build_sides(task, timesteps * (repeats + 1))
    load_before = _uptime()
    interleave(sides, timesteps, repeats)
    load_after = _uptime()
    rows, ratio = table(sides)
    obs_dim = sides[0].model.observation_space.shape[0]
    cmd = " ".join(
        [
            "OMP_NUM_THREADS=1 .venv/bin/python -m bench.bench_ppo_throughput",
            *(argv or sys.argv[1:]),
        ]
    )
    text = [
        "## ppo: PPO training throughput, ManagementEnv vs CartPole-v1 (#17)",
        "",
        f"SB3 PPO as `train_one` builds it, trial `{task.trial.name}` of `{args.config.name}` "
        f"(n_steps {p.n_steps}, batch {p.batch_size}, epochs {p.n_epochs}, MLP {list(p.net_arch)} "
        f"{p.activation}), one env through Monitor + DummyVecEnv, CPU, one torch thread. "
        f"ManagementEnv: `{Path(task.train_slice).name.split('.')[0]}` of `{args.config.name}`'s "
        "slices "
        f"(observation {obs_dim} floats), info-dropping wrapper and curriculum callback as in "
        f"training; CartPole-v1: 4 floats. {repeats} pairs of `model.learn({timesteps})`, "
        "ABBA order in one process, after an untimed warm-up of one rollout + update each.",
        "",
        rows,
        "",
        f"Target (median ratio of CPU-time rates >= {TARGET:.0%}): "
        f"{'met' if ratio >= TARGET else 'NOT met'} ({ratio:.0%}).",
        "",
        f"Machine `{platform.node()}` ({platform.machine()}, {os.cpu_count()} cores, shared with "
        f"other jobs), Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. `uptime` before: `{load_before}`; "
        f"after: `{load_after}`. Code: {_code_version()}. "
        + (f"Slices built in {build_s:.0f} s." if built else "Slices reused from `--data-dir`."),
        "",
        f"Command: `{cmd}`",
    ]
    if args.profile:
        text += ["", profile_table(sides, p.n_steps)]
        text += ["", parts_table(sides, p.n_steps)]
    out = "\n".join(text)
    print(out)
    if not (args.quick or args.no_write):
        write_results(args.out, out)
        print(f"written {args.out}")
    return 0


def write_results(path: Path, generated: str) -> None:
    """`generated`, followed by the hand-written part (from KEEP_MARKER on) already there."""
    old = path.read_text() if path.exists() else ""
    kept = old[old.index(KEEP_MARKER) :] if KEEP_MARKER in old else ""
    path.write_text(generated.rstrip("\n") + "\n" + ("\n" + kept if kept else ""))


if __name__ == "__main__":
    raise SystemExit(main())
