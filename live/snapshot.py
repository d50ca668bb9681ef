"""When may the live loop run inference? Pure state machine over the times it is given.

Inference is allowed on a bar only when all three hold:
1. the book is populated: the bar's `book_ok` (both sides present, not crossed, no desync);
2. timestamps are sane: receive times never go backwards, an exchange timestamp is within
   `max_skew_ns` of its receive time, and the last message is younger than `stale_after_ns`;
3. the feature warm-up is complete: the feature stream is past its look-back and the last
   `window` bars were all complete (a full observation window of valid rows).

Any violation resets the count of valid bars, so after a gap, a reconnect or a desync the
loop waits for a full window again. `reason` says why inference is blocked.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Readiness:
    ok: bool
    reason: str


class SnapshotManager:
    """Readiness gate (see module docstring). Times are int ns UTC."""

    def __init__(self, window: int, stale_after_ns: int, max_skew_ns: int) -> None:
        if window < 1:
            raise ValueError("window must be >= 1")
        self.window = window
        self.stale_after_ns = int(stale_after_ns)
        self.max_skew_ns = int(max_skew_ns)
        self.valid_bars = 0
        self.last_recv_ns = -1
        self.blocked_reason = "no data yet"
        self.violations = 0

    def reset(self, reason: str) -> None:
        """Forget the valid-bar run (reconnect, desync, resubscribe)."""
        self.valid_bars = 0
        self.blocked_reason = reason

    def on_message(self, ts_recv: int, ts_exchange: int | None = None) -> bool:
        """Record a received message; False (and a reset) when its times are not sane."""
        if self.last_recv_ns >= 0 and ts_recv < self.last_recv_ns:
            self.violations += 1
            self.reset(f"receive time went backwards by {self.last_recv_ns - ts_recv} ns")
            return False
        self.last_recv_ns = ts_recv
        if ts_exchange is not None and abs(ts_recv - ts_exchange) > self.max_skew_ns:
            self.violations += 1
            self.reset(
                f"exchange time {ts_exchange} is {(ts_recv - ts_exchange) / 1e9:+.3f} s from receive time"
            )
            return False
        return True

    def is_stale(self, now_ns: int) -> bool:
        """True when no message arrived within `stale_after_ns` (or none at all)."""
        return self.last_recv_ns < 0 or now_ns - self.last_recv_ns > self.stale_after_ns

    def on_bar(self, bar_ts: int, book_ok: bool, warmup: bool, features_finite: bool) -> Readiness:
        """Update with a closed bar; whether inference may run on it."""
        if self.is_stale(bar_ts):
            self.reset("stale data: no message within the staleness limit")
        elif not book_ok:
            self.reset("book not populated or not consistent")
        elif warmup:
            self.reset("feature warm-up")
        elif not features_finite:
            self.reset("non-finite feature value")
        else:
            self.valid_bars += 1
            if self.valid_bars >= self.window:
                self.blocked_reason = ""
                return Readiness(True, "")
            return Readiness(False, f"filling observation window {self.valid_bars}/{self.window}")
        return Readiness(False, self.blocked_reason)
