"""Seeded fault cycles in trade mode against the stand-in BitMEX (`tests.live.fault_campaign`):
no duplicate own order, no untracked own order, no exception out of the loop, no dead man's
refresh while the data is bad. The campaign is shown able to fail on a manager that forgets
orders whose create outcome was unknown (what the loop did before #18)."""

from __future__ import annotations

from pathlib import Path

import pytest

from live.orders import OrderManager, OrderState, TrackedOrder
from tests.live.fault_campaign import CampaignConfig, run_campaign, totals


def _assert_clean(r: dict) -> None:
    assert r["duplicate_cycles"] == 0, r
    assert r["untracked_cycles"] == 0, r
    assert r["loop_exits"] == 0 and r["fatal_exits"] == 0, r
    assert r["dead_man_arms_while_bad"] == 0, r
    assert r["own_left_after_dead_man"] == 0, r


def test_fifty_fault_cycles_leave_no_duplicate_or_untracked_order_and_the_loop_running(
    tmp_path: Path,
) -> None:
    cfg = CampaignConfig(
        seed=7, cycles=50, rest_fault_rate=0.3, late_answer_rate=0.03, feed_fault_rate=0.08
    )
    r = run_campaign(cfg, tmp_path)
    tot = totals([r])
    _assert_clean(tot)
    assert r.cycles == 50 and r.orders_sent >= 5 and r.creates_committed >= 3
    assert tot["rest_faults"] >= 10 and r.unknown_resolved >= 3  # the faults did bite


def test_fifty_fault_cycles_of_a_target_mode_policy_stay_clean(tmp_path: Path) -> None:
    """The same campaign with a target-mode model (the resting orders wanted, decided
    again every bar): still one own order per side, each tracked, the loop running."""
    cfg = CampaignConfig(
        seed=7,
        cycles=50,
        rest_fault_rate=0.3,
        late_answer_rate=0.03,
        feed_fault_rate=0.08,
        action_mode="target",
    )
    r = run_campaign(cfg, tmp_path)
    _assert_clean(totals([r]))
    assert r.cycles == 50 and r.orders_sent >= 5 and r.creates_committed >= 3
    assert r.unknown_resolved >= 3
    # both sides were quoted at once (target 3), so the per-side checks had work to do
    assert r.actions.get("both", 0) >= 3 and r.actions.get("no_orders", 0) >= 3, r.actions


class ForgetfulManager(OrderManager):
    """The loop before #18: a create whose outcome is unknown is forgotten, not looked up."""

    def _unknown(self, o: TrackedOrder, doubt: str, now_ns: int, why: str) -> None:
        if doubt == "create":
            self._to(o, OrderState.DONE, now_ns, "forgotten")
            return
        super()._unknown(o, doubt, now_ns, why)


@pytest.mark.parametrize("mode", ["toggle", "target"])
def test_the_campaign_catches_a_manager_that_forgets_unknown_creates(
    tmp_path: Path, mode: str
) -> None:
    cfg = CampaignConfig(
        seed=7, cycles=50, rest_fault_rate=0.3, late_answer_rate=0.03, action_mode=mode
    )
    r = run_campaign(cfg, tmp_path, ForgetfulManager)
    assert r.untracked_cycles + r.duplicate_cycles > 0


@pytest.mark.slow
def test_a_thousand_seeded_fault_cycles_in_trade_mode(tmp_path: Path) -> None:
    """The RELIABILITY.md figure: 5 seeds x 200 cycles at the campaign's default rates."""
    results = [run_campaign(CampaignConfig(seed=s, cycles=200), tmp_path) for s in range(5)]
    tot = totals(results)
    _assert_clean(tot)
    assert tot["cycles"] == 1000 and tot["rest_faults"] >= 150 and tot["orders_sent"] >= 100
    assert tot["bad_data_rest_max_s"] <= 5.0
