"""Paired significance of "the candidate beats a reference policy", and the serial
correlation that decides whether such a test may be trusted. Pure (numpy, scipy).

The test (one-sided paired t-test, Student 1908): the candidate and the reference are run
by the same backtest on the same slices; their equity returns over the same
non-overlapping periods are paired, d_k = r_candidate,k - r_reference,k, and

    H0: E[d] <= 0    against    H1: E[d] > 0,    t = mean(d) / se,

p = P(T_{n-1} >= t). The standard error is Newey & West's (1987) heteroskedasticity and
autocorrelation consistent one (Bartlett kernel, lag L = floor(4 (n/100)^(2/9)), the
usual rule), never below the plain sd(d)/sqrt(n): the return period is chosen long enough
that the lag-1 autocorrelation of returns is not distinguishable from zero
(bench/return_period.py), but with few periods that test has little power, and
activity-driven policies keep a positive autocorrelation of about +0.2 even at 1 h.
Assumptions, stated where the gate reports them: differences weakly dependent (beyond L
periods) and roughly normal, or n large enough for the mean to be. A reference identical
to the candidate gives d = 0 and p = 1: equal is not better.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class PairedTest:
    """Outcome of `paired_one_sided_test`."""

    n: int  # paired periods
    mean_difference: float  # mean of d per period (fraction of equity)
    standard_error: float | None  # of the mean: max(Newey-West, iid); None when undefined
    hac_lags: int  # Newey-West lags used
    t: float | None  # None: undefined (fewer than 2 periods)
    p_value: float | None  # one-sided; None when undefined
    lag1_autocorrelation: float | None  # of d; None with fewer than 3 periods or no variance

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def lag1_autocorrelation(x: np.ndarray) -> float | None:
    """Sample lag-1 autocorrelation of a 1-D series (biased estimator, the usual ACF):
    sum((x_t - m)(x_{t+1} - m)) / sum((x_t - m)^2). None with fewer than 3 values or zero
    variance."""
    v = np.asarray(x, dtype=np.float64)
    if v.size < 3:
        return None
    d = v - v.mean()
    den = float(np.dot(d, d))
    if den <= 0.0:
        return None
    return float(np.dot(d[:-1], d[1:]) / den)


def paired_one_sided_test(candidate: np.ndarray, reference: np.ndarray) -> PairedTest:
    """One-sided paired t-test that `candidate` returns exceed `reference` returns
    period by period (module docstring). Both 1-D, same length, finite; raises
    ValueError otherwise. With zero variance of the differences, p is 0 for a positive
    mean difference and 1 otherwise."""
    # slow: scipy.stats (~1 s); flows.train and its pool workers import this, never test
    from scipy.stats import t as student_t

    a = np.asarray(candidate, dtype=np.float64)
    b = np.asarray(reference, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"paired series must be 1-D and equal in length: {a.shape} vs {b.shape}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("paired series contain NaN or inf")
    d = a - b
    n = int(d.size)
    if n < 2:
        return PairedTest(n, float(d.mean()) if n else 0.0, None, 0, None, None, None)
    mean = float(d.mean())
    sd = float(d.std(ddof=1))
    acf = lag1_autocorrelation(d)
    lags = newey_west_lags(n)
    if sd <= 1e-15 * max(abs(mean), 1e-300):
        return PairedTest(n, mean, 0.0, lags, None, 0.0 if mean > 0 else 1.0, acf)
    se = max(newey_west_se(d, lags), sd / math.sqrt(n))
    t = mean / se
    return PairedTest(n, mean, se, lags, t, float(student_t.sf(t, n - 1)), acf)


def newey_west_lags(n: int) -> int:
    """The usual automatic lag of the Newey-West estimator: floor(4 (n/100)^(2/9))."""
    return int(math.floor(4.0 * (n / 100.0) ** (2.0 / 9.0))) if n > 1 else 0


def newey_west_se(x: np.ndarray, lags: int) -> float:
    """Newey-West (1987) HAC standard error of the mean of `x`, Bartlett weights
    1 - k / (lags + 1): sqrt((g0 + 2 sum_k w_k g_k) / n), g_k the lag-k autocovariance
    (divided by n). Pure."""
    v = np.asarray(x, dtype=np.float64)
    n = v.size
    d = v - v.mean()
    s = float(np.dot(d, d)) / n
    for k in range(1, min(lags, n - 1) + 1):
        s += 2.0 * (1.0 - k / (lags + 1.0)) * float(np.dot(d[:-k], d[k:])) / n
    return math.sqrt(max(s, 0.0) / n)
