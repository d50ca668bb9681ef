"""Overfitting statistics over a family of backtested trials. Pure (numpy + stdlib).

- Probability of Backtest Overfitting (PBO) by Combinatorially Symmetric Cross-Validation
  (CSCV): Bailey, Borwein, López de Prado, Zhu, "The Probability of Backtest Overfitting",
  Journal of Computational Finance 20(4), 2017.
- Deflated Sharpe Ratio (DSR): Bailey, López de Prado, "The Deflated Sharpe Ratio:
  Correcting for Selection Bias, Backtest Overfitting and Non-Normality", Journal of
  Portfolio Management 40(5), 2014.

Sharpe ratios here are per period (not annualised): mean / standard deviation of the
per-period returns. Ranking (PBO) is invariant to annualisation; the DSR formula needs
the per-period Sharpe together with the number of periods.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

EULER_MASCHERONI = 0.5772156649015329
_NORMAL = NormalDist()


# ---------------------------------------------------------------- Sharpe helpers
def _sharpe_from_moments(total: np.ndarray, total_sq: np.ndarray, count: float) -> np.ndarray:
    """Per-period Sharpe (mean / sample std, ddof=1) from sums over `count` periods.

    A zero standard deviation gives 0 when the mean is 0 and +-inf otherwise (a
    riskless gain ranks above everything, a riskless loss below)."""
    mean = total / count
    var = (total_sq - count * mean * mean) / max(count - 1.0, 1.0)
    var = np.maximum(var, 0.0)
    std = np.sqrt(var)
    tiny = std <= 1e-15 * np.maximum(np.abs(mean), 1e-300)
    with np.errstate(divide="ignore", invalid="ignore"):
        sr = np.where(tiny, np.sign(mean) * np.inf, mean / np.where(tiny, 1.0, std))
    return np.where(tiny & (mean == 0.0), 0.0, sr)


def sharpe_per_period(returns: np.ndarray) -> np.ndarray:
    """Per-period Sharpe of each column of `returns` (T,) or (T, N); ddof=1."""
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim == 1:
        r = r[:, None]
    return _sharpe_from_moments(r.sum(axis=0), (r * r).sum(axis=0), float(r.shape[0]))


# ---------------------------------------------------------------- PBO (CSCV)
@dataclass(frozen=True)
class CSCVResult:
    """Outcome of CSCV. `logits[c]` is the logit of the out-of-sample relative rank of the
    in-sample best trial for combination c; `pbo` the share of logits <= 0."""

    pbo: float
    logits: np.ndarray
    is_best_sharpe: np.ndarray  # in-sample Sharpe of the selected trial, per combination
    oos_sharpe: np.ndarray  # out-of-sample Sharpe of that trial, per combination
    n_combinations: int
    n_splits: int
    n_trials: int
    rows_used: int


def _validate_matrix(returns: np.ndarray) -> np.ndarray:
    m = np.asarray(returns, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"returns must be 2-D (T periods x N trials), got shape {m.shape}")
    if not np.all(np.isfinite(m)):
        raise ValueError("returns contain NaN or inf")
    return m


def cscv(returns: np.ndarray, n_splits: int = 16) -> CSCVResult:
    """Combinatorially symmetric cross-validation (Bailey et al. 2017, section 2).

    `returns`: T periods x N trials of per-period returns (same periods for all trials).
    The T rows are cut into `n_splits` (S, even) contiguous blocks of equal length; the
    T mod S leading rows are dropped so the most recent data is kept. For every one of
    the C(S, S/2) ways to pick half the blocks as in-sample (J) and the rest as
    out-of-sample (J-bar), the trial with the best in-sample Sharpe is selected and its
    out-of-sample relative rank w = rank / (N + 1) (rank 1 = worst, ties averaged) gives
    the logit lambda = ln(w / (1 - w)). PBO = share of combinations with lambda <= 0, i.e.
    the chance that the in-sample winner is at or below the out-of-sample median.

    Raises ValueError for S odd or < 2, N < 2, fewer than S rows, or non-finite input.
    """
    m = _validate_matrix(returns)
    t, n = m.shape
    if n_splits < 2 or n_splits % 2:
        raise ValueError(f"n_splits must be an even number >= 2, got {n_splits}")
    if n < 2:
        raise ValueError(f"PBO needs at least 2 trials, got {n}")
    if t < n_splits:
        raise ValueError(f"PBO needs at least n_splits={n_splits} periods, got {t}")
    block = t // n_splits
    m = m[t - block * n_splits :]
    blocks = m.reshape(n_splits, block, n)
    sums = blocks.sum(axis=1)  # (S, N)
    sums_sq = (blocks * blocks).sum(axis=1)  # (S, N)
    half = n_splits // 2
    combos = np.array(list(itertools.combinations(range(n_splits), half)), dtype=np.int64)
    mask = np.zeros((len(combos), n_splits), dtype=bool)
    mask[np.arange(len(combos))[:, None], combos] = True
    in_w = mask.astype(np.float64)
    out_w = 1.0 - in_w
    count = float(half * block)
    sr_in = _sharpe_from_moments(in_w @ sums, in_w @ sums_sq, count)  # (C, N)
    sr_out = _sharpe_from_moments(out_w @ sums, out_w @ sums_sq, count)
    best = np.argmax(sr_in, axis=1)
    rows = np.arange(len(combos))
    chosen_out = sr_out[rows, best]
    below = (sr_out < chosen_out[:, None]).sum(axis=1)
    ties = (sr_out == chosen_out[:, None]).sum(axis=1) - 1  # others equal to the chosen
    rank = below + 1.0 + 0.5 * ties  # 1 = worst, N = best
    w = rank / (n + 1.0)
    logits = np.log(w / (1.0 - w))
    pbo = float(np.mean(logits <= 0.0))
    return CSCVResult(
        pbo=pbo,
        logits=logits,
        is_best_sharpe=sr_in[rows, best],
        oos_sharpe=chosen_out,
        n_combinations=len(combos),
        n_splits=n_splits,
        n_trials=n,
        rows_used=block * n_splits,
    )


def probability_of_backtest_overfitting(returns: np.ndarray, n_splits: int = 16) -> float:
    """PBO of a family of trials by CSCV (see `cscv`). 0 = the in-sample winner always
    stays above the out-of-sample median; ~0.5 = selection is no better than chance.

    `returns`: T periods x N trials. Raises ValueError as `cscv` does."""
    return cscv(returns, n_splits).pbo


# ---------------------------------------------------------------- DSR
def expected_max_sharpe(n_trials: int, trials_sharpe_variance: float) -> float:
    """Expected maximum Sharpe among `n_trials` independent trials whose true Sharpe is
    zero, with cross-trial Sharpe variance V (Bailey & López de Prado 2014, eq. for SR0):

        SR0 = sqrt(V) * ((1 - g) * Z^-1(1 - 1/N) + g * Z^-1(1 - 1/(N e)))

    with g the Euler-Mascheroni constant. One trial: 0 (nothing was selected)."""
    if n_trials < 1:
        raise ValueError(f"n_trials must be >= 1, got {n_trials}")
    if trials_sharpe_variance < 0 or not math.isfinite(trials_sharpe_variance):
        raise ValueError(
            f"trials_sharpe_variance must be finite and >= 0, got {trials_sharpe_variance}"
        )
    if n_trials == 1 or trials_sharpe_variance == 0.0:
        return 0.0
    g = EULER_MASCHERONI
    z1 = _NORMAL.inv_cdf(1.0 - 1.0 / n_trials)
    z2 = _NORMAL.inv_cdf(1.0 - 1.0 / (n_trials * math.e))
    return math.sqrt(trials_sharpe_variance) * ((1.0 - g) * z1 + g * z2)


def probabilistic_sharpe_ratio(
    sharpe: float, sharpe_benchmark: float, n_obs: int, skew: float, kurtosis: float
) -> float:
    """PSR (Bailey & López de Prado 2012): P(true Sharpe > benchmark) given the observed
    per-period Sharpe over `n_obs` periods with return skewness and (non-excess) kurtosis:

        Z((SR - SR*) sqrt(T - 1) / sqrt(1 - skew SR + (kurt - 1) / 4 SR^2))
    """
    if n_obs < 2:
        raise ValueError(f"PSR needs at least 2 observations, got {n_obs}")
    if not all(math.isfinite(v) for v in (sharpe, sharpe_benchmark, skew, kurtosis)):
        raise ValueError("PSR inputs must be finite")
    denom_sq = 1.0 - skew * sharpe + (kurtosis - 1.0) / 4.0 * sharpe * sharpe
    # With population moments kurt >= 1 + skew^2, so denom_sq >= (1 - skew SR / 2)^2 >= 0.
    denom = math.sqrt(max(denom_sq, 1e-12))
    return _NORMAL.cdf((sharpe - sharpe_benchmark) * math.sqrt(n_obs - 1.0) / denom)


def deflated_sharpe_from_moments(
    sharpe: float,
    n_obs: int,
    skew: float,
    kurtosis: float,
    n_trials: int,
    trials_sharpe_variance: float,
) -> float:
    """DSR from summary statistics: the PSR against the expected maximum Sharpe of
    `n_trials` zero-skill trials. All Sharpe values per period (same units as V)."""
    sr0 = expected_max_sharpe(n_trials, trials_sharpe_variance)
    return probabilistic_sharpe_ratio(sharpe, sr0, n_obs, skew, kurtosis)


def return_moments(returns: np.ndarray) -> tuple[float, int, float, float]:
    """(per-period Sharpe with ddof=1, T, skewness, non-excess kurtosis) of a 1-D series.
    Skewness/kurtosis are population moments; a constant series has skew 0, kurtosis 3."""
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 1:
        raise ValueError(f"returns must be 1-D, got shape {r.shape}")
    if r.size < 2:
        raise ValueError(f"need at least 2 returns, got {r.size}")
    if not np.all(np.isfinite(r)):
        raise ValueError("returns contain NaN or inf")
    sr = float(sharpe_per_period(r)[0])
    if not math.isfinite(sr):
        raise ValueError("returns have zero variance and a non-zero mean: Sharpe undefined")
    d = r - r.mean()
    m2 = float(np.mean(d * d))
    if m2 <= 0.0:
        return sr, int(r.size), 0.0, 3.0
    skew = float(np.mean(d**3) / m2**1.5)
    kurt = float(np.mean(d**4) / m2**2)
    return sr, int(r.size), skew, kurt


def deflated_sharpe_ratio(
    returns: np.ndarray, n_trials: int, trials_sharpe_variance: float
) -> float:
    """Deflated Sharpe Ratio of the selected strategy's per-period `returns` (1-D), given
    the number of trials tried (every trial counts, including discarded ones) and the
    variance of the trials' per-period Sharpe ratios. In [0, 1]: the probability that
    the true Sharpe exceeds what the best of `n_trials` skill-less trials would show.

    Raises ValueError for fewer than 2 returns, non-finite input, n_trials < 1."""
    sr, t, skew, kurt = return_moments(returns)
    return deflated_sharpe_from_moments(sr, t, skew, kurt, n_trials, trials_sharpe_variance)


@dataclass(frozen=True)
class OverfittingReport:
    """PBO and DSR over a family: the DSR is of the trial with the best full-sample Sharpe."""

    pbo: float | None
    dsr: float
    n_trials: int
    n_periods: int
    best_trial: int
    best_sharpe: float
    trials_sharpe_variance: float
    n_splits: int | None

    def as_dict(self) -> dict[str, float | int | None]:
        return {
            "pbo": self.pbo,
            "dsr": self.dsr,
            "n_trials": self.n_trials,
            "n_periods": self.n_periods,
            "best_trial": self.best_trial,
            "best_sharpe": self.best_sharpe,
            "trials_sharpe_variance": self.trials_sharpe_variance,
            "n_splits": self.n_splits,
        }


def largest_even_splits(n_periods: int, n_splits: int = 16) -> int | None:
    """The largest even S <= n_splits with at least one period per block, or None when
    fewer than 2 periods exist (CSCV impossible)."""
    s = min(n_splits, n_periods)
    s -= s % 2
    return s if s >= 2 else None


def overfitting_report(returns: np.ndarray, n_splits: int = 16) -> OverfittingReport:
    """PBO (CSCV with up to `n_splits` blocks; None with a single trial) and the DSR of the
    trial with the highest full-sample Sharpe, deflated by all N trials and the cross-trial
    Sharpe variance. `returns`: T periods x N trials."""
    m = _validate_matrix(returns)
    t, n = m.shape
    if n < 1 or t < 2:
        raise ValueError(f"need at least 1 trial and 2 periods, got shape {m.shape}")
    srs = sharpe_per_period(m)
    finite = np.where(np.isfinite(srs), srs, 0.0)
    best = int(np.argmax(finite))
    var = float(np.var(finite, ddof=1)) if n > 1 else 0.0
    splits = largest_even_splits(t, n_splits)
    pbo = cscv(m, splits).pbo if (n >= 2 and splits is not None) else None
    sr, nobs, skew, kurt = (
        return_moments(m[:, best]) if np.isfinite(srs[best]) else (0.0, t, 0.0, 3.0)
    )
    dsr = deflated_sharpe_from_moments(sr, nobs, skew, kurt, n, var)
    return OverfittingReport(
        pbo=pbo,
        dsr=dsr,
        n_trials=n,
        n_periods=t,
        best_trial=best,
        best_sharpe=float(finite[best]),
        trials_sharpe_variance=var,
        n_splits=splits if pbo is not None else None,
    )
