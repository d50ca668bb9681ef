"""`chappie live` against a real MLflow registry (SQLite): the champion promoted by the
registry's own `promote` is loaded, verified and run; moving the alias swaps it in."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from core.config.env import EnvConfig
from core.config.registry import RegistryConfig
from flows.cli import main
from tests.live.support import SMALL_SPEC, replay_cli
from tests.live.test_bundle_cli import TRAIN, build_model_files

CFG = RegistryConfig(model_name="chappie-live-test")


def _evaluation(zip_path: Path, stats_dir: Path) -> dict:
    env = EnvConfig(window=SMALL_SPEC.window)
    gate = {"passed": True, "value": 1.0, "threshold": 0.5, "definition": "test"}
    totals = {"pnl": 1.0, "fees": 0.0, "pnl_plus_fees": 1.0, "trades": 1, "max_drawdown": 0.0}
    cand = {
        "candidate_id": "base-s0-t64",
        "trial": "base",
        "seed": 0,
        "timesteps": 64,
        "decision": "promote",
        "reasons": ["all gates passed"],
        "gates": {"pass_majority_slices": gate},
        "test_totals": totals,
        "slices": [],
        "model_zip": str(zip_path),
        "stats_dir": str(stats_dir),
        "run_id": None,
        "env_config": env.model_dump(mode="json"),
        "reward_config": env.reward.model_dump(mode="json"),
        "ppo_config": {"net_arch": [32, 32], "activation": "tanh"},
        "train_slices": TRAIN,
        "test_slices": [{"slice_id": "t", "sha256": "1" * 64}],
    }
    return {
        "sweep_run_id": "sweep-live",
        "experiment": "chappie",
        "config_fingerprint": "f" * 64,
        "spec_hash": SMALL_SPEC.spec_hash,
        "feature_spec": SMALL_SPEC.model_dump(mode="json"),
        "candidates": [cand],
        "best": "base-s0-t64",
        "challenger": None,
        "overfitting": {"pbo": 0.0, "dsr": 1.0, "n_trials": 1},
    }


@pytest.mark.slow
def test_cli_loads_the_registry_champion(
    ws_capture: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from registry import tracking
    from registry.promotion import promote

    db = tmp_path / "data" / "mlflow.db"
    db.parent.mkdir(parents=True)
    uri = f"sqlite:///{db}"
    tracking.configure(uri)
    zip_path, stats_dir = build_model_files(ws_capture, tmp_path)
    ev = tmp_path / "evaluation.json"
    ev.write_text(json.dumps(_evaluation(zip_path, stats_dir)))
    result = promote(ev, CFG, uri, feature_spec=SMALL_SPEC)
    assert result["version"] == "1"
    shutil.rmtree(tmp_path / stats_dir.name)  # the live loop must use the registry's copy
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("CHAPPIE_DATA_DIR", str(tmp_path / "data"))
    out = tmp_path / "d.jsonl"
    rc = main(replay_cli(ws_capture, "--model", CFG.model_name, "--decisions-out", str(out)))
    assert rc == 0
    stdout = capsys.readouterr().out
    assert f"model={CFG.model_name}@v1" in stdout
    recs = [json.loads(s) for s in out.read_text().splitlines()]
    assert recs and all(
        r["model_version"] == f"{CFG.model_name}@v1" and r["action"] in (0, 1, 2) for r in recs
    )
