"""The env charges each fill the fee in force at its bar (core.fees), reports the fill
volumes that re-score it, and lets an override beat the dated schedule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.fees import FeeConfig, since_ns
from envs.management import HOLD, TOGGLE_LONG, TOGGLE_SHORT, ManagementEnv
from tests.envs.conftest import random_market, round_trip_market, write_slice

S = 1_000_000_000
CHANGE_2021 = since_ns("2021-08-18")  # BitMEX: maker -0.025 % -> -0.01 %, taker 0.075 % -> 0.05 %
SCENARIO = {"window": 2, "random_start": False, "mean_steps_per_episode": 1000}
CONTRACTS = 0.1 * 40_000  # 10 % of 1 XBT at 40,000 USD (80,000 ticks)


def round_trip(tmp_path: Path, flat_stats: Path, t0: int, **cfg: object) -> list[dict]:
    """A long maker fill at 80,000 on bar 2 (ts = t0 + 3 s), closed by a short maker fill
    at 80,801 on bar 7 (ts = t0 + 8 s); the book is 80,000/80,001 then 80,800/80,801."""
    path = write_slice(tmp_path / "s.parquet", **round_trip_market(), t0=t0, bar_ns=S)
    env = ManagementEnv(path, flat_stats, {**SCENARIO, **cfg})
    env.reset(seed=0)
    infos = []
    for a in [TOGGLE_LONG, HOLD, HOLD, HOLD, TOGGLE_SHORT, HOLD, HOLD]:
        infos.append(env.step(a)[4])
    return infos


def test_fills_either_side_of_a_change_are_charged_the_old_and_new_rate(
    tmp_path: Path, flat_stats: Path
) -> None:
    # entry bar 2 at CHANGE - 2 s (old maker -0.00025), exit bar 7 at CHANGE + 3 s (new -0.0001)
    infos = round_trip(tmp_path, flat_stats, t0=CHANGE_2021 - 5 * S)
    (trade,) = [t for i in infos for t in i["trades"]]
    entry_fee = -0.00025 * CONTRACTS / 40_000
    exit_fee = -0.0001 * CONTRACTS / 40_400.5
    assert infos[0]["fees"] == pytest.approx(entry_fee, rel=1e-12)
    assert trade["fees"] == pytest.approx(entry_fee + exit_fee, rel=1e-12)
    assert infos[-1]["fees"] == pytest.approx(entry_fee + exit_fee, rel=1e-12)
    pnl = CONTRACTS * (1 / 40_000 - 1 / 40_400.5)
    assert infos[-1]["equity"] == pytest.approx(1.0 + pnl - entry_fee - exit_fee, rel=1e-12)


@pytest.mark.parametrize(("offset_ns", "rate"), [(-1, -0.00025), (0, -0.0001), (1, -0.0001)])
def test_a_fill_at_the_change_instant_pays_the_new_rate(
    tmp_path: Path, flat_stats: Path, offset_ns: int, rate: float
) -> None:
    # the entry bar's close (t0 + 3 s) lands offset_ns from the change
    infos = round_trip(tmp_path, flat_stats, t0=CHANGE_2021 - 3 * S + offset_ns)
    assert infos[0]["fees"] == pytest.approx(rate * CONTRACTS / 40_000, rel=1e-12)
    assert infos[0]["maker_fees"] == infos[0]["fees"] and infos[0]["taker_fees"] == 0.0


def test_an_override_beats_the_schedule_on_its_side_only(tmp_path: Path, flat_stats: Path) -> None:
    infos = round_trip(tmp_path, flat_stats, t0=CHANGE_2021 - 5 * S, fees={"maker": 0.0003})
    assert infos[-1]["fees"] == pytest.approx(
        0.0003 * (CONTRACTS / 40_000 + CONTRACTS / 40_400.5), rel=1e-12
    )
    env = ManagementEnv(tmp_path / "s.parquet", flat_stats, {**SCENARIO, "fees": {"maker": 0.0003}})
    maker, taker = env.fee_rates
    assert (maker == 0.0003).all()
    # taker still follows the schedule: 0.075 % before the change, 0.05 % from it
    ts = env.ts
    np.testing.assert_array_equal(taker, np.where(ts < CHANGE_2021, 0.00075, 0.0005))


def test_fill_volumes_are_the_notional_the_rates_multiply(tmp_path: Path, flat_stats: Path) -> None:
    infos = round_trip(tmp_path, flat_stats, t0=CHANGE_2021 - 5 * S)
    assert infos[0]["maker_volume"] == pytest.approx(CONTRACTS / 40_000, rel=1e-15)
    last = infos[-1]
    assert last["maker_volume"] == pytest.approx(CONTRACTS / 40_000 + CONTRACTS / 40_400.5)
    assert last["taker_volume"] == 0.0 and last["taker_fees"] == 0.0
    assert last["maker_fees"] == last["fees"]


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    maker=st.floats(-0.0005, 0.001),
    taker=st.floats(0.0, 0.002),
    seed=st.integers(0, 2**16),
    actions=st.lists(st.sampled_from([HOLD, TOGGLE_LONG, TOGGLE_SHORT]), min_size=40, max_size=40),
)
def test_under_a_constant_fee_fees_equal_the_volumes_times_the_rates(
    tmp_path: Path, flat_stats: Path, maker: float, taker: float, seed: int, actions: list[int]
) -> None:
    m = random_market(60, seed)
    path = write_slice(tmp_path / "r.parquet", **m)
    cfg = {"window": 2, "fill_model": "touch", "fees": {"maker": maker, "taker": taker}}
    env = ManagementEnv(path, flat_stats, cfg)
    env.reset(options={"full": True})  # flattens at the end: a taker fill
    info: dict = {}
    for a in actions * 2:
        _, _, term, _, info = env.step(a)
        if term:
            break
    assert term
    assert info["fees"] == pytest.approx(
        info["maker_volume"] * maker + info["taker_volume"] * taker, rel=1e-12, abs=1e-18
    )
    assert info["fees"] == pytest.approx(info["maker_fees"] + info["taker_fees"], abs=1e-18)


def test_the_default_schedule_charges_a_2024_maker_fill_a_positive_fee(
    tmp_path: Path, flat_stats: Path
) -> None:
    """BitMEX's base tier since 2023-01-17: maker +0.02 %, so a rebate no longer pays."""
    infos = round_trip(tmp_path, flat_stats, t0=since_ns("2024-01-01"))
    assert infos[0]["fees"] == pytest.approx(0.0002 * CONTRACTS / 40_000, rel=1e-12)
    assert infos[-1]["equity"] < 1.0 + infos[-1]["pnl_without_fees"]


@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(seed=st.integers(0, 2**16), actions=st.lists(st.sampled_from([0, 1, 2]), min_size=60))
def test_fees_only_reduce_equity_under_the_dated_schedule_once_rates_are_positive(
    tmp_path: Path, flat_stats: Path, seed: int, actions: list[int]
) -> None:
    m = random_market(80, seed)
    path = write_slice(tmp_path / "p.parquet", **m, t0=since_ns("2023-01-17"))
    env = ManagementEnv(path, flat_stats, {"window": 2, "fill_model": "touch"})
    env.reset(options={"full": True})
    prev = 0.0
    for a in actions:
        _, _, term, _, info = env.step(a)
        assert info["fees"] >= prev  # every fill pays
        assert info["equity"] <= 1.0 + info["pnl_without_fees"] + 1e-15
        prev = info["fees"]
        if term:
            break


def test_env_rates_are_the_fee_config_resolved_at_each_bar(
    tmp_path: Path, flat_stats: Path
) -> None:
    m = random_market(50, 3)
    # 50 two-hour bars around the 2023-01-17 change (maker -0.01 % -> +0.02 %)
    path = write_slice(
        tmp_path / "c.parquet", **m, t0=since_ns("2023-01-16T12:00:00Z"), bar_ns=7200 * S
    )
    env = ManagementEnv(path, flat_stats, {"window": 2})
    maker, taker = env.fee_rates
    want_m, want_t = FeeConfig().resolve(env.ts)
    np.testing.assert_array_equal(maker, want_m)
    np.testing.assert_array_equal(taker, want_t)
    assert set(maker) == {-0.0001, 0.0002}
    assert [FeeConfig().rates_at(int(t)) for t in env.ts] == list(zip(maker, taker, strict=True))
