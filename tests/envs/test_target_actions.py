"""Action mode "target" (the resting orders wanted) and reward spec r2 (marked to market)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.config.env import EnvConfig
from envs.management import ASK_ONLY, BID_ONLY, BOTH_SIDES, NO_ORDERS, ManagementEnv
from tests.envs.conftest import SliceFiles, write_slice

TARGET = {
    "window": 2,
    "random_start": False,
    "mean_steps_per_episode": 1000,
    "action_mode": "target",
}


def target_env(tmp_path: Path, flat_stats: Path, n: int = 12, **cols: np.ndarray) -> ManagementEnv:
    bid = cols.pop("bid", np.full(n, 80_000))
    ask = cols.pop("ask", np.full(n, 80_001))
    path = write_slice(tmp_path / "s.parquet", bid, ask, **cols)
    return ManagementEnv(path, flat_stats, TARGET)


def orders(env: ManagementEnv, actions: list[int]) -> list[tuple[int, int, float]]:
    env.reset(seed=0)
    out = []
    for a in actions:
        info = env.step(a)[4]
        out.append((info["long_order"], info["short_order"], info["position_size"]))
    return out


def test_target_actions_name_the_orders_and_repeating_one_changes_nothing(
    tmp_path: Path, flat_stats: Path
) -> None:
    bid = np.full(12, 80_000)
    bid[4:] = 80_004  # the first step is taken at bar 1 and ends at bar 2
    env = target_env(tmp_path, flat_stats, bid=bid, ask=bid + 1)
    assert env.action_space.n == 4
    got = orders(env, [BID_ONLY, BID_ONLY, BID_ONLY, BOTH_SIDES, ASK_ONLY, ASK_ONLY, NO_ORDERS])
    # the bid rests from step 1 on (a toggle policy repeating 1 would cancel it), rolls to
    # 80,004 with the book; "both" adds the ask; "ask" cancels the bid; "none" cancels all
    assert [(b, a) for b, a, _ in got] == [
        (80_000, 0),
        (80_000, 0),
        (80_004, 0),
        (80_004, 80_005),
        (0, 80_005),
        (0, 80_005),
        (0, 0),
    ]
    assert all(p == 0.0 for _, _, p in got)  # nothing traded through


def test_target_bid_fills_and_is_not_replaced_beyond_the_cap(
    tmp_path: Path, flat_stats: Path
) -> None:
    sell_lo = np.full(12, 79_999)  # every bar trades through the bid
    path = write_slice(
        tmp_path / "s.parquet", np.full(12, 80_000), np.full(12, 80_001), sell_lo=sell_lo
    )
    env = ManagementEnv(path, flat_stats, {**TARGET, "max_exposure": 0.2})
    got = orders(env, [BID_ONLY] * 4)
    # a fill every step until the long cap (0.2 = two stakes of 0.1; position size is
    # exposure / cap), then no bid is placed
    assert [p for _, _, p in got] == [0.5, 1.0, 1.0, 1.0]
    assert got[-1][0] == 0


def test_target_mode_refuses_an_action_outside_0_to_3(tmp_path: Path, flat_stats: Path) -> None:
    env = target_env(tmp_path, flat_stats)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="0..3"):
        env.step(4)


def test_r2_reward_is_the_change_of_equity_over_the_balance(market_files: SliceFiles) -> None:
    # scales 1, no penalties: each step's total = (equity now - equity before) / balance
    # at the start of the step, so the reward pays exactly what the backtest scores
    reward = {
        "version": "r2",
        "open_position_penalty": 0.0,
        "close_position_penalty": 0.0,
        "terminal_penalty": 0.0,
    }
    cfg = EnvConfig(window=16, action_mode="target", reward=reward, mean_steps_per_episode=300)
    env = ManagementEnv(market_files.slice_path, market_files.stats_dir, cfg)
    _, info = env.reset(seed=3)
    rng = np.random.default_rng(0)
    prev_eq, prev_bal, n_checked, moved = info["equity"], info["balance"], 0, 0
    for _ in range(300):
        _, r, term, trunc, info = env.step(int(rng.integers(0, 4)))
        expected = (info["equity"] - prev_eq) / prev_bal
        assert r == pytest.approx(expected, rel=1e-9, abs=1e-15)
        moved += expected != 0.0
        prev_eq, prev_bal = info["equity"], info["balance"]
        n_checked += 1
        if term or trunc:
            break
    assert n_checked > 100 and moved > 10  # positions were held and marked


def test_r1_unrealized_term_is_a_level_not_a_change(market_files: SliceFiles) -> None:
    # the same rollout under r1 pays the unrealised return every step a position is open,
    # so its rewards differ from the equity changes (what r2 fixes)
    cfg = EnvConfig(window=16, action_mode="target", mean_steps_per_episode=300)
    env = ManagementEnv(market_files.slice_path, market_files.stats_dir, cfg)
    _, info = env.reset(seed=3)
    rng = np.random.default_rng(0)
    diffs = []
    prev_eq, prev_bal = info["equity"], info["balance"]
    for _ in range(300):
        _, _, term, trunc, info = env.step(int(rng.integers(0, 4)))
        terms = env.last_reward_terms()
        diffs.append(terms["unrealized"] - (info["equity"] - prev_eq) / prev_bal)
        prev_eq, prev_bal = info["equity"], info["balance"]
        if term or trunc:
            break
    assert max(abs(d) for d in diffs) > 1e-6


def test_unknown_reward_version_is_refused(market_files: SliceFiles) -> None:
    with pytest.raises(ValueError, match="r3"):
        ManagementEnv(
            market_files.slice_path, market_files.stats_dir, {"reward": {"version": "r3"}}
        )


def test_detrend_takes_the_slices_drift_out_of_a_held_position(
    tmp_path: Path, flat_stats: Path
) -> None:
    # a book rising one tick a bar: a long held through it earns the trend under r2, about
    # nothing under r2 with detrend (the slice's mean drift is all it earns)
    n = 40
    bid = 80_000 + np.arange(n)
    sell_lo = np.zeros(n, np.int64)
    sell_lo[2] = bid[1] - 1  # trades through the bid placed at bar 1
    path = write_slice(tmp_path / "s.parquet", bid, bid + 1, sell_lo=sell_lo)
    zero = {"open_position_penalty": 0.0, "close_position_penalty": 0.0, "terminal_penalty": 0.0}
    totals = {}
    for detrend in (False, True):
        reward = {"version": "r2", "detrend": detrend, **zero}
        env = ManagementEnv(path, flat_stats, {**TARGET, "reward": reward})
        env.reset(seed=0)
        rewards = [env.step(BID_ONLY if i == 0 else NO_ORDERS)[1] for i in range(30)]
        assert env.step(NO_ORDERS)[4]["position_size"] > 0  # the long was held throughout
        totals[detrend] = sum(rewards[2:])  # after the fill
    assert totals[False] > 3e-5  # 0.1 stake x 28 bars x 0.125 bp a bar
    assert abs(totals[True]) < 0.02 * totals[False]


def test_detrend_needs_r2() -> None:
    with pytest.raises(ValueError, match="detrend needs reward.version r2"):
        EnvConfig(reward={"detrend": True})
