"""Model bundles for the live tests: what a training run would hand over (an SB3 PPO zip
and the frozen stats fitted on the capture), packed by the registry's `build_bundle`.
The fixtures in tests/live/conftest.py build each kind once per session."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from core import schema as S
from core.config.env import EnvConfig
from core.instrument import XBTUSD
from envs.observation import observation_size
from registry.bundle import build_bundle
from tests.live.support import SMALL_SPEC

ENV = EnvConfig(window=SMALL_SPEC.window)
TRAIN = [{"slice_id": "capture", "sha256": "0" * 64}]

#: the `model_bundle` fixture: (action_mode="toggle", fixed_action=None) -> the bundle folder
BundleFactory = Callable[..., Path]


def build_model_files(ws_capture: Path, tmp: Path, n_actions: int = 3) -> tuple[Path, Path]:
    """An SB3 PPO zip (untrained MlpPolicy, 32x32 tanh, `n_actions` actions) for SMALL_SPEC's
    observation and frozen stats fitted on the capture's features: what a training run
    would hand over."""
    # slow: gymnasium, torch and stable_baselines3 (~3 s); only the bundle tests train
    import gymnasium as gym
    import torch
    from gymnasium import spaces
    from stable_baselines3 import PPO

    # slow: numba (book.sampler) and polars features; only the bundle tests need them
    from book.sampler import sample_bars
    from features.compute import compute_features
    from features.stats import FrozenStats
    from ingest.ws_recording import read_ws_recording

    torch.set_num_threads(1)
    fr = read_ws_recording(ws_capture, "XBTUSD", XBTUSD)
    feats = compute_features(
        sample_bars(fr.book, fr.trades, SMALL_SPEC).lazy(), SMALL_SPEC
    ).collect()
    x = feats.filter(~pl.col(S.WARMUP)).select(SMALL_SPEC.names).to_numpy()
    x = x[np.isfinite(x).all(axis=1)]
    stats = FrozenStats.fit(
        x, SMALL_SPEC.names, SMALL_SPEC.spec_hash, SMALL_SPEC.sigma_floor, TRAIN
    )
    stats_dir = stats.save(tmp / stats.stats_id)
    dim = observation_size(len(SMALL_SPEC.names), SMALL_SPEC.window)

    class Box(gym.Env):
        observation_space = spaces.Box(-10.0, 10.0, (dim,), np.float32)
        action_space = spaces.Discrete(n_actions)

        def reset(self, *, seed=None, options=None):  # type: ignore[no-untyped-def]
            super().reset(seed=seed)
            return np.zeros(dim, np.float32), {}

        def step(self, action):  # type: ignore[no-untyped-def]
            return np.zeros(dim, np.float32), 0.0, True, False, {}

    model = PPO(
        "MlpPolicy",
        Box(),
        n_steps=64,
        batch_size=32,
        seed=3,
        device="cpu",
        policy_kwargs={"net_arch": [32, 32], "activation_fn": torch.nn.Tanh},
    )
    zip_path = tmp / "model.zip"
    model.save(zip_path)
    return zip_path, stats_dir


def fix_action(zip_path: Path, action: int) -> None:
    """Make the PPO in `zip_path` always choose `action`: its action head's weights
    zeroed, the bias on `action` (so a target-mode model keeps the same orders resting)."""
    # slow: torch and stable_baselines3 (~3 s); only the bundle tests train
    import torch
    from stable_baselines3 import PPO

    model = PPO.load(zip_path, device="cpu")
    head = dict(model.policy.action_net.named_parameters())
    bias = torch.zeros_like(head["bias"])
    bias[action] = 20.0
    with torch.no_grad():
        head["weight"].zero_()
        head["bias"].copy_(bias)
    model.save(zip_path)


def build_test_bundle(
    ws_capture: Path,
    tmp_path_factory: pytest.TempPathFactory,
    action_mode: str = "toggle",
    fixed_action: int | None = None,
) -> Path:
    """A verified bundle of an untrained model in `action_mode` (toggle: Discrete(3),
    target: Discrete(4), the resting orders wanted), always choosing `fixed_action` when
    one is given (`fix_action`)."""
    name = f"{action_mode}-{'any' if fixed_action is None else fixed_action}"
    n_actions = 4 if action_mode == "target" else 3
    zip_path, stats_dir = build_model_files(
        ws_capture, tmp_path_factory.mktemp(f"bundle-src-{name}"), n_actions=n_actions
    )
    if fixed_action is not None:
        fix_action(zip_path, fixed_action)
    return build_bundle(
        tmp_path_factory.mktemp(f"bundle-{name}") / "bundle",
        model_zip=zip_path,
        stats_dir=stats_dir,
        feature_spec=SMALL_SPEC,
        env_config=ENV.model_copy(update={"action_mode": action_mode}),
        config_fingerprint="f" * 64,
        train_slices=TRAIN,
        decision="promote",
    )
