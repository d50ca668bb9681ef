"""The numba kernels behind envs.position: the dataclass wrappers rebuild exactly what the
kernels hold, and the kernels refuse to write past their buffers."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.fees import DEFAULT_FEES, FeeConfig
from core.instrument import InstrumentSpec
from envs import kernels as K
from envs.position import (
    LONG,
    SHORT,
    _arrays,
    apply_fill,
    can_fill,
    open_account,
    position_from_arrays,
)

XBT = InstrumentSpec()
LINEAR = InstrumentSpec(symbol="XBTUSDT", is_inverse=False)
LINEAR_FEES = FeeConfig.constant(0.0002, 0.0005)

fills = st.lists(
    st.tuples(
        st.sampled_from([LONG, SHORT]),
        st.integers(60_000, 100_000),
        st.sampled_from([0.05, 0.1, 0.25, 0.3]),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=60, deadline=None)
@given(seq=fills, linear=st.booleans())
def test_apply_fill_equals_a_full_rebuild_from_the_kernel_arrays(seq: list, linear: bool) -> None:
    inst, fees = (LINEAR, LINEAR_FEES) if linear else (XBT, DEFAULT_FEES)
    pos = open_account(1.0, 0)
    for k, (side, px, stake) in enumerate(seq):
        if not can_fill(pos, side, stake, 1.0):
            continue
        new, _ = apply_fill(pos, side, px, k + 1, inst, stake, 1.0, fees=fees)
        account, lots = _arrays(pos, spare=1)
        rate = fees.rates_at(k + 1)[0]
        trades = np.zeros(len(lots), K.TRADE_DTYPE)
        c = K.contracts_for(stake, float(account["balance"][0]), px * inst.tick_size,
                            inst.is_inverse, inst.multiplier)  # fmt: skip
        K.fill(account[0], lots, trades, 0, side, px, k + 1, stake, c, False, rate, K.MAKER,
               inst.tick_size, inst.is_inverse, inst.multiplier)  # fmt: skip
        assert new == position_from_arrays(account, lots)
        pos = new


def test_kernels_refuse_to_write_past_their_buffers() -> None:
    pos = open_account(1.0, 0)
    account, lots = _arrays(pos)  # no spare lot row
    trades = np.zeros(0, K.TRADE_DTYPE)
    with pytest.raises(ValueError, match="lot buffer full"):
        K.fill(
            account[0], lots, trades, 0, LONG, 80_000, 1, 0.1, 8000.0, False, 0.0, K.MAKER,
            0.5, True, 1.0,
        )  # fmt: skip
    pos, _ = apply_fill(pos, LONG, 80_000, 1, XBT, 0.1, 1.0)
    account, lots = _arrays(pos)
    with pytest.raises(ValueError, match="trade buffer full"):
        K.fill(
            account[0], lots, trades, 0, SHORT, 80_001, 2, 0.1, 0.0, False, 0.0, K.MAKER, 0.5,
            True, 1.0,
        )  # fmt: skip
