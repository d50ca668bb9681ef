"""Hypothesis properties of the env's accounting over random actions and configs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from envs.management import ManagementEnv
from tests.envs.conftest import SliceFiles, make_market_files, write_slice

SETTINGS = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
actions = st.lists(st.integers(0, 2), min_size=1, max_size=120)


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> SliceFiles:
    return make_market_files(tmp_path_factory.mktemp("market"), n=300, seed=5)


@pytest.fixture(scope="module")
def quiet_slice(tmp_path_factory: pytest.TempPathFactory, market: SliceFiles) -> Path:
    """A constant book with no prints: no order can ever fill."""
    root = tmp_path_factory.mktemp("quiet")
    return write_slice(root / "q.parquet", np.full(300, 80_000), np.full(300, 80_001))


def rollout(env: ManagementEnv, seq: list[int], seed: int) -> list[dict]:
    env.reset(seed=seed)
    infos = []
    for a in seq:
        _, r, term, trunc, info = env.step(a)
        assert np.isfinite(r)
        infos.append(info)
        if term or trunc:
            env.reset()
    return infos


@SETTINGS
@given(st.integers(1, 400), st.integers(0, 2**16))
def test_flat_without_fills_has_zero_pnl(market: SliceFiles, n: int, seed: int) -> None:
    env = ManagementEnv(market.slice_path, market.stats_dir, {"mean_steps_per_episode": 50})
    for info in rollout(env, [0] * n, seed):
        assert info["pnl"] == info["fees"] == info["pnl_without_fees"] == 0.0
        assert info["equity"] == 1.0 and info["trades"] == []


@SETTINGS
@given(actions, st.integers(0, 2**16), st.sampled_from(["trade_through", "touch"]))
def test_orders_that_never_fill_leave_pnl_at_zero(
    market: SliceFiles, quiet_slice: Path, seq: list[int], seed: int, fill_model: str
) -> None:
    env = ManagementEnv(
        quiet_slice, market.stats_dir, {"mean_steps_per_episode": 40, "fill_model": fill_model}
    )
    for info in rollout(env, seq, seed):
        assert info["exposure"] == 0.0 and info["pnl"] == 0.0 and info["fees"] == 0.0


@SETTINGS
@given(
    actions,
    st.integers(0, 2**16),
    st.sampled_from([0.05, 0.1, 0.25, 0.5]),
    st.sampled_from([0.5, 1.0, 2.0]),
    st.integers(1, 3),
)
def test_exposure_never_exceeds_its_cap(
    market: SliceFiles, seq: list[int], seed: int, stake: float, cap: float, skip: int
) -> None:
    cfg = {
        "stake_fraction": min(stake, cap),
        "max_exposure": cap,
        "step_skip": skip,
        "mean_steps_per_episode": 60,
        "fill_model": "touch",
        "random_initial_position": True,
    }
    env = ManagementEnv(market.slice_path, market.stats_dir, cfg)
    for info in rollout(env, seq, seed):
        assert info["exposure"] <= cap + 1e-9
        assert -1.0 <= info["position_size"] <= 1.0


@SETTINGS
@given(actions, st.integers(0, 2**16), st.floats(0.0, 0.001), st.floats(0.0, 0.002))
def test_fees_never_raise_equity_at_zero_rebate(
    market: SliceFiles, seq: list[int], seed: int, maker: float, taker: float
) -> None:
    fees = {"maker": maker, "taker": taker}
    cfg = {"fees": fees, "mean_steps_per_episode": 10_000, "fill_model": "touch"}
    env = ManagementEnv(market.slice_path, market.stats_dir, cfg)
    env.reset(seed=seed, options={"full": True})
    prev = 0.0
    for a in seq:
        _, _, term, _, info = env.step(a)
        assert info["fees"] >= prev - 1e-18  # fees only accumulate
        assert env.last_reward_terms()["fees"] <= 0.0
        # equity = start + pnl before fees - fees: fees can only take equity away
        assert info["equity"] == pytest.approx(
            1.0 + info["pnl_without_fees"] - info["fees"], abs=1e-12
        )
        assert info["equity"] <= 1.0 + info["pnl_without_fees"] + 1e-15
        prev = info["fees"]
        if term:
            break
