"""Batch features v1: polars expressions over sampled bars. Pure.

Every builder is named after the column it makes, states its unit and look-back, and
cites where the formula comes from. Windows are trailing: a row at bar close `t` sees
bars in `(t - W, t]` only (W seconds = `bars_for(W, spec)` bars of the fixed grid).

Bit-for-bit twin: `features.stream.FeatureStream` computes the same values one bar at
a time. To make that hold exactly, every windowed quantity is an *integer* sum (sizes,
counts, squared tick changes) taken as a difference of int64 cumulative sums, and each
float value is produced by the same short sequence of IEEE operations (int->float cast,
+, *, /, sqrt, log) in the same order in both paths. Divisions by zero give the value
documented per feature (0.0 for imbalances, NaN otherwise) in both paths. A division
by a constant is written as a multiplication by its reciprocal (polars evaluates
`col / scalar` that way; spelling it out keeps both paths on one operation). The int64
cumulative sums are exact while they stay below 2**63 (e.g. 1e8 contracts per bar for
9e10 bars); the streaming twin's Python ints agree with them over that whole range.

Input contract: bars with `core.schema.bar_columns(spec.depth)` on a complete grid (one
row per `spec.interval_ns`, as `book.sampler.sample_bars` emits them).

Tick size: prices are integer ticks, but every feature except `TICK_BOUND_FEATURES` is a
ratio of prices (bps, log returns, realised volatility in bps of the mid, depth within
bps of the mid) or a size: under another tick the same prices give the same values
(bit for bit, realised volatility to within a rounding of its square root), so a tick
change (XBTUSD 0.5 -> 0.1 USD) is not a regime change for them, provided every bar of
a look-back is in one unit: across a change the bars are on one price grid
(`features.instrument_days`). `spread_ticks` counts ticks: the same spread is 1 tick of
0.5 and 5 ticks of 0.1; `features.instrument_days.check_windows` refuses it across a
change.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import polars as pl

from core import schema as S
from core.clock import NS_PER_S
from core.config.features import FeatureSpec

F64 = pl.Float64
NAN = float("nan")

# internal helper columns (dropped before returning): each quantity that several
# features read is computed once in `compute_features`'s prep steps
_S2 = "__s2_ticks"  # bid0 + ask0 = 2 * mid, int64 (exact)
_S2F = "__s2_f"  # float(s2)
_S2NZ = "__s2_nz_f"  # float(s2), NaN where s2 == 0
_S2POS = "__s2_pos_f"  # float(s2), NaN where s2 <= 0
_SPREAD = "__spread_ticks"  # ask0 - bid0, int64
_D0 = "__sz_diff_0"  # bid_sz0 - ask_sz0, int64
_T0 = "__sz_sum_0"  # bid_sz0 + ask_sz0, int64
_WB, _WA = "__wbid_l", "__wask_l"  # + levels: sum_{i<L} (L - i) sz_i per side, int64
_LO, _HI = "__band_lo_", "__band_hi_"  # + depth_suffix(x_bps): depth price band, int64
_DS2SQ = "__ds2_sq"  # (s2_t - s2_{t-1})**2, int64; 0 on the first bar
_SIGNED = "__signed_vol"  # buy_vol - sell_vol
_TOTAL = "__total_vol"  # buy_vol + sell_vol
_NOTOK = "__not_ok"  # running count of bars with book_ok false, this bar included (uint)
_NOTOK_BEFORE = "__not_ok_before"  # the same count before this bar (uint)
_CUM = "__cum_"  # prefix of the int64 cumulative sums behind every window
_SUMMED = (S.OFI_L1, _SIGNED, _TOTAL, S.N_TRADES, _DS2SQ)
_LAG = "__lag_"  # + n: struct of the helper columns as they were n rows back


#: features whose value moves with the tick size at the same prices (in ticks)
TICK_BOUND_FEATURES: tuple[str, ...] = ("spread_ticks",)


def tick_bound_features(spec: FeatureSpec) -> list[str]:
    """The spec's features in `TICK_BOUND_FEATURES`, in spec order."""
    return [n for n in spec.names if n in TICK_BOUND_FEATURES]


def bars_for(seconds: float, spec: FeatureSpec) -> int:
    """Number of bars spanning `seconds` on the spec's grid (at least 1)."""
    return max(1, math.ceil(seconds * NS_PER_S / spec.interval_ns))


def depth_suffix(x_bps: float) -> str:
    return f"{x_bps:g}".replace(".", "p")


# ---------------------------------------------------------------- helpers
def _f(e: pl.Expr) -> pl.Expr:
    return e.cast(F64)


def _ratio(num: pl.Expr, den: pl.Expr, zero: float) -> pl.Expr:
    """float(num) / float(den), `zero` where den == 0 (ints in, float out)."""
    return pl.when(den == 0).then(pl.lit(zero, F64)).otherwise(_f(num) / _f(den))


def _add(terms: list[pl.Expr]) -> pl.Expr:
    """terms[0] + terms[1] + ... as a chain of binary `+` (exact for int64)."""
    acc = terms[0]
    for t in terms[1:]:
        acc = acc + t
    return acc


def _weighted_sizes(sz: Callable[[int], str], levels: int) -> pl.Expr:
    """sum_{i < levels} (levels - i) * sz_i, exact int64 (the depth imbalance weights)."""
    return _add(
        [pl.col(sz(i)) * (levels - i) for i in range(levels - 1)] + [pl.col(sz(levels - 1))]
    )


def _lagged(col: str, n: int) -> pl.Expr:
    """Helper column `col` n rows back (from the `_LAG` struct of n); null on the first
    n rows."""
    return pl.col(f"{_LAG}{n}").struct.field(col)


def _window_sum(col: str, n: int) -> pl.Expr:
    """Exact int64 sum of `col` over the last n rows, partial at the start.

    cum_t - cum_{t-n} (0 before the first row): the streaming twin keeps the same
    cumulative sums.
    """
    return pl.col(_CUM + col) - _lagged(_CUM + col, n).fill_null(0)


# ---------------------------------------------------------------- level features
def mid_ticks() -> pl.Expr:
    """Mid price in ticks, (bid0 + ask0) / 2. Look-back: none. Carried, not observed."""
    return (pl.col(_S2F) * 0.5).alias(S.MID_TICKS)


def spread_ticks() -> pl.Expr:
    """Quoted spread ask0 - bid0 in ticks. Look-back: none. Tick-bound (moves with the
    tick size at the same prices: `TICK_BOUND_FEATURES`)."""
    return _f(pl.col(_SPREAD)).alias("spread_ticks")


def spread_bps() -> pl.Expr:
    """Quoted spread relative to mid, in basis points: 1e4 * (ask0 - bid0) / mid.

    Computed as 2e4 * spread / (bid0 + ask0). NaN when the book is empty. Look-back: none.
    """
    # x / NaN is that NaN: dividing by `_S2NZ` gives the NaN of the empty book
    return (_f(pl.col(_SPREAD) * 20000) / pl.col(_S2NZ)).alias("spread_bps")


def microprice_offset_bps() -> pl.Expr:
    """Microprice minus mid, in bps of mid (Stoikov 2018, "The micro-price"; here the
    size-weighted mid of Gatheral-Oomen 2010). Look-back: none.

    micro - mid = spread * (bid_sz0 - ask_sz0) / (2 (bid_sz0 + ask_sz0)) ticks, so
    offset_bps = 1e4 * spread * (bs - as) / ((bs + as) * (bid0 + ask0)); the numerator
    and denominator are exact int64 products. NaN when either is undefined.
    """
    num = pl.col(_SPREAD) * pl.col(_D0)
    den = pl.col(_T0) * pl.col(_S2)
    return (_ratio(num, den, NAN) * 10000.0).alias("microprice_offset_bps")


def imbalance_l1() -> pl.Expr:
    """Level-1 queue imbalance in [-1, 1]: (bid_sz0 - ask_sz0) / (bid_sz0 + ask_sz0)
    (Cartea, Jaimungal, Penalva 2015 ch. 4; Gould-Bonart 2016). 0 when both are empty.
    Look-back: none."""
    return _ratio(pl.col(_D0), pl.col(_T0), 0.0).alias("imbalance_l1")


def _imbalance_depth(levels: int, name: str) -> pl.Expr:
    # linear integer weights levels, levels-1, ..., 1: exact int sums, from the per-side
    # weighted sizes WB = sum w_i b_i and WA = sum w_i a_i (prep columns, shared by the
    # numerator and the denominator): sum w_i (b_i - a_i) = WB - WA and
    # sum w_i (b_i + a_i) = WB + WA
    wb, wa = pl.col(f"{_WB}{levels}"), pl.col(f"{_WA}{levels}")
    return _ratio(wb - wa, wb + wa, 0.0).alias(name)


def imbalance_l5() -> pl.Expr:
    """Depth-weighted imbalance over 5 levels in [-1, 1]: sum w_i (b_i - a_i) / sum w_i
    (b_i + a_i), linear weights w_i = 5 - i (Cao, Hansch, Wang 2009, "The information
    content of an open limit-order book"). Missing levels count as size 0. Look-back: none.
    """
    return _imbalance_depth(5, "imbalance_l5")


def imbalance_l10() -> pl.Expr:
    """Depth-weighted imbalance over 10 levels, weights 10 - i (as `imbalance_l5`)."""
    return _imbalance_depth(10, "imbalance_l10")


def _depth_band(x_bps: float) -> tuple[pl.Expr, pl.Expr]:
    """(lo, hi): the integer price band of `depth_within_bps`, from `__s2_ticks`."""
    s2 = pl.col(_S2)
    k = (_f(s2) * x_bps).floor().cast(pl.Int64) // 10000
    lo = pl.max_horizontal((s2 - k + 1) // 2, pl.lit(1, pl.Int64))
    hi = (s2 + k) // 2
    return lo, hi


def depth_within_bps(
    x_bps: float, side: str, spec: FeatureSpec, *, band: tuple[pl.Expr, pl.Expr] | None = None
) -> pl.Expr:
    """Resting size (contracts) on one side at prices within `x_bps` of mid, over the
    sampled `spec.depth` levels (Cont, Kukanov, Stoikov 2014 use depth as the OFI price
    impact scale). Level i counts when its price is set and
    |2 px_i - (bid0 + ask0)| * 1e4 <= (bid0 + ask0) * x_bps. Look-back: none.

    Evaluated as an integer price band (so is the streaming twin; a property test
    checks the band against the float test above): with s2 = bid0 + ask0 and the double
    F = float(s2) * x_bps, an integer N satisfies float(N) <= F iff N <= floor(F) (N
    exact below 2**53), so the test is |2 px - s2| <= k with k = floor(F) // 10000, i.e.
    max(1, ceil((s2 - k) / 2)) <= px <= floor((s2 + k) / 2). Exact while
    |2 px - s2| * 1e4 < 2**53 (prices below ~4.5e11 ticks).

    `band` is that (lo, hi) already evaluated (`compute_features` passes helper columns
    it computed once per `x_bps` for both sides); by default it is computed here.
    """
    px, sz = (S.bid_px, S.bid_sz) if side == "bid" else (S.ask_px, S.ask_sz)
    lo, hi = _depth_band(x_bps) if band is None else band
    terms = [
        pl.when(pl.col(px(i)).is_between(lo, hi)).then(pl.col(sz(i))).otherwise(0)
        for i in range(spec.depth)
    ]
    return _f(_add(terms)).alias(f"depth_{side}_{depth_suffix(x_bps)}bps")


# ---------------------------------------------------------------- windowed features
def ofi(w: int, spec: FeatureSpec) -> pl.Expr:
    """Order-flow imbalance over (t - w s, t], contracts: sum of the sampler's per-bar
    level-1 OFI e_n (Cont, Kukanov, Stoikov 2014, "The price impact of order book
    events", eq. 2-3). Look-back: w seconds."""
    return _f(_window_sum(S.OFI_L1, bars_for(w, spec))).alias(f"ofi_{w}s")


def signed_volume(w: int, spec: FeatureSpec) -> pl.Expr:
    """Taker buy minus taker sell volume over (t - w s, t], contracts (signed order flow,
    Kyle 1985; Chordia-Subrahmanyam 2004). Look-back: w seconds."""
    return _f(_window_sum(_SIGNED, bars_for(w, spec))).alias(f"signed_volume_{w}s")


def trade_imbalance(w: int, spec: FeatureSpec) -> pl.Expr:
    """Trade-flow imbalance in [-1, 1] over (t - w s, t]: (buy - sell) / (buy + sell)
    taker volume (Chordia-Subrahmanyam 2004); 0 when nothing traded. Look-back: w s."""
    n = bars_for(w, spec)
    return _ratio(_window_sum(_SIGNED, n), _window_sum(_TOTAL, n), 0.0).alias(
        f"trade_imbalance_{w}s"
    )


def trade_intensity(w: int, spec: FeatureSpec) -> pl.Expr:
    """Trades per second over (t - w s, t] (Engle 2000 / Hawkes-style intensity
    estimate: count / window). Look-back: w seconds."""
    return (_f(_window_sum(S.N_TRADES, bars_for(w, spec))) * (1.0 / w)).alias(
        f"trade_intensity_{w}s"
    )


def realized_vol(w: int, spec: FeatureSpec) -> pl.Expr:
    """Realised volatility of the mid over (t - w s, t], in bps of the current mid:
    1e4 * sqrt(sum (mid_k - mid_{k-1})^2) / mid_t (Andersen-Bollerslev 1998 realised
    variance, on price changes at the bar frequency). Summed in exact int64 half-ticks
    squared. NaN when the book is empty. Look-back: w seconds plus one bar.
    """
    ss = _f(_window_sum(_DS2SQ, bars_for(w, spec))).sqrt()
    # x / NaN is that NaN: dividing by `_S2NZ` gives the NaN of the empty book
    return (ss / pl.col(_S2NZ) * 10000.0).alias(f"realized_vol_{w}s")


def time_since_trade_s(spec: FeatureSpec) -> pl.Expr:
    """Seconds from the last trade at or before t to t, capped at the longest look-back
    (a stationary, bounded value). NaN before the first trade. Look-back: the cap."""
    cap = spec.lookback_ns
    dt = pl.min_horizontal(pl.col(S.TS) - pl.col(S.LAST_TRADE_TS), pl.lit(cap, pl.Int64))
    return (
        pl.when(pl.col(S.LAST_TRADE_TS) < 0)
        .then(pl.lit(NAN, F64))
        .otherwise(_f(dt) * (1.0 / NS_PER_S))
        .alias("time_since_trade_s")
    )


def log_return(h: int, spec: FeatureSpec) -> pl.Expr:
    """Log return of the mid over h seconds, ln(mid_t / mid_{t-h}) (dimensionless).
    NaN until h seconds of history exist or when a mid is undefined. Look-back: h s."""
    # `_S2POS` is float(s2), NaN where s2 <= 0; a NaN operand (or the NaN fill of the
    # first h seconds) comes out of / and log as that same NaN, so no mask is needed
    past = _lagged(_S2POS, bars_for(h, spec)).fill_null(pl.lit(NAN, F64))
    return (pl.col(_S2POS) / past).log().alias(f"log_return_{h}s")


# ---------------------------------------------------------------- assembly
def feature_exprs(spec: FeatureSpec) -> list[pl.Expr]:
    """One expression per feature, in `spec.names` order."""
    exprs = [
        spread_ticks(),
        spread_bps(),
        microprice_offset_bps(),
        imbalance_l1(),
        imbalance_l5(),
        imbalance_l10(),
    ]
    for w in spec.windows_s:
        exprs += [ofi(w, spec), signed_volume(w, spec), trade_imbalance(w, spec)]
    for w in spec.windows_s:
        exprs += [trade_intensity(w, spec), realized_vol(w, spec)]
    exprs.append(time_since_trade_s(spec))
    for h in spec.return_horizons_s:
        exprs.append(log_return(h, spec))
    for x in spec.depth_bps:
        band = (pl.col(_LO + depth_suffix(x)), pl.col(_HI + depth_suffix(x)))
        exprs += [
            depth_within_bps(x, "bid", spec, band=band),
            depth_within_bps(x, "ask", spec, band=band),
        ]
    return exprs


def warmup(spec: FeatureSpec) -> pl.Expr:
    """True while the longest look-back is not filled: the first `lookback_bars - 1`
    rows, any row whose last `lookback_bars` bars include one with `book_ok` false, and
    rows before the first trade."""
    # The count of bad bars before row t - (n - 1), i.e. up to row t - n, is null on the
    # first n - 1 rows; the running count grew since then iff one of the last n bars is
    # bad. Lag n - 1 is the longest window or horizon, so this reads no extra lag.
    bad_before = _lagged(_NOTOK_BEFORE, spec.lookback_bars - 1)
    return ((pl.col(_NOTOK) > bad_before).fill_null(True) | (pl.col(S.LAST_TRADE_TS) < 0)).alias(
        S.WARMUP
    )


def compute_features(bars: pl.LazyFrame, spec: FeatureSpec) -> pl.LazyFrame:
    """Bars (core.schema.bar_columns) -> `ts`, `mid_ticks`, every `spec.names` column
    (float64, raw), `warmup`, then `core.schema.EXEC_COLUMNS`.

    Pure and lazy. Rows stay one per bar, in order; warm-up rows are kept and flagged
    (slices drop them). Raises polars ColumnNotFoundError on missing bar columns.
    """
    *steps, out = _plan(spec)
    for step in steps:
        bars = bars.with_columns(step)
    return bars.select(out)


@functools.lru_cache(maxsize=64)
def _plan(spec: FeatureSpec) -> tuple[tuple[pl.Expr, ...], ...]:
    """The expressions of `compute_features` for `spec`: `with_columns` steps, then the
    `select`. Built once per spec (equal specs hash equal): building them costs ~1-2 ms
    of Python CPU per call plus the garbage collection of the objects (measured, ~5% of
    the features of 3 days of 1 s bars). Polars expressions are immutable, so every
    call can share them."""
    exec_cols = [
        pl.col(S.bid_px(0)).alias(S.BEST_BID_TICKS),
        pl.col(S.ask_px(0)).alias(S.BEST_ASK_TICKS),
        *(pl.col(c) for c in S.EXEC_COLUMNS[2:]),  # bar columns carried as they are
    ]
    exprs = feature_exprs(spec)
    # Features that read no earlier row are computed before the shifted `_LAG` columns
    # join the frame: under polars' default (streaming) engine the row-wise work is
    # markedly cheaper there (measured) than after the shifts, which cut the batches.
    lagged = [any(r.startswith(_LAG) for r in e.meta.root_names()) for e in exprs]
    now = [e for e, lag in zip(exprs, lagged, strict=True) if not lag]
    return (
        *_helpers(spec),
        (mid_ticks(), *now),
        *_lags(spec),
        (
            pl.col(S.TS),
            pl.col(S.MID_TICKS),
            *(
                e if lag else pl.col(name)
                for e, lag, name in zip(exprs, lagged, spec.names, strict=True)
            ),
            warmup(spec),
            *exec_cols,
        ),
    )


def _helpers(spec: FeatureSpec) -> list[tuple[pl.Expr, ...]]:
    """`with_columns` steps adding the `__` helper columns that need no lagged row."""
    bid0, ask0 = pl.col(S.bid_px(0)), pl.col(S.ask_px(0))
    bs0, as0 = pl.col(S.bid_sz(0)), pl.col(S.ask_sz(0))
    s2 = pl.col(_S2)
    not_ok = ~pl.col(S.BOOK_OK)
    signed = pl.col(S.BUY_VOL) - pl.col(S.SELL_VOL)
    total = pl.col(S.BUY_VOL) + pl.col(S.SELL_VOL)
    return [
        (
            (bid0 + ask0).alias(_S2),
            (ask0 - bid0).alias(_SPREAD),
            (bs0 - as0).alias(_D0),
            (bs0 + as0).alias(_T0),
            *(
                _weighted_sizes(sz, levels).alias(f"{w}{levels}")
                for levels in (5, 10)
                for w, sz in ((_WB, S.bid_sz), (_WA, S.ask_sz))
            ),
            pl.when(not_ok).then(True).cum_count().alias(_NOTOK),  # counts the non-nulls
            pl.col(S.OFI_L1).cum_sum().alias(_CUM + S.OFI_L1),
            pl.col(S.N_TRADES).cum_sum().alias(_CUM + S.N_TRADES),
            signed.cum_sum().alias(_CUM + _SIGNED),
            total.cum_sum().alias(_CUM + _TOTAL),
        ),
        (
            _f(s2).alias(_S2F),
            (pl.col(_NOTOK) - not_ok.cast(pl.UInt32)).alias(_NOTOK_BEFORE),
            *(
                e.alias(name + depth_suffix(x))
                for x in spec.depth_bps
                for e, name in zip(_depth_band(x), (_LO, _HI), strict=True)
            ),
        ),
        (
            pl.when(s2 == 0).then(pl.lit(NAN, F64)).otherwise(pl.col(_S2F)).alias(_S2NZ),
            pl.when(s2 <= 0).then(pl.lit(NAN, F64)).otherwise(pl.col(_S2F)).alias(_S2POS),
        ),
    ]


def _lags(spec: FeatureSpec) -> list[tuple[pl.Expr, ...]]:
    """`with_columns` steps adding the realised-variance cumulative sum and one `_LAG`
    struct per distinct look-back n: a single shift per n, of every helper column read n
    rows back."""
    s2 = pl.col(_S2)
    lags: dict[int, list[str]] = {}
    for w in spec.windows_s:
        lags.setdefault(bars_for(w, spec), []).extend(_CUM + c for c in _SUMMED)
    for h in spec.return_horizons_s:
        lags.setdefault(bars_for(h, spec), []).append(_S2POS)
    lags.setdefault(spec.lookback_bars - 1, []).append(_NOTOK_BEFORE)
    return [
        ((s2 - s2.shift(1)).fill_null(0).pow(2).cum_sum().alias(_CUM + _DS2SQ),),
        tuple(
            pl.struct(sorted(set(cols))).shift(n).alias(f"{_LAG}{n}")
            for n, cols in sorted(lags.items())
        ),
    ]


def output_columns(spec: FeatureSpec) -> list[str]:
    """Columns of `compute_features` in order."""
    return [S.TS, S.MID_TICKS, *spec.names, S.WARMUP, *S.EXEC_COLUMNS]
