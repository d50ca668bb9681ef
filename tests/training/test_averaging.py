"""Averaged policies (training/averaging.py): the mirror image of an observation, the one
wider network that averages members and their mirror images, and train_one with
`TrialConfig.ensemble` and `TrialConfig.mirror`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from core.config.features import FeatureSpec
from core.config.training import TrialConfig
from core.schema import ACTION_MIRROR, MANAGEMENT_STATE, feature_names, mirror_of
from registry.export import load_sb3_ppo, numpy_policy_from_sb3
from tests.training.conftest import DataDir
from tests.training.test_sweep import make_task
from training.averaging import action_permutation, average_policies, mirror_map
from training.backtest import sb3_batch_policy
from training.sweep import read_metrics_csv, read_progress, train_one

FLOOR = 1e-8


def test_every_v1_feature_mirrors_and_twice_is_itself() -> None:
    spec = FeatureSpec(windows_s=[10, 60], return_horizons_s=[10, 60], depth_bps=[10.0, 25.0])
    names = feature_names(spec)
    for name in names:
        source, sign = mirror_of(name)
        assert source in names
        back, sign_back = mirror_of(source)
        assert (back, sign * sign_back) == (name, 1.0)
    with pytest.raises(ValueError, match="no mirror rule"):
        mirror_of("funding_rate_8h")


def test_the_mirror_map_is_the_normalised_mirror_image_of_the_raw_features() -> None:
    """Written out by hand for the decision configs' spec: buyers and sellers swapped."""
    spec = FeatureSpec(windows_s=[60], return_horizons_s=[10, 60], depth_bps=[10.0], window=1)
    names = feature_names(spec)
    raw = {
        "spread_ticks": 2.0, "spread_bps": 1.5, "microprice_offset_bps": 0.4,
        "imbalance_l1": 0.3, "imbalance_l5": -0.2, "imbalance_l10": 0.6, "ofi_60s": 1e5,
        "signed_volume_60s": -3e5, "trade_imbalance_60s": 0.25, "trade_intensity_60s": 4.0,
        "realized_vol_60s": 2.5, "time_since_trade_s": 3.0, "log_return_10s": 1e-4,
        "log_return_60s": -2e-4, "depth_bid_10bps": 5e6, "depth_ask_10bps": 7e6,
    }  # fmt: skip
    mirrored = {
        **raw,
        "microprice_offset_bps": -0.4, "imbalance_l1": -0.3, "imbalance_l5": 0.2,
        "imbalance_l10": -0.6, "ofi_60s": -1e5, "signed_volume_60s": 3e5,
        "trade_imbalance_60s": -0.25, "log_return_10s": -1e-4, "log_return_60s": 2e-4,
        "depth_bid_10bps": 7e6, "depth_ask_10bps": 5e6,
    }  # fmt: skip
    rng = np.random.default_rng(3)
    mean = np.array([raw[n] for n in names]) * rng.uniform(-0.5, 0.5, len(names))
    sigma = np.abs(np.array([raw[n] for n in names])) * rng.uniform(0.5, 2.0, len(names))
    # (long flag, short flag, position, unrealised %, three hours)
    state = np.array([1.0, 0.0, 0.4, -1.2, 3.0, 1.0, 0.5])
    state_m = np.array([0.0, 1.0, -0.4, -1.2, 3.0, 1.0, 0.5])

    def obs(values: dict[str, float], st: np.ndarray) -> np.ndarray:
        z = (np.array([values[n] for n in names]) - mean) / sigma
        return np.concatenate([z, st])

    a, c = mirror_map(names, 1, mean, sigma, FLOOR)
    np.testing.assert_allclose(a @ obs(raw, state) + c, obs(mirrored, state_m), atol=1e-12)


def test_the_mirror_map_is_an_involution_over_a_window_and_keeps_constant_features() -> None:
    names = feature_names(FeatureSpec(windows_s=[10, 60], depth_bps=[10.0]))
    rng = np.random.default_rng(0)
    mean = rng.normal(size=len(names))
    sigma = rng.uniform(0.1, 3.0, len(names))
    j = names.index("imbalance_l1")
    sigma[j] = FLOOR  # constant in training
    a, c = mirror_map(names, 3, mean, sigma, FLOOR)
    n = len(names) * 3 + len(MANAGEMENT_STATE)
    assert a.shape == (n, n)
    np.testing.assert_allclose(a @ a, np.eye(n), atol=1e-12)
    np.testing.assert_allclose(a @ c + c, 0.0, atol=1e-12)
    for row in (j, len(names) + j, 2 * len(names) + j):
        assert a[row, row] == 1.0 and c[row] == 0.0 and np.count_nonzero(a[row]) == 1


class _Spaces(gym.Env[np.ndarray, int]):
    """Only the spaces: PPO is built, never trained, here."""

    def __init__(self, n_obs: int, n_act: int) -> None:
        self.observation_space = gym.spaces.Box(-10.0, 10.0, (n_obs,), np.float32)
        self.action_space = gym.spaces.Discrete(n_act)

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
        return np.zeros(self.observation_space.shape, np.float32), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        return np.zeros(self.observation_space.shape, np.float32), 0.0, True, False, {}


def _logits_value(model: Any, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pol = model.policy
    with torch.no_grad():
        t = torch.as_tensor(x, dtype=torch.float32)
        logits = pol.action_net(pol.mlp_extractor.policy_net(t)).numpy()
        value = pol.value_net(pol.mlp_extractor.value_net(t)).numpy()[:, 0]
    return logits, value


@pytest.mark.parametrize("mode", ["target", "toggle"])
def test_mirror_average_is_the_mean_of_the_policy_and_its_mirror_image(
    mode: str, tmp_path: Path
) -> None:
    from stable_baselines3 import PPO

    names = feature_names(FeatureSpec(windows_s=[60], return_horizons_s=[10, 60]))
    rng = np.random.default_rng(1)
    a, c = mirror_map(names, 2, rng.normal(size=len(names)), rng.uniform(0.5, 2, len(names)), FLOOR)
    n_obs, perm = len(c), action_permutation(mode)
    assert perm.tolist() == list(ACTION_MIRROR[mode])
    kw = {"net_arch": [16, 8], "activation_fn": torch.nn.Tanh}
    model = PPO("MlpPolicy", _Spaces(n_obs, len(perm)), seed=0, device="cpu", policy_kwargs=kw)
    x = rng.normal(size=(500, n_obs)).astype(np.float32)
    xm = (x @ a.T + c).astype(np.float32)
    l0, v0 = _logits_value(model, x)
    l0m, v0m = _logits_value(model, xm)

    average_policies([model], (a, c, perm))
    model.save(tmp_path / "m.zip")
    loaded = load_sb3_ppo(tmp_path / "m.zip")
    assert loaded.policy_kwargs["net_arch"] == [32, 16]
    l1, v1 = _logits_value(loaded, x)
    np.testing.assert_allclose(l1, (l0 + l0m[:, perm]) / 2, atol=2e-5)
    np.testing.assert_allclose(v1, (v0 + v0m) / 2, atol=2e-5)
    # exactly equivariant: the mirror image's logits are these with the sides swapped
    l1m, _ = _logits_value(loaded, xm)
    np.testing.assert_allclose(l1m, l1[:, perm], atol=2e-5)
    # the pickle-free export the live loop reads acts the same
    acts = sb3_batch_policy(loaded)(x)
    assert (numpy_policy_from_sb3(loaded.policy).predict_batch(x) == acts).all()
    assert len(set(acts.tolist())) > 1  # not a constant policy, which would prove nothing


def test_mirror_average_refuses_a_map_or_permutation_of_the_wrong_size() -> None:
    from stable_baselines3 import PPO

    model = PPO("MlpPolicy", _Spaces(5, 3), device="cpu", policy_kwargs={"net_arch": [4]})
    with pytest.raises(ValueError, match="observation of 5"):
        average_policies([model], (np.eye(4), np.zeros(4), np.array([0, 2, 1])))
    with pytest.raises(ValueError, match="permutation"):
        average_policies([model], (np.eye(5), np.zeros(5), np.array([0, 1, 1])))
    other = PPO("MlpPolicy", _Spaces(5, 3), device="cpu", policy_kwargs={"net_arch": [8]})
    with pytest.raises(ValueError, match="differ in shape"):
        average_policies([model, other])


def test_members_and_their_mirror_images_average_into_one_network(tmp_path: Path) -> None:
    from stable_baselines3 import PPO

    names = feature_names(FeatureSpec(windows_s=[60]))
    rng = np.random.default_rng(2)
    a, c = mirror_map(names, 1, rng.normal(size=len(names)), rng.uniform(0.5, 2, len(names)), FLOOR)
    perm = action_permutation("target")
    kw = {"net_arch": [8, 8], "activation_fn": torch.nn.Tanh}
    models = [
        PPO("MlpPolicy", _Spaces(len(c), 4), seed=s, device="cpu", policy_kwargs=kw)
        for s in (0, 1, 2)
    ]
    x = rng.normal(size=(300, len(c))).astype(np.float32)
    xm = (x @ a.T + c).astype(np.float32)
    parts = [_logits_value(m, x) for m in models] + [_logits_value(m, xm) for m in models]
    want_l = np.mean([lv[0] for lv in parts[:3]] + [lv[0][:, perm] for lv in parts[3:]], axis=0)
    want_v = np.mean([lv[1] for lv in parts], axis=0)
    plain_l = np.mean([lv[0] for lv in parts[:3]], axis=0)

    avg = average_policies(models, (a, c, perm))
    assert avg is models[0] and avg.policy_kwargs["net_arch"] == [48, 48]
    avg.save(tmp_path / "avg.zip")
    got_l, got_v = _logits_value(load_sb3_ppo(tmp_path / "avg.zip"), x)
    np.testing.assert_allclose(got_l, want_l, atol=2e-5)
    np.testing.assert_allclose(got_v, want_v, atol=2e-5)
    assert not np.allclose(got_l, plain_l, atol=1e-3)  # the mirror terms count

    again = [
        PPO("MlpPolicy", _Spaces(len(c), 4), seed=s, device="cpu", policy_kwargs=kw)
        for s in (0, 1, 2)
    ]
    np.testing.assert_allclose(_logits_value(average_policies(again), x)[0], plain_l, atol=2e-5)


def test_defaults_are_not_written_so_existing_fingerprints_stay() -> None:
    assert TrialConfig().model_dump(mode="json").keys().isdisjoint({"mirror", "ensemble"})
    assert TrialConfig(mirror=True).model_dump(mode="json")["mirror"] is True
    assert TrialConfig(ensemble=3).model_dump(mode="json")["ensemble"] == 3
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        TrialConfig(ensemble=0)


def test_train_one_with_mirror_trains_the_same_policy_and_saves_its_mirror_average(
    tiny_data: DataDir, tmp_path: Path
) -> None:
    """Training is untouched (same seed, same network); what is saved is the trained
    network beside its mirror-image copy."""
    plain_task = make_task(tiny_data, tmp_path / "plain", timesteps=256)
    trial = plain_task.trial.model_copy(update={"mirror": True})
    task = plain_task.model_copy(update={"trial": trial, "out_dir": str(tmp_path / "mirror")})
    plain = load_sb3_ppo(train_one(plain_task).model_zip)
    mirrored = load_sb3_ppo(train_one(task).model_zip)
    width = plain.policy_kwargs["net_arch"][0]
    assert mirrored.policy_kwargs["net_arch"] == [2 * w for w in plain.policy_kwargs["net_arch"]]
    w_plain = plain.policy.mlp_extractor.policy_net[0].weight.detach()
    w_mirror = mirrored.policy.mlp_extractor.policy_net[0].weight.detach()
    torch.testing.assert_close(w_mirror[:width], w_plain)
    assert not torch.equal(w_mirror[width:], w_plain)


def test_train_one_with_an_ensemble_trains_each_member_from_its_own_seed(
    tiny_data: DataDir, tmp_path: Path
) -> None:
    plain_task = make_task(tiny_data, tmp_path / "plain", timesteps=256)
    trial = plain_task.trial.model_copy(update={"ensemble": 2})
    task = plain_task.model_copy(update={"trial": trial, "out_dir": str(tmp_path / "two")})
    res = train_one(task)
    assert res.timesteps_done == 512
    assert read_progress(res.model_zip.rsplit("/", 1)[0]) == (512, 512)
    keys = {k for k, _, _ in read_metrics_csv(res.metrics_csv)}
    assert "train/value_loss" in keys and "member1/train/value_loss" in keys
    both = load_sb3_ppo(res.model_zip)
    plain = load_sb3_ppo(train_one(plain_task).model_zip)
    seed_1000 = load_sb3_ppo(
        train_one(
            plain_task.model_copy(update={"seed": 1000, "out_dir": str(tmp_path / "s1000")})
        ).model_zip
    )
    width = plain.policy_kwargs["net_arch"][0]
    w_both = both.policy.mlp_extractor.policy_net[0].weight.detach()
    torch.testing.assert_close(w_both[:width], plain.policy.mlp_extractor.policy_net[0].weight)
    torch.testing.assert_close(w_both[width:], seed_1000.policy.mlp_extractor.policy_net[0].weight)


def test_a_config_with_mirror_is_refused_when_a_feature_has_no_mirror_image(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Refused when the config loads (before Prefect starts), naming the feature: today
    every v1 feature has a mirror image, so one is taken away here."""
    import core.config.experiment as experiment
    from core.config.experiment import load_config

    root = Path(__file__).resolve().parents[2]
    cfg = load_config(root / "conf" / "planted-fair-value.yaml")  # every trial mirrors
    assert all(t.mirror for t in cfg.sweep.trials)

    def no_ofi(name: str) -> tuple[str, float]:
        if name.startswith("ofi_"):
            raise ValueError("no rule")
        return mirror_of(name)

    monkeypatch.setattr(experiment, "mirror_of", no_ofi)
    with pytest.raises(ValueError, match="'ofi_60s' has none"):
        load_config(root / "conf" / "planted-fair-value.yaml")
    plain = cfg.model_dump(mode="json")
    plain["sweep"]["trials"] = [{**t, "mirror": False} for t in plain["sweep"]["trials"]]
    assert type(cfg).model_validate(plain).sweep.trials[0].mirror is False
