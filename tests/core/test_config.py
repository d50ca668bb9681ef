from __future__ import annotations

import pytest
from pydantic import ValidationError

from core.config.experiment import ExperimentConfig, load_config
from core.config.features import FeaturesConfig, FeatureSpec, WalkForwardConfig
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


def test_trial_env_inherits_the_ingest_instrument():
    cfg = ExperimentConfig.model_validate(
        {"ingest": {"instrument": {"maker_fee": 0.0001, "taker_fee": 0.0005}}}
    )
    assert cfg.sweep.trials[0].env.instrument.maker_fee == 0.0001
    assert cfg.sweep.trials[0].env.instrument == cfg.ingest.instrument


def test_trial_env_instrument_differing_from_ingest_raises():
    with pytest.raises(ValidationError, match="env.instrument"):
        ExperimentConfig.model_validate(
            {
                "ingest": {"instrument": {"maker_fee": 0.0001}},
                "sweep": {
                    "trials": [{"name": "x", "env": {"instrument": {"maker_fee": -0.00025}}}]
                },
            }
        )


def test_shipped_configs_load_with_consistent_instruments():
    from pathlib import Path

    for path in sorted((Path(__file__).resolve().parents[2] / "conf").glob("*.yaml")):
        cfg = load_config(path)
        assert all(t.env.instrument == cfg.ingest.instrument for t in cfg.sweep.trials)


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
