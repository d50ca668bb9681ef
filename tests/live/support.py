"""Small deterministic stand-ins shared by the live tests (not mocks of our own code:
a fixed-action policy and a clip-only normaliser satisfy the policy/stats contracts)."""

from __future__ import annotations

import numpy as np

from core.config.features import FeatureSpec

SMALL_SPEC = FeatureSpec(windows_s=(2, 5), return_horizons_s=(1, 2), window=4)


class CyclePolicy:
    """Cycles through a fixed action list."""

    def __init__(self, actions: list[int]) -> None:
        self.actions = actions
        self.calls = 0

    def predict(self, obs: np.ndarray) -> int:
        a = self.actions[self.calls % len(self.actions)]
        self.calls += 1
        return a


class ClipStats:
    def normalize(self, x: np.ndarray, clip: float) -> np.ndarray:
        return np.clip(x, -clip, clip)
