from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from envs.observation import encode_observation, observation_bounds, observation_size
from envs.position import StateLimits


def test_observation_size_is_window_times_features_plus_seven() -> None:
    assert observation_size(26, 16) == 26 * 16 + 7
    assert observation_size(1, 1) == 8


def test_observation_size_rejects_empty() -> None:
    with pytest.raises(ValueError):
        observation_size(0, 16)


def test_encode_observation_puts_oldest_row_first_then_state() -> None:
    window = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])  # oldest first
    state = np.arange(7, dtype=np.float64) + 10
    obs = encode_observation(window, state)
    assert obs.dtype == np.float32
    assert obs.tolist() == [1, 2, 3, 4, 5, 6, 10, 11, 12, 13, 14, 15, 16]


def test_encode_observation_does_not_alias_its_inputs() -> None:
    window = np.zeros((2, 2))
    obs = encode_observation(window, np.zeros(7))
    window[0, 0] = 5.0
    assert obs[0] == 0.0


@pytest.mark.parametrize(
    ("window", "state"),
    [
        (np.zeros(4), np.zeros(7)),
        (np.zeros((2, 2)), np.zeros(6)),
        (np.zeros((2, 2)), np.zeros((7, 1))),
    ],
)
def test_encode_observation_with_wrong_shape_raises(window: np.ndarray, state: np.ndarray) -> None:
    with pytest.raises(ValueError):
        encode_observation(window, state)


def test_encode_observation_with_nan_raises() -> None:
    window = np.zeros((2, 2))
    window[1, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        encode_observation(window, np.zeros(7))


def test_observation_bounds_are_finite_and_name_the_state_ranges() -> None:
    low, high = observation_bounds(
        3, 2, obs_clip=5.0, limits=StateLimits(hours_clip=12.0, pct_clip=50.0)
    )
    assert low.dtype == high.dtype == np.float32
    assert np.isfinite(low).all() and np.isfinite(high).all()
    assert low[:6].tolist() == [-5.0] * 6 and high[:6].tolist() == [5.0] * 6
    assert low[6:].tolist() == [0, 0, -1, -50, 0, 0, 0]
    assert high[6:].tolist() == [1, 1, 1, 50, 12, 12, 12]


@given(
    st.integers(1, 5),
    st.integers(1, 5),
    st.floats(0.5, 20.0),
    st.lists(st.floats(-1e6, 1e6), min_size=25, max_size=25),
)
def test_clipped_window_with_valid_state_lies_within_bounds(
    f: int, w: int, clip: float, vals: list[float]
) -> None:
    raw = np.resize(np.asarray(vals), (w, f))
    low, high = observation_bounds(f, w, clip)
    state = np.array([1.0, 0.0, -0.5, 3.0, 24.0, 1.0, 0.0])
    obs = encode_observation(np.clip(raw, -clip, clip), state)
    assert obs.shape == (observation_size(f, w),)
    assert (obs >= low).all() and (obs <= high).all()
