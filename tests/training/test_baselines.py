"""The baseline panel and the gates that need skill, through the evaluation path that
`chappie evaluate` runs: `plan_references` + `backtest_reference` for the panel,
`backtest_folds` (the walk-forward loop every candidate goes through) for the policy
under test, and `evaluate_sweep` for the verdict. Only SB3 loading is skipped: the
policies under test are plain batch policies.

Market: the random-walk slices of `conftest.build_data_dir` (uninformed taker prints),
four folds with 40 min test slices. The default config's gates are used unchanged; only the
return period is 5 min instead of 1 h, so each test slice gives 8 periods."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.config.experiment import ExperimentConfig, load_config
from core.config.training import BaselinesConfig, EvaluationConfig, TrialConfig
from core.schema import feature_names
from envs.management import (
    ASK_ONLY,
    BID_ONLY,
    BOTH_SIDES,
    HOLD,
    NO_ORDERS,
    TOGGLE_LONG,
    TOGGLE_SHORT,
)
from features.stats import FrozenStats
from tests.training.conftest import REPO, DataDir, build_data_dir
from training.backtest import BatchPolicy
from training.baselines import (
    BASELINE_NAMES,
    ObservationLayout,
    always_quote_policy,
    baseline_runs,
    flat_policy,
    hold_policy,
    imbalance_rule_policy,
    random_policy,
)
from training.candidates import (
    SliceCatalog,
    backtest_folds,
    backtest_reference,
    load_catalog,
    load_results,
    plan_references,
    reference_backtest,
)
from training.evaluation import CandidateBacktest, evaluate_sweep
from training.significance import lag1_autocorrelation, paired_one_sided_test

LEAK = "ofi_10s"  # the feature the test market fills with the next 30 bars' mid move
VOL = 20  # ticks per bar at most: 30 bars of this walk move the mid by ~5 bp, above the fees
LAYOUT = ObservationLayout(("a", "b"), 2)  # 2 features x 2 rows, then 7 state values


def obs(long_order: float, short_order: float, pos: float, b_last: float = 0.0) -> np.ndarray:
    """One observation of LAYOUT: feature rows (a, b) oldest first, then the state."""
    return np.array(
        [[0.0, 0.0, 0.0, b_last, long_order, short_order, pos, 0.0, 0.0, 0.0, 0.0]],
        dtype=np.float32,
    )


# ------------------------------------------------------------------ the policies


@pytest.mark.parametrize(
    ("long_order", "short_order", "pos", "expected"),
    [
        (0, 0, 0.0, TOGGLE_LONG),  # nothing rests: the bid first
        (1, 0, 0.0, TOGGLE_SHORT),  # then the ask
        (1, 1, 0.0, HOLD),  # both rest: keep them (and their place)
        (0, 1, 1.0, HOLD),  # long at its cap: a bid would be ignored, the ask rests
        (0, 0, 1.0, TOGGLE_SHORT),  # long at its cap: place the ask
        (1, 0, -1.0, HOLD),  # short at its cap
    ],
)
def test_always_quote_places_the_missing_side(long_order, short_order, pos, expected) -> None:
    assert always_quote_policy(LAYOUT)(obs(long_order, short_order, pos))[0] == expected


@pytest.mark.parametrize(
    ("b_last", "long_order", "short_order", "expected"),
    [
        (2.0, 0, 0, TOGGLE_LONG),  # the feature favours buying: bid
        (2.0, 0, 1, TOGGLE_SHORT),  # ... and the resting ask is cancelled first
        (2.0, 1, 0, HOLD),
        (-2.0, 1, 0, TOGGLE_LONG),  # favours selling: cancel the bid
        (-2.0, 0, 0, TOGGLE_SHORT),
        (0.5, 1, 0, TOGGLE_LONG),  # |raw| = 0.5 * 2 + 0 = 1.0, not above threshold 1: cancel
    ],
)
def test_imbalance_rule_quotes_only_the_favoured_side(
    b_last, long_order, short_order, expected
) -> None:
    # raw = z * sigma + mean = b_last * 2 + 0
    policy = imbalance_rule_policy(LAYOUT, "b", mean=0.0, sigma=2.0, threshold=1.0)
    assert policy(obs(long_order, short_order, 0.0, b_last))[0] == expected


def test_target_actions_name_the_wanted_orders_whatever_rests() -> None:
    # target mode: the action is the wanted set (1 bid, 2 ask, 3 both, 0 none), whatever
    # rests now; flat (0) means no orders in both modes
    layout = ObservationLayout(("a", "b"), 2, action_mode="target")
    for rests in ((0, 0), (1, 0), (0, 1), (1, 1)):
        assert always_quote_policy(layout)(obs(*rests, 0.0))[0] == BOTH_SIDES
        rule = imbalance_rule_policy(layout, "b", mean=0.0, sigma=2.0, threshold=1.0)
        assert rule(obs(*rests, 0.0, 2.0))[0] == BID_ONLY
        assert rule(obs(*rests, 0.0, -2.0))[0] == ASK_ONLY
        assert rule(obs(*rests, 0.0, 0.5))[0] == NO_ORDERS
    assert set(random_policy(3, 0, 4)(np.zeros((200, 11), np.float32))) == {0, 1, 2, 3}


@pytest.mark.parametrize("mode", ["toggle", "target"])
def test_hold_baselines_build_one_side_to_the_cap_then_hold(mode: str) -> None:
    layout = ObservationLayout(("a", "b"), 2, action_mode=mode)
    long, short = hold_policy(layout, 1), hold_policy(layout, -1)
    if mode == "target":
        assert long(obs(0, 0, 0.0))[0] == BID_ONLY and short(obs(0, 0, 0.0))[0] == ASK_ONLY
        return
    assert long(obs(0, 0, 0.0))[0] == TOGGLE_LONG  # place the bid
    assert long(obs(1, 0, 0.5))[0] == HOLD  # it rests: keep it
    assert long(obs(0, 1, 0.0))[0] == TOGGLE_SHORT  # an ask rests: cancel it first
    assert long(obs(0, 0, 1.0))[0] == HOLD  # at the cap: hold the position
    assert short(obs(0, 0, 0.0))[0] == TOGGLE_SHORT
    assert short(obs(0, 0, -1.0))[0] == HOLD


def test_imbalance_rule_refuses_a_feature_the_spec_lacks() -> None:
    with pytest.raises(ValueError, match="not in the FeatureSpec"):
        imbalance_rule_policy(LAYOUT, "imbalance_l1", 0.0, 1.0, 0.0)


def test_flat_holds_and_random_is_reproducible_per_seed_and_fold() -> None:
    batch = np.zeros((50, 11), dtype=np.float32)
    assert set(flat_policy()(batch)) == {HOLD}
    a, b, c = random_policy(3, 0)(batch), random_policy(3, 0)(batch), random_policy(3, 1)(batch)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert set(a) == {0, 1, 2}


def test_baseline_runs_expand_random_seeds_and_need_five() -> None:
    runs = baseline_runs(BaselinesConfig())
    assert [n for n, _ in runs].count("random") == 5 and ("flat", 0) in runs
    with pytest.raises(ValueError, match="at least 5 distinct seeds"):
        BaselinesConfig(random_seeds=(0, 1, 2, 3, 3))


# ------------------------------------------------------------------ the paired test


def test_paired_test_hand_computed() -> None:
    # d = (1, 2, 3): mean 2, sd 1, t = 2 / (1 / sqrt 3) = 3.4641; P(T_2 >= 3.4641) = 0.03709
    r = paired_one_sided_test(np.array([1.0, 2.0, 3.0]), np.zeros(3))
    assert r.n == 3 and r.mean_difference == 2.0
    assert r.t == pytest.approx(3.4641016, rel=1e-6)
    assert r.p_value == pytest.approx(0.0370900, rel=1e-4)


def test_paired_test_equal_is_not_better_and_too_short_is_undefined() -> None:
    x = np.array([0.1, -0.2, 0.3, 0.0])
    assert paired_one_sided_test(x, x).p_value == 1.0
    assert paired_one_sided_test(x[:1], x[:1]).p_value is None
    with pytest.raises(ValueError, match="equal in length"):
        paired_one_sided_test(x, x[:2])


def test_lag1_autocorrelation_hand_computed() -> None:
    # x - mean = (-1.5, -0.5, 0.5, 1.5): (0.75 - 0.25 + 0.75) / 5 = 0.25
    assert lag1_autocorrelation(np.array([1.0, 2.0, 3.0, 4.0])) == pytest.approx(0.25)
    assert lag1_autocorrelation(np.ones(5)) is None


# ------------------------------------------------------------------ must say no


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> tuple[DataDir, ExperimentConfig]:
    cfg = load_config(REPO / "conf" / "default.yaml")
    data = build_data_dir(
        tmp_path_factory.mktemp("baselines"), cfg, rows=900, test_rows=2400, leak=LEAK, vol=VOL
    )
    return data, cfg


def _eval_cfg(cfg: ExperimentConfig) -> EvaluationConfig:
    # default gates, untouched; a 5-minute return period for 1 h test slices
    return cfg.evaluation.model_copy(update={"return_period_s": 300.0})


def _candidate(
    name: str, policy_for_fold, catalog: SliceCatalog, cfg: ExperimentConfig
) -> CandidateBacktest:
    trial = TrialConfig(name=name, env=cfg.sweep.trials[0].env)
    results = backtest_folds(
        policy_for_fold,
        catalog.folds,
        catalog.stress_paths,
        catalog.stress_ids,
        trial.env,
        _eval_cfg(cfg),
    )
    return CandidateBacktest(
        f"{name}-s0-t0",
        trial,
        0,
        0,
        [r for r in results if r.slice.kind == "test"],
        [r for r in results if r.slice.kind == "stress"],
        model_key=f"test:{name}",
    )


def _planted(catalog: SliceCatalog, spec_names: tuple[str, ...], window: int):
    layout = ObservationLayout(spec_names, window)

    def for_fold(k: int) -> BatchPolicy:
        st = FrozenStats.load(catalog.folds[k].stats_dir)
        j = list(st.feature_names).index(LEAK)
        # reads the future: quote the bid before a rise, the ask before a fall
        return imbalance_rule_policy(layout, LEAK, float(st.mean[j]), float(st.sigma[j]), 2.0 * VOL)

    return for_fold


@pytest.fixture(scope="module")
def judged(market, tmp_path_factory: pytest.TempPathFactory) -> dict:
    data, cfg = market
    spec = cfg.features.spec
    names = tuple(feature_names(spec))
    catalog = load_catalog(data.layout, spec.spec_hash)
    ev = _eval_cfg(cfg)
    out = Path(tmp_path_factory.mktemp("refs"))
    cands = [
        _candidate("random", lambda k: random_policy(99, k), catalog, cfg),
        _candidate(
            "always_quote",
            lambda k: always_quote_policy(ObservationLayout(names, spec.window)),
            catalog,
            cfg,
        ),
        _candidate("planted", _planted(catalog, names, spec.window), catalog, cfg),
    ]
    refs = []
    for plan in plan_references([c.trial for c in cands], catalog, ev, names, spec.window, out):
        refs.append(reference_backtest(plan, load_results(backtest_reference(plan))))
    result = evaluate_sweep(cands, ev, references=refs).to_json()  # the evaluation.json shape
    return {c["candidate_id"]: c for c in result["candidates"]} | {"_all": result}


def test_random_policy_is_not_promoted_and_fails_beats_baselines(judged) -> None:
    c = judged["random-s0-t0"]
    gate = c["gates"]["beats_baselines"]
    assert gate["value"] is not None and not gate["passed"], gate
    assert c["decision"] != "promote"


def test_always_quote_is_not_promoted_and_fails_beats_baselines(judged) -> None:
    c = judged["always_quote-s0-t0"]
    gate = c["gates"]["beats_baselines"]
    assert gate["value"] is not None and not gate["passed"], gate
    assert c["decision"] != "promote"


def test_planted_skill_passes_beats_baselines(judged) -> None:
    c = judged["planted-s0-t0"]
    gate = c["gates"]["beats_baselines"]
    assert gate["passed"], gate
    assert gate["detail"]["pnl_without_fees"] > 0.0
    # the verdict still waits for more distinct trial configs before PBO means anything
    assert c["gates"]["pbo_under_cap"]["value"] is None and c["decision"] == "retest"


def test_evaluation_carries_the_baseline_panel_with_spread_and_fee_sensitivity(judged) -> None:
    panel = judged["_all"]["baselines"]
    assert set(panel) == set(BASELINE_NAMES)
    for entry in panel.values():
        assert {"pnl_plus_fees", "pnl_without_fees", "fees", "trades", "max_drawdown"} <= set(entry)
        assert len(entry["slices"]) == 4 and len(entry["stress_slices"]) == 1
        assert [r["maker_fee"] for r in entry["fee_sensitivity"]] == [-0.00025, 0.0, 0.0002]
    assert panel["flat"]["trades"] == 0 and panel["flat"]["pnl_plus_fees"] == 0.0
    assert panel["random"]["seeds"] == [0, 1, 2, 3, 4]
    assert panel["random"]["spread"]["pnl_plus_fees_std"] > 0.0
    # a maker rebate only raises pnl+fees: the sensitivity is ordered by the fee
    sens = [r["pnl_plus_fees"] for r in panel["always_quote"]["fee_sensitivity"]]
    assert sens[0] > sens[1] > sens[2]


def test_newey_west_widens_the_error_of_autocorrelated_differences() -> None:
    from training.significance import newey_west_lags, newey_west_se

    assert newey_west_lags(20) == 2 and newey_west_lags(100) == 4
    # x - mean = (-1.5, -0.5, 0.5, 1.5): g0 = 5/4, g1 = (0.75 - 0.25 + 0.75) / 4 = 0.3125;
    # with 1 lag (weight 1/2): s = 1.25 + 2 * 0.5 * 0.3125 = 1.5625, se = sqrt(s / 4) = 0.625
    assert newey_west_se(np.array([1.0, 2.0, 3.0, 4.0]), 1) == pytest.approx(0.625)
    rng = np.random.default_rng(0)
    trend = np.repeat(rng.normal(0.0, 1.0, 10), 4)  # runs of 4 equal values
    iid = paired_one_sided_test(trend + 0.3, np.zeros(40))
    assert iid.standard_error is not None
    assert iid.standard_error > trend.std(ddof=1) / np.sqrt(40)  # the runs are seen
