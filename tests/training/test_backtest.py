"""Walk-forward backtest: lockstep equals one-at-a-time, accounting identities, reports."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from core.config.training import EvaluationConfig
from features.slices import load_fold_index
from tests.training.conftest import DataDir
from training.backtest import SliceInput, backtest, sb3_batch_policy
from training.report import render_markdown, write_report


def slice_inputs(data: DataDir) -> tuple[list[SliceInput], str]:
    spec = data.cfg.features.spec
    idx = load_fold_index(data.layout, spec.spec_hash)
    folder = data.layout.slices(spec.spec_hash)
    paths = [folder / f"{f.test}.manifest.json" for f in idx.folds] + [
        folder / f"{s}.manifest.json" for s in idx.stress
    ]
    return [SliceInput.from_path(p) for p in paths], str(data.layout.stats(idx.folds[-1].stats_id))


def projection_policy(dim: int, seed: int = 0):
    """A deterministic policy: argmax of a fixed random projection of the observation."""
    w = np.random.default_rng(seed).normal(size=(dim, 3)).astype(np.float32)

    def act(obs: np.ndarray) -> np.ndarray:
        return np.argmax(obs @ w, axis=1)

    return act


def obs_dim(data: DataDir) -> int:
    spec = data.cfg.features.spec
    return len(spec.names) * spec.window + 7


def test_slice_input_reads_kind_and_fold_from_the_manifest(tiny_data: DataDir) -> None:
    inputs, _ = slice_inputs(tiny_data)
    assert [(s.slice_id, s.kind, s.fold) for s in inputs] == [
        ("fold00-test", "test", 0),
        ("fold01-test", "test", 1),
        ("stress00", "stress", None),
    ]


def test_lockstep_backtest_equals_one_slice_at_a_time(tiny_data: DataDir) -> None:
    inputs, stats = slice_inputs(tiny_data)
    env_cfg = tiny_data.cfg.sweep.trials[0].env
    pol = projection_policy(obs_dim(tiny_data))
    a = backtest(pol, inputs, stats, env_cfg)
    b = backtest(pol, inputs, stats, env_cfg, lockstep=False)
    assert [r.slice.slice_id for r in a] == [s.slice_id for s in inputs]
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.equity, y.equity)
        np.testing.assert_array_equal(x.actions, y.actions)
        assert x.metrics == y.metrics and x.trades == y.trades
    assert sum(r.metrics.trades for r in a) > 0  # the projection policy trades


def test_backtest_covers_the_full_slice_and_accounting_adds_up(tiny_data: DataDir) -> None:
    inputs, stats = slice_inputs(tiny_data)
    env_cfg = tiny_data.cfg.sweep.trials[0].env
    for r in backtest(projection_policy(obs_dim(tiny_data), 1), inputs, stats, env_cfg):
        rows = json.loads(
            Path(r.slice.path).with_suffix("").with_suffix(".manifest.json").read_text()
        )["rows"]
        assert r.equity.size == rows - env_cfg.window + 1  # first full window to the last row
        m = r.metrics
        assert m.pnl_plus_fees == pytest.approx(r.equity[-1] / r.equity[0] - 1.0, abs=1e-12)
        assert m.pnl_plus_fees == pytest.approx(m.pnl + m.fees)
        assert m.wins + m.losses <= m.trades == len(r.trades)
        assert r.position_size[-1] == 0.0  # flattened at the end of the slice
        assert np.all(np.diff(r.ts_ns) > 0)


def test_hold_only_policy_never_trades_and_keeps_equity(tiny_data: DataDir) -> None:
    inputs, stats = slice_inputs(tiny_data)
    res = backtest(
        lambda o: np.zeros(len(o), dtype=np.int64), inputs, stats, tiny_data.cfg.sweep.trials[0].env
    )
    for r in res:
        assert r.metrics.trades == 0 and r.metrics.pnl == 0.0 and r.metrics.fees == 0.0
        assert r.metrics.max_drawdown == 0.0 and np.all(r.equity == r.equity[0])


def test_policy_returning_the_wrong_number_of_actions_raises(tiny_data: DataDir) -> None:
    inputs, stats = slice_inputs(tiny_data)
    with pytest.raises(ValueError, match="actions for"):
        backtest(
            lambda o: np.zeros(1, dtype=np.int64), inputs, stats, tiny_data.cfg.sweep.trials[0].env
        )


def test_one_env_config_per_slice_runs_each_slice_under_its_own(tiny_data: DataDir) -> None:
    """A slice under two fill models in one lockstep pass (the touch bound's way) gives
    what each config gives alone; a config count that does not match the slices raises."""
    from training.evaluation import touch_bound_env

    inputs, stats = slice_inputs(tiny_data)
    env = tiny_data.cfg.sweep.trials[0].env
    pol = projection_policy(obs_dim(tiny_data))
    both = backtest(pol, [inputs[0], inputs[0]], stats, [env, touch_bound_env(env)])
    alone = [backtest(pol, [inputs[0]], stats, c)[0] for c in (env, touch_bound_env(env))]
    for x, y in zip(both, alone, strict=True):
        np.testing.assert_array_equal(x.equity, y.equity)
        assert x.metrics == y.metrics
    assert both[0].metrics != both[1].metrics  # two executions, not one twice
    with pytest.raises(ValueError, match="1 env configs for 2 slices"):
        backtest(pol, inputs[:2], stats, [env])


def test_sb3_batch_policy_matches_sb3_predict(tiny_data: DataDir) -> None:
    import torch
    from stable_baselines3 import PPO

    from envs.management import ManagementEnv
    from training.sweep import ppo_kwargs

    torch.set_num_threads(1)
    inputs, stats = slice_inputs(tiny_data)
    trial = tiny_data.cfg.sweep.trials[0]
    env = ManagementEnv(inputs[0].path, stats, trial.env)
    model = PPO("MlpPolicy", env, seed=3, device="cpu", **ppo_kwargs(trial))
    obs = (
        np.random.default_rng(0)
        .normal(0, 3, size=(500, env.observation_space.shape[0]))
        .astype(np.float32)
    )
    expected = np.array([model.predict(o, deterministic=True)[0] for o in obs])
    np.testing.assert_array_equal(sb3_batch_policy(model)(obs), expected)


def test_write_report_writes_pngs_trades_markdown_and_json(
    tiny_data: DataDir, tmp_path: Path
) -> None:
    inputs, stats = slice_inputs(tiny_data)
    res = backtest(
        projection_policy(obs_dim(tiny_data)),
        inputs,
        stats,
        tiny_data.cfg.sweep.trials[0].env,
        EvaluationConfig(),
    )
    report = {
        "candidate_id": "base-s0-t1024",
        "decision": "reject",
        "reasons": ["pass_majority_slices failed"],
        "model": {"model_zip": "/x/model.zip"},
        "gates": {
            "drawdown_under_cap": {
                "passed": True,
                "value": 0.01,
                "threshold": 0.05,
                "definition": "d",
            }
        },
        "slices": [r.metrics.as_dict() for r in res if r.slice.kind == "test"],
        "stress_slices": [r.metrics.as_dict() for r in res if r.slice.kind == "stress"],
        "test_totals": {"pnl": 0.0},
        "train_slices": [{"slice_id": "fold00-train", "sha256": "ab" * 32}],
        "test_slices": [],
        "env_config": {},
        "reward_config": {},
        "ppo_config": {},
        "notes": ["a note"],
    }
    paths = write_report(tmp_path / "rep", report, res)
    for name in ("equity.png", "drawdown.png"):
        assert Path(paths[name]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(paths["trades.csv"]) as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == sum(len(r.trades) for r in res)
    assert json.loads(Path(paths["report.json"]).read_text())["decision"] == "reject"
    md = Path(paths["report.md"]).read_text()
    assert md == render_markdown(report)
    for text in (
        "**Decision: reject**",
        "drawdown_under_cap",
        "stress00",
        "fold00-train",
        "a note",
    ):
        assert text in md


def test_backtest_candidate_judges_each_fold_model_and_round_trips(
    tmp_path: Path, tiny_data: DataDir
) -> None:
    import torch
    from stable_baselines3 import PPO

    from envs.management import ManagementEnv
    from tests.training.conftest import build_data_dir
    from training.candidates import (
        CandidatePlan,
        backtest_candidate,
        candidate_backtest,
        load_catalog,
        load_results,
        load_touch_bound,
    )
    from training.evaluation import touch_bound_env
    from training.sweep import ppo_kwargs

    torch.set_num_threads(1)
    data = build_data_dir(tmp_path / "d", tiny_data.cfg, validation=True)
    catalog = load_catalog(data.layout, data.cfg.features.spec.spec_hash)
    trial = data.cfg.sweep.trials[0]
    zips = []
    for f in catalog.folds:  # untrained but distinct models, one per fold
        model = PPO(
            "MlpPolicy",
            ManagementEnv(f.train.location, f.stats_dir, trial.env),
            seed=f.fold,
            **ppo_kwargs(trial),
        )
        model.save(tmp_path / f"m{f.fold}.zip")
        zips.append(str(tmp_path / f"m{f.fold}.zip"))
    plan = CandidatePlan(
        candidate_id="base-s0-t1",
        trial=trial,
        seed=0,
        timesteps=1,
        model_zips=tuple(zips),
        folds=catalog.folds,
        stress_paths=catalog.stress_paths,
        stress_ids=catalog.stress_ids,
        out_dir=str(tmp_path / "bt"),
    )
    results = load_results(backtest_candidate(plan))
    assert [(r.slice.slice_id, r.slice.kind) for r in results] == [
        ("fold00-validation", "validation"),
        ("fold00-test", "test"),
        ("fold01-validation", "validation"),
        ("fold01-test", "test"),
        ("stress00", "stress"),
    ]
    c = candidate_backtest(plan, results)
    assert [r.slice.slice_id for r in c.test] == ["fold00-test", "fold01-test"]
    assert [r.slice.slice_id for r in c.validation] == ["fold00-validation", "fold01-validation"]
    assert c.model_zip == zips[-1] and c.stats_dir == catalog.folds[-1].stats_dir
    policies = [sb3_batch_policy(PPO.load(z, device="cpu")) for z in zips]
    again = backtest(
        policies[0],
        [results[1].slice],
        catalog.folds[0].stats_dir,
        trial.env,
    )
    np.testing.assert_array_equal(again[0].equity, results[1].equity)  # saved == recomputed
    assert again[0].metrics == results[1].metrics
    # the touch bound (#17): the same fold models on the test slices only, under touch
    # without latency, saved beside the results and equal to that backtest run anew
    bound = load_touch_bound(plan.out_dir)
    assert bound is not None and trial.env.fill_model != "touch"
    assert [(r.slice.slice_id, r.slice.kind) for r in bound] == [
        ("fold00-test", "test"),
        ("fold01-test", "test"),
    ]
    for k, (b, judged) in enumerate(zip(bound, c.test, strict=True)):
        anew = backtest(
            policies[k],
            [b.slice],
            catalog.folds[k].stats_dir,
            touch_bound_env(trial.env),
        )[0]
        np.testing.assert_array_equal(anew.equity, b.equity)
        assert anew.metrics == b.metrics
        # another execution, not a copy: on these slices touch fills more (a bid fills on
        # any sell at its price, where trade_through needs one below it)
        assert b.metrics is not None and judged.metrics is not None
        assert b.metrics.maker_volume > judged.metrics.maker_volume
    assert candidate_backtest(plan, results, bound).touch_bound == bound
    # a candidate judged under touch without latency is its own bound: no second backtest
    touch = trial.model_copy(update={"env": touch_bound_env(trial.env)})
    plan = plan.model_copy(update={"trial": touch, "out_dir": str(tmp_path / "bt-touch")})
    results = load_results(backtest_candidate(plan))
    bound = load_touch_bound(plan.out_dir)
    assert bound is not None
    for b, judged in zip(bound, [r for r in results if r.slice.kind == "test"], strict=True):
        np.testing.assert_array_equal(b.equity, judged.equity)
    assert load_touch_bound(tmp_path) is None  # a folder without one: None, not an error


def test_training_refuses_slices_of_another_instrument_contract_not_other_fees(tiny_data):
    """Slices record the instrument contract their events were ingested under: train
    and evaluate refuse another instrument (prices would be misread), accept another
    tick size (each slice is priced in its own: tests/training/test_tick_change.py) and
    other fees (the account's assumption), and skip slices that record none."""
    from core.instrument import XBTUSD
    from training.candidates import check_instrument, load_catalog

    catalog = load_catalog(tiny_data.layout, tiny_data.cfg.features.spec.spec_hash)
    check_instrument(catalog, XBTUSD)  # nothing recorded: nothing to check
    sid = sorted(catalog.manifests)[0]

    def recorded(contract: dict) -> object:
        m = catalog.manifests[sid].model_copy(update={"instrument": contract})
        return catalog.model_copy(update={"manifests": {**catalog.manifests, sid: m}})

    check_instrument(recorded(XBTUSD.contract()), XBTUSD.model_copy(update={"maker_fee": 0.0}))
    check_instrument(recorded(XBTUSD.model_copy(update={"tick_size": 0.1}).contract()), XBTUSD)
    other = XBTUSD.model_copy(update={"symbol": "XBTUSDT"}).contract()
    with pytest.raises(ValueError, match=rf"another instrument .*\({sid}: symbol XBTUSDT"):
        check_instrument(recorded(other), XBTUSD)


def test_backtest_reports_fill_volumes_that_rescore_its_fees(
    tmp_path: Path, tiny_data: DataDir
) -> None:
    """Under a constant fee the slice's fees are its volumes times the rates; the metrics
    state the rate charged; the volumes survive save_results / load_results."""
    from core.fees import FeeConfig
    from training.candidates import load_results, save_results
    from training.metrics import fees_at

    inputs, stats = slice_inputs(tiny_data)
    base = tiny_data.cfg.sweep.trials[0].env
    env_cfg = base.model_copy(update={"fees": FeeConfig.constant(0.0002, 0.00075)})
    pol = projection_policy(obs_dim(tiny_data), 1)
    res = backtest(pol, inputs, stats, env_cfg)
    for r in res:
        m = r.metrics
        assert m.maker_volume > 0 and m.maker_fee == pytest.approx(0.0002)
        # a taker fill only when the slice ends holding (the flatten)
        assert m.taker_fee == (pytest.approx(0.00075) if m.taker_volume > 0 else None)
        assert m.fees == pytest.approx(fees_at(m, 0.0002, 0.00075), rel=1e-9)
        assert -r.fees_paid / r.equity[0] == pytest.approx(m.fees)
    # the default (dated) fee charges these 2024 slices BitMEX's base tier of then
    dated = backtest(pol, inputs, stats, base)
    assert [r.metrics.maker_fee for r in dated] == pytest.approx([0.0002] * len(dated))
    save_results(tmp_path / "bt", res)
    assert [r.metrics for r in load_results(tmp_path / "bt")] == [r.metrics for r in res]


def test_trades_csv_uses_the_cash_flow_sign_and_names_its_units() -> None:
    from training.backtest import SliceInput, SliceResult, trade_fields, trade_rows

    trade = {
        "side": -1,
        "entry_ts_ns": 1_704_067_200_123_456_789,  # 2024-01-01T00:00:00.123Z
        "exit_ts_ns": 1_704_067_260_000_000_000,
        "entry_price_ticks": 80_001,
        "exit_price_ticks": 79_990,
        "stake": 0.1,
        "contracts": 4000.0,
        "pnl": 0.002,
        "fees": 0.0005,  # the env's record: positive = paid
    }
    res = SliceResult(
        SliceInput("/x", "fold00-test", "test", 0),
        np.zeros(1, dtype=np.int64),
        np.ones(1),
        np.zeros(1),
        np.zeros(0, dtype=np.int64),
        trades=[trade],
    )
    (row,) = trade_rows([res], tick_size=0.5, settle="XBT")
    assert list(row) == list(trade_fields("XBT"))
    assert row["side"] == "short" and row["entry_time_utc"] == "2024-01-01T00:00:00.123Z"
    assert row["entry_price_usd"] == 40_000.5 and row["exit_price_usd"] == 39_995.0
    assert row["fees_xbt"] == -0.0005  # a fee paid is a negative cash flow, as in metrics
    assert row["pnl_plus_fees_xbt"] == pytest.approx(0.0015)  # pnl + fees
