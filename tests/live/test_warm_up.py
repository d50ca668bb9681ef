"""`warm_up_kernels` compiles every numba kernel a paper session calls at its first
decision and fill: after it, the paper account's state, orders and fills (the kernels of
envs.kernels and envs.broker) compile nothing."""

from __future__ import annotations

from core.config.features import FeatureSpec
from core.instrument import InstrumentSpec
from envs import broker as B
from envs import kernels as K
from envs.broker import BrokerAccount, BrokerRules
from envs.position import open_account
from live.predictor import warm_up_kernels


def _signatures() -> dict[str, int]:
    return {
        f"{mod.__name__}.{name}": len(fn.signatures)
        for mod in (K, B)
        for name in dir(mod)
        if hasattr(fn := getattr(mod, name), "signatures")
    }


def test_paper_account_compiles_nothing_after_warm_up():
    warm_up_kernels(FeatureSpec())
    before = _signatures()
    acct = BrokerAccount(BrokerRules(), InstrumentSpec(), open_account(1.0, 0))
    acct.state(1_000_000_000, 100.5)
    acct.act(1, 100, 101)  # rest a buy at 100
    acct.on_bar(2_000_000_000, 99, 100, 0, 99)  # traded through: filled
    acct.act(2, 100, 101)  # rest a sell at 101
    acct.on_bar(3_000_000_000, 101, 102, 102, 0)  # traded through: the lot closes
    acct.state(4_000_000_000, 101.5)
    assert acct.fills == 2
    assert _signatures() == before
