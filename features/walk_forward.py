"""Walk-forward fold generation from `WalkForwardConfig` and the data's time span. Pure.

Times are int64 ns; every window is half-open `[start_ns, end_ns)` on the bar close
time `ts`. Hours in the config count from `origin_ns` (the first event day's 00:00 UTC).

Fold k (k = 0 .. n_folds-1), with s = origin + start_hours:
    train       [s + k*step (sliding) | s (expanding),  s + k*step + train)
    embargo     train_end .. train_end + embargo
    validation  [.., + validation)  then another embargo   (only when validation_hours > 0)
    test        [.., + test)
The embargo (>= the longest feature look-back, enforced by FeaturesConfig) keeps every
test row's look-back out of the train window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import numpy as np

from core.clock import NS_PER_HOUR, NS_PER_S
from core.config.features import WalkForwardConfig

SliceKind = Literal["train", "validation", "test", "stress"]


class WalkForwardError(ValueError):
    """The configured folds do not fit in the data."""


@dataclass(frozen=True)
class Window:
    """A slice window `[start_ns, end_ns)` with its id and kind."""

    slice_id: str
    kind: SliceKind
    fold: int | None
    start_ns: int
    end_ns: int

    def contains(self, ts: int) -> bool:
        return self.start_ns <= ts < self.end_ns


@dataclass(frozen=True)
class Fold:
    fold: int
    train: Window
    validation: Window | None
    test: Window


def _hours(h: float) -> int:
    return round(h * NS_PER_HOUR)


def make_folds(cfg: WalkForwardConfig, origin_ns: int, data_end_ns: int) -> list[Fold]:
    """All `cfg.n_folds` folds. Raises WalkForwardError when a fold ends after
    `data_end_ns` (exclusive end of the data) or starts before `origin_ns`."""
    s = origin_ns + _hours(cfg.start_hours)
    step, train, val, test = (
        _hours(cfg.step_hours),
        _hours(cfg.train_hours),
        _hours(cfg.validation_hours),
        _hours(cfg.test_hours),
    )
    embargo = round(cfg.embargo_s * NS_PER_S)
    folds: list[Fold] = []
    for k in range(cfg.n_folds):
        train_start = s + k * step if cfg.mode == "sliding" else s
        train_end = s + k * step + train
        t = train_end + embargo
        validation = None
        if val > 0:
            validation = Window(f"fold{k:02d}-validation", "validation", k, t, t + val)
            t = t + val + embargo
        fold = Fold(
            fold=k,
            train=Window(f"fold{k:02d}-train", "train", k, train_start, train_end),
            validation=validation,
            test=Window(f"fold{k:02d}-test", "test", k, t, t + test),
        )
        if fold.test.end_ns > data_end_ns:
            raise WalkForwardError(
                f"fold {k} needs data until {fold.test.end_ns} ns but the data ends at "
                f"{data_end_ns} ns: shorten train/test/step or lower n_folds"
            )
        folds.append(fold)
    return folds


def make_stress_windows(cfg: WalkForwardConfig, origin_ns: int, data_end_ns: int) -> list[Window]:
    """Stress windows `(a_hours, b_hours)` from the origin; raises WalkForwardError when
    one is empty or ends after the data."""
    out: list[Window] = []
    for i, (a, b) in enumerate(cfg.stress_windows):
        start, end = origin_ns + _hours(a), origin_ns + _hours(b)
        if end <= start:
            raise WalkForwardError(f"stress window {i} ({a}, {b}) is empty")
        if start >= data_end_ns:
            raise WalkForwardError(f"stress window {i} ({a}, {b}) h starts after the data ends")
        out.append(Window(f"stress{i:02d}", "stress", None, start, min(end, data_end_ns)))
    return out


def all_windows(folds: list[Fold], stress: list[Window]) -> list[Window]:
    """Every window in publishing order: per fold train, validation, test; then stress."""
    out: list[Window] = []
    for f in folds:
        out.append(f.train)
        if f.validation is not None:
            out.append(f.validation)
        out.append(f.test)
    return out + stress


def quiet_spans(
    ts: np.ndarray, quiet: np.ndarray, interval_ns: int, min_ns: int
) -> list[tuple[int, int]]:
    """Stretches `(start_ns, end_ns]` of consecutive quiet bars (no book event, no trade)
    lasting at least `min_ns`. `ts` are bar close times on a complete grid; bar k covers
    `(ts_k - interval, ts_k]`. Empty when `min_ns` is 0."""
    if min_ns <= 0 or ts.size == 0:
        return []
    q = np.concatenate(([False], np.asarray(quiet, dtype=bool), [False]))
    edges = np.flatnonzero(q[1:] != q[:-1])  # run starts and ends, alternating
    starts = ts[edges[::2]] - interval_ns
    ends = ts[edges[1::2] - 1]
    keep = ends - starts >= min_ns  # (a live market has many short quiet runs)
    return [(int(a), int(b)) for a, b in zip(starts[keep], ends[keep], strict=True)]


def windows_over_gaps(windows: Sequence[Window], spans: Sequence[tuple[int, int]]) -> list[str]:
    """One message per window with rows inside a quiet span `(start_ns, end_ns]`."""
    out = []
    for w in windows:
        hit = [(a, b) for a, b in spans if a < w.end_ns and b >= w.start_ns]
        if hit:
            gaps = ", ".join(
                f"{_utc(a)} .. {_utc(b)} ({(b - a) / NS_PER_HOUR:.2f} h)" for a, b in hit
            )
            out.append(f"{w.slice_id} [{_utc(w.start_ns)}, {_utc(w.end_ns)}) meets {gaps}")
    return out


def after_gaps(ts: np.ndarray, spans: Sequence[tuple[int, int]], lookback_ns: int) -> np.ndarray:
    """Mask of rows inside a quiet span or whose look-back `(ts - lookback, ts]` meets one:
    their look-back is not filled with real data (warm-up, like after a desync)."""
    out = np.zeros(ts.shape[0], dtype=bool)
    for a, b in spans:
        out |= (ts > a) & (ts < b + lookback_ns)
    return out


def _utc(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
