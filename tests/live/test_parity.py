"""Parity: a recording replayed through the live path and through the batch pipeline gives
identical observations and actions (the real capture is one of the cases)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from book.sampler import sample_bars
from core import schema as S
from core.config.features import FeatureSpec
from core.instrument import XBTUSD
from envs.broker import BrokerAccount, BrokerRules
from envs.observation import encode_observation, observation_size
from envs.position import open_account
from features.compute import compute_features
from features.stats import FrozenStats
from ingest.ws_recording import read_ws_recording
from live.loop import LiveSession
from live.predictor import Predictor
from live.recording import load_recording
from registry.policy import NumpyPolicy, PolicyArchitecture
from sim.replay_server import canonical_to_messages

SPEC = FeatureSpec(windows_s=(2, 5), return_horizons_s=(1, 2), window=4)
CLIP = 10.0


def _policy(n_features: int, seed: int, mode: str = "toggle") -> NumpyPolicy:
    rng = np.random.default_rng(seed)
    obs_dim = observation_size(n_features, SPEC.window)
    n = len(S.ACTION_NAMES[mode])
    arch = PolicyArchitecture(obs_dim=obs_dim, hidden=(16,), n_actions=n, activation="tanh")
    arrays = {
        "w0": rng.normal(0, 1, (16, obs_dim)).astype(np.float32),
        "b0": rng.normal(0, 1, 16).astype(np.float32),
        "w1": rng.normal(0, 3, (n, 16)).astype(np.float32),
        "b1": np.zeros(n, np.float32),
    }
    return NumpyPolicy(arch, arrays)


def _batch(
    book: pl.DataFrame, trades: pl.DataFrame, stats: FrozenStats, policy: NumpyPolicy, end_ns: int
) -> tuple[list[int], list[np.ndarray], list[int]]:
    bars = sample_bars(book, trades, SPEC)
    feats = compute_features(bars.lazy(), SPEC).collect()
    bars = bars.filter(pl.col(S.TS) <= end_ns)
    feats = feats.head(bars.height)
    x = feats.select(SPEC.names).to_numpy()
    norm = stats.normalize(x, CLIP)
    ok = (~feats[S.WARMUP].to_numpy()) & bars[S.BOOK_OK].to_numpy() & np.isfinite(norm).all(axis=1)
    ts = feats[S.TS].to_list()
    mid = feats[S.MID_TICKS].to_numpy()
    bid, ask = feats[S.BEST_BID_TICKS].to_numpy(), feats[S.BEST_ASK_TICKS].to_numpy()
    buy_hi, sell_lo = feats[S.BUY_HI_TICKS].to_numpy(), feats[S.SELL_LO_TICKS].to_numpy()
    out_ts, out_obs, out_act = [], [], []
    paper: BrokerAccount | None = None
    run = 0
    for k in range(len(ts)):
        if paper is not None:  # the paper orders rest, fill and roll on every bar
            paper.on_bar(ts[k], int(bid[k]), int(ask[k]), int(buy_hi[k]), int(sell_lo[k]))
        run = run + 1 if ok[k] else 0
        if run < SPEC.window:
            continue
        if paper is None:
            paper = BrokerAccount(BrokerRules(), XBTUSD, open_account(1.0, ts[k]))
        state = paper.state(ts[k], float(mid[k]))
        obs = encode_observation(norm[k - SPEC.window + 1 : k + 1], state)
        a = policy.predict(obs)
        paper.act(a, int(bid[k]), int(ask[k]))
        out_ts.append(ts[k])
        out_obs.append(obs)
        out_act.append(a)
    return out_ts, out_obs, out_act


def _live(
    messages: list, stats: FrozenStats, policy: NumpyPolicy, mode: str = "toggle"
) -> tuple[list[int], list[np.ndarray], list[int]]:
    predictor = Predictor(policy, "parity@v1", action_mode=mode)
    s = LiveSession(SPEC, stats, predictor, max_skew_s=None, stale_after_s=1e9)
    s.keep_history = True
    for ts, msg in messages:
        s.on_message(ts, msg)
    s.on_tick(messages[-1][0])
    return [d.ts for d in s.decisions], s.observations, [d.action for d in s.decisions]


def _stats(book: pl.DataFrame, trades: pl.DataFrame) -> FrozenStats:
    feats = compute_features(sample_bars(book, trades, SPEC).lazy(), SPEC).collect()
    x = feats.filter(~pl.col(S.WARMUP)).select(SPEC.names).to_numpy()
    x = x[np.isfinite(x).all(axis=1)]
    return FrozenStats.fit(x, SPEC.names, SPEC.spec_hash, SPEC.sigma_floor, [])


def _assert_parity(messages: list, book: pl.DataFrame, trades: pl.DataFrame, seed: int) -> int:
    """Live: the raw messages through LiveSession. Batch: the canonical events through
    sample_bars + compute_features + the frozen stats + the encoder."""
    stats = _stats(book, trades)
    policy = _policy(len(SPEC.names), seed)
    lts, lobs, lact = _live(messages, stats, policy)
    bts, bobs, bact = _batch(book, trades, stats, policy, end_ns=lts[-1] if lts else 0)
    assert len(lts) > 0
    assert lts == bts
    assert lact == bact
    for a, b in zip(lobs, bobs, strict=True):
        assert a.dtype == np.float32 and np.array_equal(a, b)
    return len(set(lact))


def test_real_capture_live_equals_batch(ws_capture: Path) -> None:
    messages = load_recording(ws_capture)
    fr = read_ws_recording(ws_capture, "XBTUSD", XBTUSD)  # ingest's batch reader
    assert fr.ok
    distinct = 0
    for seed in range(3):
        distinct = max(distinct, _assert_parity(messages, fr.book, fr.trades, seed))
    assert distinct >= 2  # the policies do act, so the paper state path is exercised


@pytest.mark.parametrize("seed", [3, 11])
def test_synthetic_market_live_equals_batch(seed: int) -> None:
    from core.config.market import SyntheticMarketConfig
    from ingest.synthetic import generate_market

    cfg = SyntheticMarketConfig(seed=seed, days=1, day_hours=0.05)
    _day, book, trades = next(iter(generate_market(cfg)))
    messages = canonical_to_messages(book, trades, "XBTUSD", XBTUSD.tick_size)
    _assert_parity(messages, book, trades, seed)  # batch side: the generated events themselves


def _env_path(
    book: pl.DataFrame,
    trades: pl.DataFrame,
    stats: FrozenStats,
    policy: NumpyPolicy,
    tmp: Path,
    end_ns: int,
    mode: str = "toggle",
) -> tuple[list[int], list[np.ndarray], list[int]]:
    """The training env itself (ManagementEnv, evaluation mode) on a slice of the batch
    features: its observations include the env's own order, fill and accounting rules."""
    from core.config.env import EnvConfig
    from envs.management import ManagementEnv

    feats = compute_features(sample_bars(book, trades, SPEC).lazy(), SPEC).collect()
    rows = feats.filter(~pl.col(S.WARMUP) & (pl.col(S.TS) <= end_ns))
    rows = rows.select([S.TS, S.MID_TICKS, *SPEC.names, *S.EXEC_COLUMNS])
    slice_path = tmp / "slice.parquet"
    rows.write_parquet(slice_path)
    stats_dir = stats.save(tmp / "stats")
    cfg = EnvConfig(window=SPEC.window, obs_clip=CLIP, action_mode=mode)
    env = ManagementEnv(slice_path, stats_dir, cfg)
    obs, _ = env.reset(options={"full": True, "flatten_at_end": False})
    ts, observations, actions = [], [], []
    ts_col = rows[S.TS].to_list()
    k = SPEC.window - 1
    while True:
        a = policy.predict(obs)
        ts.append(ts_col[k])
        observations.append(obs)
        actions.append(a)
        obs, _r, terminated, _trunc, _info = env.step(a)
        k += 1
        if terminated:
            ts.append(ts_col[k])
            observations.append(obs)
            actions.append(policy.predict(obs))
            break
    return ts, observations, actions


@pytest.mark.parametrize(("seed", "mode"), [(0, "toggle"), (4, "toggle"), (4, "target")])
def test_synthetic_market_live_equals_the_training_env(
    seed: int, mode: str, tmp_path: Path
) -> None:
    """Observe-only live decisions see exactly the observations ManagementEnv produces on
    the same market: features, stats, window and the paper position (orders, fills, roll),
    in the model's action mode."""
    from core.config.market import SyntheticMarketConfig
    from ingest.synthetic import generate_market

    _day, book, trades = next(
        iter(generate_market(SyntheticMarketConfig(seed=seed, days=1, day_hours=0.1)))
    )
    messages = canonical_to_messages(book, trades, "XBTUSD", XBTUSD.tick_size)
    stats = _stats(book, trades)
    policy = _policy(len(SPEC.names), seed, mode)
    lts, lobs, lact = _live(messages, stats, policy, mode)
    ets, eobs, eact = _env_path(book, trades, stats, policy, tmp_path, end_ns=lts[-1], mode=mode)
    assert lts == ets
    assert lact == eact
    assert len(set(lact)) >= 2
    for k, (a, b) in enumerate(zip(lobs, eobs, strict=True)):
        assert np.array_equal(a, b), (k, np.where(a != b)[0])
    assert any(o[-5] != 0 for o in lobs)  # position_size moved: paper fills happened


@pytest.mark.parametrize(
    ("mode", "roll"),
    [("toggle", True), ("target", True), ("target", False)],  # unrolled: a kept order ages
)
def test_paper_account_pays_the_envs_fee_bar_for_bar_across_a_schedule_change(
    tmp_path: Path, mode: str, roll: bool
) -> None:
    """The live paper account and ManagementEnv, same bars and actions (in either action
    mode), across BitMEX's 2021-08-18 fee change: the same orders rest at the same prices
    and the same fills are charged the same rates, so the two accounts (balance, fees,
    lots, maker volume) are equal after every bar."""
    from core.config.env import EnvConfig
    from core.fees import since_ns
    from envs.management import ManagementEnv
    from tests.envs.conftest import NAMES, random_market, write_slice, write_stats

    n = 240
    m = random_market(n, seed=9)
    t0 = since_ns("2021-08-18") - 120 * 1_000_000_000  # the change falls mid-slice
    path = write_slice(tmp_path / "s.parquet", **m, t0=t0)
    k = len(NAMES)
    stats = write_stats(tmp_path / "st", NAMES, np.zeros(k), np.ones(k), FeatureSpec().spec_hash)
    cfg = EnvConfig(window=2, action_mode=mode, roll_orders=roll)
    env = ManagementEnv(path, stats, cfg)
    maker, _ = env.fee_rates
    assert set(maker) == {-0.00025, -0.0001}
    ts, bid, ask = env.ts, m["bid"], m["ask"]
    env.reset(options={"full": True, "flatten_at_end": False})
    t = cfg.window - 1
    rules = BrokerRules.from_env_config(cfg.model_dump(mode="json"))
    assert rules.fees == cfg.fees and rules.action_mode == mode
    paper = BrokerAccount(rules, XBTUSD, open_account(1.0, int(ts[t])))
    if mode == "toggle":
        actions = np.random.default_rng(3).choice(3, size=n, p=[0.6, 0.2, 0.2])
    else:  # runs of one target, as a policy holds one: orders rest, roll and fill
        actions = np.repeat(np.random.default_rng(3).choice(4, size=n // 6 + 1), 6)[:n]
    fills_after_change = 0
    while t < n - 1:
        a = int(actions[t])
        paper.act(a, int(bid[t]), int(ask[t]))
        env.step(a)
        t += 1
        fills = paper.fills
        paper.on_bar(
            int(ts[t]), int(bid[t]), int(ask[t]), int(m["buy_hi"][t]), int(m["sell_lo"][t])
        )
        fills_after_change += paper.fills > fills and ts[t] >= since_ns("2021-08-18")
        assert paper.position == env.position, t
        # the resting orders (bid and ask price, 0 = none)
        assert (paper.bid_px, paper.ask_px) == env.resting_orders, t
    assert paper.fills > 10 and fills_after_change > 0
    assert paper.position.maker_volume > 0


def test_paper_rules_read_the_fee_of_a_models_env_config() -> None:
    from core.config.env import EnvConfig
    from core.fees import DEFAULT_FEES, FeeConfig

    env = EnvConfig(fees={"maker": 0.0002}).model_dump(mode="json")
    assert BrokerRules.from_env_config(env).fees == FeeConfig(maker=0.0002)
    assert BrokerRules.from_env_config({"window": 4}).fees == DEFAULT_FEES
    # an env_spec.json written before `fees` existed: its instrument's fee was charged
    old = {"instrument": {"symbol": "XBTUSD", "maker_fee": -0.00025, "taker_fee": 0.00075}}
    assert BrokerRules.from_env_config(old).fees == FeeConfig.constant(-0.00025, 0.00075)
