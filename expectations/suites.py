"""Expectation suites as plain data, and the frames they run on. Pure (no GX import).

A suite is a name and a list of `Expectation(type, kwargs)`; `expectations.runner`
turns them into Great Expectations 1.x objects. Keeping them as data lets tests and
manifests name every expectation without importing GX.

book suite    (on `book_view(bars)` of a slice's bars): no nulls, strictly increasing
              time, never crossed (ask0 > bid0), spread >= 1 tick, positive level-0 sizes
              and prices, every level either empty (price 0, size 0) or with size > 0.
feature suite (on `feature_view(slice)`): no NaN, null or infinity in any
              feature (one finite-range check per feature: the view maps NaN to inf),
              imbalances within [-1, 1], spreads >= 0, strictly increasing time; and
              the execution columns (#17): sizes at the best >= 1, volumes >= 0, the
              volume at the reference price within the side's volume, every
              through-time -1 or within its bar with first <= last (`bad_thru_ts`).

Both suites check integrity and refuse a slice. Distribution drift against the frozen
stats (a test day calmer or wilder than the train days) is what walk-forward evaluation
exists to measure, so it never refuses: `drift_report` measures it (share of normalised
values beyond the clip, shift of mean and sigma in sigma units), the slice manifest stores
it beside the validation result, the nightly summary shows it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from core import schema as S
from core.config.features import ExpectationsConfig, FeatureSpec
from core.jsontypes import JsonObject
from features.slices import DriftFeature, DriftReport

BOOK_SUITE = "chappie-book"
FEATURE_SUITE = "chappie-features"
SPREAD_COL = "spread_ticks"
BAD_LEVELS_COL = "bad_levels"  # per row: levels that are half empty or have size <= 0
BAD_THRU_COL = "bad_thru_ts"  # per row: through-times out of their contract (`thru_problems`)
Z_PREFIX = "z__"
FINITE_MAX = 1.7e308  # a between() with finite bounds rejects +-inf


@dataclass(frozen=True)
class Expectation:
    type: str  # GX class name, e.g. "ExpectColumnValuesToNotBeNull"
    kwargs: JsonObject = field(default_factory=dict)  # the GX expectation's arguments

    def label(self) -> str:
        """Short human label, e.g. `ExpectColumnValuesToBeBetween(imbalance_l1)`."""
        cols = self.kwargs.get("column") or ",".join(
            str(self.kwargs[k]) for k in ("column_A", "column_B") if k in self.kwargs
        )
        return f"{self.type}({cols})"


@dataclass(frozen=True)
class Suite:
    name: str
    expectations: tuple[Expectation, ...]


def _not_null(col: str) -> Expectation:
    return Expectation("ExpectColumnValuesToNotBeNull", {"column": col})


def _between(col: str, lo: float | None, hi: float | None, mostly: float = 1.0) -> Expectation:
    kw: JsonObject = {"column": col, "min_value": lo, "max_value": hi}
    if mostly < 1.0:
        kw["mostly"] = mostly
    return Expectation("ExpectColumnValuesToBeBetween", kw)


def _increasing(col: str) -> Expectation:
    return Expectation("ExpectColumnValuesToBeIncreasing", {"column": col, "strictly": True})


# ---------------------------------------------------------------- book
def book_view(bars: pl.DataFrame, depth: int) -> pl.DataFrame:
    """The columns the book suite checks: ts, level-0 book, spread and a per-row count
    of malformed levels (price set with size <= 0, or size without a price)."""
    bad = pl.lit(0, pl.Int64)
    for i in range(depth):
        for px, sz in ((S.bid_px(i), S.bid_sz(i)), (S.ask_px(i), S.ask_sz(i))):
            half = ((pl.col(px) > 0) & (pl.col(sz) <= 0)) | ((pl.col(px) <= 0) & (pl.col(sz) != 0))
            bad = bad + half.cast(pl.Int64)
    return bars.select(
        S.TS,
        S.BOOK_OK,
        S.bid_px(0),
        S.bid_sz(0),
        S.ask_px(0),
        S.ask_sz(0),
        (pl.col(S.ask_px(0)) - pl.col(S.bid_px(0))).alias(SPREAD_COL),
        bad.alias(BAD_LEVELS_COL),
    )


def book_suite() -> Suite:
    cols = [S.TS, S.BOOK_OK, S.bid_px(0), S.bid_sz(0), S.ask_px(0), S.ask_sz(0)]
    exps = [_not_null(c) for c in cols]
    exps += [
        _increasing(S.TS),
        Expectation(
            "ExpectColumnPairValuesAToBeGreaterThanB",
            {"column_A": S.ask_px(0), "column_B": S.bid_px(0), "or_equal": False},
        ),
        _between(SPREAD_COL, 1, None),
        _between(S.bid_px(0), 1, None),
        _between(S.bid_sz(0), 1, None),
        _between(S.ask_sz(0), 1, None),
        Expectation("ExpectColumnValuesToBeInSet", {"column": S.BOOK_OK, "value_set": [True]}),
        Expectation("ExpectColumnValuesToBeInSet", {"column": BAD_LEVELS_COL, "value_set": [0]}),
    ]
    return Suite(BOOK_SUITE, tuple(exps))


# ---------------------------------------------------------------- features
def _is_imbalance(name: str) -> bool:
    return name.startswith(("imbalance_", "trade_imbalance_"))


def thru_problems(interval_ns: int) -> pl.Expr:
    """Per row, the through-time breaches of the execution columns: a time neither -1 nor
    within the bar (ts - interval, ts], a side with one of first / last -1 but not the
    other or first after last, or a time with no volume on that side beyond the volume
    at the reference price (a trade through it traded some)."""
    bad = pl.lit(0, pl.Int64)
    ts = pl.col(S.TS)
    for c in S.THRU_TS_COLUMNS:
        t = pl.col(c)
        inside = (t > ts - interval_ns) & (t <= ts)
        bad = bad + (~((t == -1) | inside)).cast(pl.Int64)
    for first, last, vol, at in (
        (S.SELL_THRU_BID_FIRST_TS, S.SELL_THRU_BID_LAST_TS, S.SELL_VOL, S.SELL_AT_BID_VOL),
        (S.BUY_THRU_ASK_FIRST_TS, S.BUY_THRU_ASK_LAST_TS, S.BUY_VOL, S.BUY_AT_ASK_VOL),
    ):
        f, la = pl.col(first), pl.col(last)
        bad = bad + ((f == -1) != (la == -1)).cast(pl.Int64) + (f > la).cast(pl.Int64)
        bad = bad + ((f != -1) & (pl.col(vol) <= pl.col(at))).cast(pl.Int64)
    return bad


def feature_view(
    slice_frame: pl.DataFrame,
    spec: FeatureSpec,
    mean: np.ndarray | None = None,
    sigma: np.ndarray | None = None,
) -> pl.DataFrame:
    """The slice's ts and features, plus unclipped normalised columns `z__<name>` when
    frozen `mean`/`sigma` (spec.names order) are given."""
    # NaN and null become +inf so that one finite-range expectation per feature
    # rejects NaN, null and infinity alike (GX's between() skips missing values).
    inf = float("inf")
    cols: list[pl.Expr] = [
        pl.col(S.TS),
        *(pl.col(n).fill_nan(inf).fill_null(inf) for n in spec.names),
        *(pl.col(c) for c in _EXEC_CHECKED),
        thru_problems(spec.interval_ns).alias(BAD_THRU_COL),
    ]
    if mean is not None and sigma is not None:
        cols += [
            ((pl.col(n) - float(m)) / float(s)).alias(Z_PREFIX + n)
            for n, m, s in zip(spec.names, mean, sigma, strict=True)
        ]
    return slice_frame.select(cols)


#: the execution columns the feature suite checks as they are
_EXEC_CHECKED = (
    S.bid_sz(0),
    S.ask_sz(0),
    S.BUY_VOL,
    S.SELL_VOL,
    S.SELL_AT_BID_VOL,
    S.BUY_AT_ASK_VOL,
)


def _exec_expectations() -> list[Expectation]:
    exps = [_not_null(c) for c in (*_EXEC_CHECKED, BAD_THRU_COL)]
    exps += [_between(c, 1, None) for c in (S.bid_sz(0), S.ask_sz(0))]
    exps += [_between(c, 0, None) for c in _EXEC_CHECKED[2:]]
    exps += [
        Expectation(
            "ExpectColumnPairValuesAToBeGreaterThanB",
            {"column_A": vol, "column_B": at, "or_equal": True},
        )
        for vol, at in ((S.SELL_VOL, S.SELL_AT_BID_VOL), (S.BUY_VOL, S.BUY_AT_ASK_VOL))
    ]
    exps.append(
        Expectation("ExpectColumnValuesToBeInSet", {"column": BAD_THRU_COL, "value_set": [0]})
    )
    return exps


def feature_suite(spec: FeatureSpec, cfg: ExpectationsConfig, with_stats: bool = False) -> Suite:
    """Integrity of the features (module docstring). `cfg` and `with_stats` are kept for
    callers; frozen stats no longer add expectations (drift is reported, not refused)."""
    del cfg, with_stats
    exps = [_not_null(S.TS), _increasing(S.TS)]
    for n in spec.names:  # NaN / null arrive as +inf (feature_view): one check each
        if _is_imbalance(n):
            exps.append(_between(n, -1.0, 1.0))
        elif n.startswith("spread_"):
            exps.append(_between(n, 0.0, FINITE_MAX))
        else:
            exps.append(_between(n, -FINITE_MAX, FINITE_MAX))
    exps += _exec_expectations()
    return Suite(f"{FEATURE_SUITE}-{spec.version}", tuple(exps))


def drift_report(
    slice_frame: pl.DataFrame,
    spec: FeatureSpec,
    mean: np.ndarray,
    sigma: np.ndarray,
    cfg: ExpectationsConfig,
) -> DriftReport:
    """Distribution drift of a slice against frozen stats, per feature: the share of rows
    whose normalised value (x - mean) / sigma lies beyond +-`cfg.normalized_abs_max` (the
    observation clip: those values reach the policy clipped), and the mean and standard
    deviation of the normalised values (0 and 1 on the train slices). `flagged` lists
    the features with more than 1 - `cfg.normalized_mostly` of rows beyond the clip.
    Non-finite values are left out (integrity refuses them). Pure."""
    lim = float(cfg.normalized_abs_max)
    z = [
        ((pl.col(n) - float(m)) / float(s)).alias(n)
        for n, m, s in zip(spec.names, mean, sigma, strict=True)
    ]
    zf = slice_frame.select(z).fill_nan(None)
    rows = max(slice_frame.height, 1)
    beyond = zf.select((pl.col(n).abs() > lim).sum() / rows for n in spec.names).row(0)
    means = zf.select(pl.col(n).mean() for n in spec.names).row(0)
    stds = zf.select(pl.col(n).std() for n in spec.names).row(0)
    share = {n: float(b or 0.0) for n, b in zip(spec.names, beyond, strict=True)}
    z_mean = {n: None if m is None else float(m) for n, m in zip(spec.names, means, strict=True)}
    z_std = {n: None if d is None else float(d) for n, d in zip(spec.names, stds, strict=True)}
    per = {
        n: DriftFeature(beyond_clip_share=share[n], z_mean=z_mean[n], z_std=z_std[n])
        for n in spec.names
    }
    worst = max(spec.names, key=lambda n: share[n])
    shift = max(spec.names, key=lambda n: abs(z_mean[n] or 0.0))
    return DriftReport(
        clip=lim,
        max_beyond_clip_share=share[worst],
        max_beyond_clip_feature=worst,
        max_mean_shift=z_mean[shift],
        max_mean_shift_feature=shift,
        flagged=[n for n in spec.names if share[n] > 1 - cfg.normalized_mostly],
        features=per,
    )
