"""Promotion: the pure plan, then promote / challenger / rollback on a SQLite registry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.config.registry import RegistryConfig
from registry import store, tracking
from registry.promotion import PromotionError, candidate_key, plan_promotion, promote, rollback
from registry.store import gate_tags
from tests.registry.conftest import SPEC, candidate_record, evaluation_doc
from training.evaluation_record import CandidateEvaluation, Evaluation

CFG = RegistryConfig(model_name="chappie-test")


def _eval(best: str | None, challenger: str | None, decisions: dict[str, str]) -> Evaluation:
    cands = [
        {"candidate_id": cid, "decision": dec, "reasons": [f"{cid} {dec}"]}
        for cid, dec in decisions.items()
    ]
    return Evaluation.model_validate(
        {"sweep_run_id": "s", "candidates": cands, "best": best, "challenger": challenger}
    )


def test_plan_best_promotes_and_demotes_current_champion() -> None:
    plan = plan_promotion(
        _eval("a", "b", {"a": "promote", "b": "reject"}), CFG, {"champion": "3", "challenger": "2"}
    )
    assert plan.action == "promote" and plan.alias == "champion"
    assert plan.alias_from == "3" and plan.demote_to_previous == "3"
    assert plan.candidate_id == "a" and "a promote" in plan.reasons


def test_plan_without_best_sets_challenger_and_keeps_champion() -> None:
    plan = plan_promotion(_eval(None, "b", {"b": "retest"}), CFG, {"champion": "3"})
    assert plan.action == "challenger" and plan.alias == "challenger"
    assert plan.demote_to_previous is None and plan.decision == "retest"
    assert "champion" in plan.reasons[0] and "unchanged" in plan.reasons[0]


def test_plan_nothing_to_register() -> None:
    assert plan_promotion(_eval(None, None, {}), CFG, {}).action == "none"


def test_plan_refuses_best_without_promote_decision() -> None:
    with pytest.raises(PromotionError, match="only a promote decision"):
        plan_promotion(_eval("a", None, {"a": "reject"}), CFG, {})


def test_plan_refuses_unknown_candidate() -> None:
    with pytest.raises(PromotionError, match="not among"):
        plan_promotion(_eval("zz", None, {"a": "promote"}), CFG, {})


@pytest.fixture()
def uri(sqlite_uri: str) -> str:
    return sqlite_uri


def _write(tmp_path: Path, doc: dict, name: str) -> Path:
    path = tmp_path / name / "evaluation.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(doc))
    return path


def test_promote_register_promote_again_and_rollback(
    uri: str, tmp_path: Path, sb3_zip: Path, stats_dir: Path
) -> None:
    a = candidate_record("base-s0-t1024", "promote", sb3_zip, stats_dir, 1.0)
    b = candidate_record("base-s1-t1024", "reject", sb3_zip, stats_dir, 0.5)
    ev1 = _write(
        tmp_path, evaluation_doc([a, b], "base-s0-t1024", "base-s1-t1024", "sweep-1"), "r1"
    )

    dry = promote(ev1, CFG, uri, dry_run=True)
    assert dry.action == "promote" and dry.version is None and dry.dry_run
    # the JSON (`chappie promote` output, the nightly's outcome record): the keys it always
    # had, `registered` / `unchanged` only once the promotion knows them
    assert dry.to_json() == {
        "decision": "promote",
        "action": "promote",
        "model_name": CFG.model_name,
        "candidate_id": "base-s0-t1024",
        "version": None,
        "aliases": {},
        "reasons": list(dry.reasons),
        "dry_run": True,
        "plan": {
            "action": "promote",
            "candidate_id": "base-s0-t1024",
            "decision": "promote",
            "alias": "champion",
            "alias_from": None,
            "demote_to_previous": None,
            "reasons": list(dry.reasons),
        },
    }
    assert store.aliases(CFG.model_name) == {}  # nothing written

    r1 = promote(ev1, CFG, uri)
    assert r1.version == "1" and r1.aliases == {"champion": "1"}
    assert r1.to_json()["registered"] is True and "unchanged" not in r1.to_json()
    tags = store.version_tags(CFG.model_name, "1")
    assert tags["spec_hash"] == SPEC.spec_hash and tags["decision"] == "promote"
    assert tags["gate.drawdown_cap"] == "true" and tags["gate.drawdown_cap.threshold"] == "0.05"
    assert tags["gate.pass_majority_slices.value"] == "0.75"
    assert "@" in tags["promoted_by"] and tags["promoted_at"].endswith("+00:00")
    assert "decision promote" in tags["promotion_reason"]
    assert len(tags["bundle_sha256"]) == 64 and tags["stats_id"] == stats_dir.name

    again = promote(ev1, CFG, uri)  # idempotent: same version, aliases unchanged
    assert again.version == "1" and again.aliases == {"champion": "1"}

    # a sweep where nobody passed: challenger moves, champion stays
    c = candidate_record("base-s2-t1024", "retest", sb3_zip, stats_dir, 0.2)
    ev2 = _write(tmp_path, evaluation_doc([c], None, "base-s2-t1024", "sweep-2"), "r2")
    r2 = promote(ev2, CFG, uri)
    assert r2.action == "challenger" and r2.version == "2"
    assert r2.aliases == {"champion": "1", "challenger": "2"}
    assert store.version_tags(CFG.model_name, "2")["decision"] == "retest"

    # a new promotion: previous champion is kept addressable
    d = candidate_record("base-s3-t1024", "promote", sb3_zip, stats_dir, 2.0)
    ev3 = _write(tmp_path, evaluation_doc([d], "base-s3-t1024", None, "sweep-3"), "r3")
    r3 = promote(ev3, CFG, uri)
    assert r3.aliases == {"champion": "3", "previous-champion": "1", "challenger": "2"}
    assert store.version_tags(CFG.model_name, "3")["replaced_version"] == "1"

    dry_rb = rollback(CFG, uri, dry_run=True)
    assert (dry_rb.from_version, dry_rb.to_version) == ("3", "1")
    assert store.aliases(CFG.model_name)["champion"] == "3"

    rb = rollback(CFG, uri, reason="pnl drift")
    assert rb.aliases == {"champion": "1", "challenger": "2"}
    t3 = store.version_tags(CFG.model_name, "3")
    assert t3["rolled_back_reason"] == "pnl drift" and "rolled_back_by" in t3
    with pytest.raises(PromotionError, match="nothing to roll back"):
        rollback(CFG, uri)

    # one registration run per registered version, linked to its sweep by tag
    runs = tracking.client().search_runs(
        [tracking.ensure_experiment("chappie")], filter_string="tags.`chappie.step` = 'register'"
    )
    assert len(runs) == 3
    assert {r.data.tags["sweep_run_id"] for r in runs} == {"sweep-1", "sweep-2", "sweep-3"}
    assert all(tracking.PARENT_TAG not in r.data.tags for r in runs)


def test_promote_missing_model_zip_raises_and_moves_nothing(
    uri: str, tmp_path: Path, stats_dir: Path
) -> None:
    a = candidate_record("base-s0-t1024", "promote", tmp_path / "nope.zip", stats_dir, 1.0)
    ev = _write(tmp_path, evaluation_doc([a], "base-s0-t1024", None), "r")
    with pytest.raises(PromotionError, match="model_zip"):
        promote(ev, CFG, uri)
    assert store.aliases(CFG.model_name) == {}


def test_promote_nonexistent_evaluation_raises(uri: str, tmp_path: Path) -> None:
    with pytest.raises(PromotionError, match="not found"):
        promote(tmp_path / "missing.json", CFG, uri)


def _promote_worker(evaluation: str, uri: str, q) -> None:  # noqa: ANN001 - runs in a child
    from registry.promotion import promote as run

    q.put(run(evaluation, CFG, uri).version)


@pytest.mark.slow
def test_two_concurrent_promotions_of_one_evaluation_register_one_version(
    uri: str, tmp_path: Path, sb3_zip: Path, stats_dir: Path
) -> None:
    import multiprocessing as mp

    a = candidate_record("base-s0-t1024", "promote", sb3_zip, stats_dir, 1.0)
    ev = _write(tmp_path, evaluation_doc([a], "base-s0-t1024", None, "sweep-x"), "rx")
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_promote_worker, args=(str(ev), uri, q)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
    assert [p.exitcode for p in procs] == [0, 0]
    assert {q.get(timeout=5), q.get(timeout=5)} == {"1"}
    tracking.configure(uri)
    assert len(tracking.client().search_model_versions(f"name = '{CFG.model_name}'")) == 1
    assert store.aliases(CFG.model_name) == {"champion": "1"}


_decisions = st.lists(st.sampled_from(["promote", "reject", "retest"]), min_size=0, max_size=6)


@given(decisions=_decisions, champion=st.one_of(st.none(), st.integers(1, 9).map(str)))
def test_plan_moves_champion_only_for_a_promote_decision(
    decisions: list[str], champion: str | None
) -> None:
    """Property: whatever the sweep, champion moves iff a candidate was promoted; the
    demoted version is exactly the current champion; challenger never holds a promote."""
    cands = {f"c{i}": d for i, d in enumerate(decisions)}
    passed = [c for c, d in cands.items() if d == "promote"]
    failed = [c for c, d in cands.items() if d != "promote"]
    ev = _eval(passed[0] if passed else None, failed[0] if failed else None, cands)
    current = {"champion": champion} if champion else {}
    plan = plan_promotion(ev, CFG, current)
    assert (plan.alias == "champion") == bool(passed)
    if plan.alias == "champion":
        assert plan.demote_to_previous == champion and cands[plan.candidate_id] == "promote"
    else:
        assert plan.demote_to_previous is None
        if plan.alias == "challenger":
            assert cands[plan.candidate_id] != "promote"
        else:
            assert not cands


@given(
    st.dictionaries(
        st.text("abcdefgh_", min_size=1, max_size=12),
        st.fixed_dictionaries(
            {"passed": st.booleans(), "value": st.floats(-1e6, 1e6), "threshold": st.floats(0, 1)}
        ),
        max_size=6,
    )
)
def test_gate_tags_record_every_gate_outcome(gates: dict) -> None:
    tags = gate_tags(gates)
    for name, g in gates.items():
        assert tags[f"gate.{name}"] == str(g["passed"]).lower()
        assert float(tags[f"gate.{name}.value"]) == g["value"]
        assert float(tags[f"gate.{name}.threshold"]) == g["threshold"]


def _sweep(sweep_run_id: str) -> Evaluation:
    return Evaluation(sweep_run_id=sweep_run_id, candidates=[], best=None, challenger=None)


def test_candidate_key_changes_with_the_verdict_only() -> None:
    ev = _sweep("s")
    a = {"candidate_id": "c", "decision": "reject", "gates": {"g": {"passed": False}}}
    b = {**a, "decision": "promote", "gates": {"g": {"passed": True}}}
    ca, cb = CandidateEvaluation.model_validate(a), CandidateEvaluation.model_validate(b)
    assert candidate_key(ev, ca) == candidate_key(ev, CandidateEvaluation.model_validate(dict(a)))
    assert candidate_key(ev, ca) != candidate_key(ev, cb)
    assert candidate_key(ev, ca).startswith("s/c/")


def test_candidate_key_follows_the_models_not_the_sweep() -> None:
    raw = {"candidate_id": "c", "decision": "reject", "gates": {}, "model_key": "m1"}
    a = CandidateEvaluation.model_validate(raw)
    a2 = CandidateEvaluation.model_validate({**raw, "model_key": "m2"})
    assert candidate_key(_sweep("s1"), a) == candidate_key(_sweep("s2"), a)
    assert candidate_key(_sweep("s1"), a).startswith("m1/")
    assert candidate_key(_sweep("s"), a2) != candidate_key(_sweep("s"), a)


@pytest.mark.parametrize("decision", ["promote", "retest"])
def test_a_rerun_of_the_same_models_registers_nothing_and_moves_no_alias(
    uri: str, tmp_path: Path, sb3_zip: Path, stats_dir: Path, decision: str
) -> None:
    """#15: the nightly re-run on unchanged data evaluates the same models to the same
    verdict under a new sweep id; promotion finds their version and says so."""
    cand = {**candidate_record("base-s0-t1024", decision, sb3_zip, stats_dir, 1.0)}
    cand |= {"model_key": "k" * 32, "train_end_ns": 1_700_000_000_000_000_000}
    best, chall = ("base-s0-t1024", None) if decision == "promote" else (None, "base-s0-t1024")
    first = promote(_write(tmp_path, evaluation_doc([cand], best, chall, "sweep-1"), "a"), CFG, uri)
    assert first.version == "1" and first.registered is True
    tags = store.version_tags(CFG.model_name, "1")
    assert tags["model_key"] == "k" * 32 and tags["train_end_ns"] == "1700000000000000000"
    again = promote(_write(tmp_path, evaluation_doc([cand], best, chall, "sweep-2"), "b"), CFG, uri)
    assert again.unchanged is True and again.registered is False
    assert again.to_json()["unchanged"] is True and again.to_json()["registered"] is False
    assert again.version == "1" and again.aliases == first.aliases
    assert "nothing registered, no alias moved" in again.reasons[0]
    assert len(tracking.client().search_model_versions(f"name = '{CFG.model_name}'")) == 1
