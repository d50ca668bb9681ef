"""The sweep: PPO training task, curriculum, metric capture, and retries through the\ntrain flow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.config.experiment import ExperimentConfig
from core.config.training import PPOConfig, SweepConfig, TrialConfig
from features.slices import load_fold_index
from tests.training.conftest import DataDir, build_data_dir
from training.sweep import (
    TrainTask,
    curriculum_cycle,
    load_result,
    read_metrics_csv,
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


def test_n_envs_one_is_not_written_so_existing_fingerprints_stay() -> None:
    one = TrialConfig(ppo=PPOConfig(n_envs=1))
    assert "n_envs" not in one.model_dump(mode="json")["ppo"]
    assert one.model_dump(mode="json") == TrialConfig().model_dump(mode="json")
    eight = TrialConfig(ppo=PPOConfig(n_envs=8))
    assert eight.model_dump(mode="json")["ppo"]["n_envs"] == 8
    assert TrialConfig.model_validate(eight.model_dump(mode="json")) == eight
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        PPOConfig(n_envs=0)


def test_train_one_with_several_envs_steps_them_together_reproducibly(
    tiny_data: DataDir, tmp_path: Path
) -> None:
    """n_envs copies stepped together: a rollout holds n_steps x n_envs steps (SB3's
    meaning), the episodes of the copies differ (each seeded seed + i) and the run is
    reproducible from its seed."""
    base = make_task(tiny_data, tmp_path / "x", timesteps=512)
    ppo = base.trial.ppo.model_copy(update={"n_envs": 4, "n_steps": 32, "batch_size": 64})
    trial = base.trial.model_copy(update={"ppo": ppo})

    def run(out: str) -> list[tuple[str, float, int]]:
        task = base.model_copy(update={"trial": trial, "out_dir": str(tmp_path / out)})
        res = train_one(task)
        assert res.ok and res.timesteps_done == 512
        return read_metrics_csv(res.metrics_csv)

    a, b = run("a"), run("b")
    assert [r for r in a if not r[0].startswith("time/")] == [
        r for r in b if not r[0].startswith("time/")
    ]
    # 512 steps in rollouts of 4 x 32 = 128 each: an update after each rollout
    steps = sorted({s for k, _, s in a if k == "train/value_loss"})
    assert steps == [256, 384, 512]  # SB3 logs train/* from the second rollout on
    single = train_one(base.model_copy(update={"out_dir": str(tmp_path / "one")}))
    one = {k: v for k, v, _ in read_metrics_csv(single.metrics_csv) if k.startswith("train/")}
    four = {k: v for k, v, _ in a if k.startswith("train/")}
    assert one != four  # not the one-env run under another name


def test_train_one_with_missing_slice_raises(tiny_data: DataDir, tmp_path: Path) -> None:
    task = make_task(tiny_data, tmp_path).model_copy(
        update={"train_slice": str(tmp_path / "nope.parquet")}
    )
    with pytest.raises(ValueError, match="slice not found"):
        train_one(task)


# ---- retries: through the train flow, on the task runner production uses ------------
def _prefect_run_counts_of_latest_sweep() -> list[int]:
    """How many times Prefect ran each task of the latest `train-policies` flow run."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterId,
    )
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        (run,) = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["train-policies"])),
            sort=FlowRunSort.START_TIME_DESC,
            limit=1,
        )
        tasks = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id]))
        )
    return sorted(t.run_count for t in tasks)


@pytest.mark.parametrize(("executor", "retries"), [("sequential", 0), ("process", 2)])
def test_train_flow_retries_a_failing_task_its_configured_times_and_reports_it(
    prefect_harness: None,
    tmp_path: Path,
    tiny_cfg: ExperimentConfig,
    executor: str,
    retries: int,
) -> None:
    from flows.train import train_flow

    data = build_data_dir(tmp_path / "d", tiny_cfg, rows=300)
    folder = data.layout.slices(tiny_cfg.features.spec.spec_hash)
    manifest = json.loads((folder / "fold01-train.manifest.json").read_text())
    (folder / manifest["parts"][0]["file"]).write_bytes(b"not an arrow file")
    sweep = tiny_cfg.sweep.model_copy(
        update={"executor": executor, "retries": retries, "seeds": (0,), "timesteps": (256,)}
    )
    cfg = tiny_cfg.model_copy(update={"sweep": sweep})
    out = train_flow(cfg, str(data.root), f"sqlite:///{data.root}/mlflow.db")
    assert [t.fold for t in out.tasks] == [0, 1]  # every task reported, in task order
    assert [t.ok for t in out.tasks] == [True, False]
    failed = out.tasks[1]
    assert failed.attempts == retries + 1 and out.failed == [failed.run_name]
    assert failed.error and failed.model_zip is None
    assert _prefect_run_counts_of_latest_sweep() == [1, retries + 1]  # Prefect's own record


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
