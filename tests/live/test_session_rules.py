"""The env rules a live session runs under come from the model's env config, with
EnvConfig's defaults for what it lacks: the action mode, the paper rules and the clip of
the normalised features (defined once, in EnvConfig)."""

from __future__ import annotations

import pytest

from core.config.env import EnvConfig
from envs.broker import BrokerRules
from live.loop import LiveSession
from live.model_watch import LoadedChampion
from live.predictor import Predictor
from tests.live.support import SMALL_SPEC, ClipStats, CyclePolicy


def test_paper_rules_defaults_are_the_envs() -> None:
    env = EnvConfig()
    assert BrokerRules() == BrokerRules.from_env_config(env.model_dump(mode="json"))
    assert BrokerRules().obs_clip == env.obs_clip and BrokerRules().action_mode == env.action_mode


def test_session_normalises_with_the_models_obs_clip_and_reads_its_action_mode() -> None:
    s = LiveSession(
        SMALL_SPEC,
        ClipStats(),
        Predictor(CyclePolicy([0]), "a@v1"),
        rules=BrokerRules(obs_clip=2.0),
    )
    assert s.builder.obs_clip == 2.0 and s.rules.action_mode == "toggle"
    env = EnvConfig(window=SMALL_SPEC.window, obs_clip=3.0, action_mode="target")
    champ = LoadedChampion(
        Predictor(CyclePolicy([3]), "b@v2", action_mode="target"),
        SMALL_SPEC,
        ClipStats(),
        env.model_dump(mode="json"),
        "2",
    )
    s.swap_model(champ, "swapped")
    assert s.builder.obs_clip == 3.0 and s.rules.action_mode == "target"
    assert s.predictor.action_names == ("no_orders", "bid", "ask", "both")


def test_session_without_rules_takes_the_models_action_mode() -> None:
    s = LiveSession(SMALL_SPEC, ClipStats(), Predictor(CyclePolicy([3]), "t", action_mode="target"))
    assert s.rules.action_mode == "target" and s.builder.obs_clip == EnvConfig().obs_clip


def test_session_refuses_paper_rules_of_another_action_mode_than_its_model() -> None:
    with pytest.raises(ValueError, match="action_mode 'toggle', the model in 'target'"):
        LiveSession(
            SMALL_SPEC,
            ClipStats(),
            Predictor(CyclePolicy([3]), "t", action_mode="target"),
            rules=BrokerRules(),
        )


def test_predictor_refuses_an_action_outside_its_mode() -> None:
    import numpy as np

    p = Predictor(CyclePolicy([3]), "t")  # toggle: 0..2
    with pytest.raises(ValueError, match="expected 0..2"):
        p.act(np.zeros(4, np.float32))
    assert Predictor(CyclePolicy([3]), "t", action_mode="target").act(np.zeros(4)) == 3
