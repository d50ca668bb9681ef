"""One experiment across an instrument change (XBTUSD's tick 0.5 -> 0.1 USD): each slice
is priced, lot-rounded and reported in the contract its manifest records, so the same
market recorded at either tick backtests to the same pnl and trades; another instrument
is refused in one line.

The fixture follows tests/features/test_instrument_change.py: one synthetic market
written as a slice at tick 0.5, and the same slice re-expressed at tick 0.1 (every tick
column and tick-bound feature * 5, its manifest's contract 0.1): what the features flow
publishes for the same prices on either side of the change."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from core.config.experiment import ExperimentConfig
from core.config.features import FeatureSpec
from core.instrument import XBTUSD
from features.compute import TICK_BOUND_FEATURES
from features.instrument_days import TICK_COLUMNS
from features.stats import FrozenStats
from features.store import MANIFEST_SUFFIX
from tests.training.conftest import T0, DataDir, market_columns, publish_columns

AT_01 = XBTUSD.model_copy(update={"tick_size": 0.1})


def _publish(folder: Path, spec: FeatureSpec, cols: dict[str, np.ndarray], contract: dict) -> str:
    """A test slice (segment + manifest recording `contract`) in `folder`; its manifest path."""
    return publish_columns(folder, spec, cols, "fold00-test", "test", 0, instrument=contract).path


@pytest.fixture(scope="module")
def two_ticks(tmp_path_factory: pytest.TempPathFactory, tiny_cfg: ExperimentConfig):
    """(slice at 0.5, the same market at 0.1, stats dir, spec)."""
    root = tmp_path_factory.mktemp("tick-change")
    spec = tiny_cfg.features.spec
    cols = market_columns(spec, 1_500, seed=5, t0=T0, vol=3)
    fine = {
        c: v * 5 if c in TICK_COLUMNS or c in TICK_BOUND_FEATURES else v for c, v in cols.items()
    }
    coarse = _publish(root / "tick05", spec, cols, XBTUSD.contract())
    finer = _publish(root / "tick01", spec, fine, AT_01.contract())
    x = np.column_stack([cols[n] for n in spec.names])
    stats = FrozenStats.fit(x, spec.names, spec.spec_hash, spec.sigma_floor, [])
    stats.save(root / "stats")
    return coarse, finer, str(root / "stats"), spec


def _policy(spec: FeatureSpec, window: int):
    """A fixed random linear policy over the observation that reads every feature but
    the tick-bound ones (features refuse those across a change) and the account state
    (so a mispriced slice would act differently)."""
    rng = np.random.default_rng(3)
    n = len(spec.names)
    w = rng.normal(size=(window * n + 7, 3))
    bound = [j for j, name in enumerate(spec.names) if name in TICK_BOUND_FEATURES]
    for k in range(window):
        w[[k * n + j for j in bound]] = 0.0
    w[window * n :] *= 5.0
    return lambda obs: np.argmax(obs @ w, axis=1)


def test_the_same_market_at_either_tick_backtests_to_the_same_pnl_and_trades(
    two_ticks, tiny_cfg: ExperimentConfig, tmp_path: Path
) -> None:
    """One run over a slice recorded at 0.5 and its copy at 0.1 (an experiment's env
    at 0.5, as ingest.instrument): equal equity curves, pnl, fees and trades (USD prices
    equal, ticks 5x), the tick of each kept through save/load and trades.csv."""
    from envs.management import ManagementEnv
    from training.backtest import SliceInput, backtest, trade_rows, write_trades_csv
    from training.candidates import load_results, save_results

    coarse, finer, stats_dir, spec = two_ticks
    env_cfg = tiny_cfg.sweep.trials[0].env
    assert env_cfg.instrument.tick_size == 0.5
    a, b = ManagementEnv(coarse, stats_dir, env_cfg), ManagementEnv(finer, stats_dir, env_cfg)
    assert a.instrument == env_cfg.instrument
    assert b.instrument == env_cfg.instrument.model_copy(update={"tick_size": 0.1})
    assert float(b._broker["terms"]["tick"][0]) == 0.1
    inputs = [SliceInput(coarse, "at-0.5"), SliceInput(finer, "at-0.1")]
    ra, rb = backtest(_policy(spec, env_cfg.window), inputs, stats_dir, env_cfg)
    assert (ra.tick_size, rb.tick_size) == (0.5, 0.1)
    assert len(ra.trades) > 10 and ra.metrics is not None and rb.metrics is not None
    np.testing.assert_array_equal(ra.actions, rb.actions)
    np.testing.assert_array_equal(ra.equity, rb.equity)
    assert ra.metrics.pnl_plus_fees == rb.metrics.pnl_plus_fees
    assert ra.metrics.maker_volume == rb.metrics.maker_volume and ra.fees_paid == rb.fees_paid
    for ta, tb in zip(ra.trades, rb.trades, strict=True):
        assert tb["entry_price_ticks"] == 5 * ta["entry_price_ticks"]
        assert tb["exit_price_ticks"] == 5 * ta["exit_price_ticks"]
        assert (tb["pnl"], tb["fees"], tb["contracts"]) == (ta["pnl"], ta["fees"], ta["contracts"])
    # trade rows in USD with each slice's own tick (the argument: only a fallback)
    rows_a, rows_b = (trade_rows([r], 99.0, "XBT") for r in (ra, rb))
    usd = ("entry_price_usd", "exit_price_usd", "pnl_xbt", "fees_xbt", "contracts")
    assert [[x[k] for k in usd] for x in rows_a] == [[x[k] for k in usd] for x in rows_b]
    assert rows_a[0]["entry_price_usd"] == rows_a[0]["entry_price_ticks"] * 0.5
    # the tick survives save/load, and trades.csv (default 0.5) prices the 0.1 slice right
    save_results(tmp_path / "bt", [ra, rb])
    back = load_results(tmp_path / "bt")
    assert [r.tick_size for r in back] == [0.5, 0.1]
    csv = pl.read_csv(write_trades_csv(tmp_path / "trades.csv", back))
    usd_a, usd_b = (
        csv.filter(pl.col("slice_id") == s)["entry_price_usd"] for s in ("at-0.5", "at-0.1")
    )
    assert usd_a.equals(usd_b)


def test_the_env_prices_in_the_recorded_contract_and_refuses_another_instrument(
    two_ticks, tiny_cfg: ExperimentConfig, tmp_path: Path
) -> None:
    """The manifest's lot rounds orders (tick and lot may differ); the experiment's fees
    and funding stay; another symbol or settlement is refused naming the slice."""
    import json

    from envs.management import ManagementEnv, SliceDataError

    _, finer, stats_dir, _ = two_ticks
    env_cfg = tiny_cfg.sweep.trials[0].env
    raw = json.loads(Path(finer).read_text())
    raw["instrument"] = {**raw["instrument"], "lot_size": 1}
    Path(finer).with_name("lot1" + MANIFEST_SUFFIX).write_text(json.dumps(raw))
    env = ManagementEnv(Path(finer).with_name("lot1" + MANIFEST_SUFFIX), stats_dir, env_cfg)
    assert env.instrument.lot_size == 1 and float(env._broker["terms"]["lot"][0]) == 1.0
    assert env.instrument.funding_offset_hours == env_cfg.instrument.funding_offset_hours
    for field, value in (("symbol", "ETHUSD"), ("is_inverse", False)):
        raw["instrument"] = {**AT_01.contract(), field: value}
        other = Path(finer).with_name(f"other-{field}{MANIFEST_SUFFIX}")
        other.write_text(json.dumps(raw))
        with pytest.raises(SliceDataError) as err:
            ManagementEnv(other, stats_dir, env_cfg)
        msg = str(err.value)
        assert "\n" not in msg and "fold00-test" in msg and f"{field} {value}" in msg


def test_check_instrument_compares_per_slice(tiny_data: DataDir) -> None:
    """Slices on both sides of a tick (and lot) change are one experiment; a slice of
    another symbol, settlement, inverse/linear or multiplier is refused in one line naming
    the slices and what differs."""
    from training.candidates import check_instrument, load_catalog

    catalog = load_catalog(tiny_data.layout, tiny_data.cfg.features.spec.spec_hash)
    ids = sorted(catalog.manifests)

    def recorded(contracts: dict[str, dict]) -> object:
        ms = {
            s: m.model_copy(update={"instrument": contracts.get(s, XBTUSD.contract())})
            for s, m in catalog.manifests.items()
        }
        return catalog.model_copy(update={"manifests": ms})

    lot1 = XBTUSD.model_copy(update={"tick_size": 0.1, "lot_size": 1}).contract()
    check_instrument(recorded({ids[0]: AT_01.contract(), ids[1]: lot1}), XBTUSD)
    for field, value in (
        ("symbol", "ETHUSD"),
        ("settle_currency", "USDt"),
        ("is_inverse", False),
        ("multiplier", 0.0001),
    ):
        bad = {**AT_01.contract(), field: value}
        with pytest.raises(ValueError) as err:
            check_instrument(recorded({ids[0]: bad, ids[-1]: bad}), XBTUSD)
        msg = str(err.value)
        assert "\n" not in msg
        assert f"({ids[0]}, {ids[-1]}: {field} {value}, not " in msg, msg
        assert "experiment's XBTUSD" in msg and "tick" not in msg
