"""Shared registry fixtures: a small real SB3 PPO model and observations recorded from it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.config.env import EnvConfig
from core.config.features import FeatureSpec

SPEC = FeatureSpec(window=2)
ENV = EnvConfig(window=2)
N_FEATURES = len(SPEC.names)
WINDOW = SPEC.window
OBS_DIM = N_FEATURES * WINDOW + 7


class DriftEnv:
    """A tiny gymnasium env shaped like ManagementEnv's observation (window x features,
    clipped at +-10, then 7 management values) with Discrete(3) actions. Reward favours
    the action matching the sign of the newest first feature, so PPO learns something."""

    def __new__(cls, seed: int = 0):  # noqa: D102 - build lazily so gymnasium imports late
        import gymnasium as gym
        from gymnasium import spaces

        class _Env(gym.Env):
            def __init__(self) -> None:
                self.observation_space = spaces.Box(-10.0, 10.0, (OBS_DIM,), np.float32)
                self.action_space = spaces.Discrete(3)
                self._t = 0
                self._obs = np.zeros(OBS_DIM, np.float32)

            def _next(self) -> np.ndarray:
                feats = np.clip(self.np_random.normal(0, 1.5, N_FEATURES * WINDOW), -10, 10)
                state = np.array(
                    [
                        self.np_random.integers(0, 2),
                        self.np_random.integers(0, 2),
                        self.np_random.uniform(-1, 1),
                        self.np_random.normal(0, 0.02),
                        self.np_random.uniform(0, 5),
                        self.np_random.uniform(0, 5),
                        self.np_random.uniform(0, 24),
                    ]
                )
                return np.concatenate([feats, state]).astype(np.float32)

            def reset(self, *, seed=None, options=None):
                super().reset(seed=seed)
                self._t = 0
                self._obs = self._next()
                return self._obs, {}

            def step(self, action):
                signal = self._obs[(WINDOW - 1) * N_FEATURES]
                want = 1 if signal > 0.3 else 2 if signal < -0.3 else 0
                reward = 1.0 if int(action) == want else 0.0
                self._t += 1
                self._obs = self._next()
                return self._obs, reward, False, self._t >= 200, {}

        env = _Env()
        env.reset(seed=seed)
        return env


@pytest.fixture(scope="session")
def sb3_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real PPO MlpPolicy (net_arch (64, 64), tanh) trained briefly, saved as SB3 zip."""
    import torch
    from stable_baselines3 import PPO

    torch.set_num_threads(1)
    env = DriftEnv(seed=0)
    model = PPO(
        "MlpPolicy",
        env,
        n_steps=256,
        batch_size=64,
        n_epochs=2,
        seed=0,
        device="cpu",
        policy_kwargs={"net_arch": [64, 64], "activation_fn": torch.nn.Tanh},
    )
    model.learn(total_timesteps=1024)
    path = tmp_path_factory.mktemp("sb3") / "model.zip"
    model.save(path)
    return path


@pytest.fixture(scope="session")
def recorded_obs(sb3_zip: Path) -> np.ndarray:
    """10,000 observations recorded by rolling the trained policy through DriftEnv."""
    from stable_baselines3 import PPO

    model = PPO.load(sb3_zip, device="cpu")
    env = DriftEnv(seed=123)
    obs, _ = env.reset(seed=123)
    out = np.empty((10_000, OBS_DIM), np.float32)
    for i in range(10_000):
        out[i] = obs
        action, _ = model.predict(obs, deterministic=False)
        obs, _, term, trunc, _ = env.step(action)
        if term or trunc:
            obs, _ = env.reset()
    return out


@pytest.fixture(scope="session")
def stats_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Frozen stats for SPEC fitted on seeded random rows (features.stats.FrozenStats)."""
    from features.stats import FrozenStats

    rng = np.random.default_rng(7)
    x = rng.normal(0.0, 2.0, (500, N_FEATURES))
    train = [{"slice_id": "fold01-train", "sha256": "ab" * 32}]
    stats = FrozenStats.fit(x, SPEC.names, SPEC.spec_hash, SPEC.sigma_floor, train)
    return stats.save(tmp_path_factory.mktemp("stats") / stats.stats_id)


def candidate_record(cid: str, decision: str, zip_path: Path, stats: Path, pnl: float) -> dict:
    """One evaluation.json candidate (contract), gates passed only on promote."""
    passed = decision == "promote"
    return {
        "candidate_id": cid,
        "trial": "base",
        "seed": int(cid.split("-s")[1].split("-")[0]) if "-s" in cid else 0,
        "timesteps": 1024,
        "decision": decision,
        "reasons": ["all gates passed"] if passed else ["drawdown above cap on fold01-test"],
        "gates": {
            "pass_majority_slices": {
                "passed": True,
                "value": 0.75,
                "threshold": 0.5,
                "definition": "share of test slices with pnl > 0",
            },
            "drawdown_cap": {
                "passed": passed,
                "value": 0.01 if passed else 0.2,
                "threshold": 0.05,
                "definition": "max drawdown of any test slice",
            },
        },
        "test_totals": {
            "pnl": pnl,
            "fees": -0.1,
            "pnl_plus_fees": pnl - 0.1,
            "trades": 12,
            "max_drawdown": 0.01,
        },
        "slices": [
            {
                "slice_id": "fold01-test",
                "kind": "test",
                "fold": 1,
                "trades": 12,
                "pnl": pnl,
                "fees": -0.1,
                "pnl_plus_fees": pnl - 0.1,
                "max_drawdown": 0.01,
                "sharpe": 1.0,
                "wins": 7,
                "losses": 5,
            }
        ],
        "model_zip": str(zip_path),
        "stats_dir": str(stats),
        "run_id": None,
        "env_config": ENV.model_dump(mode="json"),
        "reward_config": ENV.reward.model_dump(mode="json"),
        "ppo_config": {"net_arch": [64, 64], "activation": "tanh"},
        "train_slices": [{"slice_id": "fold01-train", "sha256": "ab" * 32}],
        "test_slices": [{"slice_id": "fold01-test", "sha256": "cd" * 32}],
    }


def evaluation_doc(
    candidates: list[dict], best: str | None, challenger: str | None, sweep: str = "sweep-1"
) -> dict:
    return {
        "sweep_run_id": sweep,
        "experiment": "chappie",
        "config_fingerprint": "f" * 64,
        "spec_hash": SPEC.spec_hash,
        "candidates": candidates,
        "best": best,
        "challenger": challenger,
        "overfitting": {"pbo": 0.2, "dsr": 0.9, "n_trials": len(candidates)},
    }


@pytest.fixture(scope="session")
def built_bundle(sb3_zip: Path, stats_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle built once from the session's SB3 zip and stats (read-only: copy to edit)."""
    from registry.bundle import build_bundle

    cand = candidate_record("base-s0-t1024", "promote", sb3_zip, stats_dir, 1.0)
    return build_bundle(
        tmp_path_factory.mktemp("bundle") / "bundle",
        model_zip=sb3_zip,
        stats_dir=stats_dir,
        feature_spec=SPEC,
        env_config=ENV,
        config_fingerprint="f" * 64,
        candidate=cand,
        train_slices=cand["train_slices"],
        test_slices=cand["test_slices"],
        decision="promote",
        reasons=cand["reasons"],
        gates=cand["gates"],
    )


@pytest.fixture(scope="session")
def _template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow SQLite database migrated once per session (migrations take seconds)."""
    from registry import tracking

    db = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    tracking.configure(f"sqlite:///{db}")
    return db


@pytest.fixture()
def sqlite_uri(_template_db: Path, tmp_path: Path) -> str:
    """A fresh, already-migrated MLflow SQLite store in this test's tmp_path."""
    import shutil

    db = tmp_path / "data" / "mlflow.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(_template_db, db)
    return f"sqlite:///{db}"
