"""Funding from history (#17): each funding time in a slice settles at the funding
table's rate for it, resolved once when the env is built; a time the table lacks settles
at the constant `funding_rate`, and the backtest reports the rates used."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core.clock import NS_PER_HOUR
from core.config.env import EnvConfig
from core.instrument import XBTUSD
from envs.management import HOLD, TOGGLE_LONG, ManagementEnv, SliceDataError
from ingest.funding import funding_table_path, ingest_funding
from tests.envs.conftest import T0, write_slice

HALF_HOUR = NS_PER_HOUR // 2
EIGHT_H = "2000-01-01T08:00:00.000Z"
R04, R12, CONST = 0.000125, -0.000254, 0.0001
# a long of 4,000 contracts (stake 0.1 of 1 XBT at 40,000 USD) marked at the mid 80,000.5
# ticks = 40,000.25 USD: the inverse contract's notional is 4,000 / 40,000.25 XBT
NOTIONAL = 4000 / 40_000.25


def funding_json(path: Path, rates: dict[str, float]) -> Path:
    """A BitMEX /api/v1/funding answer holding `rates` (funding time -> rate)."""
    rows = [
        {
            "timestamp": ts,
            "symbol": "XBTUSD",
            "fundingInterval": EIGHT_H,
            "fundingRate": r,
            "fundingRateDaily": r * 3,
        }
        for ts, r in rates.items()
    ]
    path.write_text(json.dumps(rows))
    return path


@pytest.fixture
def table(tmp_path: Path) -> Path:
    src = funding_json(
        tmp_path / "funding.json",
        {"2021-07-22T04:00:00.000Z": R04, "2021-07-22T12:00:00.000Z": R12},
    )
    ingest_funding([src], tmp_path / "data", "XBTUSD", XBTUSD)
    return funding_table_path(tmp_path / "data", "XBTUSD")


def slice_03_to_13(tmp_path: Path) -> Path:
    """Half-hour bars closing 03:00 .. 13:00 UTC on 2021-07-22 (04:00 and 12:00 inside),
    bid 80,000 / ask 80,001, a sell printed below the bid in bar 2 (fills a resting bid)."""
    n = 21
    bid = np.full(n, 80_000)
    sell_lo = np.zeros(n, np.int64)
    sell_lo[2] = 79_990
    t0 = T0 + 3 * NS_PER_HOUR - HALF_HOUR
    return write_slice(
        tmp_path / "s.parquet", bid, bid + 1, sell_lo=sell_lo, t0=t0, bar_ns=HALF_HOUR
    )


def env_for(tmp_path: Path, stats: Path, **cfg: object) -> ManagementEnv:
    base = {"window": 2, "random_start": False, "mean_steps_per_episode": 1000, "funding": True}
    return ManagementEnv(slice_03_to_13(tmp_path), stats, {**base, "funding_rate": CONST, **cfg})


def paid_per_bar(env: ManagementEnv) -> dict[int, float]:
    env.reset(seed=0)
    out, a, done, last = {}, TOGGLE_LONG, False, 0.0
    while not done:
        _, _, term, trunc, info = env.step(a)
        a, done = HOLD, term or trunc
        out[info["ts"]] = info["funding"] - last
        last = info["funding"]
    return out


def test_two_funding_times_settle_each_at_its_own_historical_rate(
    tmp_path: Path, flat_stats: Path, table: Path
) -> None:
    env = env_for(tmp_path, flat_stats, funding_rates_path=str(table))
    paid = paid_per_bar(env)
    t04, t12 = T0 + 4 * NS_PER_HOUR, T0 + 12 * NS_PER_HOUR
    assert paid[t04] == pytest.approx(R04 * NOTIONAL, rel=1e-12)  # the long pays
    assert paid[t12] == pytest.approx(R12 * NOTIONAL, rel=1e-12)  # negative: the long earns
    assert all(v == 0.0 for t, v in paid.items() if t not in (t04, t12))
    s = env.funding_schedule
    assert s.bar_ts.tolist() == [t04, t12]
    assert s.rate.tolist() == [R04, R12] and s.from_history.tolist() == [True, True]
    assert env.funding_note is None


def test_a_time_missing_from_the_history_settles_at_the_constant_with_a_note(
    tmp_path: Path, flat_stats: Path
) -> None:
    src = funding_json(tmp_path / "f.json", {"2021-07-22T04:00:00.000Z": R04})
    ingest_funding([src], tmp_path / "data", "XBTUSD", XBTUSD)
    path = funding_table_path(tmp_path / "data", "XBTUSD")
    env = env_for(tmp_path, flat_stats, funding_rates_path=str(path))
    paid = paid_per_bar(env)
    assert paid[T0 + 4 * NS_PER_HOUR] == pytest.approx(R04 * NOTIONAL, rel=1e-12)
    assert paid[T0 + 12 * NS_PER_HOUR] == pytest.approx(CONST * NOTIONAL, rel=1e-12)
    assert env.funding_schedule.from_history.tolist() == [True, False]
    assert env.funding_note is not None and "1 of 2 funding times" in env.funding_note
    assert str(CONST) in env.funding_note


def test_without_a_table_every_time_settles_at_the_constant(
    tmp_path: Path, flat_stats: Path
) -> None:
    paid = paid_per_bar(env_for(tmp_path, flat_stats))
    assert paid[T0 + 4 * NS_PER_HOUR] == pytest.approx(CONST * NOTIONAL, rel=1e-12)
    assert paid[T0 + 12 * NS_PER_HOUR] == paid[T0 + 4 * NS_PER_HOUR]


def test_a_missing_table_is_a_slice_data_error_and_needs_funding_on(
    tmp_path: Path, flat_stats: Path
) -> None:
    with pytest.raises(SliceDataError, match="chappie ingest funding"):
        env_for(tmp_path, flat_stats, funding_rates_path=str(tmp_path / "none.parquet"))
    with pytest.raises(ValueError, match="funding is off"):
        EnvConfig(funding_rates_path="x.parquet")


def test_the_backtest_reports_the_funding_and_the_rates_used(
    tmp_path: Path, flat_stats: Path, table: Path
) -> None:
    from training.backtest import backtest

    calls = []

    def long_once(obs: np.ndarray) -> np.ndarray:
        calls.append(1)
        return np.full(obs.shape[0], TOGGLE_LONG if len(calls) == 1 else HOLD)

    cfg = EnvConfig(window=2, funding=True, funding_rate=CONST, funding_rates_path=str(table))
    (res,) = backtest(long_once, [slice_03_to_13(tmp_path)], flat_stats, cfg)
    m = res.metrics
    assert m is not None
    assert m.funding == pytest.approx(-(R04 + R12) * NOTIONAL, rel=1e-12)  # cash flow, / 1 XBT
    assert (m.funding_times, m.funding_rates_missing) == (2, 0)
    assert m.funding_rate_mean == pytest.approx((R04 + R12) / 2)
    assert {"funding", "funding_rate_mean", "funding_times"} <= set(m.as_dict())
    off = backtest(long_once, [slice_03_to_13(tmp_path)], flat_stats, EnvConfig(window=2))
    assert off[0].metrics is not None and off[0].metrics.funding_rate_mean is None
    assert off[0].metrics.funding == 0.0 and off[0].metrics.funding_times == 0
