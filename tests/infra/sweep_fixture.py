"""Log a small but complete, comparable sweep through Chappie's real tracking adapter
(registry.tracking) and register two versions with `champion` / `challenger` aliases.

The params, tags and metrics follow the convention in infra/README.md ("Comparing runs in
the MLflow UI"): every child run of a sweep has the same param keys, `trial` and `seed`
as params and tags, and the same metric keys.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

MODEL_NAME = "chappie-test"
EXPERIMENT = "chappie-infra"
TRIALS = {
    "base": {"learning_rate": 3e-4, "n_steps": 256},
    "wide": {"learning_rate": 1e-4, "n_steps": 512},
}
SEEDS = (0, 1)
# What flows/train.py and flows/evaluate.py log (infra/README.md, "Comparing runs").
COMPARE_PARAMS = ("trial.name", "seed", "timesteps", "fold", "train_slice_id", "stats_id")
COMPARE_TAGS = (
    "candidate_id",
    "trial",
    "seed",
    "timesteps",
    "fold",
    "config_fingerprint",
    "spec_hash",
)


def candidate_id(trial: str, seed: int, timesteps: int = 1024) -> str:
    return f"{trial}-s{seed}-t{timesteps}"


ROLES = (("base-s1-t1024", "champion", True), ("wide-s0-t1024", "challenger", False))


def gates_for(passed: bool) -> dict[str, dict[str, Any]]:
    return {
        "pass_majority_slices": {
            "passed": passed,
            "value": 0.75 if passed else 0.25,
            "threshold": 0.5,
        },
        "drawdown_cap": {"passed": True, "value": 0.01, "threshold": 0.05},
    }


@contextlib.contextmanager
def restored_mlflow_env() -> Iterator[None]:
    """registry.tracking.configure exports MLFLOW_*_URI for child processes; put this
    process's environment back so later tests resolve their own stores."""
    from registry import tracking

    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    state = dict(tracking._state)
    try:
        yield
    finally:
        tracking._state.update(state)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def log_sweep(tracking_uri: str, tmp: Path, gate_tags: bool = True) -> dict[str, Any]:
    """Parent run + one child per (trial, seed); returns ids and the expected values.

    The registered versions carry the registry's tags (decision, `gate.<name>...` as
    written by registry.store.gate_tags, `test.<total>`) unless `gate_tags` is False."""
    with restored_mlflow_env():
        return _log_sweep(tracking_uri, tmp, gate_tags)


def _log_sweep(tracking_uri: str, tmp: Path, gate_tags: bool) -> dict[str, Any]:
    from mlflow import MlflowClient

    from registry import tracking
    from registry.store import gate_tags as flatten_gates

    tracking.configure(tracking_uri)
    parent = tracking.start_parent_run(
        EXPERIMENT,
        "sweep-test",
        params={"n_trials": len(TRIALS), "seeds": list(SEEDS)},
        tags={"kind": "sweep"},
    )
    model_dir = tmp / "model"
    model_dir.mkdir(exist_ok=True)
    (model_dir / "policy.json").write_text(json.dumps({"arch": [64, 64]}))
    children: dict[str, str] = {}
    expected: dict[str, float] = {}
    for t_index, (trial, ppo) in enumerate(TRIALS.items()):
        for seed in SEEDS:
            cid = candidate_id(trial, seed)
            pnl = round(0.001 * (seed + 1) - 0.002 * t_index, 6)
            expected[cid] = pnl
            children[cid] = tracking.log_child_run(
                parent,
                EXPERIMENT,
                f"{cid}-fold01",
                params={
                    "trial": {"name": trial, "ppo": ppo},
                    "seed": seed,
                    "timesteps": 1024,
                    "fold": 1,
                    "train_slice_id": "fold01-train",
                    "stats_id": "s1",
                },
                tags={
                    "candidate_id": cid,
                    "trial": trial,
                    "seed": str(seed),
                    "timesteps": "1024",
                    "fold": "1",
                    "config_fingerprint": "f" * 16,
                    "spec_hash": "a" * 64,
                },
                metrics_history=[
                    ("train.ep_rew_mean", 0.1 * step + seed, step) for step in range(5)
                ],
                final_metrics={
                    "test_pnl_plus_fees": pnl,
                    "test_max_drawdown": 0.01,
                    "test_trades": 7.0,
                },
                artifacts=[str(model_dir)],
                datasets=[
                    {"slice_id": "fold01-train", "sha256": "b" * 64, "kind": "train", "fold": 1}
                ],
            )
    tracking.end_run(parent)

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    client.create_registered_model(MODEL_NAME)
    versions = {}
    for cid, alias, passed in (
        (candidate_id("base", 1), "champion", True),
        (candidate_id("wide", 0), "challenger", False),
    ):
        run_id = children[cid]
        tags = {
            "candidate_id": cid,
            "decision": "promote" if passed else "reject",
            "sweep_run_id": parent,
        }
        if gate_tags:
            tags |= flatten_gates(gates_for(passed)) | {"test.pnl_plus_fees": str(expected[cid])}
        mv = client.create_model_version(
            MODEL_NAME, source=f"runs:/{run_id}/model", run_id=run_id, tags=tags
        )
        client.set_registered_model_alias(MODEL_NAME, alias, mv.version)
        versions[alias] = str(mv.version)
    return {"parent": parent, "children": children, "pnl": expected, "versions": versions}
