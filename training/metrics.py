"""Per-slice backtest metrics. Pure (numpy only).

Units: money amounts (pnl, fees) are fractions of the slice's initial equity (a 1% gain is
0.01) so slices and gates compare across equity sizes; `fees` is the signed fee cash flow
(negative = paid, positive = maker rebate), so `pnl_plus_fees = pnl + fees`. Drawdown is
a fraction of the running peak equity. Sharpe is annualised from returns over a fixed
period of time (equity sampled on a clock, not per trade).

Fill volumes (`maker_volume`, `taker_volume`: notional of the maker / taker fills, also
fractions of the initial equity) let a report re-score the same fills at another fee:
`fees_at(m, maker, taker) = -(maker_volume * maker + taker_volume * taker)`, exact (up to
rounding) when the backtest's fee was constant; `maker_fee` / `taker_fee` are the
volume-weighted rates the backtest actually charged (None without a fill of that side).

Funding (with the env's `funding` on): `funding` is the signed funding cash flow (a
fraction of the initial equity, negative = paid; already inside `pnl`, which is the
equity change before fees), `funding_times` the funding times the slice crossed,
`funding_rate_mean` the mean rate they settled at (None: funding off or no funding time)
and `funding_rates_missing` how many of them the funding table lacked (settled at the
constant `funding_rate` instead).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from training.overfitting import sharpe_per_period

RUIN_FRACTION = 1e-12  # equity of a ruined account, as a fraction of its start (never 0)


@dataclass(frozen=True)
class SliceMetrics:
    """One model on one slice (the `slices[]` entry of evaluation.json)."""

    slice_id: str
    kind: str  # train | validation | test | stress
    fold: int | None
    steps: int
    trades: int  # closed trades (round trips or partial closes, as the env counts them)
    wins: int  # closed trades with pnl after fees > 0
    losses: int  # closed trades with pnl after fees < 0
    pnl: float  # pnl without fees / initial equity
    fees: float  # signed fees / initial equity (negative = paid)
    pnl_plus_fees: float  # pnl + fees
    max_drawdown: float  # max (peak - equity) / peak, in [0, 1]
    sharpe: float  # annualised Sharpe of period returns; 0 when undefined
    maker_volume: float = 0.0  # notional of the maker fills / initial equity
    taker_volume: float = 0.0  # notional of the taker fills / initial equity
    maker_fee: float | None = None  # maker rate charged (volume-weighted); None: no fill
    taker_fee: float | None = None  # taker rate charged (volume-weighted); None: no fill
    funding: float = 0.0  # signed funding / initial equity (negative = paid; inside pnl)
    funding_times: int = 0  # funding times crossed (funding on)
    funding_rate_mean: float | None = None  # mean rate they settled at; None: none
    funding_rates_missing: int = 0  # of them, settled at the constant rate (not in the table)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def fees_at(m: SliceMetrics, maker: float, taker: float) -> float:
    """The slice's signed fees (fraction of initial equity, negative = paid) had its
    fills been charged `maker` / `taker` (fractions of notional): the same fills, another
    fee. Position sizes follow the balance, which the fee moves, so this is first-order
    for a schedule different from the backtest's; it equals `m.fees` (up to rounding) at
    the rates the backtest charged when they were constant."""
    return -(m.maker_volume * maker + m.taker_volume * taker)


def pnl_plus_fees_at(m: SliceMetrics, maker: float, taker: float) -> float:
    """`m.pnl + fees_at(m, maker, taker)`: the slice's result at another fee."""
    return m.pnl + fees_at(m, maker, taker)


def max_drawdown(equity: np.ndarray) -> float:
    """Largest fall from a running peak as a fraction of that peak, in [0, 1] for positive
    equity. The first element is the starting point. Empty input: 0.

    Raises ValueError on non-finite or non-positive equity (a ruined account is a bug in
    the accounting, not a drawdown)."""
    eq = np.asarray(equity, dtype=np.float64)
    if eq.size == 0:
        return 0.0
    if not np.all(np.isfinite(eq)) or np.any(eq <= 0):
        raise ValueError("equity must be finite and positive")
    peak = np.maximum.accumulate(eq)
    return float(np.max((peak - eq) / peak))


def drawdown_curve(equity: np.ndarray) -> np.ndarray:
    """(peak - equity) / peak at every point (0 at new highs)."""
    eq = np.asarray(equity, dtype=np.float64)
    if eq.size == 0:
        return eq
    peak = np.maximum.accumulate(eq)
    return (peak - eq) / peak


def sample_on_clock(ts_ns: np.ndarray, values: np.ndarray, period_ns: int) -> np.ndarray:
    """Values at the clock points t0, t0 + period, ... <= ts[-1], where t0 = ts[0]: at each
    point the last value whose timestamp is <= the point (piecewise constant, no look-ahead).

    `ts_ns` must be non-decreasing int64 ns and the same length as `values`."""
    ts = np.asarray(ts_ns, dtype=np.int64)
    v = np.asarray(values, dtype=np.float64)
    if ts.shape != v.shape:
        raise ValueError(f"ts and values differ in shape: {ts.shape} vs {v.shape}")
    if period_ns <= 0:
        raise ValueError(f"period_ns must be > 0, got {period_ns}")
    if ts.size == 0:
        return v
    if np.any(np.diff(ts) < 0):
        raise ValueError("timestamps must be non-decreasing")
    grid = np.arange(ts[0], ts[-1] + 1, period_ns, dtype=np.int64)
    idx = np.searchsorted(ts, grid, side="right") - 1
    return v[idx]


def period_returns(ts_ns: np.ndarray, equity: np.ndarray, period_ns: int) -> np.ndarray:
    """Simple returns of equity sampled every `period_ns` from the first timestamp."""
    eq = sample_on_clock(ts_ns, equity, period_ns)
    if eq.size < 2:
        return np.zeros(0)
    return np.diff(eq) / eq[:-1]


def annualised_sharpe(returns: np.ndarray, periods_per_year: float) -> float:
    """mean / std (ddof=1) * sqrt(periods_per_year); 0 with fewer than 2 returns or zero
    variance (undefined, and never reported as infinite)."""
    r = np.asarray(returns, dtype=np.float64)
    if r.size < 2:
        return 0.0
    sr = float(sharpe_per_period(r)[0])
    if not math.isfinite(sr):
        return 0.0
    return sr * math.sqrt(periods_per_year)


def compute_slice_metrics(
    *,
    slice_id: str,
    kind: str,
    fold: int | None,
    ts_ns: np.ndarray,
    equity: np.ndarray,
    pnl_without_fees: float,
    fees: float,
    trade_pnls: np.ndarray,
    return_period_ns: int,
    periods_per_year: float,
    maker_volume: float = 0.0,
    taker_volume: float = 0.0,
    maker_fees_paid: float = 0.0,
    taker_fees_paid: float = 0.0,
    funding_paid: float = 0.0,
    funding_rates: np.ndarray | None = None,
    funding_rates_missing: int = 0,
) -> SliceMetrics:
    """Metrics of one slice from its equity curve (`equity[0]` is the starting equity at
    `ts_ns[0]`, then the equity after each step at its bar time), the slice totals of pnl
    without fees and signed fees (account currency), the pnl after fees of each closed
    trade, and the slice totals of maker / taker fill notional and the fees paid on them
    (account currency, positive = paid), the funding paid (account currency, positive =
    paid) and the rate of each funding time crossed.

    Raises ValueError on shape mismatch, an empty curve or non-positive equity."""
    eq = np.asarray(equity, dtype=np.float64)
    ts = np.asarray(ts_ns, dtype=np.int64)
    if eq.shape != ts.shape:
        raise ValueError(f"equity and ts differ in shape: {eq.shape} vs {ts.shape}")
    if eq.size == 0:
        raise ValueError("empty equity curve")
    initial = float(eq[0])
    if not (math.isfinite(initial) and initial > 0):
        raise ValueError(f"starting equity must be finite and positive, got {initial}")
    bad = ~np.isfinite(eq) | (eq <= 0)
    if bad.any():
        # the policy lost the whole account (a strongly trending market, a wild policy):
        # from then on the account is gone, a drawdown of 1; a verdict, not a crash
        eq = eq.copy()
        eq[int(np.argmax(bad)) :] = initial * RUIN_FRACTION
    mdd = 1.0 if bad.any() else max_drawdown(eq)
    trades = np.asarray(trade_pnls, dtype=np.float64)
    rates = np.zeros(0) if funding_rates is None else np.asarray(funding_rates, np.float64)
    rets = period_returns(ts, eq, return_period_ns)
    pnl = pnl_without_fees / initial
    fee = fees / initial
    if not (maker_volume >= 0 and taker_volume >= 0):
        raise ValueError(f"fill volumes must be >= 0, got {maker_volume}, {taker_volume}")
    return SliceMetrics(
        slice_id=slice_id,
        kind=kind,
        fold=fold,
        steps=int(eq.size - 1),
        trades=int(trades.size),
        wins=int(np.sum(trades > 0)),
        losses=int(np.sum(trades < 0)),
        pnl=float(pnl),
        fees=float(fee),
        pnl_plus_fees=float(pnl + fee),
        max_drawdown=mdd,
        sharpe=annualised_sharpe(rets, periods_per_year),
        maker_volume=float(maker_volume / initial),
        taker_volume=float(taker_volume / initial),
        maker_fee=float(maker_fees_paid / maker_volume) if maker_volume > 0 else None,
        taker_fee=float(taker_fees_paid / taker_volume) if taker_volume > 0 else None,
        funding=float(-funding_paid / initial),
        funding_times=int(rates.size),
        funding_rate_mean=float(np.mean(rates)) if rates.size else None,
        funding_rates_missing=int(funding_rates_missing),
    )


def aggregate_totals(metrics: list[SliceMetrics]) -> dict[str, float | int]:
    """Totals over slices (the `test_totals` of evaluation.json): sums of trades and money
    fractions, the worst max drawdown."""
    return {
        "pnl": float(sum(m.pnl for m in metrics)),
        "fees": float(sum(m.fees for m in metrics)),
        "pnl_plus_fees": float(sum(m.pnl_plus_fees for m in metrics)),
        "trades": int(sum(m.trades for m in metrics)),
        "max_drawdown": float(max((m.max_drawdown for m in metrics), default=0.0)),
    }
