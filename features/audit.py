"""Feature audits users run on their own data: batch/streaming parity and look-ahead.

parity     events -> `sample_bars` -> `compute_features` (batch, polars) against
           events -> `BarSampler` -> `FeatureStream` (streaming, the live loop's path),
           fed one message at a time and advanced at every bar close. Reports the worst
           absolute and relative difference per feature; passes when every relative
           difference is within the bound (default 1e-12; the design makes them 0).
lookahead  events truncated at K bar closes -> bars -> features; every row at or before
           the cut must equal (bit for bit) the same row computed on all events.

Adapter: reads event partitions (paths to a data folder, an events/<symbol> folder or
day partition folders). Comparisons are pure functions of arrays.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict

from core import schema as S
from core.config.features import FeatureSpec
from core.paths import DataLayout
from features.compute import compute_features
from features.stream import FeatureStream
from ingest.events import read_events

DEFAULT_BOUND = 1e-12
MANIFEST = "manifest.json"


class AuditInputError(ValueError):
    """EVENTS paths that hold no event partitions, or partitions of several symbols."""


# ---------------------------------------------------------------- inputs
def resolve_partitions(paths: Sequence[str | Path]) -> tuple[DataLayout, str, list[str]]:
    """(layout, symbol, days) of the event partitions under `paths`.

    Each path is a data folder (with events/<symbol>/<day>/), an events/<symbol>
    folder, or a day partition folder (holding manifest.json). Raises AuditInputError
    when nothing is found or partitions span several data folders or symbols.
    """
    found: set[tuple[Path, str, str]] = set()
    for raw in paths:
        p = Path(raw).resolve()
        if not p.exists():
            raise AuditInputError(f"{raw}: no such file or folder")
        if (p / MANIFEST).is_file():
            days = [p]
        elif (p / "events").is_dir():
            days = [m.parent for m in sorted((p / "events").glob(f"*/*/{MANIFEST}"))]
        else:
            days = [m.parent for m in sorted(p.glob(f"*/{MANIFEST}"))]
        for d in days:
            found.add((d.parents[2], d.parent.name, d.name))
    if not found:
        raise AuditInputError(
            f"no event partitions (…/events/<symbol>/<day>/{MANIFEST}) under {list(paths)}"
        )
    roots = {r for r, _, _ in found}
    symbols = {s for _, s, _ in found}
    if len(roots) > 1 or len(symbols) > 1:
        raise AuditInputError(f"partitions of several data folders or symbols: {sorted(symbols)}")
    return DataLayout(roots.pop()), symbols.pop(), sorted(d for _, _, d in found)


def load_events(paths: Sequence[str | Path]) -> tuple[pl.DataFrame, pl.DataFrame, str]:
    """(book, trades, symbol) of the partitions under `paths` (see resolve_partitions)."""
    layout, symbol, days = resolve_partitions(paths)
    book, trades = read_events(layout, symbol, days)
    return book, trades, symbol


# ---------------------------------------------------------------- streaming path
def stream_features(
    book: pl.DataFrame, trades: pl.DataFrame, spec: FeatureSpec
) -> tuple[np.ndarray, np.ndarray, list[bool]]:
    """The live loop's path: BarSampler fed message by message, advanced at every bar
    close, each bar into FeatureStream. Returns (bar ts, features (rows, F), warm-up)."""
    # slow: book.sampler loads numba (~0.15 s), needed only when bars are sampled
    from book.sampler import BarSampler

    sampler = BarSampler(spec)
    stream = FeatureStream(spec)
    dt = spec.interval_ns
    b = book.select(S.TS_RECV, S.SIDE, S.PRICE_TICKS, S.SIZE, S.IS_SNAPSHOT).to_numpy()
    t = trades.select(S.TS_RECV, S.SIDE, S.PRICE_TICKS, S.SIZE).to_numpy()
    b_ts = b[:, 0].astype(np.int64) if len(b) else np.zeros(0, np.int64)
    t_ts = t[:, 0].astype(np.int64) if len(t) else np.zeros(0, np.int64)
    if not len(b_ts) and not len(t_ts):
        return np.zeros(0, np.int64), np.zeros((0, len(spec.names))), []
    first = min(int(x[0]) for x in (b_ts, t_ts) if len(x))
    last = max(int(x[-1]) for x in (b_ts, t_ts) if len(x))
    ts_out: list[int] = []
    rows: list[np.ndarray] = []
    warm: list[bool] = []
    bi = ti = 0
    close = (first // dt + 1) * dt
    end = -(-last // dt) * dt
    while close <= end:
        bj = int(np.searchsorted(b_ts, close, side="right"))
        tj = int(np.searchsorted(t_ts, close, side="right"))
        for r in b[bi:bj]:
            sampler.on_book(int(r[0]), int(r[1]), int(r[2]), int(r[3]), bool(r[4]))
        for r in t[ti:tj]:
            sampler.on_trade(int(r[0]), int(r[1]), int(r[2]), int(r[3]))
        bi, ti = bj, tj
        for bar in sampler.advance(close):
            rows.append(stream.update(bar))
            warm.append(stream.warmup)
            ts_out.append(int(bar[S.TS]))
        close += dt
    feats = np.stack(rows) if rows else np.zeros((0, len(spec.names)))
    return np.asarray(ts_out, dtype=np.int64), feats, warm


Compute = Callable[[pl.LazyFrame, FeatureSpec], pl.LazyFrame]


def batch_features(
    book: pl.DataFrame, trades: pl.DataFrame, spec: FeatureSpec, compute: Compute = compute_features
) -> pl.DataFrame:
    """events -> `sample_bars` -> `compute` (default `compute_features`), collected."""
    # slow: book.sampler loads numba (~0.15 s), needed only when bars are sampled
    from book.sampler import sample_bars

    return compute(sample_bars(book, trades, spec).lazy(), spec).collect()


class _Report(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ColumnDiff(_Report):
    """Two columns compared: max absolute and relative difference, and how many
    elements are not bit-identical."""

    max_abs: float
    max_rel: float
    not_bit_equal: int


class ParityReport(_Report):
    """`chappie audit parity`: batch vs streaming features on the same events, per
    feature; `ok` is False when `problems` lists anything. Its dump is the `--json`."""

    check: Literal["parity"] = "parity"
    spec_hash: str
    bars: int
    bound: float
    worst_rel: float
    bit_equal: bool
    features: dict[str, ColumnDiff]
    problems: list[str]
    ok: bool


class LookaheadReport(_Report):
    """`chappie audit lookahead`: rows that differ when the events are cut at each of
    `cuts` bar closes, per feature; `sees_future` the features with any. Its dump is
    the `--json`."""

    check: Literal["lookahead"] = "lookahead"
    spec_hash: str
    bars: int
    cuts: list[int]
    features: dict[str, int]
    sees_future: list[str]
    ok: bool


# ---------------------------------------------------------------- comparisons (pure)
def compare_columns(a: np.ndarray, b: np.ndarray, names: Sequence[str]) -> dict[str, ColumnDiff]:
    """Per column: max absolute and relative difference and the count of elements that
    are not bit-identical (NaN equals NaN; NaN against a number is an infinite diff)."""
    out: dict[str, ColumnDiff] = {}
    for j, name in enumerate(names):
        x, y = a[:, j], b[:, j]
        both_nan = np.isnan(x) & np.isnan(y)
        one_nan = np.isnan(x) ^ np.isnan(y)
        with np.errstate(invalid="ignore", over="ignore"):
            diff = np.where(both_nan, 0.0, np.abs(x - y))
            scale = np.maximum(np.abs(x), np.abs(y))
            rel = np.where(diff == 0, 0.0, diff / np.where(scale == 0, 1.0, scale))
        diff = np.where(one_nan, np.inf, np.nan_to_num(diff, nan=np.inf))
        rel = np.where(one_nan, np.inf, np.nan_to_num(rel, nan=np.inf))
        same = (x.view(np.int64) == y.view(np.int64)) | both_nan
        out[name] = ColumnDiff(
            max_abs=float(diff.max()) if len(diff) else 0.0,
            max_rel=float(rel.max()) if len(rel) else 0.0,
            not_bit_equal=int((~same).sum()),
        )
    return out


def parity_report(
    book: pl.DataFrame, trades: pl.DataFrame, spec: FeatureSpec, bound: float = DEFAULT_BOUND
) -> ParityReport:
    """Batch vs streaming on the same events (see module doc). `ok` is False when a
    relative difference exceeds `bound`, bar times differ, or warm-up flags differ."""
    batch = batch_features(book, trades, spec)
    s_ts, s_feats, s_warm = stream_features(book, trades, spec)
    b_ts = batch[S.TS].to_numpy()
    problems: list[str] = []
    n = min(len(b_ts), len(s_ts))
    if len(b_ts) != len(s_ts) or not np.array_equal(b_ts[:n], s_ts[:n]):
        problems.append(f"bar times differ: batch {len(b_ts)} bars, streaming {len(s_ts)} bars")
    b_feats = batch.select(spec.names).to_numpy()[:n]
    features = compare_columns(b_feats, s_feats[:n], spec.names)
    warm_diff = int(
        np.sum(np.asarray(batch[S.WARMUP].to_list()[:n]) != np.asarray(s_warm[:n], dtype=bool))
    )
    if warm_diff:
        problems.append(f"warm-up flags differ on {warm_diff} bars")
    worst = max((f.max_rel for f in features.values()), default=0.0)
    beyond = [k for k, f in features.items() if f.max_rel > bound]
    if beyond:
        problems.append(f"beyond the bound {bound:g}: {beyond}")
    return ParityReport(
        spec_hash=spec.spec_hash,
        bars=int(n),
        bound=bound,
        worst_rel=worst,
        bit_equal=all(f.not_bit_equal == 0 for f in features.values()),
        features=features,
        problems=problems,
        ok=not problems,
    )


def cut_points(n_bars: int, cuts: int) -> list[int]:
    """`cuts` distinct bar counts in [1, n_bars], spread evenly (always including 1)."""
    if n_bars <= 0:
        return []
    return sorted({max(1, round(n_bars * (i + 1) / cuts)) for i in range(cuts)} | {1})


def lookahead_report(
    book: pl.DataFrame,
    trades: pl.DataFrame,
    spec: FeatureSpec,
    cuts: int = 12,
    compute: Compute = compute_features,
) -> LookaheadReport:
    """Truncate the *events* at bar closes and recompute: every row the truncated
    events give (bars closing at or before the cut) must be identical to the same row
    computed on all events. `features` counts differing rows per feature over all
    cuts; `ok` is False on any difference. `compute` is the feature function audited."""
    full = batch_features(book, trades, spec, compute)
    ts = full[S.TS].to_numpy()
    counts = {n: 0 for n in spec.names}
    checked: list[int] = []
    for k in cut_points(len(ts), cuts):
        close = int(ts[k - 1])
        part = batch_features(
            book.filter(pl.col(S.TS_RECV) <= close),
            trades.filter(pl.col(S.TS_RECV) <= close),
            spec,
            compute,
        ).filter(pl.col(S.TS) <= close)
        # bars end at the last event: a quiet tail gives fewer rows, never other times
        head = full.head(part.height)
        if part.height > k or not np.array_equal(part[S.TS].to_numpy(), head[S.TS].to_numpy()):
            raise AssertionError(f"truncated events at {close} gave bars at other times")
        a, b = head.select(spec.names).to_numpy(), part.select(spec.names).to_numpy()
        same = (a.view(np.int64) == b.view(np.int64)) | (np.isnan(a) & np.isnan(b))
        for j, name in enumerate(spec.names):
            counts[name] += int((~same[:, j]).sum())
        checked.append(k)
    bad = sorted(n for n, c in counts.items() if c)
    return LookaheadReport(
        spec_hash=spec.spec_hash,
        bars=len(ts),
        cuts=checked,
        features=counts,
        sees_future=bad,
        ok=not bad,
    )
