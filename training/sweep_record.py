"""The result of a training sweep as one typed value: what the train flow returns and
what reports/<sweep_run_id>/sweep.json is (its dump), read back by the evaluate flow.

A row is one task's `TrainResult` with the MLflow run it was logged to, its output folder
and the task itself, exactly as the sweep ran it (`TrainTask`). The JSON on disk is the
contract: the same keys and values as before this model (key-sorted, `core.atomic`).

Pure: pydantic models and their serialisers; `read`/`write` are the only file access.
"""

from __future__ import annotations

from pathlib import Path
from typing import Self

from core.atomic import json_bytes, write_bytes_atomic
from core.config.base import FrozenModel
from training.sweep import TrainResult, TrainTask

SWEEP_JSON = "sweep.json"  # reports/<sweep_run_id>/sweep.json


class SweepRow(TrainResult):
    """One task of the sweep: what it left behind, where, and the task it ran."""

    run_id: str | None  # the task's MLflow child run (None when it failed)
    out_dir: str
    task: TrainTask


class SweepResult(FrozenModel):
    """A finished sweep: its MLflow parent run, one row per task (in task order), the run
    names of the tasks that failed, and the config and feature spec it trained on."""

    sweep_run_id: str
    tasks: list[SweepRow]
    failed: list[str]
    config_fingerprint: str
    spec_hash: str

    @property
    def n_ok(self) -> int:
        """How many tasks finished."""
        return sum(1 for r in self.tasks if r.ok)

    def by_candidate(self) -> dict[str, list[SweepRow]]:
        """The rows of each candidate (trial, seed, timesteps), in fold order."""
        out: dict[str, list[SweepRow]] = {}
        for row in self.tasks:
            out.setdefault(row.candidate_id, []).append(row)
        return {cid: sorted(rows, key=lambda r: r.fold) for cid, rows in out.items()}

    def trained_on(self) -> dict[str, str]:
        """Train slice id -> the sha256 it had when the sweep trained on it."""
        return {r.task.train_slice_id: r.task.train_sha256 for r in self.tasks}

    def dumps(self) -> bytes:
        """sweep.json's bytes."""
        return json_bytes(self.model_dump(mode="json"))

    def write(self, path: str | Path) -> Path:
        """Publish sweep.json atomically at `path`."""
        return write_bytes_atomic(path, self.dumps())

    @classmethod
    def read(cls, path: str | Path) -> Self:
        """Read and parse sweep.json. Raises OSError, pydantic.ValidationError."""
        return cls.model_validate_json(Path(path).read_bytes())
