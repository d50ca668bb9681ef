"""Funding times from the instrument (#17): XBTUSD settles at 04:00, 12:00 and 20:00 UTC,
in the env and the paper account alike (one rule, `core.instrument.funding_settles`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.clock import NS_PER_HOUR, NS_PER_S
from core.instrument import (
    XBTUSD,
    InstrumentSpec,
    funding_offset_hours_of,
    funding_settles,
    funding_time,
)
from envs.broker import BrokerAccount, BrokerRules
from envs.management import HOLD, TOGGLE_LONG, ManagementEnv
from envs.position import open_account
from tests.conftest import INSTRUMENTS
from tests.envs.conftest import T0, write_slice

DAY0 = T0  # 2021-07-22 00:00 UTC
BASE = {"window": 2, "random_start": False, "mean_steps_per_episode": 10_000}
RATE = 0.0001
# a long of stake 0.1 on 1 XBT at the bid 80,000 ticks (40,000 USD): 4,000 contracts; its
# funding at the mid 80,000.5 ticks is rate x 4,000 / 40,000.25 XBT (inverse contract)
PAID = RATE * 4000 / 40_000.25


def at(hours: float, seconds: int = 0) -> int:
    return DAY0 + int(hours * NS_PER_HOUR) + seconds * NS_PER_S


def test_xbtusd_settles_at_04_12_20_utc_only() -> None:
    hours = [h + 0.5 * k for h in range(24) for k in range(2)]  # every half hour of a day
    ts = np.array([at(0, -1)] + [at(h) for h in hours], dtype=np.int64)
    due = funding_settles(ts[:-1], ts[1:], XBTUSD)
    assert [hours[i] for i in np.flatnonzero(due)] == [4.0, 12.0, 20.0]
    old = InstrumentSpec(funding_offset_hours=0.0)  # the 00/08/16 anchor, when asked for
    due = funding_settles(ts[:-1], ts[1:], old)
    assert [hours[i] for i in np.flatnonzero(due)] == [0.0, 8.0, 16.0]


def test_funding_settles_in_the_bar_whose_close_reaches_the_funding_time() -> None:
    # (prev, close]: a close at exactly 04:00:00 settles; 04:00:00 -> 04:00:01 does not
    assert funding_settles(at(4, -1), at(4), XBTUSD) is True
    assert funding_settles(at(4), at(4, 1), XBTUSD) is False
    assert funding_settles(at(3, 3599), at(4, 1), XBTUSD) is True
    assert funding_settles(at(0, -1), at(0, 1), XBTUSD) is False
    assert funding_settles(at(8, -1), at(8, 1), XBTUSD) is False
    assert funding_time(at(4, 1), XBTUSD) == at(4)
    assert funding_time(at(3, 3599), XBTUSD) == at(-4)  # 20:00 the day before


def test_the_offset_comes_from_bitmex_funding_timestamp() -> None:
    nxt = 1_627_012_800_000_000_000  # fundingTimestamp 2021-07-23T04:00:00.000Z
    assert funding_offset_hours_of(nxt, 8.0) == 4.0
    assert funding_offset_hours_of(nxt + 4 * NS_PER_HOUR, 8.0) == 0.0


def _long_env(tmp_path: Path, stats: Path, ts: np.ndarray, **cfg: object) -> ManagementEnv:
    """A slice at bid 80,000 / ask 80,001 whose bar 2 fills a bid (a sell printed below)."""
    n = len(ts)
    bid = np.full(n, 80_000)
    sell_lo = np.zeros(n, np.int64)
    sell_lo[2] = 79_990
    bar_ns = int(ts[1] - ts[0])
    path = write_slice(
        tmp_path / "s.parquet", bid, bid + 1, sell_lo=sell_lo, t0=int(ts[0]) - bar_ns, bar_ns=bar_ns
    )
    return ManagementEnv(path, stats, {**BASE, "funding": True, "funding_rate": RATE, **cfg})


def _run(env: ManagementEnv) -> list[dict]:
    env.reset(seed=0)
    out = []
    done = False
    a = TOGGLE_LONG
    while not done:
        _, _, term, trunc, info = env.step(a)
        a = HOLD
        out.append(info)
        done = term or trunc
    return out


def test_a_slice_across_04_00_settles_once_at_04_00(tmp_path: Path, flat_stats: Path) -> None:
    ts = at(4, -12) + NS_PER_S * np.arange(14, dtype=np.int64)  # 03:59:48 .. 04:00:01
    out = _run(_long_env(tmp_path, flat_stats, ts))
    paid = {i["ts"]: i["funding"] for i in out}
    assert all(v == 0.0 for t, v in paid.items() if t < at(4))
    assert paid[at(4)] == pytest.approx(PAID, rel=1e-12)
    assert paid[at(4, 1)] == paid[at(4)]  # once: 04:00:01 pays nothing more


@pytest.mark.parametrize("hour", [0, 8, 16])
def test_no_funding_at_00_08_16_utc(tmp_path: Path, flat_stats: Path, hour: int) -> None:
    ts = at(hour, -12) + NS_PER_S * np.arange(14, dtype=np.int64)  # hh-1:59:48 .. hh:00:01
    out = _run(_long_env(tmp_path, flat_stats, ts))
    assert out[2]["position_size"] > 0  # long from bar 2 on
    assert [i["funding"] for i in out] == [0.0] * len(out)


def test_half_hour_bars_from_23_30_to_08_30_settle_only_at_04_00(
    tmp_path: Path, flat_stats: Path
) -> None:
    ts = at(-0.5) + NS_PER_HOUR // 2 * np.arange(19, dtype=np.int64)  # 23:30 .. 08:30
    out = _run(_long_env(tmp_path, flat_stats, ts))
    steps = [i["ts"] for i in out]
    paid = np.diff([0.0] + [i["funding"] for i in out])
    assert [steps[k] for k in np.flatnonzero(paid)] == [at(4)]


def test_the_paper_account_settles_the_same_funding_at_the_same_bar(
    tmp_path: Path, flat_stats: Path
) -> None:
    ts = at(4, -12) + NS_PER_S * np.arange(14, dtype=np.int64)
    out = _run(_long_env(tmp_path, flat_stats, ts))
    rules = BrokerRules(funding=True, funding_rate=RATE)
    paper = BrokerAccount(rules, XBTUSD, open_account(1.0, int(ts[1])))
    paper.state(int(ts[1]), 80_000.5)  # the decision bar (window - 1 = 1)
    paper.act(TOGGLE_LONG, 80_000, 80_001)
    for k in range(2, len(ts)):
        paper.on_bar(int(ts[k]), 80_000, 80_001, 0, 79_990 if k == 2 else 0)
        assert paper.position.funding == out[k - 2]["funding"], k
        assert paper.position.balance == out[k - 2]["balance"], k
    assert paper.position.funding == pytest.approx(PAID, rel=1e-12)


def test_paper_funding_is_off_by_default() -> None:
    paper = BrokerAccount(BrokerRules(), XBTUSD, open_account(1.0, at(4, -2)))
    paper.state(at(4, -2), 80_000.5)
    paper.act(TOGGLE_LONG, 80_000, 80_001)
    paper.on_bar(at(4, -1), 80_000, 80_001, 0, 79_990)
    paper.on_bar(at(4), 80_000, 80_001, 0, 0)
    assert paper.position.side == 1 and paper.position.funding == 0.0
    assert (
        BrokerRules.from_env_config({"funding": True, "funding_rate": 0.0002}).funding_rate
        == 0.0002
    )


def test_an_instrument_built_from_bitmex_json_takes_the_funding_offset() -> None:
    from ingest.instruments import from_bitmex, load_instrument

    spec = load_instrument(INSTRUMENTS, "XBTUSD")  # fundingTimestamp 2021-07-23T04:00Z
    assert (spec.funding_interval_hours, spec.funding_offset_hours) == (8.0, 4.0)
    obj = {
        "symbol": "X",
        "tickSize": 0.5,
        "lotSize": 1,
        "fundingInterval": "2000-01-01T08:00:00.000Z",
    }
    shifted = from_bitmex({**obj, "fundingTimestamp": "2021-07-23T08:00:00.000Z"})
    assert shifted.funding_offset_hours == 0.0
    assert from_bitmex(obj).funding_offset_hours == 4.0  # not given: BitMEX's 04/12/20 UTC
