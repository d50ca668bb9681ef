"""Clocks: the only place the wall clock is read. Timestamps are int64 ns UTC."""

from __future__ import annotations

import calendar
import time
from typing import Protocol

NS_PER_S = 1_000_000_000
NS_PER_MS = 1_000_000
NS_PER_HOUR = 3600 * NS_PER_S
NS_PER_DAY = 86_400 * NS_PER_S


class Clock(Protocol):
    def now_ns(self) -> int: ...


class SystemClock:
    """Wall clock, int64 ns since the Unix epoch (UTC)."""

    def now_ns(self) -> int:
        return time.time_ns()


def day_start_ns(ts_ns: int) -> int:
    """Start (00:00 UTC) of the day containing `ts_ns`."""
    return ts_ns - ts_ns % NS_PER_DAY


def iso_day(ts_ns: int) -> str:
    """`YYYY-MM-DD` (UTC) of `ts_ns`."""
    return time.strftime("%Y-%m-%d", time.gmtime(ts_ns // NS_PER_S))


def iso_ms(ts_ns: int) -> str:
    """BitMEX timestamp text (`2021-07-22T22:36:09.757Z`, millisecond precision) of ns UTC."""
    ms = (ts_ns % NS_PER_S) // NS_PER_MS
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts_ns // NS_PER_S)) + f".{ms:03d}Z"


def parse_day(day: str) -> int:
    """ns at 00:00 UTC of `YYYY-MM-DD`."""
    return calendar.timegm(time.strptime(day, "%Y-%m-%d")) * NS_PER_S
