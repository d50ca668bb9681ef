"""conf/no-edge.yaml and conf/planted-edge.yaml are one experiment but for the dial: the
same market, features, sweep, evaluation and gates; only the planted edge's strength (and
the names) differ, so a different decision can only come from the edge. The gates are
conf/default.yaml's (never loosened to let a model through)."""

from __future__ import annotations

from pathlib import Path

from core.config.experiment import load_config

ROOT = Path(__file__).resolve().parents[1]


def test_no_edge_and_planted_edge_differ_only_in_the_edge_strength() -> None:
    no_edge = load_config(ROOT / "conf" / "no-edge.yaml")
    planted = load_config(ROOT / "conf" / "planted-edge.yaml")
    assert no_edge.ingest.synthetic.edge.strength == 0.0
    assert planted.ingest.synthetic.edge.strength > 0.0
    same_edge = no_edge.ingest.synthetic.edge.model_copy(
        update={"strength": planted.ingest.synthetic.edge.strength}
    )
    assert same_edge == planted.ingest.synthetic.edge
    unify = {"name": planted.name, "registry": planted.registry}
    market = planted.ingest.synthetic
    assert (
        no_edge.model_copy(
            update={**unify, "ingest": no_edge.ingest.model_copy(update={"synthetic": market})}
        )
        == planted
    )
    assert no_edge.registry.model_name != planted.registry.model_name


def test_the_fair_value_market_differs_from_no_edge_only_in_its_edge() -> None:
    """The harder planted market (conf/planted-fair-value.yaml) is judged by the same
    pipeline as conf/no-edge.yaml: only the synthetic market's edge (and the names)
    differ."""
    no_edge = load_config(ROOT / "conf" / "no-edge.yaml")
    planted = load_config(ROOT / "conf" / "planted-fair-value.yaml")
    assert planted.ingest.synthetic.edge.strength > 0.0
    assert planted.ingest.synthetic.edge.model == "fair_value"
    market = no_edge.ingest.synthetic.model_copy(update={"edge": planted.ingest.synthetic.edge})
    unify = {"name": planted.name, "registry": planted.registry}
    assert (
        no_edge.model_copy(
            update={**unify, "ingest": no_edge.ingest.model_copy(update={"synthetic": market})}
        )
        == planted
    )


def test_decision_configs_keep_the_default_gates_and_enough_trial_configs() -> None:
    default = load_config(ROOT / "conf" / "default.yaml")
    for name in ("no-edge", "planted-edge", "planted-fair-value"):
        cfg = load_config(ROOT / "conf" / f"{name}.yaml")
        assert cfg.evaluation == default.evaluation
        # PBO is judged only over >= min_pbo_configs distinct trial configs (else retest)
        n_configs = len({t.model_dump_json(exclude={"name"}) for t in cfg.sweep.trials})
        assert n_configs * len(cfg.sweep.timesteps) >= cfg.evaluation.gates.min_pbo_configs
