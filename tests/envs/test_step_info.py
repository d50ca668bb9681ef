"""The env's `info` (a `StepInfo` built from the step's one-row info log): kept infos never
change as the env steps on, and copies, pickles and JSON equal the plain dict."""

from __future__ import annotations

import copy
import json
import pickle

import numpy as np
import pytest

from envs.management import (
    INFO_KEYS,
    INFO_KEYS_WITH_TERMS,
    INFO_ORDER,
    INFO_ORDER_WITH_TERMS,
    ManagementEnv,
    StepInfo,
    TermsStepInfo,
)
from envs.rewards import TERM_NAMES
from tests.envs.conftest import SliceFiles

CFG = {"mean_steps_per_episode": 300, "window": 4}
ORDER = [
    "ts",
    "bar",
    "equity",
    "balance",
    "pnl",
    "realized_pnl",
    "unrealized_pnl",
    "pnl_without_fees",
    "fees",
    "funding",
    "maker_volume",
    "taker_volume",
    "maker_fees",
    "taker_fees",
    "position_size",
    "exposure",
    "side",
    "long_order",
    "short_order",
    "trades",
    "punishment_scale",
]
# reward_terms_in_info=True: the step's reward terms too
ORDER_WITH_TERMS = [*ORDER[:-1], "reward_terms", "punishment_scale"]
TERM_KEYS = [*TERM_NAMES, "total"]


def _rollout(files: SliceFiles, steps: int, read_now: bool) -> list[dict]:
    env = ManagementEnv(files.slice_path, files.stats_dir, CFG)
    actions = np.random.default_rng(2).choice(3, size=steps, p=[0.5, 0.25, 0.25])
    _, info = env.reset(seed=5)
    infos = [dict(info) if read_now else info]
    for a in actions:
        _, _, term, trunc, info = env.step(a)
        infos.append(dict(info) if read_now else info)
        if term or trunc:
            _, info = env.reset()
            infos.append(dict(info) if read_now else info)
    return infos


def test_infos_read_late_equal_infos_read_at_once(market_files: SliceFiles) -> None:
    """The log row is rewritten every step: an info kept must not see it."""
    now = _rollout(market_files, 3000, read_now=True)
    late = _rollout(market_files, 3000, read_now=False)
    assert len(now) == len(late) > 3000
    assert sum(len(i["trades"]) for i in now) > 30
    assert [dict(i) for i in late] == now
    assert all(list(i) == ORDER for i in now)
    assert set(ORDER) == INFO_KEYS and ORDER == INFO_ORDER
    assert (
        ORDER_WITH_TERMS == INFO_ORDER_WITH_TERMS and set(ORDER_WITH_TERMS) == INFO_KEYS_WITH_TERMS
    )


def test_keys_set_before_reading_keep_their_order_and_value(market_files: SliceFiles) -> None:
    env = ManagementEnv(market_files.slice_path, market_files.stats_dir, CFG)
    env.reset(seed=0)
    info = env.step(0)[4]
    info["TimeLimit.truncated"] = False  # what SB3's DummyVecEnv does on every step
    info["equity"] = 123.0  # a wrapper overriding an env key
    assert "TimeLimit.truncated" in info and "episode" not in info and "bar" in info
    assert info.get("episode") is None and info.get("TimeLimit.truncated") is False
    assert list(info) == [*ORDER, "TimeLimit.truncated"]
    assert info["equity"] == 123.0 and len(info) == len(ORDER) + 1


def test_copies_pickles_and_json_equal_the_plain_dict(market_files: SliceFiles) -> None:
    env = ManagementEnv(market_files.slice_path, market_files.stats_dir, CFG)
    env.reset(seed=3)
    env.action_space.seed(3)
    infos = [env.step(env.action_space.sample())[4] for _ in range(200)]
    info = next(i for i in infos if i["trades"])
    plain = {k: info[k] for k in ORDER}
    for i in infos:
        i["terminal_observation"] = np.arange(3.0)
    fresh = [env.step(0)[4] for _ in range(3)]  # unread
    deep = copy.deepcopy(fresh)  # SB3 deep-copies every step's infos, unread
    shallow = [copy.copy(i) for i in fresh]
    assert [dict(d) for d in deep] == [dict(i) for i in fresh] == [dict(s) for s in shallow]
    assert json.dumps({k: info[k] for k in ORDER}) == json.dumps(plain)
    assert {**info} == {**plain, "terminal_observation": info["terminal_observation"]}
    back = pickle.loads(pickle.dumps(fresh[0]))
    assert type(back) is StepInfo and back == fresh[0] and repr(back) == repr(fresh[0])
    dup = copy.deepcopy(info)
    dup["trades"][0]["pnl"] = 99.0
    dup["terminal_observation"][0] = 7.0
    assert info["trades"][0]["pnl"] != 99.0 and info["terminal_observation"][0] == 0.0
    unread = env.step(0)[4]
    unread["terminal_observation"] = np.zeros(2)
    twin = copy.deepcopy(unread)
    twin["terminal_observation"][0] = 1.0
    assert unread["terminal_observation"][0] == 0.0 and twin == {
        **unread,
        "terminal_observation": twin["terminal_observation"],
    }
    assert isinstance(unread, dict) and unread == dict(unread)


def test_unread_infos_compare_like_dicts(market_files: SliceFiles) -> None:
    envs = [ManagementEnv(market_files.slice_path, market_files.stats_dir, CFG) for _ in range(3)]
    for e in envs:
        e.reset(seed=4)
    for a in (1, 0, 2, 0, 0, 1):
        read, unread, unread2 = (e.step(a)[4] for e in envs)
        plain = dict(read)
        assert not (plain != unread) and plain == unread2  # noqa: SIM202 (tests __ne__)
        assert not (unread != unread2)  # noqa: SIM202
    assert plain != {**plain, "bar": -1}


def test_reset_info_is_exact(market_files: SliceFiles) -> None:
    env = ManagementEnv(market_files.slice_path, market_files.stats_dir, CFG)
    _, a = env.reset(seed=9)
    _, b = env.reset(seed=9)
    assert a == b and a["trades"] == [] and "reward_terms" not in a
    assert env.last_reward_terms() == dict.fromkeys(TERM_KEYS, 0.0)
    assert a["equity"] == a["balance"] == 1.0 and a["pnl"] == 0.0


def test_an_info_built_by_its_type_is_a_plain_filled_info(market_files: SliceFiles) -> None:
    env = ManagementEnv(market_files.slice_path, market_files.stats_dir, CFG)
    env.reset(seed=0)
    info = env.step(1)[4]
    again = type(info)(info)  # what a library may do to copy a mapping
    assert again == info and list(again) == ORDER and again["bar"] == info["bar"]


def test_a_deep_copy_is_exact_when_a_wrapper_reorders_the_keys(market_files: SliceFiles) -> None:
    """The deep copy finds wrappers' keys after the env's own; an info whose env keys a
    wrapper removed and re-added (so they are no longer first) still copies exactly."""
    env = ManagementEnv(market_files.slice_path, market_files.stats_dir, CFG)
    env.reset(seed=1)
    info = env.step(0)[4]
    equity = info.pop("equity")
    info["extra"] = [1.0]  # now at position N-1: the env's order no longer holds
    info["equity"] = equity
    dup = copy.deepcopy(info)
    dup["extra"][0] = 2.0
    assert info["extra"] == [1.0] and dup == {**info, "extra": [2.0]}
    assert list(dup) == list(info)


def test_reward_terms_in_info_adds_the_terms_the_method_reports(market_files: SliceFiles) -> None:
    """The default info has no reward breakdown; reward_terms_in_info=True puts it, before
    punishment_scale, in every info, equal to `last_reward_terms()` (a fresh dict each
    call) and summing to the reward; the other keys are the same in both."""
    plain = ManagementEnv(market_files.slice_path, market_files.stats_dir, CFG)
    terms = ManagementEnv(
        market_files.slice_path, market_files.stats_dir, CFG, reward_terms_in_info=True
    )
    assert (plain.reward_terms_in_info, terms.reward_terms_in_info) == (False, True)
    _, a = plain.reset(seed=6)
    _, b = terms.reset(seed=6)
    assert list(a) == ORDER and list(b) == ORDER_WITH_TERMS and type(b) is TermsStepInfo
    assert b["reward_terms"] == dict.fromkeys(TERM_KEYS, 0.0)
    fired = set()
    for act in np.random.default_rng(6).choice(3, size=400, p=[0.5, 0.25, 0.25]):
        _, ra, *_, a = plain.step(act)
        _, rb, *_, b = terms.step(act)
        got = plain.last_reward_terms()
        assert got is not plain.last_reward_terms() and list(got) == TERM_KEYS
        assert list(a) == ORDER and list(b) == ORDER_WITH_TERMS
        assert b["reward_terms"] == got == terms.last_reward_terms()
        assert {**b, "reward_terms": None} == {**a, "reward_terms": None}
        assert ra == rb == got["total"]
        assert got["total"] == pytest.approx(sum(got[k] for k in TERM_NAMES), abs=1e-15)
        fired |= {k for k in TERM_NAMES if got[k] != 0.0}
        got["total"] = 99.0  # a fresh dict: the env's next answer is not changed
        assert plain.last_reward_terms()["total"] == ra
    assert {"unrealized", "realized", "fees"} <= fired


def test_a_deep_copy_with_reward_terms_copies_them(market_files: SliceFiles) -> None:
    env = ManagementEnv(
        market_files.slice_path, market_files.stats_dir, CFG, reward_terms_in_info=True
    )
    env.reset(seed=3)
    env.action_space.seed(3)
    info = next(
        i for i in (env.step(env.action_space.sample())[4] for _ in range(300)) if i["trades"]
    )
    info["terminal_observation"] = np.arange(3.0)  # what SB3's DummyVecEnv adds
    dup = copy.deepcopy(info)
    assert type(dup) is TermsStepInfo and list(dup) == list(info)
    assert {**dup, "terminal_observation": None} == {**info, "terminal_observation": None}
    assert dup["reward_terms"] is not info["reward_terms"]
    assert dup["trades"][0] is not info["trades"][0]
    assert dup["terminal_observation"] is not info["terminal_observation"]
    back = pickle.loads(pickle.dumps(dup))
    assert type(back) is TermsStepInfo and list(back) == list(dup)
