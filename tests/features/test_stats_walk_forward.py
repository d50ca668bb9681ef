"""Frozen stats (pure fit, round trip, floor) and walk-forward folds (properties)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.clock import NS_PER_HOUR, NS_PER_S
from core.config.features import WalkForwardConfig
from features.stats import FrozenStats, StatsError, compute_stats_id
from features.walk_forward import (
    WalkForwardError,
    Window,
    all_windows,
    make_folds,
    make_stress_windows,
)

NAMES = ("a", "b", "c")
TRAIN = [{"slice_id": "fold00-train", "sha256": "0" * 64}]


def test_fit_hand_computed_mean_sigma_and_floor_for_constant_feature():
    x = np.array([[1.0, 5.0, 2.0], [3.0, 5.0, 4.0]])
    s = FrozenStats.fit(x, NAMES, "h" * 64, 1e-8, TRAIN)
    np.testing.assert_array_equal(s.mean, [2.0, 5.0, 3.0])
    np.testing.assert_array_equal(s.sigma, [1.0, 1e-8, 1.0])
    np.testing.assert_array_equal(
        s.normalize(np.array([4.0, 5.0, -7.0]), clip=5.0), [2.0, 0.0, -5.0]
    )
    assert s.stats_id == compute_stats_id("h" * 64, TRAIN) and s.n_rows == 2


def test_save_load_round_trip_without_pickles(tmp_path):
    s = FrozenStats.fit(np.random.default_rng(0).normal(size=(50, 3)), NAMES, "h" * 64, 1e-8, TRAIN)
    s.save(tmp_path / s.stats_id)
    t = FrozenStats.load(tmp_path / s.stats_id)
    np.testing.assert_array_equal(s.mean, t.mean)
    np.testing.assert_array_equal(s.sigma, t.sigma)
    assert t.meta() == s.meta()
    assert np.load(tmp_path / s.stats_id / "mean.npy", allow_pickle=False).dtype == np.float64


def test_record_round_trip_through_json_is_exact():
    """Staging plans carry stats as JSON (`to_record`); published files must hold the
    very float64 values that were fitted."""
    from features.stats import StatsRecord

    x = np.random.default_rng(1).normal(size=(500, 3)) * [1e-9, 1.0, 1e9]
    s = FrozenStats.fit(x, NAMES, "h" * 64, 1e-8, TRAIN)
    t = FrozenStats.from_record(StatsRecord.model_validate_json(s.to_record().model_dump_json()))
    assert t.mean.tobytes() == s.mean.tobytes() and t.sigma.tobytes() == s.sigma.tobytes()
    assert t.meta() == s.meta()


def test_fit_rejects_non_finite_and_empty_input():
    with pytest.raises(StatsError, match="non-finite"):
        FrozenStats.fit(np.array([[1.0, np.nan, 0.0]]), NAMES, "h", 1e-8, TRAIN)
    with pytest.raises(StatsError, match="zero rows"):
        FrozenStats.fit(np.zeros((0, 3)), NAMES, "h", 1e-8, TRAIN)
    with pytest.raises(StatsError, match="shape"):
        FrozenStats.fit(np.zeros((4, 2)), NAMES, "h", 1e-8, TRAIN)


def test_stats_id_depends_on_train_hashes_and_spec():
    other = [{"slice_id": "fold00-train", "sha256": "1" * 64}]
    assert compute_stats_id("h", TRAIN) != compute_stats_id("h", other)
    assert compute_stats_id("h", TRAIN) != compute_stats_id("g", TRAIN)


def test_make_folds_sliding_hand_computed():
    cfg = WalkForwardConfig(train_hours=2, test_hours=1, step_hours=1, n_folds=2, embargo_s=60)
    folds = make_folds(cfg, 0, 10 * NS_PER_HOUR)
    e = 60 * NS_PER_S
    assert (folds[0].train.start_ns, folds[0].train.end_ns) == (0, 2 * NS_PER_HOUR)
    assert (folds[0].test.start_ns, folds[0].test.end_ns) == (
        2 * NS_PER_HOUR + e,
        3 * NS_PER_HOUR + e,
    )
    assert (folds[1].train.start_ns, folds[1].train.end_ns) == (NS_PER_HOUR, 3 * NS_PER_HOUR)
    assert [w.slice_id for w in all_windows(folds, [])] == [
        "fold00-train",
        "fold00-test",
        "fold01-train",
        "fold01-test",
    ]


def test_make_folds_raises_when_data_is_too_short():
    cfg = WalkForwardConfig(train_hours=2, test_hours=1, step_hours=1, n_folds=3, embargo_s=0)
    with pytest.raises(WalkForwardError, match="fold 2"):
        make_folds(cfg, 0, 4 * NS_PER_HOUR)


def test_stress_windows_clip_to_data_and_reject_windows_after_it():
    cfg = WalkForwardConfig(stress_windows=((1.0, 5.0),))
    (w,) = make_stress_windows(cfg, 0, 3 * NS_PER_HOUR)
    assert (w.start_ns, w.end_ns, w.slice_id) == (NS_PER_HOUR, 3 * NS_PER_HOUR, "stress00")
    with pytest.raises(WalkForwardError):
        make_stress_windows(WalkForwardConfig(stress_windows=((4.0, 5.0),)), 0, 3 * NS_PER_HOUR)


@given(
    train=st.floats(0.1, 10),
    val=st.sampled_from([0.0, 0.5, 1.0]),
    test=st.floats(0.1, 5),
    step=st.floats(0.1, 5),
    n=st.integers(1, 6),
    embargo=st.floats(0, 3600),
    mode=st.sampled_from(["sliding", "expanding"]),
)
def test_folds_never_overlap_train_and_test_and_keep_the_embargo(
    train, val, test, step, n, embargo, mode
):
    cfg = WalkForwardConfig(
        train_hours=train,
        validation_hours=val,
        test_hours=test,
        step_hours=step,
        n_folds=n,
        embargo_s=embargo,
        mode=mode,
    )
    folds = make_folds(cfg, 0, 10**18)
    emb = round(embargo * NS_PER_S)
    for f in folds:
        assert f.train.start_ns < f.train.end_ns <= f.test.start_ns - emb
        assert f.test.start_ns < f.test.end_ns
        if f.validation is not None:
            assert f.train.end_ns + emb <= f.validation.start_ns
            assert f.validation.end_ns + emb <= f.test.start_ns
        if mode == "expanding":
            assert f.train.start_ns == 0
    ends = [f.test.end_ns for f in folds]
    assert ends == sorted(ends)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"windows_s": (10, 10)},
        {"return_horizons_s": ()},
        {"depth_bps": (0.0,)},
        {"windows_s": (-1, 5)},
    ],
)
def test_feature_spec_rejects_windows_that_would_collide_or_are_not_positive(kwargs):
    from pydantic import ValidationError

    from core.config.features import FeatureSpec

    with pytest.raises(ValidationError):
        FeatureSpec(**kwargs)


def test_quiet_spans_find_holes_at_least_min_long_and_windows_meeting_them():
    from features.walk_forward import after_gaps, quiet_spans, windows_over_gaps

    dt = 1_000_000_000
    ts = np.arange(1, 21, dtype=np.int64) * dt  # bars closing at 1 s .. 20 s
    quiet = np.zeros(20, dtype=bool)
    quiet[2:5] = True  # bars closing at 3, 4, 5 s: no events in (2 s, 5 s] -> 3 s
    quiet[9:16] = True  # (9 s, 16 s] -> 7 s
    assert quiet_spans(ts, quiet, dt, 4 * dt) == [(9 * dt, 16 * dt)]
    assert quiet_spans(ts, quiet, dt, 3 * dt) == [(2 * dt, 5 * dt), (9 * dt, 16 * dt)]
    assert quiet_spans(ts, quiet, dt, 0) == []  # the check turned off
    quiet[-3:] = True  # a hole at the very end
    assert quiet_spans(ts, quiet, dt, 3 * dt)[-1] == (17 * dt, 20 * dt)
    spans = [(9 * dt, 16 * dt)]
    inside = Window("fold00-test", "test", 0, 12 * dt, 14 * dt)
    before = Window("fold00-train", "train", 0, 1 * dt, 9 * dt)  # ends where the hole starts
    after = Window("stress00", "stress", None, 17 * dt, 21 * dt)  # look-back reaches in
    (msg,) = windows_over_gaps([before, inside, after], spans)
    assert msg.startswith("fold00-test [") and "(0.00 h)" in msg
    # rows in the hole or whose 3 s look-back reaches into it are warm-up
    np.testing.assert_array_equal(np.flatnonzero(after_gaps(ts, spans, 3 * dt)), np.arange(9, 18))
