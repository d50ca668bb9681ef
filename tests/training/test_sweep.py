"""The sweep: PPO training task, curriculum, metric capture, executors and retries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.config.training import PPOConfig, SweepConfig, TrialConfig
from features.slices import load_fold_index
from tests.training.conftest import DataDir
from training.sweep import (
    TrainResult,
    TrainTask,
    curriculum_cycle,
    load_result,
    read_metrics_csv,
    run_tasks,
    train_one,
)


def make_task(
    data: DataDir, out: Path, seed: int = 0, fold: int = 0, timesteps: int = 512
) -> TrainTask:
    spec = data.cfg.features.spec
    idx = load_fold_index(data.layout, spec.spec_hash)
    f = idx.folds[fold]
    trial = data.cfg.sweep.trials[0]
    return TrainTask(
        trial=trial,
        seed=seed,
        timesteps=timesteps,
        fold=fold,
        train_slice=str(data.layout.slices(spec.spec_hash) / f"{f.train}.manifest.json"),
        train_slice_id=f.train,
        stats_dir=str(data.layout.stats(f.stats_id)),
        stats_id=f.stats_id,
        out_dir=str(out),
    )


@pytest.mark.parametrize(
    ("num", "total", "cycles", "expected"),
    [
        (0, 1000, 4, 0),
        (199, 1000, 4, 0),
        (200, 1000, 4, 1),
        (799, 1000, 4, 3),
        (800, 1000, 4, 4),
        (1000, 1000, 4, 4),
        (5000, 1000, 4, 4),
        (500, 1000, 0, 0),
        (500, 1000, 1, 1),
    ],
)
def test_curriculum_cycle_cuts_training_into_equal_phases(
    num: int, total: int, cycles: int, expected: int
) -> None:
    assert curriculum_cycle(num, total, cycles) == expected


def test_run_name_encodes_trial_fingerprint_seed_timesteps_fold(
    tiny_data: DataDir, tmp_path: Path
) -> None:
    t = make_task(tiny_data, tmp_path, seed=3, fold=1, timesteps=777)
    assert t.run_name.startswith("base-") and t.run_name.endswith("-s3-t777-f01")
    assert t.candidate_id == "base-s3-t777"
    other = t.model_copy(
        update={"trial": TrialConfig(ppo=PPOConfig(learning_rate=1e-3), env=t.trial.env)}
    )
    assert other.trial_fingerprint != t.trial_fingerprint


def test_train_one_writes_model_metrics_and_task_and_ramps_the_curriculum(
    tiny_data: DataDir, tmp_path: Path
) -> None:
    task = make_task(tiny_data, tmp_path / "run", timesteps=1024)
    res = train_one(task)
    assert res.ok and res.timesteps_done == 1024 and res.steps_per_s > 0
    for p in (res.model_zip, res.metrics_csv, res.task_json):
        assert p is not None and Path(p).is_file()
    assert json.loads(Path(res.task_json).read_text())["run_name"] == task.run_name
    rows = read_metrics_csv(res.metrics_csv)
    keys = {k for k, _, _ in rows}
    assert {"train/value_loss", "train/entropy_loss", "rollout/ep_rew_mean", "time/fps"} <= keys
    scales = [v for k, v, _ in rows if k == "curriculum/punishment_scale"]
    assert scales == sorted(scales) and scales[0] < scales[-1]  # penalties start suppressed
    assert load_result(task.out_dir) == res


def test_train_one_is_reproducible_from_its_seed(tiny_data: DataDir, tmp_path: Path) -> None:
    a = train_one(make_task(tiny_data, tmp_path / "a", timesteps=256))
    b = train_one(make_task(tiny_data, tmp_path / "b", timesteps=256))
    va = {k: v for k, v, _ in read_metrics_csv(a.metrics_csv) if k.startswith("train/")}
    vb = {k: v for k, v, _ in read_metrics_csv(b.metrics_csv) if k.startswith("train/")}
    assert va == vb


def test_train_one_with_missing_slice_raises(tiny_data: DataDir, tmp_path: Path) -> None:
    task = make_task(tiny_data, tmp_path).model_copy(
        update={"train_slice": str(tmp_path / "nope.parquet")}
    )
    with pytest.raises(ValueError, match="slice not found"):
        train_one(task)


# ---- executors, with a cheap picklable task function --------------------------------
def fake_train(task: TrainTask) -> TrainResult:
    """Fails on the first attempt when the seed is odd, always when it is negative."""
    out = Path(task.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    marker = out / "attempted"
    if task.seed < 0:
        raise RuntimeError(f"seed {task.seed} always fails")
    if task.seed % 2 and not marker.exists():
        marker.write_text("1")
        raise RuntimeError("transient failure")
    return TrainResult(
        run_name=task.run_name, candidate_id=task.candidate_id, fold=task.fold, ok=True
    )


def _tasks(data: DataDir, tmp_path: Path, seeds: list[int]) -> list[TrainTask]:
    return [make_task(data, tmp_path / f"s{s}", seed=s) for s in seeds]


@pytest.mark.parametrize("executor", ["sequential", "process"])
def test_run_tasks_retries_once_and_reports_failures(
    tiny_data: DataDir, tmp_path: Path, executor: str
) -> None:
    cfg = SweepConfig(executor=executor, n_workers=2, retries=1)
    seen: list[str] = []
    res = run_tasks(
        _tasks(tiny_data, tmp_path, [0, 1, -2]),
        cfg,
        fn=fake_train,
        on_done=lambda r: seen.append(r.run_name),
    )
    assert [r.ok for r in res] == [True, True, False]
    assert [r.attempts for r in res] == [1, 2, 2]
    assert "always fails" in (res[2].error or "")
    assert sorted(seen) == sorted(r.run_name for r in res)  # every task reported once


def test_run_tasks_without_retries_reports_the_transient_failure(
    tiny_data: DataDir, tmp_path: Path
) -> None:
    res = run_tasks(
        _tasks(tiny_data, tmp_path, [1]),
        SweepConfig(executor="sequential", retries=0),
        fn=fake_train,
    )
    assert not res[0].ok and "transient" in (res[0].error or "")


def test_run_tasks_on_a_local_dask_cluster(tiny_data: DataDir, tmp_path: Path) -> None:
    cfg = SweepConfig(executor="dask", n_workers=2, retries=1)
    res = run_tasks(_tasks(tiny_data, tmp_path, [0, 1, -2]), cfg, fn=fake_train)
    assert [r.ok for r in res] == [True, True, False]
    assert [r.attempts for r in res] == [1, 2, 2]


def test_plan_tasks_covers_the_grid_with_unique_stable_out_dirs(tmp_path: Path) -> None:
    from core.config.env import EnvConfig
    from core.slice_reference import SliceReference
    from training.candidates import FoldSlices, group_candidates, plan_tasks

    folds = [
        FoldSlices(
            fold=k,
            train=SliceReference(
                slice_id=f"fold{k:02d}-train",
                kind="train",
                fold=k,
                location=f"/s/{k}.parquet",
                sha256=f"{k}" * 64,
                stats_id=f"st{k}",
                spec_hash="a" * 64,
            ),
            test=SliceReference(
                slice_id=f"fold{k:02d}-test",
                kind="test",
                fold=k,
                location=f"/s/t{k}.parquet",
                sha256="e" * 64,
                stats_id=f"st{k}",
                spec_hash="a" * 64,
            ),
            stats_dir=f"/stats/{k}",
        )
        for k in range(2)
    ]
    trials = (TrialConfig(name="base"), TrialConfig(name="wide", env=EnvConfig(stake_fraction=0.2)))
    sweep = SweepConfig(trials=trials, seeds=(0, 1), timesteps=(100, 200))
    tasks = plan_tasks(sweep, folds, tmp_path)
    assert len(tasks) == 2 * 2 * 2 * 2
    assert len({t.run_name for t in tasks}) == len({t.out_dir for t in tasks}) == 16
    assert (
        plan_tasks(sweep, folds, tmp_path) == tasks
    )  # deterministic: a re-run finds the same dirs
    groups = group_candidates(tasks)
    assert len(groups) == 8 and all([t.fold for t in g] == [0, 1] for g in groups.values())
    assert "wide-s1-t200" in groups
    with pytest.raises(ValueError, match="unique"):
        plan_tasks(SweepConfig(trials=(TrialConfig(), TrialConfig())), folds, tmp_path)
