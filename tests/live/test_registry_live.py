"""`chappie live` against a real MLflow registry (SQLite): the champion promoted by the
registry's own `promote` is loaded, verified and run; moving the alias swaps it in."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from core.config.env import EnvConfig
from core.config.live import LiveConfig
from core.config.registry import RegistryConfig
from flows.cli import main
from tests.live.bundles import TRAIN, build_model_files
from tests.live.support import SMALL_SPEC, replay_cli

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
    assert result.version == "1"
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


@pytest.mark.slow
def test_alias_poll_on_a_real_registry_keeps_the_champion_and_a_same_stats_swap_keeps_deciding(
    ws_capture: Path, tmp_path: Path
) -> None:
    """#18: the poll compared "1" with "chappie-...@v1" and reloaded every minute, emptying
    the window. On a real MLflow registry (SQLite): an unchanged alias is never reloaded
    (run_live's watcher included), and v2 with the same FeatureSpec and stats decides on
    the bar right after the swap."""
    from live.loop import LiveRun, LiveSession, ScaledClock, run_live
    from live.model_watch import RegistrySource, poll_model, same_stats
    from live.recording import load_recording
    from registry import tracking
    from registry.promotion import promote
    from sim.replay_server import ReplayServerThread

    db = tmp_path / "data" / "mlflow.db"
    db.parent.mkdir(parents=True)
    uri = f"sqlite:///{db}"
    tracking.configure(uri)
    zip_path, stats_dir = build_model_files(ws_capture, tmp_path)
    ev = _evaluation(zip_path, stats_dir)
    (tmp_path / "ev1.json").write_text(json.dumps(ev))
    assert promote(tmp_path / "ev1.json", CFG, uri, feature_spec=SMALL_SPEC).version == "1"

    src = RegistrySource(CFG.model_name, "champion", uri)
    first = poll_model(src, None)
    assert first.action == "swap" and first.version == "1" and first.champion is not None
    assert first.champion.predictor.version == f"{CFG.model_name}@v1"  # label != version
    assert poll_model(src, first.version).reason == "unchanged"

    msgs = load_recording(ws_capture)
    with ReplayServerThread(msgs, speed=10) as srv:
        summary = run_live(
            LiveRun(
                LiveConfig(
                    feed="replay", ws_url=srv.url, alias_poll_s=0.2, risk={"stale_after_s": 600}
                ),
                spec=first.champion.spec,
                duration_s=60,
                max_skew_s=None,
            ),
            first.champion,
            clock=ScaledClock(msgs[0][0], 10),
            model_source=src,
            source_done=srv.finished,
            out=None,
        )
    assert summary.decisions > 0 and summary.model_events == []  # polled, never reloaded

    s = LiveSession(
        first.champion.spec, first.champion.stats, first.champion.predictor, max_skew_s=None
    )
    s.keep_history = True
    half = len(msgs) // 2
    for ts, m in msgs[:half]:
        s.on_message(ts, m)
    assert s.decisions[-1].model_version == f"{CFG.model_name}@v1"

    ev2 = dict(ev, sweep_run_id="sweep-live-2", best="base-s1-t64")
    ev2["candidates"] = [dict(ev["candidates"][0], candidate_id="base-s1-t64", seed=1)]
    (tmp_path / "ev2.json").write_text(json.dumps(ev2))
    assert promote(tmp_path / "ev2.json", CFG, uri, feature_spec=SMALL_SPEC).version == "2"
    moved = poll_model(src, first.version)
    assert moved.action == "swap" and moved.version == "2" and moved.champion is not None
    assert same_stats(first.champion.stats, moved.champion.stats)
    bars = s.bars
    s.swap_model(moved.champion, moved.reason)
    for ts, m in msgs[half:]:
        s.on_message(ts, m)
        if s.decisions[-1].model_version == f"{CFG.model_name}@v2":
            break
    assert s.bars - bars == 1  # the window was kept: the next bar decided
