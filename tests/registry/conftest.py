"""Shared registry fixtures: a small real SB3 PPO model and observations recorded from it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

N_FEATURES = 6
WINDOW = 4
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
