"""The one observation encoder, shared by the env, the backtest and the live loop.

Observation = the last `window` normalised feature rows (oldest first, flattened
row-major), then the 7 management values (`core.schema.MANAGEMENT_STATE` order), float32.
Pure.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from core.schema import MANAGEMENT_STATE
from envs.position import StateLimits

N_STATE = len(MANAGEMENT_STATE)


def observation_size(n_features: int, window: int) -> int:
    """Length of the flat observation vector: n_features * window + 7."""
    if n_features < 1 or window < 1:
        raise ValueError(f"n_features and window must be >= 1, got {n_features}, {window}")
    return n_features * window + N_STATE


def encode_observation(
    window_norm: np.ndarray, state: np.ndarray | Sequence[float], validate: bool = True
) -> np.ndarray:
    """Flatten `window_norm` (window, F) float, oldest row first, and append `state` (7,).

    Returns a new float32 vector of length `observation_size(F, window)`. Raises
    ValueError on a wrong shape or a non-finite value (a NaN must never reach a policy).
    `validate=False` skips the checks: only for callers whose inputs are finite and
    shaped by construction (the env validates its slice once at load).
    """
    if validate:
        state = np.asarray(state)
        if window_norm.ndim != 2:
            raise ValueError(
                f"window_norm must be 2-D (window, n_features), got shape {window_norm.shape}"
            )
        if state.shape != (N_STATE,):
            raise ValueError(f"state must have shape ({N_STATE},), got {state.shape}")
    n = window_norm.size
    out = np.empty(n + N_STATE, dtype=np.float32)
    out[:n] = window_norm.reshape(-1)
    out[n:] = state
    if validate and not np.isfinite(out).all():
        raise ValueError("observation holds a non-finite value")
    return out


def observation_bounds(
    n_features: int, window: int, obs_clip: float, limits: StateLimits | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Finite (low, high) float32 bounds of the observation: features in +-obs_clip,
    order flags in [0, 1], position size in [-1, 1], unrealised % in +-pct_clip, hours in
    [0, hours_clip]."""
    lim = limits or StateLimits()
    size = observation_size(n_features, window)
    low = np.full(size, -obs_clip, dtype=np.float32)
    high = np.full(size, obs_clip, dtype=np.float32)
    k = n_features * window
    low[k : k + N_STATE] = (0.0, 0.0, -1.0, -lim.pct_clip, 0.0, 0.0, 0.0)
    high[k : k + N_STATE] = (
        1.0,
        1.0,
        1.0,
        lim.pct_clip,
        lim.hours_clip,
        lim.hours_clip,
        lim.hours_clip,
    )
    return low, high
