"""Hand-computed reward terms, funding and random initial positions through the env (built
with reward_terms_in_info: the terms read from every step's info)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.clock import NS_PER_HOUR
from envs.management import HOLD, TOGGLE_LONG, ManagementEnv

HALF_HOUR = NS_PER_HOUR // 2
BASE = {"window": 2, "random_start": False, "mean_steps_per_episode": 1000}


def half_hour_env(
    tmp_path: Path, stats: Path, n: int = 24, sell_lo_at: int | None = None, **cfg: object
) -> ManagementEnv:
    from tests.envs.conftest import write_slice

    bid = np.full(n, 80_000)
    ask = bid + 1
    sell_lo = np.zeros(n, np.int64)
    if sell_lo_at is not None:
        sell_lo[sell_lo_at] = 79_990
    path = write_slice(tmp_path / "s.parquet", bid, ask, sell_lo=sell_lo, bar_ns=HALF_HOUR)
    env = ManagementEnv(path, stats, {**BASE, **cfg}, reward_terms_in_info=True)
    env.set_punishment_scale(1.0)
    return env


def steps(env: ManagementEnv, actions: list[int]) -> list[tuple[float, dict]]:
    env.reset(seed=0)
    out = []
    for a in actions:
        _, r, _, _, info = env.step(a)
        out.append((r, info))
    return out


def test_close_penalty_starts_after_close_position_hours_flat(
    tmp_path: Path, flat_stats: Path
) -> None:
    env = half_hour_env(tmp_path, flat_stats)
    out = steps(env, [HOLD] * 4)  # flat for 0.5, 1.0, 1.5, 2.0 hours
    assert [info["reward_terms"]["close_penalty"] for _, info in out] == [
        0.0,
        0.0,
        -0.0005,
        -0.0005,
    ]
    assert [r for r, _ in out] == [0.0, 0.0, -0.0005, -0.0005]
    env.set_punishment_scale(0.2)
    _, r, *_ = env.step(HOLD)
    assert r == pytest.approx(-0.0001)


def test_open_penalty_starts_after_open_position_hours_held(
    tmp_path: Path, flat_stats: Path
) -> None:
    env = half_hour_env(tmp_path, flat_stats, sell_lo_at=2)  # the long fills in bar 2
    out = steps(env, [TOGGLE_LONG] + [HOLD] * 6)
    ages = [info["bar"] - 2 for _, info in out]  # half hours since the fill
    penalties = [info["reward_terms"]["open_penalty"] for _, info in out]
    assert ages == [0, 1, 2, 3, 4, 5, 6]
    assert penalties == [0.0, 0.0, 0.0, 0.0, 0.0, -0.001, -0.001]  # > 2 h from 2.5 h on
    assert all(info["reward_terms"]["close_penalty"] == 0.0 for _, info in out)


def test_fill_step_pays_the_maker_rebate_as_reward(tmp_path: Path, flat_stats: Path) -> None:
    env = half_hour_env(tmp_path, flat_stats, sell_lo_at=2)
    (_, info), *_ = steps(env, [TOGGLE_LONG])
    rebate = 0.00025 * 0.1  # 10 % of 1 XBT at the maker rate
    assert info["fees"] == pytest.approx(-rebate)
    assert info["reward_terms"]["fees"] == pytest.approx(rebate)
    # marked at the mid 80,000.5 ticks: unrealised return 1 - 40000/40000.25, times exposure 0.1
    assert info["reward_terms"]["unrealized"] == pytest.approx((1 - 40_000 / 40_000.25) * 0.1)


def test_terminal_penalty_on_truncation_while_holding(tmp_path: Path, flat_stats: Path) -> None:
    env = half_hour_env(tmp_path, flat_stats, sell_lo_at=2, mean_steps_per_episode=3)
    out = steps(env, [TOGGLE_LONG, HOLD, HOLD])
    assert [i["reward_terms"]["terminal_penalty"] for _, i in out] == [
        0.0,
        0.0,
        pytest.approx(-0.001),
    ]


def test_unrealized_term_follows_the_mid(tmp_path: Path, flat_stats: Path) -> None:
    from tests.envs.conftest import write_slice

    n = 10
    bid = np.full(n, 80_000)
    bid[4:] = 80_400
    sell_lo = np.zeros(n, np.int64)
    sell_lo[2] = 79_990
    path = write_slice(tmp_path / "u.parquet", bid, bid + 1, sell_lo=sell_lo)
    env = ManagementEnv(path, flat_stats, BASE, reward_terms_in_info=True)
    out = steps(env, [TOGGLE_LONG, HOLD, HOLD])
    mark = 80_400.5 * 0.5
    ret = 1 - 40_000 / mark  # inverse long
    assert out[2][1]["reward_terms"]["unrealized"] == pytest.approx(ret * 0.1)
    assert out[2][1]["unrealized_pnl"] == pytest.approx(4000 * (1 / 40_000 - 1 / mark))


def test_funding_is_paid_by_longs_at_the_funding_time(tmp_path: Path, flat_stats: Path) -> None:
    # bars close every 30 min from 00:30 UTC; XBTUSD's funding time 04:00 is bar 7
    env = half_hour_env(tmp_path, flat_stats, sell_lo_at=2, funding=True, funding_rate=0.0001)
    out = steps(env, [TOGGLE_LONG] + [HOLD] * 16)
    paid = [i["funding"] for _, i in out]
    settle = next(k for k, (_, i) in enumerate(out) if i["bar"] == 7)
    assert all(p == 0.0 for p in paid[:settle])
    expected = 0.0001 * 4000 / 40_000.25
    assert paid[settle] == pytest.approx(expected)
    assert out[settle][1]["reward_terms"]["funding"] == pytest.approx(
        -expected / out[settle - 1][1]["balance"]
    )
    assert paid[-1] == paid[settle]
    for _, i in out:  # the documented invariant, funding included
        assert i["equity"] == pytest.approx(
            1.0 + i["pnl_without_fees"] - i["fees"] - i["funding"], abs=1e-15
        )


def test_random_initial_position_is_seeded_capped_and_fee_free(market_files) -> None:  # noqa: ANN001
    env = ManagementEnv(
        market_files.slice_path,
        market_files.stats_dir,
        {"random_initial_position": True, "mean_steps_per_episode": 20},
    )
    sides = set()
    for seed in range(12):
        _, info = env.reset(seed=seed)
        pos = env.position
        assert 0.1 <= pos.exposure <= 1.0 + 1e-9
        assert pos.fees == 0.0 and pos.balance == 1.0
        now = info["ts"]
        assert all(0 <= now - lot.ts_ns <= 4 * NS_PER_HOUR for lot in pos.lots)
        sides.add(pos.side)
        _, again = env.reset(seed=seed)
        assert again == info
    assert sides == {1, -1}
    _, info = env.reset(seed=0, options={"full": True})
    assert info["exposure"] == 0.0  # evaluation always starts flat
