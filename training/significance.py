"""Paired significance of "the candidate beats a reference policy", and the serial
correlation that decides whether such a test may be trusted. Pure (numpy, scipy).

The test (one-sided paired t-test, Student 1908): the candidate and the reference are run
by the same backtest on the same slices; their equity returns over the same
non-overlapping periods are paired, d_k = r_candidate,k - r_reference,k, and

    H0: E[d] <= 0    against    H1: E[d] > 0,    t = mean(d) / (sd(d) / sqrt(n)),

p = P(T_{n-1} >= t). Assumptions, stated where the gate reports them: the n differences
are independent (the return period is chosen long enough that their lag-1
autocorrelation is negligible; it is measured and reported with every test) and roughly
normal, or n large enough for the mean to be. A reference identical to the candidate
gives d = 0 and p = 1: equal is not better.
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
        return PairedTest(n, float(d.mean()) if n else 0.0, None, None, None)
    mean = float(d.mean())
    sd = float(d.std(ddof=1))
    acf = lag1_autocorrelation(d)
    if sd <= 1e-15 * max(abs(mean), 1e-300):
        return PairedTest(n, mean, None, 0.0 if mean > 0 else 1.0, acf)
    t = mean / (sd / math.sqrt(n))
    return PairedTest(n, mean, t, float(student_t.sf(t, n - 1)), acf)
