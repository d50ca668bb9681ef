from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from core.config.env import EnvConfig
from envs.management import HOLD, TOGGLE_LONG, TOGGLE_SHORT, ManagementEnv, SliceDataError
from envs.observation import observation_size
from tests.envs.conftest import (
    NAMES,
    SPEC,
    SliceFiles,
    make_market_files,
    round_trip_market,
    write_slice,
    write_stats,
)

N_F = len(NAMES)
SCENARIO = {"window": 2, "random_start": False, "mean_steps_per_episode": 1000}


def scenario_env(
    tmp_path: Path, flat_stats: Path, n: int = 12, *, terms: bool = False, **cols: np.ndarray
) -> ManagementEnv:
    """A constant 80,000/80,001 book unless overridden; fills only where a test says.
    terms: the reward terms in every info (reward_terms_in_info)."""
    bid = cols.pop("bid", np.full(n, 80_000))
    ask = cols.pop("ask", np.full(n, 80_001))
    path = write_slice(tmp_path / "s.parquet", bid, ask, **cols)
    return ManagementEnv(path, flat_stats, SCENARIO, reward_terms_in_info=terms)


def run(env: ManagementEnv, actions: list[int]) -> list[dict]:
    env.reset(seed=0)
    infos = []
    for a in actions:
        _, _, term, trunc, info = env.step(a)
        infos.append(info)
        if term or trunc:
            break
    return infos


def test_import_registers_management_v0(market_files: SliceFiles) -> None:
    assert envs.ENV_ID in gym.registry
    env = gym.make(
        envs.ENV_ID, slice_path=str(market_files.slice_path), stats_dir=str(market_files.stats_dir)
    )
    obs, _ = env.reset(seed=0)
    assert obs.shape == (observation_size(N_F, EnvConfig().window),)
    assert env.action_space == gym.spaces.Discrete(3)


def test_gymnasium_check_env_passes(market_files: SliceFiles) -> None:
    env = ManagementEnv(
        market_files.slice_path, market_files.stats_dir, {"mean_steps_per_episode": 64}
    )
    check_env(env, skip_render_check=True)


def test_sb3_check_env_passes(market_files: SliceFiles) -> None:
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = ManagementEnv(
        market_files.slice_path, market_files.stats_dir, {"mean_steps_per_episode": 64}
    )
    sb3_check_env(env, warn=True)


def rollout(files: SliceFiles, seed: int, cfg: dict) -> tuple[np.ndarray, list[float], list[dict]]:
    env = ManagementEnv(files.slice_path, files.stats_dir, cfg)
    obs, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    out, rewards, infos = [obs], [], []
    for _ in range(150):
        obs, r, term, trunc, info = env.step(env.action_space.sample())
        out.append(obs)
        rewards.append(r)
        infos.append(info)
        if term or trunc:
            obs, _ = env.reset()
            out.append(obs)
    return np.stack(out), rewards, infos


def test_same_seed_gives_identical_rollouts(market_files: SliceFiles) -> None:
    cfg = {
        "mean_steps_per_episode": 40,
        "std_steps_per_episode": 10,
        "random_initial_position": True,
    }
    a = rollout(market_files, 3, cfg)
    b = rollout(market_files, 3, cfg)
    c = rollout(market_files, 4, cfg)
    assert np.array_equal(a[0], b[0]) and a[1] == b[1] and a[2] == b[2]
    assert not np.array_equal(a[0], c[0])


def test_observation_holds_normalised_window_then_state(tmp_path: Path) -> None:
    n = 10
    feats = np.arange(n * N_F, dtype=np.float64).reshape(n, N_F)
    path = write_slice(
        tmp_path / "s.parquet", np.full(n, 80_000), np.full(n, 80_001), features=feats
    )
    mean, sigma = np.full(N_F, 1.0), np.full(N_F, 1000.0)
    stats = write_stats(tmp_path / "st", NAMES, mean, sigma, SPEC.spec_hash)
    env = ManagementEnv(path, stats, {**SCENARIO, "window": 3, "obs_clip": 0.5})
    obs, _ = env.reset()
    expected = np.clip((feats[0:3] - mean) / sigma, -0.5, 0.5).astype(np.float32).ravel()
    assert np.array_equal(obs[: 3 * N_F], expected)
    assert obs[3 * N_F :].tolist() == [0.0] * 7


def test_trade_through_needs_a_print_below_the_bid(tmp_path: Path, flat_stats: Path) -> None:
    sell_lo = np.zeros(12, np.int64)
    sell_lo[3] = 80_000  # prints at our price: not through
    sell_lo[5] = 79_999  # through
    env = scenario_env(tmp_path, flat_stats, sell_lo=sell_lo)
    infos = run(env, [TOGGLE_LONG, HOLD, HOLD, HOLD, HOLD])
    assert [i["position_size"] for i in infos] == [0.0, 0.0, 0.0, 0.1, 0.1]
    assert infos[2]["long_order"] == 80_000 and infos[3]["long_order"] == 0


def test_touch_fills_on_a_print_at_the_bid(tmp_path: Path, flat_stats: Path) -> None:
    sell_lo = np.zeros(12, np.int64)
    sell_lo[3] = 80_000
    path = write_slice(
        tmp_path / "s.parquet", np.full(12, 80_000), np.full(12, 80_001), sell_lo=sell_lo
    )
    env = ManagementEnv(path, flat_stats, {**SCENARIO, "fill_model": "touch"})
    infos = run(env, [TOGGLE_LONG, HOLD, HOLD])
    assert [i["position_size"] for i in infos] == [0.0, 0.1, 0.1]


def test_opposite_best_crossing_fills_the_order(tmp_path: Path, flat_stats: Path) -> None:
    bid = np.full(12, 80_000)
    ask = np.full(12, 80_001)
    bid[3:], ask[3:] = 80_005, 80_006
    env = scenario_env(tmp_path, flat_stats, bid=bid, ask=ask)
    # sell maker at 80,001 placed at bar 1; bar 3's best bid 80,005 >= 80,001 fills it
    infos = run(env, [TOGGLE_SHORT, HOLD, HOLD])
    assert [i["position_size"] for i in infos] == [0.0, -0.1, -0.1]
    assert env.position.shorts[0].price_ticks == 80_001


def test_resting_order_rolls_to_the_new_best_bid(tmp_path: Path, flat_stats: Path) -> None:
    bid = np.full(12, 80_000)
    bid[3:] = 80_004
    ask = bid + 1
    sell_lo = np.zeros(12, np.int64)
    sell_lo[5] = 80_003  # below the rolled bid 80,004 (and above the original 80,000)
    env = scenario_env(tmp_path, flat_stats, bid=bid, ask=ask, sell_lo=sell_lo)
    infos = run(env, [TOGGLE_LONG, HOLD, HOLD, HOLD])
    assert infos[1]["long_order"] == 80_004
    assert infos[3]["position_size"] == 0.1
    assert env.position.longs[0].price_ticks == 80_004
    # without rolling the order stays at 80,000 and the print at 80,003 does not fill it
    path = write_slice(tmp_path / "s2.parquet", bid, ask, sell_lo=sell_lo)
    fixed = ManagementEnv(path, flat_stats, {**SCENARIO, "roll_orders": False})
    assert run(fixed, [TOGGLE_LONG, HOLD, HOLD, HOLD])[-1]["position_size"] == 0.0


def test_toggle_twice_cancels_the_order(tmp_path: Path, flat_stats: Path) -> None:
    sell_lo = np.zeros(12, np.int64)
    sell_lo[4] = 79_990
    env = scenario_env(tmp_path, flat_stats, sell_lo=sell_lo)
    infos = run(env, [TOGGLE_LONG, TOGGLE_LONG, HOLD, HOLD])
    assert infos[0]["long_order"] == 80_000 and infos[1]["long_order"] == 0
    assert infos[-1]["position_size"] == 0.0


def test_round_trip_reports_inverse_pnl_and_rebates(tmp_path: Path, flat_stats: Path) -> None:
    n = 12
    bid = np.full(n, 80_000)
    bid[5:] = 80_800
    ask = bid + 1
    sell_lo = np.zeros(n, np.int64)
    sell_lo[2] = 79_999  # fills the long at 80,000
    buy_hi = np.zeros(n, np.int64)
    buy_hi[7] = 80_900  # fills the sell rolled to 80,801
    env = scenario_env(
        tmp_path, flat_stats, bid=bid, ask=ask, sell_lo=sell_lo, buy_hi=buy_hi, terms=True
    )
    infos = run(env, [TOGGLE_LONG, HOLD, HOLD, HOLD, TOGGLE_SHORT, HOLD, HOLD])
    trades = [t for i in infos for t in i["trades"]]
    assert len(trades) == 1
    t = trades[0]
    contracts = 0.1 * 40_000
    pnl = contracts * (1 / 40_000 - 1 / 40_400.5)
    fees = -0.00025 * contracts / 40_000 - 0.00025 * contracts / 40_400.5
    assert (t["entry_price_ticks"], t["exit_price_ticks"]) == (80_000, 80_801)
    assert t["pnl"] == pytest.approx(pnl, rel=1e-12)
    assert t["fees"] == pytest.approx(fees, rel=1e-12)
    last = infos[-1]
    assert last["realized_pnl"] == pytest.approx(pnl)
    assert last["fees"] == pytest.approx(fees)
    assert last["equity"] == pytest.approx(1.0 + pnl - fees)
    assert last["pnl_without_fees"] == pytest.approx(pnl)
    assert last["position_size"] == 0.0
    # the closing step's realised and fee terms, as fractions of the balance before it
    k = next(j for j, i in enumerate(infos) if i["trades"])
    balance_before = infos[k - 1]["balance"]
    exit_fee = -0.00025 * contracts / 40_400.5
    assert infos[k]["reward_terms"]["realized"] == pytest.approx(pnl / balance_before, rel=1e-12)
    assert infos[k]["reward_terms"]["fees"] == pytest.approx(-exit_fee / balance_before, rel=1e-12)
    assert infos[k]["reward_terms"]["unrealized"] == 0.0  # flat again


def test_full_evaluation_runs_every_row_deterministically_and_flattens(
    market_files: SliceFiles,
) -> None:
    env = ManagementEnv(
        market_files.slice_path, market_files.stats_dir, {"mean_steps_per_episode": 10}
    )

    def evaluate() -> list[dict]:
        env.reset(options={"full": True})
        infos, steps, done = [], 0, False
        while not done:
            _, _, term, trunc, info = env.step(TOGGLE_LONG if steps % 7 == 0 else HOLD)
            assert not trunc
            done = term
            infos.append(info)
            steps += 1
        return infos

    first = evaluate()
    assert (
        len(first) == env.n_rows - env.config.window
    )  # from the first full window to the last row
    assert first[-1]["position_size"] == 0.0  # flattened at the end
    assert sum(len(i["trades"]) for i in first) > 0
    assert first == evaluate()
    eq = first[-1]
    assert eq["equity"] == pytest.approx(1.0 + eq["realized_pnl"] - eq["fees"])


def test_budget_truncates_training_episodes(market_files: SliceFiles) -> None:
    env = ManagementEnv(
        market_files.slice_path, market_files.stats_dir, {"mean_steps_per_episode": 5}
    )
    env.reset(seed=1)
    flags = [env.step(HOLD)[2:4] for _ in range(5)]
    assert flags[:4] == [(False, False)] * 4 and flags[4] == (False, True)


def test_slice_end_terminates_with_step_skip(market_files: SliceFiles) -> None:
    env = ManagementEnv(
        market_files.slice_path,
        market_files.stats_dir,
        {"step_skip": 7, "mean_steps_per_episode": 10_000},
    )
    env.reset(options={"start": env.n_rows - 10})
    assert env.step(HOLD)[2] is False
    _, _, term, trunc, info = env.step(HOLD)
    assert term and not trunc and info["bar"] == env.n_rows - 1


def test_feature_mismatch_raises_naming_both(tmp_path: Path) -> None:
    path = write_slice(tmp_path / "s.parquet", np.full(20, 80_000), np.full(20, 80_001))
    names = [*NAMES[:-1], "renamed"]
    stats = write_stats(tmp_path / "st", names, np.zeros(N_F), np.ones(N_F), SPEC.spec_hash)
    with pytest.raises(SliceDataError, match="renamed") as err:
        ManagementEnv(path, stats)
    assert NAMES[-1] in str(err.value)


def test_spec_hash_mismatch_with_the_manifest_raises(tmp_path: Path, flat_stats: Path) -> None:
    path = write_slice(tmp_path / "fold00-test.parquet", np.full(20, 80_000), np.full(20, 80_001))
    (tmp_path / "fold00-test.manifest.json").write_text(json.dumps({"spec_hash": "other"}))
    with pytest.raises(SliceDataError, match="spec_hash"):
        ManagementEnv(path, flat_stats)


def test_crossed_book_row_raises(tmp_path: Path, flat_stats: Path) -> None:
    ask = np.full(20, 80_001)
    ask[4] = 80_000
    path = write_slice(tmp_path / "s.parquet", np.full(20, 80_000), ask)
    with pytest.raises(SliceDataError, match="row 4"):
        ManagementEnv(path, flat_stats)


def test_nan_feature_raises(tmp_path: Path, flat_stats: Path) -> None:
    feats = np.zeros((20, N_F))
    feats[6, 2] = np.nan
    path = write_slice(
        tmp_path / "s.parquet", np.full(20, 80_000), np.full(20, 80_001), features=feats
    )
    with pytest.raises(SliceDataError, match="row 6"):
        ManagementEnv(path, flat_stats)


def test_too_short_slice_raises(tmp_path: Path, flat_stats: Path) -> None:
    path = write_slice(tmp_path / "s.parquet", np.full(3, 80_000), np.full(3, 80_001))
    with pytest.raises(SliceDataError, match="window"):
        ManagementEnv(path, flat_stats, {"window": 3})


def test_invalid_action_raises(market_files: SliceFiles) -> None:
    env = ManagementEnv(market_files.slice_path, market_files.stats_dir)
    env.reset(seed=0)
    with pytest.raises(ValueError):
        env.step(3)


def test_punishment_scale_is_driven_through_vec_env_method(tmp_path: Path) -> None:
    from stable_baselines3.common.vec_env import DummyVecEnv

    files = make_market_files(tmp_path)
    vec = DummyVecEnv([lambda: ManagementEnv(files.slice_path, files.stats_dir)] * 2)
    assert vec.get_attr("punishment_scale") == [0.5, 0.5]
    vec.env_method("set_punishment_scale", 0.8)
    assert vec.get_attr("punishment_scale") == [0.8, 0.8]
    assert vec.env_method("set_curriculum_cycle", 4) == [1.0, 1.0]
    with pytest.raises(ValueError):
        vec.env_method("set_punishment_scale", -1.0)


def test_step_info_deepcopy_is_exact_and_independent(tmp_path: Path, flat_stats: Path) -> None:
    import copy

    n = 12
    bid = np.full(n, 80_000)
    sell_lo = np.zeros(n, np.int64)
    sell_lo[2] = 79_999
    buy_hi = np.zeros(n, np.int64)
    buy_hi[4] = 80_005
    env = scenario_env(
        tmp_path, flat_stats, bid=bid, ask=bid + 1, sell_lo=sell_lo, buy_hi=buy_hi, terms=True
    )
    infos = run(env, [TOGGLE_LONG, TOGGLE_SHORT, HOLD])
    info = next(i for i in infos if i["trades"])
    info["terminal_observation"] = np.arange(3.0)  # what SB3's DummyVecEnv adds
    dup = copy.deepcopy(info)
    assert type(dup) is type(info) and dup.keys() == info.keys()
    assert {k: v for k, v in dup.items() if k != "terminal_observation"} == {
        k: v for k, v in info.items() if k != "terminal_observation"
    }
    assert dup["reward_terms"] is not info["reward_terms"]
    assert dup["trades"][0] is not info["trades"][0] and dup["trades"] == info["trades"]
    assert dup["terminal_observation"] is not info["terminal_observation"]
    dup["terminal_observation"][0] = 9.0
    dup["reward_terms"]["total"] = 99.0
    assert info["terminal_observation"][0] == 0.0 and info["reward_terms"]["total"] != 99.0


def test_missing_or_bad_stats_dir_raises_naming_it(tmp_path: Path) -> None:
    path = write_slice(tmp_path / "s.parquet", np.full(20, 80_000), np.full(20, 80_001))
    with pytest.raises(SliceDataError, match="nowhere"):
        ManagementEnv(path, tmp_path / "nowhere")
    bad = write_stats(tmp_path / "bad", NAMES, np.zeros(N_F), np.zeros(N_F), SPEC.spec_hash)
    with pytest.raises(SliceDataError, match="bad"):
        ManagementEnv(path, bad)


def test_observation_matches_what_the_live_loop_rebuilds(market_files: SliceFiles) -> None:
    """The live loop rebuilds obs from FrozenStats, management_state and the one encoder:
    the env's observation must be exactly that, at every step."""
    import pyarrow.parquet as pq

    from envs.observation import encode_observation
    from envs.position import StateLimits, management_state
    from features.stats import FrozenStats

    cfg = EnvConfig(window=4, mean_steps_per_episode=60, fill_model="touch")
    env = ManagementEnv(market_files.slice_path, market_files.stats_dir, cfg)
    table = pq.read_table(market_files.slice_path)
    raw = np.column_stack([table.column(c).to_numpy() for c in NAMES])
    mid = table.column("mid_ticks").to_numpy()
    stats = FrozenStats.load(market_files.stats_dir)
    limits = StateLimits(cfg.max_exposure, cfg.hours_clip, cfg.pct_clip)
    obs, info = env.reset(seed=2)
    rng = np.random.default_rng(2)
    for _ in range(60):
        t = info["bar"]
        state = management_state(
            env.position,
            info["ts"],
            float(mid[t]),
            cfg.instrument,
            info["long_order"] != 0,
            info["short_order"] != 0,
            limits,
        )
        window = stats.normalize(raw[t - 3 : t + 1], cfg.obs_clip)
        np.testing.assert_array_equal(obs, encode_observation(window, state))
        obs, _, term, trunc, info = env.step(int(rng.integers(3)))
        if term or trunc:
            break


def test_step_skip_fills_on_a_print_in_a_middle_bar(tmp_path: Path, flat_stats: Path) -> None:
    sell_lo = np.zeros(12, np.int64)
    sell_lo[3] = 79_999  # second of the three bars of the first step
    path = write_slice(
        tmp_path / "s.parquet", np.full(12, 80_000), np.full(12, 80_001), sell_lo=sell_lo
    )
    env = ManagementEnv(path, flat_stats, {**SCENARIO, "step_skip": 3})
    (info,) = run(env, [TOGGLE_LONG])
    assert info["bar"] == 4 and info["position_size"] == 0.1
    assert env.position.longs[0].ts_ns == env.ts[3]  # filled at the close of bar 3
    assert info["long_order"] == 0


def test_drawn_budgets_are_seeded_and_floored(market_files: SliceFiles) -> None:
    cfg = {"mean_steps_per_episode": 20, "std_steps_per_episode": 30.0, "min_steps_per_episode": 5}

    def lengths(seed: int) -> list[int]:
        env = ManagementEnv(market_files.slice_path, market_files.stats_dir, cfg)
        env.reset(seed=seed)
        out, n = [], 0
        while len(out) < 15:
            _, _, term, trunc, _ = env.step(HOLD)
            n += 1
            if term or trunc:
                out.append(n)
                n = 0
                env.reset()
        return out

    a = lengths(7)
    assert a == lengths(7)
    assert min(a) >= 5 and len(set(a)) > 3


def test_linear_instrument_accounts_in_quote_currency(tmp_path: Path, flat_stats: Path) -> None:
    from core.instrument import InstrumentSpec

    path = write_slice(tmp_path / "s.parquet", **round_trip_market())
    # BitMEX's XBTUSDT: a contract is 1e-6 XBT, orders in lots of 1000
    inst = InstrumentSpec(symbol="XBTUSDT", is_inverse=False, multiplier=1e-6, lot_size=1000)
    fees = {"maker": 0.0, "taker": 0.0005}
    env = ManagementEnv(
        path,
        flat_stats,
        {**SCENARIO, "instrument": inst, "fees": fees, "initial_equity_xbt": 10_000.0},
    )
    infos = run(env, [TOGGLE_LONG, HOLD, HOLD, HOLD, TOGGLE_SHORT, HOLD, HOLD])
    (trade,) = [t for i in infos for t in i["trades"]]
    xbt = 1000.0 / 40_000  # 10 % of 10,000 USDT in XBT: 25,000 contracts, whole lots
    assert trade["contracts"] == 25_000
    assert trade["pnl"] == pytest.approx(xbt * (40_400.5 - 40_000))
    assert infos[-1]["equity"] == pytest.approx(10_000 + trade["pnl"])
