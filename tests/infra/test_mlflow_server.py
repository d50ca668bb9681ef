"""A REAL `mlflow server` (127.0.0.1, free port, SQLite backend, served artifacts): runs
logged through Chappie's tracking adapter are read back through the MLflow REST API the
UI uses, with the comparable params/tags/metrics the compare view needs, and the
registered model with its aliases."""

from __future__ import annotations

from pathlib import Path

import httpx

from core.config.registry import RegistryConfig
from flows.status import collect_status
from tests.infra.servers import mlflow_server
from tests.infra.sweep_fixture import (
    COMPARE_PARAMS,
    COMPARE_TAGS,
    EXPERIMENT,
    MODEL_NAME,
    SEEDS,
    TRIALS,
    log_sweep,
)

API = "/api/2.0/mlflow"


def check_server_view(url: str, logged: dict) -> None:
    """What the MLflow UI shows, read through the REST API; shared with the PostgreSQL test."""
    with httpx.Client(base_url=url, timeout=20) as http:
        exp = http.get(f"{API}/experiments/get-by-name", params={"experiment_name": EXPERIMENT})
        exp.raise_for_status()
        exp_id = exp.json()["experiment"]["experiment_id"]

        r = http.post(
            f"{API}/runs/search",
            json={
                "experiment_ids": [exp_id],
                "filter": f"tags.mlflow.parentRunId = '{logged['parent']}'",
                "order_by": ["params.`trial.name` ASC", "params.seed ASC"],
                "max_results": 100,
            },
        )
        r.raise_for_status()
        runs = r.json()["runs"]
        assert len(runs) == len(TRIALS) * len(SEEDS)

        # Compare view: same param keys in every child; seeds and configs differ by value.
        param_keys = [frozenset(p["key"] for p in run["data"]["params"]) for run in runs]
        assert len(set(param_keys)) == 1
        assert (
            set(COMPARE_PARAMS) | {"trial.ppo.learning_rate", "trial.ppo.n_steps"} <= param_keys[0]
        )
        rows = []
        for run in runs:
            params = {p["key"]: p["value"] for p in run["data"]["params"]}
            tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
            metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
            assert set(COMPARE_TAGS) <= set(tags)
            assert run["info"]["status"] == "FINISHED"
            cid = tags["candidate_id"]
            assert metrics["test_pnl_plus_fees"] == logged["pnl"][cid]
            rows.append((params["trial.name"], params["seed"], params["trial.ppo.learning_rate"]))
        assert rows == [
            (t, str(s), str(TRIALS[t]["learning_rate"])) for t in sorted(TRIALS) for s in SEEDS
        ]

        # A training curve, step by step.
        child = logged["children"]["base-s1-t1024"]
        hist = http.get(
            f"{API}/metrics/get-history",
            params={"run_id": child, "metric_key": "train.ep_rew_mean"},
        )
        hist.raise_for_status()
        steps = sorted((m["step"], m["value"]) for m in hist.json()["metrics"])
        assert steps == [(s, 0.1 * s + 1) for s in range(5)]

        # Artifacts are served by the tracking server.
        arts = http.get(f"{API}/artifacts/list", params={"run_id": child, "path": "model"})
        arts.raise_for_status()
        assert [f["path"] for f in arts.json()["files"]] == ["model/policy.json"]

        # The registered model with its aliases.
        rm = http.get(f"{API}/registered-models/get", params={"name": MODEL_NAME})
        rm.raise_for_status()
        aliases = {a["alias"]: a["version"] for a in rm.json()["registered_model"]["aliases"]}
        assert aliases == logged["versions"]
        champ = http.get(
            f"{API}/registered-models/alias", params={"name": MODEL_NAME, "alias": "champion"}
        )
        champ.raise_for_status()
        mv = champ.json()["model_version"]
        tags = {t["key"]: t["value"] for t in mv["tags"]}
        assert mv["run_id"] == child
        assert tags["decision"] == "promote"

        ui = http.get("/")
        assert ui.status_code == 200 and "<html" in ui.text.lower()


def test_mlflow_server_shows_comparable_runs_and_registry(tmp_path: Path) -> None:
    with mlflow_server(tmp_path) as url:
        logged = log_sweep(url, tmp_path)
        check_server_view(url, logged)
        # `chappie status` against the server (MLFLOW_TRACKING_URI=http://...)
        models = collect_status(
            str(tmp_path / "data"), tracking_uri=url, registry=RegistryConfig(model_name=MODEL_NAME)
        )["models"]
        assert models["available"] and models["aliases"] == logged["versions"]
        assert models["champion"]["gates"]["pass_majority_slices"]["passed"] is True
    # Artifacts went through the server into its artifact folder, not the client's cwd.
    assert list((tmp_path / "mlartifacts").rglob("policy.json"))
