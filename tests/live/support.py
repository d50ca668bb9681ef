"""Small deterministic stand-ins shared by the live tests (not mocks of our own code:
a fixed-action policy and a clip-only normaliser satisfy the policy/stats contracts)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import SecretStr

from core.config.features import FeatureSpec
from core.config.live import RiskConfig
from core.instrument import XBTUSD
from live.exchange import BitmexRest
from live.journal import Journal
from live.orders import OrderManager

KEY, SECRET = "test-key-abc", "test-secret-xyz-0123456789"  # the fake exchange's test keys

SMALL_SPEC = FeatureSpec(windows_s=(2, 5), return_horizons_s=(1, 2), window=4)


def trade_risk(**overrides: float) -> RiskConfig:
    """Risk limits for trading tests: loose enough that the test decides what is refused;
    staleness far off (the tests that check it set their own)."""
    base: dict[str, float] = {
        "max_position_contracts": 1000,
        "max_order_contracts": 100,
        "max_orders_per_minute": 30,
        "price_band_bps": 50.0,
        "max_drawdown_xbt": 0.5,
        "stale_after_s": 600,
    }
    return RiskConfig.model_validate({**base, **overrides})


class SimClock:
    """Seconds that move only when told to (`t`): an order manager's REST schedule."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def make_manager(
    url: str,
    journal: Path,
    *,
    session: str = "sess0001",
    secret: str = SECRET,
    timeout_s: float = 2.0,
    expires_in_s: int = 10,
    wall: Callable[[], float] = time.time,
    risk: RiskConfig | None = None,
    cls: type[OrderManager] = OrderManager,
    **kw: Any,
) -> OrderManager:
    """An order manager (`cls`) on the fake exchange at `url` (real HTTP, real signatures):
    XBTUSD, stake 100 contracts, journal at `journal`; `kw` go to it (mono, sleep, ...)."""
    rest = BitmexRest(
        url,
        SecretStr(KEY),
        SecretStr(secret),
        timeout_s=timeout_s,
        expires_in_s=expires_in_s,
        now_s=wall,
    )
    return cls(
        rest,
        symbol="XBTUSD",
        instrument=XBTUSD,
        risk=risk or trade_risk(),
        stake_contracts=100,
        session=session,
        journal=Journal(journal, session),
        **kw,
    )


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


def redumped_decisions(path: Path) -> list[str]:
    """Each line of a --decisions-out file read back as a `live.decision.Decision` and
    written again as the sink writes it (equal to the file's lines when the record
    round-trips byte for byte)."""
    import json

    from live.decision import Decision

    lines = path.read_text(encoding="utf-8").splitlines()
    return [
        json.dumps(Decision.from_json(json.loads(s)).to_json(), separators=(",", ":"))
        for s in lines
    ]
