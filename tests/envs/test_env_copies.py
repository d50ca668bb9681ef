"""An env is not copied: pickle, copy.copy and copy.deepcopy raise a one-line TypeError
(its step is numba code compiled for, and bound to, its own arrays: a copy of the arrays
would step apart from it). SB3's SubprocVecEnv pickles env factories, not envs."""

from __future__ import annotations

import copy
import pickle

import cloudpickle
import numpy as np
import pytest

from envs.management import ManagementEnv
from tests.envs.conftest import SliceFiles

CFG = {"mean_steps_per_episode": 300, "window": 4}


@pytest.mark.parametrize(
    "how",
    [
        pytest.param(lambda e: pickle.dumps(e), id="pickle"),
        pytest.param(lambda e: pickle.dumps(e, protocol=2), id="pickle-2"),
        pytest.param(cloudpickle.dumps, id="cloudpickle"),
        pytest.param(copy.copy, id="copy"),
        pytest.param(copy.deepcopy, id="deepcopy"),
    ],
)
def test_copying_an_env_raises_one_line_saying_to_build_a_new_one(
    market_files: SliceFiles, how: object
) -> None:
    env = ManagementEnv(market_files.slice_path, market_files.stats_dir, CFG)
    env.reset(seed=0)
    bar = env.step(1)[4]["bar"]
    with pytest.raises(TypeError, match="cannot be pickled or copied") as err:
        how(env)  # type: ignore[operator]
    msg = str(err.value)
    assert "\n" not in msg and "ManagementEnv(env.slice_path, env.stats_dir, env.config)" in msg
    # refusing did not disturb the env
    assert env.step(0)[4]["bar"] == bar + env.config.step_skip


def test_an_env_built_from_its_slice_steps_as_the_original(market_files: SliceFiles) -> None:
    """What the error says to do gives the same rollout."""
    env = ManagementEnv(market_files.slice_path, market_files.stats_dir, CFG)
    again = ManagementEnv(env.slice_path, env.stats_dir, env.config)
    actions = np.random.default_rng(1).choice(3, size=200, p=[0.5, 0.25, 0.25])
    for e in (env, again):
        e.reset(seed=8)
    for a in actions:
        o1, r1, t1, u1, i1 = env.step(a)
        o2, r2, t2, u2, i2 = again.step(a)
        assert np.array_equal(o1, o2) and (r1, t1, u1, i1) == (r2, t2, u2, i2)
        if t1 or u1:
            break


@pytest.mark.parametrize(
    "start_method",
    [
        "fork",  # the worker inherits the factory: the round trip below stands for the pipe
        pytest.param("forkserver", marks=pytest.mark.slow),  # SB3's default on Linux (~14 s)
    ],
)
def test_subproc_vec_env_pickles_the_factory_not_the_env(
    market_files: SliceFiles, start_method: str
) -> None:
    """SubprocVecEnv sends each worker a cloudpickled factory (forkserver, spawn); the env
    is built there and only its spaces, steps and attributes come back."""
    from stable_baselines3.common.vec_env import SubprocVecEnv

    path, stats = market_files.slice_path, market_files.stats_dir
    make = cloudpickle.loads(cloudpickle.dumps(lambda: ManagementEnv(path, stats, CFG)))
    vec = SubprocVecEnv([make], start_method=start_method)
    try:
        vec.seed(0)
        vec.reset()
        for _ in range(5):
            _, rew, _, infos = vec.step(np.array([1]))
        assert infos[0]["bar"] > 3 and np.isfinite(rew).all()
        assert vec.env_method("set_punishment_scale", 0.5) == [None]
        assert vec.get_attr("punishment_scale") == [0.5]
    finally:
        vec.close()
