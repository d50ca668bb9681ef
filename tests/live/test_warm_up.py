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
    acct.state(1_000_000_000, 80_000.5)
    acct.act(1, 80_000, 80_001)  # rest a buy at 80,000 ticks (40,000 USD: whole lots)
    acct.on_bar(2_000_000_000, 79_999, 80_000, 0, 79_999)  # traded through: filled
    acct.act(2, 80_000, 80_001)  # rest a sell at 80,001
    acct.on_bar(3_000_000_000, 80_001, 80_002, 80_002, 0)  # traded through: the lot closes
    acct.state(4_000_000_000, 80_001.5)
    assert acct.fills == 2
    assert _signatures() == before
