"""The broker's queue position, latency, partial fills and lot rounding (#17), on bars
built by hand with the fills computed by hand (envs.broker's docstring rules), and the
env and the paper account agreeing bar for bar under risk_averse with latency.

XBTUSD, balance 1 XBT, stake 0.1: an order at 64,000 ticks (32,000 USD) is 3,200
contracts (32 lots of 100)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.instrument import XBTUSD
from envs.broker import BrokerAccount, BrokerRules
from envs.position import open_account

S = 1_000_000_000
MS = 1_000_000
P = 64_000  # the best bid of every bar unless said otherwise


def _acct(**rules: object) -> BrokerAccount:
    return BrokerAccount(BrokerRules(**rules), XBTUSD, open_account(1.0, 0))  # type: ignore[arg-type]


def _bar(a: BrokerAccount, k: int, bid: int = P, **fields: int) -> None:
    """Bar k (close k s): best bid `bid`, ask one tick above, no prints unless given."""
    sell_lo = fields.pop("sell_lo", 0)
    buy_hi = fields.pop("buy_hi", 0)
    a.on_bar(k * S, bid, fields.pop("ask", bid + 1), buy_hi, sell_lo, **fields)


def _contracts(a: BrokerAccount) -> float:
    return sum(lot.contracts for lot in a.position.lots)


def test_risk_averse_consumes_the_queue_across_bars_then_fills_in_part() -> None:
    a = _acct(fill_model="risk_averse")
    a.act(1, P, P + 1, ts_ns=0, bid_size=5_000)  # joins behind 5,000
    _bar(a, 1, bid_size=6_000, sell_at_vol=4_000)  # ahead 1,000; the level grew behind
    assert a.fills == 0
    _bar(a, 2, bid_size=6_000, sell_at_vol=2_500)  # ahead -1,500: 1,500 of 3,200 fill
    assert [f.contracts for f in a.last_fills] == [1_500] and a.bid_px == P
    assert a.last_fills[0].stake == pytest.approx(0.1 * 1_500 / 3_200)  # the stake's share
    _bar(a, 3, bid_size=6_000, sell_at_vol=1_000)  # the bar's 1,000 at p: 1,000 more
    assert [f.contracts for f in a.last_fills] == [1_000] and _contracts(a) == 2_500
    _bar(a, 4, sell_lo=P - 1)  # a trade through p: the remaining 700
    assert [f.contracts for f in a.last_fills] == [700] and a.bid_px == 0
    (lot,) = a.position.lots  # one order's fills are one lot, aged from its first fill
    assert lot.contracts == 3_200 and lot.ts_ns == 2 * S
    assert lot.stake == pytest.approx(0.1)
    # trade_through on the same bars: the volume at p never fills; the through fills it all
    b = _acct()
    b.act(1, P, P + 1, ts_ns=0, bid_size=5_000)
    for k, at in ((1, 4_000), (2, 2_500), (3, 1_000)):
        _bar(b, k, bid_size=6_000, sell_at_vol=at)
    assert b.fills == 0
    _bar(b, 4, sell_lo=P - 1)
    assert _contracts(b) == 3_200


@pytest.mark.parametrize(("model", "filled"), [("power_prob", 200), ("risk_averse", 0)])
def test_power_prob_advances_on_cancellations_ahead_risk_averse_does_not(
    model: str, filled: int
) -> None:
    a = _acct(fill_model=model)
    a.act(1, P, P + 1, ts_ns=0, bid_size=2_000)  # ahead 2,000
    _bar(a, 1, bid_size=6_000)  # 4,000 joined behind
    # 2,000 cancelled: power_prob puts 0.2 of it ahead (front 2,000, back 4,000, n = 2:
    # P(behind) = 4000^2 / (4000^2 + 2000^2) = 0.8), ahead 1,600; risk_averse keeps 2,000
    _bar(a, 2, bid_size=4_000)
    _bar(a, 3, bid_size=4_000, sell_at_vol=1_800)
    assert _contracts(a) == filled


@pytest.mark.parametrize(
    ("latency_ms", "thru", "filled"),
    [
        (500.0, (100, 300), False),  # the through prints came before the order arrived
        (500.0, (100, 700), True),  # one came after it
        (0.0, (100, 300), True),  # no latency: the order rests the whole bar
    ],
)
def test_entry_latency_hides_an_early_trade_through(
    latency_ms: float, thru: tuple[int, int], filled: bool
) -> None:
    a = _acct(entry_latency_ms=latency_ms)
    a.act(1, P, P + 1, ts_ns=0)
    _bar(a, 1, sell_lo=P - 1, sell_thru_first=thru[0] * MS, sell_thru_last=thru[1] * MS)
    assert (a.fills == 1) is filled and (a.bid_px == 0) is filled


@pytest.mark.parametrize(("thru", "filled"), [((1_200, 1_300), True), ((1_600, 1_800), False)])
def test_a_cancel_in_flight_can_still_be_filled(thru: tuple[int, int], filled: bool) -> None:
    a = _acct(cancel_latency_ms=500.0)
    a.act(1, P, P + 1, ts_ns=0)
    _bar(a, 1)
    a.act(1, P, P + 1, ts_ns=1 * S)  # toggled off: the cancel lands at 1.5 s
    assert a.bid_px == 0 and not a.long_order
    _bar(a, 2, sell_lo=P - 1, sell_thru_first=thru[0] * MS, sell_thru_last=thru[1] * MS)
    assert (_contracts(a) == 3_200) is filled
    _bar(a, 3, sell_lo=P - 1, sell_thru_first=2_100 * MS, sell_thru_last=2_200 * MS)
    assert a.fills == int(filled)  # the cancel has landed: nothing rests


def test_a_re_priced_order_filled_in_flight_leaves_its_replacement_nothing() -> None:
    a = _acct(cancel_latency_ms=500.0)
    a.act(1, P, P + 1, ts_ns=0)
    _bar(a, 1, bid=P + 1)  # rolls: the order at P is cancelled (lands 1.5 s), a new one at P+1
    assert a.bid_px == P + 1
    _bar(a, 2, bid=P + 1, sell_lo=P - 1, sell_thru_first=1_200 * MS, sell_thru_last=1_300 * MS)
    (fill,) = a.last_fills  # the old order filled in flight, the whole stake
    assert fill.price_ticks == P and _contracts(a) == 3_200 and a.bid_px == 0


def test_an_order_rounding_to_no_lot_is_not_placed() -> None:
    a = _acct(stake_fraction=0.001)  # 3.2 contracts: no lot of 100
    a.act(1, P, P + 1, ts_ns=0)
    assert a.bid_px == 0
    b = _acct(stake_fraction=0.0011)  # 3.52 contracts... still none; 0.004 is 128: one lot
    b.act(1, P, P + 1, ts_ns=0)
    c = _acct(stake_fraction=0.004)
    c.act(1, P, P + 1, ts_ns=0)
    _bar(c, 1, sell_lo=P - 1)
    assert b.bid_px == 0 and _contracts(c) == 100


@pytest.mark.parametrize(("bid2", "filled"), [(P, 400), (P + 1, 0)])
def test_a_re_price_loses_the_queue_place_a_same_price_roll_keeps_it(
    bid2: int, filled: int
) -> None:
    a = _acct(fill_model="risk_averse")
    a.act(1, P, P + 1, ts_ns=0, bid_size=1_000)
    _bar(a, 1, bid_size=1_000, sell_at_vol=900)  # ahead 100
    _bar(a, 2, bid=bid2, bid_size=2_000)  # same price: ahead 100; a new best: behind 2,000
    _bar(a, 3, bid=bid2, bid_size=2_000, sell_at_vol=500)
    assert _contracts(a) == filled and a.bid_px == bid2


@pytest.mark.parametrize(("latency_ms", "filled"), [(500.0, False), (0.0, True)])
def test_a_post_only_order_crossed_in_its_arrival_bar_is_rejected(
    latency_ms: float, filled: bool
) -> None:
    a = _acct(entry_latency_ms=latency_ms)
    a.act(1, P, P + 1, ts_ns=0)
    _bar(a, 1, bid=P - 1, ask=P)  # the ask came down to the buy's price; no prints
    assert (a.fills == 1) is filled and a.bid_px == 0


def test_the_env_refuses_a_queue_model_on_a_slice_without_the_bar_columns(
    tmp_path: Path, flat_stats: Path
) -> None:
    from envs.management import ManagementEnv, SliceDataError
    from tests.envs.conftest import random_market, write_slice

    path = write_slice(tmp_path / "s.parquet", **random_market(40))
    ManagementEnv(path, flat_stats, {"window": 2})  # trade_through, no latency: runs
    with pytest.raises(SliceDataError, match="lacks columns .*sell_at_bid_vol.*risk_averse"):
        ManagementEnv(path, flat_stats, {"window": 2, "fill_model": "risk_averse"})
    with pytest.raises(SliceDataError, match="sell_thru_bid_first_ts"):
        ManagementEnv(path, flat_stats, {"window": 2, "entry_latency_ms": 10.0})


@pytest.mark.parametrize("mode", ["toggle", "target"])
def test_env_and_paper_account_agree_bar_for_bar_under_risk_averse_with_latency(
    tmp_path: Path, flat_stats: Path, mode: str
) -> None:
    """ManagementEnv and the live paper account, the same bars (with #17's columns) and
    actions, under risk_averse with entry and cancel latency: the same fills, partial
    ones among them, the same position and live orders after every bar."""
    from core.config.env import EnvConfig
    from envs.management import ManagementEnv
    from tests.envs.conftest import BAR_NS, random_events, random_market, write_slice

    n = 300
    m = random_market(n, seed=4)
    ev = random_events(m, seed=4)
    path = write_slice(tmp_path / "s.parquet", **m, events=ev)
    cfg = EnvConfig(
        window=2, action_mode=mode, fill_model="risk_averse", entry_latency_ms=300.0,
        cancel_latency_ms=200.0, stake_fraction=0.25,
    )  # fmt: skip
    env = ManagementEnv(path, flat_stats, cfg)
    env.reset(options={"full": True, "flatten_at_end": False})
    ts = env.ts
    assert ts[1] - ts[0] == BAR_NS
    paper = BrokerAccount(
        BrokerRules.from_env_config(cfg.model_dump(mode="json")),
        XBTUSD,
        open_account(1.0, int(ts[cfg.window - 1])),
    )
    rng = np.random.default_rng(5)
    actions = (
        rng.choice(3, size=n, p=[0.7, 0.15, 0.15])
        if mode == "toggle"
        else np.repeat(rng.choice(4, size=n // 8 + 1), 8)[:n]
    )
    partial = 0
    t = cfg.window - 1
    while t < n - 1:
        a = int(actions[t])
        paper.act(
            a, int(m["bid"][t]), int(m["ask"][t]), ts_ns=int(ts[t]),
            bid_size=int(ev["bid_sz_0"][t]), ask_size=int(ev["ask_sz_0"][t]),
        )  # fmt: skip
        env.step(a)
        t += 1
        paper.on_bar(
            int(ts[t]), int(m["bid"][t]), int(m["ask"][t]), int(m["buy_hi"][t]),
            int(m["sell_lo"][t]), bid_size=int(ev["bid_sz_0"][t]),
            ask_size=int(ev["ask_sz_0"][t]), sell_at_vol=int(ev["sell_at_bid_vol"][t]),
            sell_thru_first=int(ev["sell_thru_bid_first_ts"][t]),
            sell_thru_last=int(ev["sell_thru_bid_last_ts"][t]),
            buy_at_vol=int(ev["buy_at_ask_vol"][t]),
            buy_thru_first=int(ev["buy_thru_ask_first_ts"][t]),
            buy_thru_last=int(ev["buy_thru_ask_last_ts"][t]),
        )  # fmt: skip
        # a partial fill's lot carries a share of a stake
        partial += any(
            abs(x.stake / 0.25 - round(x.stake / 0.25)) > 1e-6 for x in paper.position.lots
        )
        assert paper.position == env.position, t
        assert (paper.bid_px, paper.ask_px) == env.resting_orders, t
    assert paper.fills > 10 and partial > 0


def test_a_partial_fill_that_reduces_closes_its_contracts_of_the_oldest_lot() -> None:
    a = _acct(fill_model="risk_averse")
    a.act(1, P, P + 1, ts_ns=0, bid_size=1_000)
    _bar(a, 1, sell_lo=P - 1)  # through: long 3,200
    a.act(2, P, P + 1, ts_ns=1 * S, ask_size=1_000)  # a sell joins behind 1,000 at P + 1
    _bar(a, 2, ask_size=1_000, buy_at_vol=2_500)  # ahead -1,500: 1,500 of the lot close
    (lot,) = a.position.lots
    assert a.last_fills[0].contracts == pytest.approx(1_500)
    assert lot.contracts == pytest.approx(1_700) and lot.stake == pytest.approx(0.1 * 17 / 32)
