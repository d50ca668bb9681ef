from __future__ import annotations

import pytest
from pydantic import ValidationError

from core.config.experiment import ExperimentConfig, load_config
from core.config.features import FeaturesConfig, FeatureSpec, WalkForwardConfig
from core.fees import DEFAULT_FEES, FeeConfig
from core.hashing import canonical_json, fingerprint
from core.instrument import InstrumentSpec, OffTickError


def test_feature_spec_hash_is_stable_and_changes_with_any_field():
    a, b = FeatureSpec(), FeatureSpec()
    assert a.spec_hash == b.spec_hash
    assert FeatureSpec(windows_s=(10, 30)).spec_hash != a.spec_hash
    assert FeatureSpec(interval_ms=500).spec_hash != a.spec_hash


def test_feature_spec_names_are_unique_and_ordered():
    names = FeatureSpec().names
    assert len(names) == len(set(names))
    assert names[:2] == ("spread_ticks", "spread_bps")


def test_features_config_with_embargo_shorter_than_lookback_raises():
    with pytest.raises(ValidationError, match="embargo"):
        FeaturesConfig(walk_forward=WalkForwardConfig(embargo_s=5))


def test_experiment_config_unknown_key_raises(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: x\nsweep:\n  seedz: [1]\n")
    with pytest.raises(ValidationError, match="seedz"):
        load_config(p)


def test_experiment_fingerprint_is_canonical():
    c = ExperimentConfig()
    assert c.fingerprint == fingerprint(c.model_dump(mode="json"))
    assert canonical_json(c) == canonical_json(
        ExperimentConfig.model_validate_json(c.model_dump_json())
    )


def test_price_to_ticks_off_grid_raises():
    spec = InstrumentSpec(tick_size=0.5)
    assert spec.price_to_ticks("32001.5") == 64003
    with pytest.raises(OffTickError):
        spec.price_to_ticks(32001.25)


def test_trial_env_inherits_the_ingest_instrument_and_the_experiment_fee():
    cfg = ExperimentConfig.model_validate(
        {"ingest": {"instrument": {"tick_size": 1.0}}, "fees": {"maker": 0.0002}}
    )
    env = cfg.sweep.trials[0].env
    assert env.instrument == cfg.ingest.instrument and env.instrument.tick_size == 1.0
    assert env.fees == cfg.fees == FeeConfig(maker=0.0002)


def test_default_experiment_charges_the_dated_bitmex_schedule():
    cfg = ExperimentConfig()
    assert cfg.fees == DEFAULT_FEES and cfg.fees.schedule == "bitmex-xbtusd"
    assert all(t.env.fees == DEFAULT_FEES for t in cfg.sweep.trials)


def test_legacy_ingest_instrument_fee_is_the_fee_override():
    """`ingest.instrument.maker_fee` (the fee's place before `fees:`) still loads: it means a
    constant override of that side, moved into `fees`; the instrument keeps no fee."""
    cfg = ExperimentConfig.model_validate(
        {"ingest": {"instrument": {"maker_fee": 0.0001, "taker_fee": 0.0005}}}
    )
    assert cfg.fees == FeeConfig(maker=0.0001, taker=0.0005)
    assert cfg.ingest.instrument.maker_fee is None
    assert cfg.sweep.trials[0].env.fees == cfg.fees
    assert cfg.sweep.trials[0].env.instrument == cfg.ingest.instrument


def test_a_fee_set_in_two_places_raises():
    with pytest.raises(ValidationError, match="set twice"):
        ExperimentConfig.model_validate(
            {"ingest": {"instrument": {"maker_fee": 0.0001}}, "fees": {"maker": 0.0002}}
        )
    with pytest.raises(ValidationError, match="env.fees"):
        ExperimentConfig.model_validate(
            {"sweep": {"trials": [{"name": "x", "env": {"fees": {"maker": 0.0}}}]}}
        )
    with pytest.raises(ValidationError, match="set twice"):
        ExperimentConfig.model_validate(
            {
                "ingest": {"instrument": {"maker_fee": 0.0001}},
                "sweep": {
                    "trials": [{"name": "x", "env": {"instrument": {"maker_fee": -0.00025}}}]
                },
            }
        )


def test_trial_env_instrument_differing_from_ingest_raises():
    with pytest.raises(ValidationError, match="env.instrument"):
        ExperimentConfig.model_validate(
            {
                "ingest": {"instrument": {"tick_size": 1.0}},
                "sweep": {"trials": [{"name": "x", "env": {"instrument": {"tick_size": 0.5}}}]},
            }
        )


def test_env_config_alone_takes_its_instruments_fee_as_the_override():
    from core.config.env import EnvConfig

    env = EnvConfig(instrument=InstrumentSpec(maker_fee=0.0, taker_fee=0.0005))
    assert env.fees == FeeConfig(maker=0.0, taker=0.0005) and env.instrument.maker_fee is None
    assert EnvConfig().fees == DEFAULT_FEES


def test_shipped_configs_load_with_consistent_instruments_and_one_fee():
    from pathlib import Path

    for path in sorted((Path(__file__).resolve().parents[2] / "conf").glob("*.yaml")):
        cfg = load_config(path)
        assert all(t.env.instrument == cfg.ingest.instrument for t in cfg.sweep.trials)
        assert all(t.env.fees == cfg.fees for t in cfg.sweep.trials)


def test_fee_config_round_trips_through_yaml(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(
        "fees:\n  schedule:\n    - {since: '2022-01-01', maker: 0.0001, taker: 0.0004}\n"
        "  taker: 0.0003\n"
    )
    cfg = load_config(p)
    assert cfg.fees.taker == 0.0003 and cfg.fees.changes()[0].maker == 0.0001
    assert FeeConfig.model_validate_json(cfg.fees.model_dump_json()) == cfg.fees


def test_an_instruments_contract_leaves_out_fees_and_funding():
    from core.instrument import XBTUSD

    c = XBTUSD.contract()
    assert c == {
        "symbol": "XBTUSD",
        "tick_size": 0.5,
        "lot_size": 100,
        "is_inverse": True,
        "multiplier": 1.0,
        "settle_currency": "XBT",
    }
    assert XBTUSD.model_copy(update={"maker_fee": 0.0}).contract() == c
    assert XBTUSD.model_copy(update={"tick_size": 0.1}).contract() != c


def test_every_trial_runs_under_the_experiments_execution_conservative_by_default() -> None:
    """#17: the gates judge under risk_averse with latency unless the experiment says
    otherwise, in one place; a trial cannot quietly judge itself under another."""
    from core.config.env import EnvConfig

    cfg = ExperimentConfig.model_validate({"sweep": {"trials": [{"name": "a"}, {"name": "b"}]}})
    for trial in cfg.sweep.trials:
        assert (trial.env.fill_model, trial.env.entry_latency_ms) == ("risk_averse", 50.0)
        assert trial.env.cancel_latency_ms == 50.0
    assert EnvConfig().fill_model == "trade_through"  # the bare env's, outside experiments
    touch = ExperimentConfig.model_validate(
        {"execution": {"fill_model": "touch", "entry_latency_ms": 0, "cancel_latency_ms": 0}}
    )
    assert touch.sweep.trials[0].env.fill_model == "touch"
    assert touch.fingerprint != cfg.fingerprint
    with pytest.raises(ValueError, match=r"env.fill_model='touch' differs from execution"):
        ExperimentConfig.model_validate({"sweep": {"trials": [{"env": {"fill_model": "touch"}}]}})
