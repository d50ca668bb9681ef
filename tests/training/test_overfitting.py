"""Known-answer tests of PBO (CSCV) and the Deflated Sharpe Ratio."""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training.overfitting import (
    cscv,
    deflated_sharpe_from_moments,
    deflated_sharpe_ratio,
    expected_max_sharpe,
    overfitting_report,
    probabilistic_sharpe_ratio,
    probability_of_backtest_overfitting,
    return_moments,
    sharpe_per_period,
)


def test_pbo_of_pure_noise_trials_is_near_one_half() -> None:
    # One noise family gives a PBO anywhere in ~[0.1, 0.9] (sd ~0.2: the C(16, 8) splits
    # are strongly dependent); the mean over 60 families has a standard error ~0.03.
    rng = np.random.default_rng(1)
    pbos = [probability_of_backtest_overfitting(rng.normal(0, 0.01, (256, 10))) for _ in range(60)]
    assert abs(float(np.mean(pbos)) - 0.5) < 0.1


def test_pbo_with_one_planted_skilled_trial_is_near_zero() -> None:
    rng = np.random.default_rng(2)
    r = rng.normal(0, 0.01, (960, 16))
    r[:, 7] += 0.004  # Sharpe 0.4 per period: skill, not luck
    assert probability_of_backtest_overfitting(r) < 0.05


def test_pbo_of_a_regime_dependent_trial_hand_counted() -> None:
    # 4 blocks of 16 rows. Trial 0: per-period Sharpe ~+4 in blocks 0,1 and ~-4 in blocks
    # 2,3. Trial 1: steady, Sharpe ~1 everywhere.
    t = 64
    r = np.zeros((t, 2))
    r[:, 1] = np.tile([0.02, 0.0], t // 2)
    r[: t // 2, 0] = np.tile([0.05, 0.03], t // 4)
    r[t // 2 :, 0] = np.tile([-0.05, -0.03], t // 4)
    res = cscv(r, n_splits=4)
    # In-sample {0,1}: picks trial 0, which is worst on {2,3} -> overfit (rank 1 of 2).
    # In-sample {2,3}: picks trial 1, which loses to trial 0 on {0,1} -> overfit.
    # The 4 mixed splits: trial 0 has mean 0 on both halves -> trial 1 is picked and stays
    # best -> not overfit. PBO = 2 / 6.
    assert res.n_combinations == 6
    np.testing.assert_allclose(res.logits[[0, 5]], [math.log(1 / 2), math.log(1 / 2)])
    np.testing.assert_allclose(res.logits[1:5], [math.log(2)] * 4)
    assert res.pbo == pytest.approx(2 / 6)


def test_cscv_hand_computed_two_trials_four_blocks() -> None:
    # 4 blocks of 2 rows, 2 trials. On blocks 0,1 trial 0 is [2,4,3,5] (Sharpe 3.5/1.29 =
    # 2.71) and trial 1 is [1,1.5,1,1.5] (Sharpe 1.25/0.289 = 4.33); blocks 2,3 swap them.
    r = np.array(
        [
            [2.0, 1.0],
            [4.0, 1.5],
            [3.0, 1.0],
            [5.0, 1.5],
            [1.0, 2.0],
            [1.5, 4.0],
            [1.0, 3.0],
            [1.5, 5.0],
        ]
    )
    res = cscv(r, n_splits=4)
    combos = list(combinations(range(4), 2))
    assert res.n_combinations == len(combos) == 6
    # combination (0,1): trial 1 has the higher in-sample Sharpe and the lower one on
    # blocks (2,3): rank 1 of 2, w = 1/3
    assert res.logits[0] == pytest.approx(math.log((1 / 3) / (2 / 3)))
    # combination (2,3): trial 0 is picked and loses on blocks (0,1)
    assert res.logits[5] == pytest.approx(math.log((1 / 3) / (2 / 3)))
    # (0,2) and (1,3): both trials hold the same values -> tied Sharpe in and out of
    # sample -> averaged rank 1.5, w = 1/2, logit 0, which counts as overfit (lambda <= 0).
    # (0,3): trial 0 [2,4,1,1.5] Sharpe 1.616 beats trial 1 [1,1.5,3,5] 1.461, and on
    # (1,2) the values swap -> rank 1, logit ln(1/2); (1,2) mirrors it.
    np.testing.assert_allclose(res.logits[1:5], [0.0, -math.log(2), -math.log(2), 0.0], atol=1e-12)
    assert res.pbo == 1.0


def test_pbo_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="even"):
        probability_of_backtest_overfitting(np.zeros((32, 3)), n_splits=5)
    with pytest.raises(ValueError, match="at least 2 trials"):
        probability_of_backtest_overfitting(np.zeros((32, 1)))
    with pytest.raises(ValueError, match="periods"):
        probability_of_backtest_overfitting(np.zeros((8, 3)))
    with pytest.raises(ValueError, match="NaN"):
        r = np.zeros((32, 3))
        r[3, 1] = np.nan
        probability_of_backtest_overfitting(r)
    with pytest.raises(ValueError, match="2-D"):
        probability_of_backtest_overfitting(np.zeros(32))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 6), s=st.sampled_from([2, 4, 6]))
def test_pbo_is_a_probability_and_invariant_to_scaling(seed: int, n: int, s: int) -> None:
    r = np.random.default_rng(seed).normal(0.0, 1.0, (s * 5, n))
    p = probability_of_backtest_overfitting(r, n_splits=s)
    assert 0.0 <= p <= 1.0
    # Sharpe ranking is invariant to a positive common scale.
    assert probability_of_backtest_overfitting(r * 3.7, n_splits=s) == p


def test_dsr_matches_the_paper_numerical_example() -> None:
    # Bailey & Lopez de Prado (2014), section "A numerical example": annualised SR 2.5,
    # 5 years of daily returns (T=1250), N=100 trials, V[SR_annual]=0.5, skew -3,
    # kurtosis 10 -> DSR = 0.9004.
    sr = 2.5 / math.sqrt(250)
    v = 0.5 / 250
    assert deflated_sharpe_from_moments(sr, 1250, -3.0, 10.0, 100, v) == pytest.approx(
        0.9004, abs=5e-4
    )


def test_expected_max_sharpe_hand_value_and_monotone() -> None:
    g = 0.5772156649015329
    from statistics import NormalDist

    z = NormalDist().inv_cdf
    hand = math.sqrt(0.04) * ((1 - g) * z(1 - 1 / 10) + g * z(1 - 1 / (10 * math.e)))
    assert expected_max_sharpe(10, 0.04) == pytest.approx(hand)
    assert expected_max_sharpe(1, 0.04) == 0.0
    values = [expected_max_sharpe(n, 0.04) for n in (2, 5, 10, 100, 1000)]
    assert all(a < b for a, b in zip(values, values[1:], strict=False))


def test_dsr_falls_as_the_number_of_trials_rises() -> None:
    r = np.random.default_rng(3).normal(0.001, 0.01, 2000)
    dsrs = [deflated_sharpe_ratio(r, n, 0.0005) for n in (1, 2, 5, 20, 100, 1000)]
    assert all(a > b for a, b in zip(dsrs, dsrs[1:], strict=False))
    assert all(0.0 <= d <= 1.0 for d in dsrs)


def test_dsr_with_one_trial_equals_psr_against_zero() -> None:
    r = np.random.default_rng(4).normal(0.001, 0.01, 500)
    sr, t, skew, kurt = return_moments(r)
    assert deflated_sharpe_ratio(r, 1, 0.3) == pytest.approx(
        probabilistic_sharpe_ratio(sr, 0.0, t, skew, kurt)
    )


def test_psr_hand_computed_normal_case() -> None:
    # skew 0, kurtosis 3: denominator sqrt(1 + SR^2/2)
    from statistics import NormalDist

    sr, t = 0.1, 101
    hand = NormalDist().cdf(sr * 10 / math.sqrt(1 + 0.5 * sr * sr))
    assert probabilistic_sharpe_ratio(sr, 0.0, t, 0.0, 3.0) == pytest.approx(hand)


def test_return_moments_hand_computed() -> None:
    r = np.array([1.0, 2.0, 3.0, 4.0])
    sr, t, skew, kurt = return_moments(r)
    assert t == 4
    assert sr == pytest.approx(2.5 / np.std(r, ddof=1))
    assert skew == pytest.approx(0.0)
    assert kurt == pytest.approx(np.mean((r - 2.5) ** 4) / np.mean((r - 2.5) ** 2) ** 2)


def test_dsr_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        deflated_sharpe_ratio(np.array([0.1]), 3, 0.1)
    with pytest.raises(ValueError):
        deflated_sharpe_ratio(np.array([0.1, np.inf]), 3, 0.1)
    with pytest.raises(ValueError):
        deflated_sharpe_ratio(np.array([0.1, 0.2]), 0, 0.1)
    with pytest.raises(ValueError):
        deflated_sharpe_ratio(np.array([0.1, 0.2]), 2, -0.1)


def test_sharpe_per_period_zero_variance() -> None:
    out = sharpe_per_period(np.array([[0.0, 1.0, -1.0], [0.0, 1.0, -1.0]]))
    assert out[0] == 0.0 and out[1] == np.inf and out[2] == -np.inf


def test_overfitting_report_picks_best_trial_and_counts_all() -> None:
    rng = np.random.default_rng(5)
    r = rng.normal(0, 0.01, (320, 5))
    r[:, 2] += 0.005
    rep = overfitting_report(r)
    assert rep.best_trial == 2 and rep.n_trials == 5 and rep.n_splits == 16
    assert rep.pbo is not None and rep.pbo < 0.1
    assert rep.dsr > 0.9
    single = overfitting_report(r[:, :1])
    assert single.pbo is None and single.n_trials == 1
    few = overfitting_report(r[:5])  # 5 periods: CSCV with 4 blocks
    assert few.n_splits == 4


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 6))
def test_pbo_does_not_depend_on_the_order_of_trials(seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    r = rng.normal(0.0, 1.0, (40, n))
    perm = rng.permutation(n)
    assert probability_of_backtest_overfitting(r, 8) == probability_of_backtest_overfitting(
        r[:, perm], 8
    )


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(1, 500),
    var=st.floats(1e-6, 0.5),
)
def test_dsr_never_rises_with_more_trials(seed: int, n: int, var: float) -> None:
    r = np.random.default_rng(seed).normal(0.001, 0.01, 300)
    assert deflated_sharpe_ratio(r, n + 1, var) <= deflated_sharpe_ratio(r, n, var)
