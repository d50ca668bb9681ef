"""A training task's timesteps reach the command's progress display (#20): the worker
writes `.progress` (training.sweep), the train flow's rows read it (flows.train)."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from core.config.training import TrialConfig
from flows import progress
from flows.train import _TaskRows
from tests.training.conftest import DataDir
from tests.training.test_sweep import make_task
from training.sweep import PROGRESS_FILE, TrainTask, read_progress, train_one, write_progress


def test_train_one_leaves_its_timesteps_done_of_the_total(
    tiny_data: DataDir, tmp_path: Path
) -> None:
    task = make_task(tiny_data, tmp_path / "run", timesteps=512)
    assert read_progress(task.out_dir) is None  # not started
    train_one(task)
    assert read_progress(task.out_dir) == (512, 512)


def test_progress_file_round_trip_and_garbage_reads_as_not_started(tmp_path: Path) -> None:
    write_progress(tmp_path / PROGRESS_FILE, 256, 1024)
    assert read_progress(tmp_path) == (256, 1024)
    (tmp_path / PROGRESS_FILE).write_text("half")
    assert read_progress(tmp_path) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == [PROGRESS_FILE]  # no temp left


def _task(out: Path, seed: int) -> TrainTask:
    return TrainTask(
        trial=TrialConfig(),
        seed=seed,
        timesteps=1024,
        fold=1,
        train_slice="unused",
        stats_dir="unused",
        out_dir=str(out),
    )


def test_a_row_per_running_task_and_a_line_when_it_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(progress.QUIET_VAR, raising=False)
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)
    monkeypatch.delenv("TTY_INTERACTIVE", raising=False)
    tasks = [_task(tmp_path / f"t{i}", seed=i) for i in range(3)]
    for t in tasks:
        Path(t.out_dir).mkdir()
    write_progress(Path(tasks[2].out_dir) / PROGRESS_FILE, 512, 1024)  # a killed run's
    out, saved = io.StringIO(), sys.stderr
    sys.stderr = out
    try:
        with progress.display():
            rows = _TaskRows(tasks, [0, 1, 2])
            write_progress(Path(tasks[0].out_dir) / PROGRESS_FILE, 256, 1024)
            rows.poll()
            assert set(rows.open) == {0}  # 1 has not started; 2 is the old run's file
            assert rows.open[0].completed == 256 and rows.open[0].total == 1024
            rows.finish(0)
            rows.finish(1)  # finished without ever being seen: no row, no line
            rows.close()
    finally:
        sys.stderr = saved
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"✓ fold 1 {tasks[0].trial.name} seed 0: 1,024 timesteps in "
    )
