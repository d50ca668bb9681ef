from __future__ import annotations

import pytest
from pydantic import ValidationError

from core.config.env import EnvConfig, RewardConfig
from envs.rewards import TERM_NAMES, ZERO_TERMS, punishment_scale, reward_terms

CFG = RewardConfig(
    unrealized_scale=2.0,
    realized_scale=3.0,
    fee_scale=0.5,
    funding_scale=4.0,
    open_position_hours=2.0,
    open_position_penalty=0.001,
    close_position_hours=1.0,
    close_position_penalty=0.0005,
    terminal_penalty=0.01,
)
FLAT_QUIET = dict(
    balance=2.0,
    exposure=0.0,
    unrealized_return=0.0,
    realized_pnl=0.0,
    fees=0.0,
    funding=0.0,
    avg_open_hours=0.0,
    hours_since_close=0.0,
    episode_end=False,
    scale=1.0,
)


def terms(**kw: float | bool) -> dict[str, float]:
    return reward_terms(CFG, **{**FLAT_QUIET, **kw})  # type: ignore[arg-type]


def test_quiet_flat_step_has_zero_reward() -> None:
    assert terms() == ZERO_TERMS


def test_unrealized_term_is_return_times_exposure_times_scale() -> None:
    t = terms(exposure=0.3, unrealized_return=0.01)
    assert t["unrealized"] == pytest.approx(2.0 * 0.01 * 0.3)
    assert t["total"] == pytest.approx(t["unrealized"])


def test_realized_fee_and_funding_terms_are_fractions_of_the_balance() -> None:
    t = terms(realized_pnl=0.02, fees=0.004, funding=0.001)
    assert t["realized"] == pytest.approx(3.0 * 0.02 / 2.0)
    assert t["fees"] == pytest.approx(-0.5 * 0.004 / 2.0)
    assert t["funding"] == pytest.approx(-4.0 * 0.001 / 2.0)
    assert terms(fees=-0.004)["fees"] == pytest.approx(0.001)  # a rebate is a reward


def test_open_penalty_only_beyond_open_position_hours_while_holding() -> None:
    assert terms(exposure=0.1, avg_open_hours=2.0)["open_penalty"] == 0.0
    assert terms(exposure=0.1, avg_open_hours=2.01, scale=0.5)["open_penalty"] == pytest.approx(
        -0.0005
    )
    assert terms(exposure=0.0, avg_open_hours=5.0)["open_penalty"] == 0.0


def test_close_penalty_only_beyond_close_position_hours_while_flat() -> None:
    assert terms(hours_since_close=1.0)["close_penalty"] == 0.0
    assert terms(hours_since_close=1.5, scale=0.8)["close_penalty"] == pytest.approx(-0.0004)
    assert terms(exposure=0.1, hours_since_close=1.5)["close_penalty"] == 0.0


def test_terminal_penalty_scales_with_exposure_at_episode_end() -> None:
    assert terms(exposure=0.4, episode_end=False)["terminal_penalty"] == 0.0
    assert terms(exposure=0.4, episode_end=True, scale=0.5)["terminal_penalty"] == pytest.approx(
        -0.01 * 0.5 * 0.4
    )
    assert terms(exposure=0.0, episode_end=True)["terminal_penalty"] == 0.0


def test_total_is_the_sum_of_every_term() -> None:
    t = terms(
        exposure=0.2,
        unrealized_return=-0.003,
        realized_pnl=0.001,
        fees=-0.0001,
        funding=0.0002,
        avg_open_hours=3.0,
        episode_end=True,
        scale=0.7,
    )
    assert set(t) == {*TERM_NAMES, "total"}
    assert t["total"] == pytest.approx(sum(t[k] for k in TERM_NAMES))


def test_reward_with_non_positive_balance_raises() -> None:
    with pytest.raises(ValueError):
        terms(balance=0.0)


@pytest.mark.parametrize(
    ("rate", "cycles", "scaling", "cycle", "expected"),
    [
        (0.5, 4, 1.0, 0, 0.5),
        (0.5, 4, 1.0, 2, 0.75),
        (0.5, 4, 1.0, 4, 1.0),
        (0.5, 4, 1.0, 9, 1.0),
        (0.8, 2, 2.0, 1, 2.0 * (1 - 0.8 * 0.5)),
        (0.5, 0, 1.5, 0, 1.5),
        (1.0, 3, 1.0, 0, 0.0),
    ],
)
def test_punishment_scale_ramps_linearly_to_full(
    rate: float, cycles: int, scaling: float, cycle: int, expected: float
) -> None:
    cfg = RewardConfig(
        punishment_suppression_rate=rate,
        punishment_suppression_cycles=cycles,
        punishment_scaling=scaling,
    )
    assert punishment_scale(cycle, cfg) == pytest.approx(expected)


def test_punishment_scale_rejects_negative_cycle() -> None:
    with pytest.raises(ValueError):
        punishment_scale(-1, RewardConfig())


def test_env_config_rejects_penalty_hours_beyond_the_state_clip() -> None:
    with pytest.raises(ValidationError, match="open_position_hours"):
        EnvConfig(hours_clip=1.5)
    with pytest.raises(ValidationError, match="stake_fraction"):
        EnvConfig(stake_fraction=0.5, max_exposure=0.2)


def test_unknown_reward_version_is_refused_by_the_env(market_files) -> None:  # noqa: ANN001
    from envs.management import ManagementEnv

    with pytest.raises(ValueError, match="r9"):
        ManagementEnv(
            market_files.slice_path, market_files.stats_dir, {"reward": {"version": "r9"}}
        )
