"""Market audit: the statistics that matter to a maker strategy, on any canonical events.

Pure: frames in, one typed record out (`market_report` -> `MarketReport`, whose
`to_json` is `chappie audit market --json`); the CLI adapter
(`flows/cli_audit_market.py`) reads partitions and prints. Every book statistic comes
from replaying the deltas through the ONE order-book state machine
(`book.order_book.apply_message_kernel`), message by message, recording the touch after
each message. Clock: ``ts_recv`` throughout (what an agent could know).

Definitions (units in the keys):
- *state*: the book after a complete message (a run of equal ``ts_recv``). Only states
  with both sides present and no desync count. A state holds until the next message;
  statistics over states are time-weighted by that holding time, and a gap longer than
  ``max_gap_s`` (a hole in the data, e.g. hours a synthetic day does not generate)
  ends a *segment*: no holding time, grid step or markout crosses it.
- *queue at the touch*: best bid size and best ask size (both sides pooled), contracts.
- *spread*: best ask - best bid, ticks.
- *message mix*: every non-snapshot delta classified against the book it applies to:
  ``insert`` (new level, size > 0), ``update`` (existing level, size > 0), ``delete``
  (size 0). A level touched twice in one message is judged against its earlier row.
- *market order*: consecutive trades with the same ``ts_recv`` and taker side; *levels
  swept* = its distinct prices; its size = the sum of its prints.
- *mid volatility at h*: std of ``ln(mid)`` differences on an h-second grid inside each
  segment (bps), and of mid differences (ticks).
- *passive-fill markout at h*: a resting order at the touch is assumed filled by every
  market order (it prints at the touch first). Markout = s * (mid(t + h) - mid(t-)) with
  s = +1 for the resting bid a taker sell fills, -1 for the resting ask a taker buy
  fills, mid(t-) the mid of the last state strictly before the order's ``ts_recv`` and
  mid(t + h) of the last state at or before t + h. Negative = adverse selection (the
  market moved against the maker). Also given against the fill price (spread earned
  included): s * (mid(t + h) - touch price).
- *edge*: Pearson correlation of a named feature (``features.compute``, 1 s bars of the
  default `FeatureSpec`) with the forward mid move over h seconds, warm-up rows out,
  per day partition then pooled.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict

from book.order_book import ST_DESYNC, ST_NA, ST_NB, ST_SIZE, apply_message_kernel
from book.sampler import sample_bars
from core import schema as S
from core.clock import NS_PER_DAY, NS_PER_S
from core.config.features import FeatureSpec
from core.jsontypes import JsonObject
from core.numba_cache import njit
from features.compute import compute_features

VOL_INTERVALS_S: tuple[int, ...] = (1, 60, 3600)
MARKOUT_HORIZONS_S: tuple[int, ...] = (1, 10, 60)
EDGE_HORIZONS_S: tuple[int, ...] = (10, 30, 60)
DEFAULT_MAX_GAP_S = 300.0  # as WalkForwardConfig.max_quiet_s: longer is a hole, not a lull
_SAME_MESSAGE_LOOKBACK = 64  # rows scanned back for a level touched twice in one message


# ---------------------------------------------------------------- replay (numba)
@njit(cache=True)
def _has_level(book: np.ndarray, st: np.ndarray, side: int, price: int) -> bool:
    if side > 0:
        n = st[ST_NB]
        k = np.searchsorted(book[0, :n], price)
        return k < n and book[0, k] == price
    n = st[ST_NA]
    k = np.searchsorted(book[2, :n], -price)
    return k < n and book[2, k] == -price


@njit(cache=True)
def _replay_touch(
    ts: np.ndarray, side: np.ndarray, price: np.ndarray, size: np.ndarray, snap: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Replay sorted deltas message by message. Returns (ts per message, touch per
    message as int64 (m, 5): bid_px, bid_sz, ask_px, ask_sz, ok; mix [insert, update,
    delete])."""
    n = ts.shape[0]
    book = np.zeros((4, 256), dtype=np.int64)
    st = np.zeros(ST_SIZE, dtype=np.int64)
    st[12] = -1  # ST_LASTTR, as book.order_book.new_state
    st[18] = -1  # ST_LAST_TS
    out_ts = np.empty(n, dtype=np.int64)
    touch = np.zeros((n, 5), dtype=np.int64)
    mix = np.zeros(3, dtype=np.int64)
    i = 0
    m = 0
    while i < n:
        j = i + 1
        while j < n and ts[j] == ts[i]:
            j += 1
        for k in range(i, j):
            if snap[k]:
                continue
            if size[k] == 0:
                mix[2] += 1
                continue
            known = -1
            lo = max(i, k - _SAME_MESSAGE_LOOKBACK)
            for r in range(k - 1, lo - 1, -1):
                if side[r] == side[k] and price[r] == price[k]:
                    known = 1 if size[r] > 0 else 0
                    break
            exists = _has_level(book, st, side[k], price[k]) if known < 0 else known == 1
            if exists:
                mix[1] += 1
            else:
                mix[0] += 1
        book = apply_message_kernel(book, st, side, price, size, snap, i, j)
        nb = st[ST_NB]
        na = st[ST_NA]
        out_ts[m] = ts[i]
        if nb > 0 and na > 0:
            touch[m, 0] = book[0, nb - 1]
            touch[m, 1] = book[1, nb - 1]
            touch[m, 2] = -book[2, na - 1]
            touch[m, 3] = book[3, na - 1]
            touch[m, 4] = 1 if st[ST_DESYNC] == 0 else 0
        m += 1
        i = j
    return out_ts[:m], touch[:m], mix


# ---------------------------------------------------------------- building blocks
class TouchSeries:
    """The touch after every good message: ts (ns), bid/ask price (ticks) and size
    (contracts), the holding time of each state (ns, 0 across a gap) and segment ids."""

    def __init__(
        self,
        ts: np.ndarray,
        touch: np.ndarray,
        mix: np.ndarray,
        max_gap_ns: int,
    ) -> None:
        good = touch[:, 4] == 1
        self.ts = ts[good]
        self.bid_px, self.bid_sz = touch[good, 0], touch[good, 1]
        self.ask_px, self.ask_sz = touch[good, 2], touch[good, 3]
        self.mix = {"insert": int(mix[0]), "update": int(mix[1]), "delete": int(mix[2])}
        self.n_messages = int(ts.shape[0])
        # holding time: until the next message of any kind (a bad state ends a good one)
        nxt = np.empty_like(ts)
        nxt[:-1] = ts[1:]
        if ts.shape[0]:
            nxt[-1] = ts[-1]
        hold = (nxt - ts)[good]
        self.max_gap_ns = max_gap_ns
        gap = hold > max_gap_ns
        self.hold = np.where(gap, 0, hold)
        # a new segment after a gap or a bad state
        brk = np.zeros(self.ts.shape[0], dtype=bool)
        if self.ts.shape[0]:
            idx = np.flatnonzero(good)
            brk[1:] = (np.diff(idx) > 1) | gap[:-1]
        self.segment = np.cumsum(brk)

    @property
    def mid2(self) -> np.ndarray:
        """2 * mid in ticks (exact int64)."""
        return self.bid_px + self.ask_px

    def segments(self) -> list[tuple[int, int]]:
        """(first, last) state index of each segment."""
        if not self.ts.shape[0]:
            return []
        starts = np.flatnonzero(np.r_[True, np.diff(self.segment) > 0])
        ends = np.r_[starts[1:] - 1, self.ts.shape[0] - 1]
        return list(zip(starts.tolist(), ends.tolist(), strict=True))

    def seconds(self) -> float:
        """Covered time: the sum of segment spans, s."""
        return float(sum(int(self.ts[b] - self.ts[a]) for a, b in self.segments()) / NS_PER_S)


def touch_series(book: pl.DataFrame, max_gap_s: float = DEFAULT_MAX_GAP_S) -> TouchSeries:
    """Replay canonical book deltas (sorted by ts_recv) through the one book.
    Raises ValueError when ts_recv is not sorted."""
    ts = book[S.TS_RECV].to_numpy().astype(np.int64)
    if ts.shape[0] > 1 and np.any(np.diff(ts) < 0):
        raise ValueError("book deltas must be sorted by ts_recv")
    out_ts, touch, mix = _replay_touch(
        ts,
        book[S.SIDE].to_numpy().astype(np.int64),
        book[S.PRICE_TICKS].to_numpy().astype(np.int64),
        book[S.SIZE].to_numpy().astype(np.int64),
        book[S.IS_SNAPSHOT].to_numpy().astype(np.bool_),
    )
    return TouchSeries(out_ts, touch, mix, int(max_gap_s * NS_PER_S))


def weighted_quantiles(x: np.ndarray, w: np.ndarray, qs: Sequence[float]) -> list[float | None]:
    """Quantiles of x under weights w (the smallest x whose cumulative weight reaches
    q of the total). None when the total weight is 0."""
    total = float(w.sum())
    if total <= 0:
        return [None] * len(qs)
    order = np.argsort(x, kind="stable")
    xs = x[order]
    cw = np.cumsum(w[order].astype(np.float64))
    at = np.minimum(np.searchsorted(cw, np.asarray(qs, dtype=np.float64) * total), len(cw) - 1)
    return [float(v) for v in xs[at]]


def _nan_none(x: float) -> float | None:
    return None if not np.isfinite(x) else float(x)


class _Figures(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TouchQueue(_Figures):
    """Time-weighted touch queue (bid and ask pooled), contracts; None: no state."""

    p10: float | None
    median: float | None
    p90: float | None
    mean: float | None
    heavy_side_median: float | None
    light_side_median: float | None


class SpreadFigures(_Figures):
    """Time-weighted spread, ticks, and the share of time at one tick."""

    median: float | None
    mean: float | None
    p90: float | None
    share_1_tick: float | None


class MessageMix(_Figures):
    """Non-snapshot deltas by kind: counts, shares (None: no delta) and their total."""

    insert: int
    update: int
    delete: int
    insert_share: float | None
    update_share: float | None
    delete_share: float | None
    deltas: int


class Quantiles(_Figures):
    """Count, mean and quantiles of a sample (None: empty)."""

    n: int
    mean: float | None
    p10: float | None
    median: float | None
    p90: float | None
    p99: float | None


class TradeSizes(_Figures):
    """Trade sizes, contracts: per print and per market order."""

    per_print: Quantiles
    per_market_order: Quantiles


class LevelsSwept(_Figures):
    """Levels swept per market order; `counts` of 1, 2, 3 and 4+ levels."""

    n: int
    mean: float | None
    max: int | None
    share_multi: float | None
    counts: dict[str, int]


class MidVolatility(_Figures):
    """Std of mid changes on one grid: `bps` (of ln mid) and `ticks`; `n` grid steps."""

    n: int
    bps: float | None
    ticks: float | None


class Markout(_Figures):
    """Passive-fill markouts at one horizon: ticks (mean, standard error), bps of the
    pre-trade mid, and against the fill price (ticks)."""

    n: int
    mean_ticks: float | None
    se_ticks: float | None
    mean_bps: float | None
    vs_fill_ticks: float | None


class EdgeAtHorizon(_Figures):
    """Correlation with the forward mid move at one horizon, and its standard error
    over non-overlapping moves."""

    n: int
    corr: float | None
    se: float | None


class EdgeCorrelation(_Figures):
    """`edge_correlation`: a feature on `bar_s`-second bars, by horizon ("10s", ...)."""

    feature: str
    bar_s: float
    horizons: dict[str, EdgeAtHorizon]


class EventRates(_Figures):
    """Events per second of covered time (None: no covered time)."""

    book_deltas: float | None
    messages: float | None
    trades: float | None
    market_orders: float | None


class MarketReport(_Figures):
    """Every statistic of the module doc on one event set. `market`: what is known of
    the events (source, symbol, days; a synthetic market's generator metadata and
    planted edge), passed through as given; `edge` only when asked for. `to_json` is
    the `chappie audit market --json` object."""

    check: Literal["market"] = "market"
    seconds: float
    mid_ticks_median: float | None
    tick_bps: float | None
    rates_per_s: EventRates
    queue_at_touch: TouchQueue
    spread_ticks: SpreadFigures
    message_mix: MessageMix
    trade_size: TradeSizes
    levels_swept: LevelsSwept
    mid_volatility: dict[str, MidVolatility]  # by grid ("1s", "60s", ...)
    markout: dict[str, Markout]  # by horizon ("1s", "10s", ...)
    market: JsonObject | None
    edge: EdgeCorrelation | None = None

    def to_json(self) -> JsonObject:
        return self.model_dump(mode="json", exclude={"edge"} if self.edge is None else set())

    def planted_edge(self) -> JsonObject | None:
        """The planted edge `market` records (a synthetic market's), or None."""
        planted = (self.market or {}).get("edge")
        return planted if isinstance(planted, dict) else None


def queue_at_touch(ts: TouchSeries) -> TouchQueue:
    """Time-weighted distribution of the touch queue (bid and ask pooled), contracts,
    and the medians of the heavier and the lighter of the two sides."""
    x = np.concatenate([ts.bid_sz, ts.ask_sz])
    w = np.concatenate([ts.hold, ts.hold])
    p10, p50, p90 = weighted_quantiles(x, w, (0.1, 0.5, 0.9))
    mean = float((x * w).sum() / w.sum()) if w.sum() > 0 else None
    (heavy,) = weighted_quantiles(np.maximum(ts.bid_sz, ts.ask_sz), ts.hold, (0.5,))
    (light,) = weighted_quantiles(np.minimum(ts.bid_sz, ts.ask_sz), ts.hold, (0.5,))
    return TouchQueue(
        p10=p10,
        median=p50,
        p90=p90,
        mean=mean,
        heavy_side_median=heavy,
        light_side_median=light,
    )


def spread_ticks(ts: TouchSeries) -> SpreadFigures:
    """Time-weighted spread distribution, ticks, and the share of time at one tick."""
    x = ts.ask_px - ts.bid_px
    w = ts.hold
    if w.sum() <= 0:
        return SpreadFigures(median=None, mean=None, p90=None, share_1_tick=None)
    p50, p90 = weighted_quantiles(x, w, (0.5, 0.9))
    return SpreadFigures(
        median=p50,
        mean=float((x * w).sum() / w.sum()),
        p90=p90,
        share_1_tick=float(w[x == 1].sum() / w.sum()),
    )


def message_mix(ts: TouchSeries) -> MessageMix:
    """Counts and shares of insert / update / delete among non-snapshot deltas."""
    total = sum(ts.mix.values())
    shares = {f"{k}_share": (v / total if total else None) for k, v in ts.mix.items()}
    return MessageMix.model_validate({**ts.mix, **shares, "deltas": total})


def market_orders(trades: pl.DataFrame) -> pl.DataFrame:
    """One row per market order (consecutive trades, equal ts_recv and side):
    ts_recv, side, levels (distinct prices), size (contracts), touch_ticks (the first
    price it printed at: the best for its side), prints."""
    if trades.height == 0:
        return pl.DataFrame(
            schema={
                S.TS_RECV: pl.Int64,
                S.SIDE: pl.Int64,
                "levels": pl.Int64,
                "size": pl.Int64,
                "touch_ticks": pl.Int64,
                "prints": pl.Int64,
            }
        )
    key = (
        (pl.col(S.TS_RECV) != pl.col(S.TS_RECV).shift(1))
        | (pl.col(S.SIDE) != pl.col(S.SIDE).shift(1))
    ).fill_null(True)
    side = pl.col(S.SIDE).first().cast(pl.Int64)
    return (
        trades.with_columns(key.cum_sum().alias("_mo"))
        .group_by("_mo", maintain_order=True)
        .agg(
            pl.col(S.TS_RECV).first(),
            side.alias(S.SIDE),
            pl.col(S.PRICE_TICKS).n_unique().cast(pl.Int64).alias("levels"),
            pl.col(S.SIZE).sum().cast(pl.Int64).alias("size"),
            pl.when(side > 0)
            .then(pl.col(S.PRICE_TICKS).min())
            .otherwise(pl.col(S.PRICE_TICKS).max())
            .cast(pl.Int64)
            .alias("touch_ticks"),
            pl.len().cast(pl.Int64).alias("prints"),
        )
        .drop("_mo")
    )


def _quantiles(x: np.ndarray) -> Quantiles:
    if x.shape[0] == 0:
        return Quantiles(n=0, mean=None, p10=None, median=None, p90=None, p99=None)
    q = np.quantile(x, (0.1, 0.5, 0.9, 0.99))
    return Quantiles(
        n=int(x.shape[0]),
        mean=float(x.mean()),
        p10=float(q[0]),
        median=float(q[1]),
        p90=float(q[2]),
        p99=float(q[3]),
    )


def trade_sizes(trades: pl.DataFrame, orders: pl.DataFrame) -> TradeSizes:
    """Size distribution (contracts) per print and per market order."""
    return TradeSizes(
        per_print=_quantiles(trades[S.SIZE].to_numpy().astype(np.float64)),
        per_market_order=_quantiles(orders["size"].to_numpy().astype(np.float64)),
    )


def levels_swept(orders: pl.DataFrame) -> LevelsSwept:
    """Levels swept per market order: mean, max, share sweeping more than one level,
    and counts of 1, 2, 3 and 4+ levels."""
    lv = orders["levels"].to_numpy()
    if lv.shape[0] == 0:
        return LevelsSwept(n=0, mean=None, max=None, share_multi=None, counts={})
    return LevelsSwept(
        n=int(lv.shape[0]),
        mean=float(lv.mean()),
        max=int(lv.max()),
        share_multi=float((lv > 1).mean()),
        counts={
            "1": int((lv == 1).sum()),
            "2": int((lv == 2).sum()),
            "3": int((lv == 3).sum()),
            "4+": int((lv >= 4).sum()),
        },
    )


def _state_at(ts: TouchSeries, t: np.ndarray, strict: bool) -> np.ndarray:
    """Index of the last good state before (strict) or at t; -1 when none."""
    return np.searchsorted(ts.ts, t, side="left" if strict else "right") - 1


def mid_volatility(
    ts: TouchSeries, intervals_s: Sequence[int] = VOL_INTERVALS_S
) -> dict[str, MidVolatility]:
    """Std of mid changes on an h-second grid inside each segment: `bps` (of ln mid
    differences, x 1e4) and `ticks` (None below 2 grid steps); `n` grid steps. By grid:
    "1s", "60s", ..."""
    out: dict[str, MidVolatility] = {}
    mid2 = ts.mid2.astype(np.float64)
    for h in intervals_s:
        step = int(h * NS_PER_S)
        d_log: list[np.ndarray] = []
        d_ticks: list[np.ndarray] = []
        for a, b in ts.segments():
            grid = np.arange(int(ts.ts[a]), int(ts.ts[b]) + 1, step, dtype=np.int64)
            if grid.shape[0] < 2:
                continue
            m = mid2[_state_at(ts, grid, strict=False)]
            d_log.append(np.diff(np.log(m)))
            d_ticks.append(np.diff(m) / 2.0)
        dl = np.concatenate(d_log) if d_log else np.zeros(0)
        dt = np.concatenate(d_ticks) if d_ticks else np.zeros(0)
        ok = dl.shape[0] >= 2
        out[f"{h}s"] = MidVolatility(
            n=int(dl.shape[0]),
            bps=float(dl.std(ddof=1) * 1e4) if ok else None,
            ticks=float(dt.std(ddof=1)) if ok else None,
        )
    return out


def passive_markouts(
    ts: TouchSeries, orders: pl.DataFrame, horizons_s: Sequence[int] = MARKOUT_HORIZONS_S
) -> dict[str, Markout]:
    """Markouts of passive fills at the touch (see module doc), per horizon ("1s", ...):
    `n`, mean and standard error in ticks, mean in bps of the pre-trade mid, and the mean
    against the fill price (ticks)."""
    if ts.ts.shape[0] == 0 or orders.height == 0:
        empty = Markout(n=0, mean_ticks=None, se_ticks=None, mean_bps=None, vs_fill_ticks=None)
        return {f"{h}s": empty for h in horizons_s}
    t = orders[S.TS_RECV].to_numpy().astype(np.int64)
    s_rest = -orders[S.SIDE].to_numpy().astype(np.int64)
    px = orders["touch_ticks"].to_numpy().astype(np.int64)
    pre = _state_at(ts, t, strict=True)
    safe = np.maximum(pre, 0)
    # the pre-trade state must be in force at the trade (not across a gap)
    keep = (pre >= 0) & (t - ts.ts[safe] <= ts.max_gap_ns)
    end = ts.ts[[b for _, b in ts.segments()]][ts.segment[safe]]
    mid_pre2 = ts.mid2[safe]
    out: dict[str, Markout] = {}
    for h in horizons_s:
        th = t + int(h * NS_PER_S)
        ok = keep & (th <= end)
        post = _state_at(ts, th, strict=False)
        mid_post2 = ts.mid2[np.maximum(post, 0)]
        mo = s_rest[ok] * (mid_post2[ok] - mid_pre2[ok]) / 2.0
        vs_fill = s_rest[ok] * (mid_post2[ok] / 2.0 - px[ok])
        bps = mo / (mid_pre2[ok] / 2.0) * 1e4
        n = int(mo.shape[0])
        out[f"{h}s"] = Markout(
            n=n,
            mean_ticks=float(mo.mean()) if n else None,
            se_ticks=float(mo.std(ddof=1) / np.sqrt(n)) if n > 1 else None,
            mean_bps=float(bps.mean()) if n else None,
            vs_fill_ticks=float(vs_fill.mean()) if n else None,
        )
    return out


# ---------------------------------------------------------------- edge
def edge_correlation(
    book: pl.DataFrame,
    trades: pl.DataFrame,
    feature: str,
    horizons_s: Sequence[int] = EDGE_HORIZONS_S,
    spec: FeatureSpec | None = None,
) -> EdgeCorrelation:
    """Correlation of `feature` at each bar close with the mid move over the next h
    seconds (ticks), per day partition (ts_recv // day), warm-up rows out, pooled.
    Raises ValueError for a feature the spec does not make."""
    spec = spec or FeatureSpec()
    if feature not in spec.names:
        raise ValueError(f"unknown feature {feature!r}; the spec makes {list(spec.names)}")
    xs: dict[int, list[np.ndarray]] = {h: [] for h in horizons_s}
    ys: dict[int, list[np.ndarray]] = {h: [] for h in horizons_s}
    day_b = book.with_columns((pl.col(S.TS_RECV) // NS_PER_DAY).alias("_d"))
    day_t = trades.with_columns((pl.col(S.TS_RECV) // NS_PER_DAY).alias("_d"))
    for d in day_b["_d"].unique().sort().to_list():
        b = day_b.filter(pl.col("_d") == d).drop("_d")
        tr = day_t.filter(pl.col("_d") == d).drop("_d")
        f = compute_features(sample_bars(b, tr, spec).lazy(), spec).collect()
        x = f[feature].to_numpy()
        mid = f[S.MID_TICKS].to_numpy()
        warm = f[S.WARMUP].to_numpy()
        for h in horizons_s:
            k = max(1, round(h * NS_PER_S / spec.interval_ns))
            if mid.shape[0] <= k:
                continue
            fwd = mid[k:] - mid[:-k]
            xx = x[:-k]
            ok = ~warm[:-k] & np.isfinite(xx) & np.isfinite(fwd)
            xs[h].append(xx[ok])
            ys[h].append(fwd[ok])
    horizons: dict[str, EdgeAtHorizon] = {}
    for h in horizons_s:
        x = np.concatenate(xs[h]) if xs[h] else np.zeros(0)
        y = np.concatenate(ys[h]) if ys[h] else np.zeros(0)
        corr = None
        if x.shape[0] > 2 and x.std() > 0 and y.std() > 0:
            corr = float(np.corrcoef(x, y)[0, 1])
        # rows overlap (h-second moves every bar): the naive 1/sqrt(n) error is too
        # small by about sqrt(h / bar); this one counts non-overlapping moves
        n_eff = x.shape[0] / max(1.0, h * NS_PER_S / spec.interval_ns)
        horizons[f"{h}s"] = EdgeAtHorizon(
            n=int(x.shape[0]),
            corr=corr,
            se=float(1.0 / np.sqrt(n_eff)) if n_eff > 1 else None,
        )
    return EdgeCorrelation(feature=feature, bar_s=spec.interval_ms / 1000, horizons=horizons)


# ---------------------------------------------------------------- report
def market_report(
    book: pl.DataFrame,
    trades: pl.DataFrame,
    *,
    edge_feature: str | None = None,
    metadata: JsonObject | None = None,
    max_gap_s: float = DEFAULT_MAX_GAP_S,
) -> MarketReport:
    """Every statistic of the module doc on one event set (book deltas and trades,
    canonical, sorted by ts_recv). `edge_feature` adds `edge_correlation`; `metadata`
    (e.g. a synthetic market's planted edge) is passed through as `market`."""
    ts = touch_series(book, max_gap_s)
    orders = market_orders(trades)
    secs = ts.seconds()
    mid_ticks = float(np.median(ts.mid2) / 2.0) if ts.ts.shape[0] else None
    rep = MarketReport(
        seconds=secs,
        mid_ticks_median=mid_ticks,
        tick_bps=(1e4 / mid_ticks) if mid_ticks else None,
        rates_per_s=EventRates(
            book_deltas=(sum(ts.mix.values()) / secs) if secs else None,
            messages=(ts.n_messages / secs) if secs else None,
            trades=(trades.height / secs) if secs else None,
            market_orders=(orders.height / secs) if secs else None,
        ),
        queue_at_touch=queue_at_touch(ts),
        spread_ticks=spread_ticks(ts),
        message_mix=message_mix(ts),
        trade_size=trade_sizes(trades, orders),
        levels_swept=levels_swept(orders),
        mid_volatility=mid_volatility(ts),
        markout=passive_markouts(ts, orders),
        market=metadata,
    )
    if edge_feature:
        rep = rep.model_copy(update={"edge": edge_correlation(book, trades, edge_feature)})
    return rep


def _fmt(x: float | None, nd: int = 2) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, int) or (isinstance(x, float) and x.is_integer() and abs(x) >= 100):
        return f"{int(x):,}"
    return f"{x:.{nd}f}" if abs(x) < 1000 else f"{x:,.0f}"


def summary_rows(rep: MarketReport) -> list[tuple[str, str]]:
    """(statistic, value) rows of a report, in display order (text and Markdown)."""
    q, sp, mm = rep.queue_at_touch, rep.spread_ticks, rep.message_mix
    ts_, lv, r = rep.trade_size.per_print, rep.levels_swept, rep.rates_per_s
    rows = [
        ("covered time (s)", _fmt(rep.seconds, 1)),
        ("tick (bps of mid)", _fmt(rep.tick_bps, 3)),
        ("book deltas / s", _fmt(r.book_deltas)),
        ("market orders / s", _fmt(r.market_orders, 3)),
        (
            "queue at touch p10 / median / p90",
            f"{_fmt(q.p10)} / {_fmt(q.median)} / {_fmt(q.p90)}",
        ),
        (
            "queue median heavy / light side",
            f"{_fmt(q.heavy_side_median)} / {_fmt(q.light_side_median)}",
        ),
        ("spread ticks median / mean / share 1 tick", _spread(sp)),
        (
            "mix insert / update / delete",
            " / ".join(_fmt(s, 3) for s in (mm.insert_share, mm.update_share, mm.delete_share)),
        ),
        (
            "trade size p10 / median / p90 / p99",
            " / ".join(_fmt(x) for x in (ts_.p10, ts_.median, ts_.p90, ts_.p99)),
        ),
        (
            "levels per market order mean / max / share >1",
            f"{_fmt(lv.mean)} / {_fmt(lv.max)} / {_fmt(lv.share_multi, 3)}",
        ),
    ]
    for h, v in rep.mid_volatility.items():
        rows.append((f"mid vol {h} (bps / ticks)", f"{_fmt(v.bps)} / {_fmt(v.ticks)}"))
    for h, m in rep.markout.items():
        se = f" +- {_fmt(m.se_ticks, 3)}" if m.se_ticks is not None else ""
        rows.append(
            (
                f"markout {h} ticks (bps) [n]",
                f"{_fmt(m.mean_ticks, 3)}{se} ({_fmt(m.mean_bps, 3)}) [{m.n}]",
            )
        )
    rows.append(
        (
            "markout vs fill price " + " / ".join(rep.markout) + " (ticks)",
            " / ".join(_fmt(m.vs_fill_ticks, 3) for m in rep.markout.values()),
        )
    )
    planted = rep.planted_edge()
    if planted:
        strength = "n/a" if planted["strength"] is None else f"{planted['strength']:g}"
        rows.append(("planted edge: feature (strength)", f"{planted['feature']} ({strength})"))
    if rep.edge is not None:
        rows.append(("edge feature measured", rep.edge.feature))
        for h, e in rep.edge.horizons.items():
            se = f" +- {_fmt(e.se, 3)}" if e.se is not None else ""
            rows.append((f"corr(edge feature, fwd mid {h})", f"{_fmt(e.corr, 3)}{se}"))
    return rows


def _spread(sp: SpreadFigures) -> str:
    return f"{_fmt(sp.median)} / {_fmt(sp.mean)} / {_fmt(sp.share_1_tick, 3)}"


def format_report(rep: MarketReport, title: str = "market") -> str:
    """The report as aligned text lines."""
    rows = summary_rows(rep)
    width = max(len(k) for k, _ in rows)
    lines = [title] + [f"  {k:<{width}}  {v}" for k, v in rows]
    planted = rep.planted_edge()
    if planted:
        lines.append(f"  edge: {planted.get('description', '')}")
    return "\n".join(lines)


def markdown_table(reports: dict[str, MarketReport]) -> str:
    """Reports side by side: one column per named report."""
    names = list(reports)
    rows = {name: dict(summary_rows(rep)) for name, rep in reports.items()}
    keys: list[str] = []
    for name in names:
        keys += [k for k in rows[name] if k not in keys]
    head = "| statistic | " + " | ".join(names) + " |"
    sep = "|---|" + "---:|" * len(names)
    body = ["| " + k + " | " + " | ".join(rows[n].get(k, "") for n in names) + " |" for k in keys]
    return "\n".join([head, sep, *body])
