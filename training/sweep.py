"""The PPO seed sweep's task: one training run per (trial, seed, timesteps, fold), on
one torch thread. The flow `flows/train.py` plans the tasks and runs them on its Prefect
task runner (process pool, Dask or in-process), with the retries `SweepConfig.retries`.

Adapter ring: `train_one` reads one train slice and its frozen stats, trains SB3 PPO on
the ManagementEnv and writes `model.zip`, `metrics.csv` (SB3's logged values, long form:
key, value, step) and `task.json` into the task's out dir. It never touches MLflow:
the flow logs the captured metrics in batches afterwards.

A curriculum callback drives the env's punishment scale: training is cut into
`punishment_suppression_cycles + 1` equal phases and phase k sets curriculum cycle k
(`envs.rewards.punishment_scale`), so penalties start suppressed and reach full strength
in the last phase.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import Field

from core.atomic import write_json_atomic, write_with_atomic
from core.config.base import FrozenModel, omit_when
from core.config.training import TrialConfig
from core.hashing import fingerprint
from core.settings import ensure_single_thread_math
from features.stats import FrozenStats
from training.averaging import action_permutation, average_policies, mirror_map
from training.store_inputs import StoreInputs, fetch_slice, fetch_stats, with_fetched_funding

MODEL_ZIP = "model.zip"
METRICS_CSV = "metrics.csv"
TASK_JSON = "task.json"
RESULT_JSON = "result.json"
PROGRESS_FILE = ".progress"  # "<timesteps done> <total>" while a task trains (a display reads it)


class TrainTask(FrozenModel):
    """One PPO training run. JSON-able and hashable by content (Prefect caches on it):
    `train_sha256` ties the cache to the slice's bytes, not only its path."""

    trial: TrialConfig
    seed: int
    timesteps: int = Field(gt=0)
    fold: int = Field(ge=0)
    train_slice: str  # absolute path of the fold's train slice (its manifest)
    train_slice_id: str = ""
    train_sha256: str = ""
    stats_dir: str  # absolute path of the fold's frozen stats
    stats_id: str = ""
    out_dir: str  # where model.zip, metrics.csv, task.json go
    # set when train_slice and stats_dir are s3:// URLs: the sha256s a worker checks what
    # it fetches against (training.store_inputs); None: local paths, the field is not
    # even written (task.json and the cache key stay what they were without it)
    store: StoreInputs | None = None

    _omit = omit_when(store=None)

    @property
    def trial_fingerprint(self) -> str:
        """First 8 hex of the sha256 of the trial config (env + reward + PPO)."""
        return fingerprint(self.trial)[:8]

    @property
    def candidate_id(self) -> str:
        """A model candidate = (trial, seed, timesteps), trained once per fold."""
        return candidate_id(self.trial.name, self.seed, self.timesteps)

    @property
    def run_name(self) -> str:
        """Encodes every knob: trial name, config fingerprint, seed, timesteps, fold."""
        return f"{self.trial.name}-{self.trial_fingerprint}-s{self.seed}-t{self.timesteps}-f{self.fold:02d}"


def candidate_id(trial: str, seed: int, timesteps: int) -> str:
    return f"{trial}-s{seed}-t{timesteps}"


class TrainResult(FrozenModel):
    """What a finished (or failed) task left behind. Paths are absolute."""

    run_name: str
    candidate_id: str
    fold: int
    ok: bool
    model_zip: str | None = None
    metrics_csv: str | None = None
    task_json: str | None = None
    timesteps_done: int = 0
    wall_s: float = 0.0
    steps_per_s: float = 0.0
    cpu_s: float = 0.0  # CPU seconds of this process for the training (imports excluded)
    final_metrics: dict[str, float] = {}
    attempts: int = 1
    error: str | None = None


# ---------------------------------------------------------------- SB3 glue (lazy imports)
def _activation(name: str) -> Any:
    import torch.nn as nn  # slow: torch (~2 s); the flow's process plans tasks, never trains

    return {"tanh": nn.Tanh, "relu": nn.ReLU}[name]


def ppo_kwargs(trial: TrialConfig) -> dict[str, Any]:
    """SB3 PPO constructor arguments of a trial (policy_kwargs hold net_arch/activation)."""
    p = trial.ppo
    return {
        "learning_rate": p.learning_rate,
        "n_steps": p.n_steps,
        "batch_size": p.batch_size,
        "n_epochs": p.n_epochs,
        "gamma": p.gamma,
        "gae_lambda": p.gae_lambda,
        "clip_range": p.clip_range,
        "ent_coef": p.ent_coef,
        "vf_coef": p.vf_coef,
        "max_grad_norm": p.max_grad_norm,
        "policy_kwargs": {"net_arch": list(p.net_arch), "activation_fn": _activation(p.activation)},
    }


def curriculum_cycle(num_timesteps: int, total_timesteps: int, n_cycles: int) -> int:
    """Curriculum cycle at `num_timesteps` of `total_timesteps`: training is cut into
    n_cycles + 1 equal phases, phase k is cycle k (0 cycles: always 0). Pure."""
    if n_cycles <= 0 or total_timesteps <= 0:
        return 0
    return min(n_cycles, int(num_timesteps * (n_cycles + 1) // total_timesteps))


def write_progress(path: Path, done: int, total: int) -> None:
    """`done total` into `path` (replaced whole, never half-written): how far a task in
    another process has trained, for the command's progress display."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(f"{done} {total}")
    os.replace(tmp, path)


def read_progress(out_dir: str | Path) -> tuple[int, int] | None:
    """(timesteps done, total) of a task training now or before, None when it has not
    started (or the file is unreadable)."""
    try:
        done, total = (Path(out_dir) / PROGRESS_FILE).read_text().split()
        return int(done), int(total)
    except (OSError, ValueError):
        return None


def _make_callbacks(
    total: int,
    n_cycles: int,
    progress_path: Path | None = None,
    done_before: int = 0,
    grand_total: int | None = None,
) -> Any:
    """The curriculum (over this training's `total` steps) and the progress file, which
    counts `done_before` steps of earlier ensemble members out of `grand_total`."""
    # slow: stable_baselines3 + torch (~3 s); the flow's process plans tasks, never trains
    from stable_baselines3.common.callbacks import BaseCallback, CallbackList

    class CurriculumCallback(BaseCallback):
        """Ramps the env's punishment scale at the start of every rollout."""

        def __init__(self) -> None:
            super().__init__()
            self.cycle = -1

        def _on_rollout_start(self) -> None:
            cycle = curriculum_cycle(self.num_timesteps, total, n_cycles)
            if cycle != self.cycle:
                self.cycle = cycle
                scales = self.training_env.env_method("set_curriculum_cycle", cycle)
                self.logger.record("curriculum/cycle", cycle)
                self.logger.record("curriculum/punishment_scale", float(scales[0]))

        def _on_step(self) -> bool:
            return True

    class ProgressCallback(BaseCallback):
        """Writes the timesteps done at every rollout's start and end (`write_progress`)."""

        def _write(self) -> None:
            if progress_path is not None:
                write_progress(
                    progress_path, done_before + int(self.num_timesteps), grand_total or total
                )

        def _on_training_start(self) -> None:
            self._write()

        def _on_rollout_end(self) -> None:
            self._write()

        def _on_step(self) -> bool:
            return True

    if progress_path is None:
        return CurriculumCallback()
    return CallbackList([CurriculumCallback(), ProgressCallback()])


def _training_env(task: TrainTask) -> Any:
    """The task's ManagementEnv, its `info` reduced to an empty dict: PPO reads none of
    it (SB3's Monitor adds the episode totals itself) and the VecEnv would deep-copy the
    ~20 accounting entries on every step. Evaluation uses the raw env and its info."""
    # slow: gymnasium (~0.5 s) and envs (numba kernels, ~1 s); planning tasks needs neither
    import gymnasium as gym

    from envs.management import ManagementEnv

    class DropInfo(gym.Wrapper):  # type: ignore[type-arg]
        def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
            obs, reward, terminated, truncated, _ = self.env.step(action)
            return obs, float(reward), terminated, truncated, {}

        def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
            obs, _ = self.env.reset(**kwargs)
            return obs, {}

    def make() -> Any:
        return DropInfo(ManagementEnv(task.train_slice, task.stats_dir, task.trial.env))

    n_envs = task.trial.ppo.n_envs
    if n_envs == 1:
        return make()  # PPO wraps it in Monitor + DummyVecEnv itself
    # slow: stable_baselines3 (~1 s on top of torch), as above
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    return DummyVecEnv([lambda: Monitor(make()) for _ in range(n_envs)])


def _record_writer() -> Any:
    # slow: stable_baselines3 + torch (~3 s); the flow's process plans tasks, never trains
    from stable_baselines3.common.logger import KVWriter

    class RecordWriter(KVWriter):
        """Keeps every numeric value SB3 logs as (key, value, step) for batched logging."""

        def __init__(self) -> None:
            self.rows: list[tuple[str, float, int]] = []

        def write(
            self, key_values: dict[str, Any], key_excluded: dict[str, Any], step: int = 0
        ) -> None:
            for key, value in key_values.items():
                if (
                    isinstance(value, bool)
                    or not isinstance(value, (int, float))
                    and not hasattr(value, "item")
                ):
                    continue
                try:
                    v = float(value)
                except (TypeError, ValueError):
                    continue
                if math.isfinite(v):
                    self.rows.append((key, v, int(step)))

        def close(self) -> None:
            pass

    return RecordWriter()


def write_metrics_csv(path: Path, rows: Sequence[tuple[str, float, int]]) -> Path:
    """metrics.csv in long form (key, value, step), atomically."""

    def _write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["key", "value", "step"])
            w.writerows((k, repr(v), s) for k, v, s in rows)

    return write_with_atomic(path, _write)


def read_metrics_csv(path: str | Path) -> list[tuple[str, float, int]]:
    """(key, value, step) rows of a metrics.csv written by `write_metrics_csv`."""
    with open(path, newline="") as fh:
        return [(r["key"], float(r["value"]), int(r["step"])) for r in csv.DictReader(fh)]


def final_values(rows: Iterable[tuple[str, float, int]]) -> dict[str, float]:
    """The last logged value of every key."""
    out: dict[str, float] = {}
    for k, v, _ in rows:
        out[k] = v
    return out


def train_one(task: TrainTask) -> TrainResult:
    """Train PPO for `task` and publish model.zip, metrics.csv, task.json and result.json
    in `task.out_dir` (each atomically; result.json last). Deterministic given the seed
    on one thread. Raises on bad input (missing slice/stats, config mismatch): the caller
    decides about retries."""
    ensure_single_thread_math()
    import torch  # slow: torch (~2 s), imported after the thread settings above as it must be

    torch.set_num_threads(1)
    # slow: stable_baselines3 (~1 s on top of torch); the flow's process never trains
    from stable_baselines3 import PPO
    from stable_baselines3.common.logger import Logger

    out = Path(task.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / TASK_JSON, {**task.model_dump(mode="json"), "run_name": task.run_name})
    t0, c0 = time.perf_counter(), time.process_time()
    local = local_inputs(task)
    models, rows, done = [], [], 0
    members = task.trial.ensemble
    for k in range(members):
        env = _training_env(local)
        model = PPO(
            "MlpPolicy", env, seed=member_seed(task.seed, k), device="cpu", verbose=0,
            **ppo_kwargs(task.trial),
        )  # fmt: skip
        writer = _record_writer()
        model.set_logger(Logger(folder=None, output_formats=[writer]))
        callback = _make_callbacks(
            task.timesteps,
            task.trial.env.reward.punishment_suppression_cycles,
            out / PROGRESS_FILE,
            done_before=done,
            grand_total=task.timesteps * members,
        )
        model.learn(total_timesteps=task.timesteps, callback=callback, progress_bar=False)
        # SB3 dumps before each update, so the last update's train/* values are still pending
        model.logger.dump(step=model.num_timesteps)
        done += int(model.num_timesteps)
        write_progress(out / PROGRESS_FILE, done, task.timesteps * members)
        # member 0's curves under SB3's own names (as without an ensemble), the others'
        # under member<k>/
        rows += [(key if k == 0 else f"member{k}/{key}", v, step) for key, v, step in writer.rows]
        models.append(model)
        env.close()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    model = models[0]
    if members > 1 or task.trial.mirror:
        _average(models, local)
    zip_path = out / MODEL_ZIP
    _save_zip(model, zip_path)
    metrics_path = write_metrics_csv(out / METRICS_CSV, rows)
    result = TrainResult(
        run_name=task.run_name,
        candidate_id=task.candidate_id,
        fold=task.fold,
        ok=True,
        model_zip=str(zip_path.resolve()),
        metrics_csv=str(metrics_path.resolve()),
        task_json=str((out / TASK_JSON).resolve()),
        timesteps_done=done,
        wall_s=wall,
        steps_per_s=done / wall if wall > 0 else 0.0,
        cpu_s=cpu,
        final_metrics=final_values(rows),
    )
    write_json_atomic(out / RESULT_JSON, result.model_dump(mode="json"))
    return result


def local_inputs(task: TrainTask) -> TrainTask:
    """`task` with its train slice, stats and funding table as local paths: itself when
    they are local, else fetched from the object store into this machine's cache, every
    byte checked against the sha256 the task carries (training.store_inputs). Raises
    core.objectstore.ObjectStoreError on a mismatch or an unreachable store."""
    if task.store is None:
        return task
    st = task.store
    return task.model_copy(
        update={
            "train_slice": str(
                fetch_slice(task.train_slice, st.manifest_sha256, task.train_sha256, st.storage)
            ),
            "stats_dir": str(fetch_stats(task.stats_dir, st.stats_checksums_sha256, st.storage)),
            "trial": with_fetched_funding(task.trial, st),
        }
    )


def member_seed(seed: int, k: int) -> int:
    """The seed of ensemble member k of a task seeded `seed` (member 0: the seed itself)."""
    return seed + 1000 * k


def _average(models: list[Any], task: TrainTask) -> None:
    """Replace models[0]'s policy by the average of the members' (and, with the trial's
    `mirror`, of their mirror images, mapped with the fold's frozen stats)."""
    mirror = None
    if task.trial.mirror:
        st = FrozenStats.load(task.stats_dir)
        env = task.trial.env
        a, c = mirror_map(st.feature_names, env.window, st.mean, st.sigma, st.sigma_floor)
        mirror = (a, c, action_permutation(env.action_mode))
    average_policies(models, mirror)


def _save_zip(model: Any, target: Path) -> None:
    """model.save into a temp .zip beside `target`, then an atomic rename."""
    tmp = target.with_name(f".{target.stem}.{os.getpid()}.tmp.zip")
    try:
        model.save(tmp)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_result(out_dir: str | Path) -> TrainResult | None:
    """The result.json of a finished task, or None."""
    p = Path(out_dir) / RESULT_JSON
    if not p.exists():
        return None
    return TrainResult.model_validate_json(p.read_text())


def finished_result(task: TrainTask) -> TrainResult | None:
    """The result of an earlier successful run of exactly this task (same task.json, model
    still on disk), or None: lets a re-run skip finished work without starting workers."""
    out = Path(task.out_dir)
    res = load_result(out)
    if res is None or not res.ok or not res.model_zip or not Path(res.model_zip).exists():
        return None
    try:
        recorded = json.loads((out / TASK_JSON).read_text())
    except (OSError, ValueError):
        return None
    recorded.pop("run_name", None)
    if recorded != task.model_dump(mode="json"):
        return None
    return res
