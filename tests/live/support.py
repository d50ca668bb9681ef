"""Small deterministic stand-ins shared by the live tests (not mocks of our own code:
a fixed-action policy and a clip-only normaliser satisfy the policy/stats contracts)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

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


def after_lines(
    path: Path, n: int, action: Callable[[], object], timeout_s: float = 30.0
) -> threading.Thread:
    """Run `action` once `path` (a decisions file being written) holds `n` lines: tests
    key their fault injection on progress, not on wall time (robust on a loaded machine)."""

    def wait() -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if path.exists() and len(path.read_text().splitlines()) >= n:
                action()
                return
            time.sleep(0.02)

    t = threading.Thread(target=wait, daemon=True)
    t.start()
    return t


def replay_cli(source: str | Path, *extra: str, speed: int = 20) -> list[str]:
    """`chappie live` arguments replaying `source` on 127.0.0.1; the run ends with the replay
    (the 60 s duration is only a safety cap)."""
    return [
        "live",
        "--feed",
        "replay",
        "--replay",
        str(source),
        "--speed",
        str(speed),
        "--duration",
        "60",
        *extra,
    ]
