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
        arrays = _arrays(pos, spare=1)
        rate = fees.rates_at(k + 1)[0]
        tr_i, tr_f = np.zeros((len(arrays[2]), 5), np.int64), np.zeros((len(arrays[2]), 4))
        c = K.contracts_for(stake, arrays[0][K.A_BAL], px * inst.tick_size, inst.is_inverse,
                            inst.multiplier)  # fmt: skip
        K.fill(*arrays, side, px, k + 1, stake, c, False, rate, K.MAKER, inst.tick_size,
               inst.is_inverse, inst.multiplier, tr_i, tr_f, 0)  # fmt: skip
        assert new == position_from_arrays(*arrays)
        pos = new


def test_kernels_refuse_to_write_past_their_buffers() -> None:
    pos = open_account(1.0, 0)
    acct_f, acct_i, lot_i, lot_f = _arrays(pos)  # no spare lot row
    tr = np.zeros((0, 5), np.int64), np.zeros((0, 4))
    with pytest.raises(ValueError, match="lot buffer full"):
        K.fill(
            acct_f,
            acct_i,
            lot_i,
            lot_f,
            LONG,
            80_000,
            1,
            0.1,
            8000.0,
            False,
            0.0,
            0,
            0.5,
            True,
            1.0,
            *tr,
            0,
        )
    pos, _ = apply_fill(pos, LONG, 80_000, 1, XBT, 0.1, 1.0)
    acct_f, acct_i, lot_i, lot_f = _arrays(pos)
    with pytest.raises(ValueError, match="trade buffer full"):
        K.fill(
            acct_f,
            acct_i,
            lot_i,
            lot_f,
            SHORT,
            80_001,
            2,
            0.1,
            0.0,
            False,
            0.0,
            0,
            0.5,
            True,
            1.0,
            *tr,
            0,
        )
