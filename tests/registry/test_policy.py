"""Pickle-free policy: export from SB3, action parity, file format, ONNX twin."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from registry.export import export_sb3_zip, numpy_policy_from_sb3
from registry.policy import (
    POLICY_JSON,
    POLICY_NPZ,
    NumpyPolicy,
    PolicyArchitecture,
    PolicyFormatError,
)
from tests.registry.conftest import OBS_DIM


def _tiny() -> NumpyPolicy:
    arch = PolicyArchitecture(obs_dim=2, hidden=(2,), n_actions=3, activation="relu")
    arrays_ = {
        "w0": np.array([[1.0, 0.0], [0.0, -1.0]], np.float32),
        "b0": np.array([0.0, 0.5], np.float32),
        "w1": np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]], np.float32),
        "b1": np.array([0.0, 0.0, 0.25], np.float32),
    }
    return NumpyPolicy(arch, arrays_)


def test_numpy_policy_hand_computed_relu_network() -> None:
    p = _tiny()
    # obs (2, 1): h = relu([2, -1 + 0.5]) = [2, 0]; logits = [2, 0, -2 + 0.25]
    np.testing.assert_allclose(p.logits(np.array([2.0, 1.0])), [2.0, 0.0, -1.75])
    assert p.predict(np.array([2.0, 1.0])) == 0
    # obs (-1, -3): h = relu([-1, 3.5]) = [0, 3.5]; logits = [0, 3.5, -3.25]
    assert p.predict(np.array([-1.0, -3.0])) == 1
    # obs (-1, 1): h = [0, 0]; logits = [0, 0, 0.25]
    assert p.predict(np.array([-1.0, 1.0])) == 2
    assert p.predict_batch(np.array([[2.0, 1.0], [-1.0, -3.0], [-1.0, 1.0]])).tolist() == [0, 1, 2]


def test_numpy_policy_tie_takes_first_index() -> None:
    arch = PolicyArchitecture(obs_dim=1, hidden=(), n_actions=3, activation="tanh")
    flat = NumpyPolicy(arch, {"w0": np.zeros((3, 1), np.float32), "b0": np.zeros(3, np.float32)})
    assert flat.predict(np.array([1.0])) == 0
    assert flat.predict_batch(np.zeros((4, 1))).tolist() == [0, 0, 0, 0]


def test_numpy_policy_rejects_wrong_shape_and_nan() -> None:
    p = _tiny()
    with pytest.raises(ValueError, match="shape"):
        p.predict(np.zeros(3))
    with pytest.raises(ValueError, match="non-finite"):
        p.predict(np.array([np.nan, 0.0]))
    with pytest.raises(ValueError, match="one observation"):
        p.predict(np.zeros((1, 2)))


def test_architecture_rejects_bad_arrays() -> None:
    arch = PolicyArchitecture(obs_dim=2, hidden=(2,), n_actions=3, activation="relu")
    good = _tiny().arrays()
    with pytest.raises(PolicyFormatError, match="shape"):
        NumpyPolicy(arch, {**good, "w0": np.zeros((3, 2), np.float32)})
    with pytest.raises(PolicyFormatError, match="expected"):
        NumpyPolicy(arch, {k: v for k, v in good.items() if k != "b1"})
    with pytest.raises(PolicyFormatError, match="non-finite"):
        NumpyPolicy(arch, {**good, "b0": np.array([np.inf, 0], np.float32)})
    with pytest.raises(PolicyFormatError, match="activation"):
        PolicyArchitecture(obs_dim=2, hidden=(2,), n_actions=3, activation="gelu")


def test_save_load_round_trip_is_plain_arrays(tmp_path: Path) -> None:
    p = _tiny()
    p.save(tmp_path)
    with np.load(tmp_path / POLICY_NPZ, allow_pickle=False) as data:
        assert all(data[k].dtype == np.float32 for k in data.files)
    q = NumpyPolicy.load(tmp_path)
    for k, v in p.arrays().items():
        np.testing.assert_array_equal(q.arrays()[k], v)
    meta = json.loads((tmp_path / POLICY_JSON).read_text())
    meta["format_version"] = 99
    (tmp_path / POLICY_JSON).write_text(json.dumps(meta))
    with pytest.raises(PolicyFormatError, match="unknown policy format"):
        NumpyPolicy.load(tmp_path)


def test_load_refuses_object_arrays(tmp_path: Path) -> None:
    p = _tiny()
    p.save(tmp_path)
    arrays_ = p.arrays()
    arrays_["w0"] = np.array([object()] * 4, dtype=object).reshape(2, 2)
    np.savez(tmp_path / POLICY_NPZ, **arrays_)
    with pytest.raises(ValueError, match="pickle"):
        NumpyPolicy.load(tmp_path)


@settings(max_examples=50, deadline=None)
@given(arrays(np.float32, (5, 2), elements=st.floats(-10, 10, width=32)))
def test_predict_batch_equals_predict_per_row(obs: np.ndarray) -> None:
    p = _tiny()
    assert p.predict_batch(obs).tolist() == [p.predict(row) for row in obs]


def test_export_action_parity_with_sb3_on_10000_recorded_observations(
    sb3_zip: Path, recorded_obs: np.ndarray, tmp_path: Path
) -> None:
    from stable_baselines3 import PPO

    export_sb3_zip(sb3_zip, tmp_path, onnx=False)
    policy = NumpyPolicy.load(tmp_path)
    assert policy.arch.hidden == (64, 64) and policy.arch.activation == "tanh"
    assert policy.obs_dim == OBS_DIM and policy.n_actions == 3
    model = PPO.load(sb3_zip, device="cpu")
    sb3_actions, _ = model.predict(recorded_obs, deterministic=True)
    ours = policy.predict_batch(recorded_obs)
    assert recorded_obs.shape == (10_000, OBS_DIM)
    assert len(np.unique(sb3_actions)) >= 2  # the test sees more than one action
    np.testing.assert_array_equal(ours, sb3_actions)
    # single-observation path agrees too (first 500)
    assert [policy.predict(o) for o in recorded_obs[:500]] == sb3_actions[:500].tolist()


def test_export_relu_and_single_layer_policy_parity(
    tmp_path: Path, recorded_obs: np.ndarray
) -> None:
    import torch
    from stable_baselines3 import PPO

    from tests.registry.conftest import DriftEnv

    model = PPO(
        "MlpPolicy",
        DriftEnv(seed=1),
        seed=1,
        device="cpu",
        policy_kwargs={"net_arch": [32], "activation_fn": torch.nn.ReLU},
    )
    with torch.no_grad():  # larger weights than the orthogonal init: decisive logits
        for prm in model.policy.parameters():
            prm.normal_(0, 0.5)
    policy = numpy_policy_from_sb3(model.policy)
    assert policy.arch.hidden == (32,) and policy.arch.activation == "relu"
    sb3_actions, _ = model.predict(recorded_obs, deterministic=True)
    assert len(np.unique(sb3_actions)) == 3
    np.testing.assert_array_equal(policy.predict_batch(recorded_obs), sb3_actions)


def test_onnx_export_matches_numpy_policy(
    sb3_zip: Path, recorded_obs: np.ndarray, tmp_path: Path
) -> None:
    import onnxruntime as ort

    written = export_sb3_zip(sb3_zip, tmp_path, onnx=True)
    assert {p.name for p in written} == {"policy.json", "policy.npz", "policy.onnx"}
    policy = NumpyPolicy.load(tmp_path)
    sess = ort.InferenceSession(str(tmp_path / "policy.onnx"), providers=["CPUExecutionProvider"])
    logits, action = sess.run(None, {"obs": recorded_obs[:2000]})
    np.testing.assert_allclose(logits, policy.logits(recorded_obs[:2000]), atol=1e-5)
    np.testing.assert_array_equal(action, policy.predict_batch(recorded_obs[:2000]))


def test_export_missing_zip_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="model.zip"):
        export_sb3_zip(tmp_path / "model.zip", tmp_path / "out")


def test_parity_on_10000_observations_recorded_from_management_env(tmp_path: Path) -> None:
    """The project's own env (chappie/Management-v0 on a slice in the contract schema):
    train PPO briefly, record 10,000 observations of a rollout, compare actions."""
    import torch
    from stable_baselines3 import PPO

    from core.config.env import EnvConfig
    from envs.management import ManagementEnv
    from tests.envs.conftest import make_market_files

    torch.set_num_threads(1)
    files = make_market_files(tmp_path, n=1500, seed=3)
    env = ManagementEnv(files.slice_path, files.stats_dir, EnvConfig(mean_steps_per_episode=256))
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
    model.learn(total_timesteps=512)
    zip_path = tmp_path / "model.zip"
    model.save(zip_path)
    obs_log = np.empty((10_000, env.observation_space.shape[0]), np.float32)
    obs, _ = env.reset(seed=5)
    for i in range(10_000):
        obs_log[i] = obs
        action, _ = model.predict(obs, deterministic=False)
        obs, _, term, trunc, _ = env.step(int(action))
        if term or trunc:
            obs, _ = env.reset()
    export_sb3_zip(zip_path, tmp_path / "policy", onnx=False)
    policy = NumpyPolicy.load(tmp_path / "policy")
    want, _ = PPO.load(zip_path, device="cpu").predict(obs_log, deterministic=True)
    assert len(np.unique(want)) >= 2
    np.testing.assert_array_equal(policy.predict_batch(obs_log), want)
