"""evaluation.json as one typed value (`training.evaluation_record`): its dump is the file,
its parser reads files written before the models existed, and dump -> parse -> dump is
the identity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from core.config.training import TrialConfig
from tests.training.test_evaluation import CFG, candidate, flat_reference
from training.evaluation import LedgerTrial, evaluate_sweep, failed_candidate
from training.evaluation_record import (
    CandidateEvaluation,
    DriftSummary,
    Evaluation,
    LedgerEntry,
)

# written by `chappie evaluate` before #21 (reports/<sweep>/evaluation.json of a 2-seed
# sweep on 3 folds: the baseline panel with random's seeds and spread, ledger, drift)
GOLDEN = Path(__file__).parent / "data" / "evaluation_before_21.json"


def _evaluation() -> Evaluation:
    """A born evaluation: judged candidates, a failed one, ledger, drift."""
    rng = np.random.default_rng(11)
    cands = [candidate(s, 1e-3, rng) for s in range(3)]
    for c in cands:
        c.train_end_ns = 1_700_000_000_000_000_000
    ledger = [LedgerTrial("old", "cfg-old", tuple(rng.normal(0.0, 1e-3, 256)))]
    verdict = evaluate_sweep(cands, CFG, 4, references=[flat_reference()], ledger=ledger)
    failed = failed_candidate(
        "base-s9-t0", TrialConfig().model_dump(mode="json"), 9, 0, ["fold 1: boom"]
    )
    return Evaluation(
        sweep_run_id="sweep-x",
        experiment="chappie",
        config_fingerprint="f" * 64,
        spec_hash="a" * 64,
        data_key="d" * 16,
        candidates=[
            c.model_copy(update={"report": {"report.md": f"/r/{c.candidate_id}/report.md"}})
            for c in verdict.candidates
        ]
        + [failed],
        best=verdict.best,
        challenger=verdict.challenger,
        overfitting=verdict.overfitting,
        baselines=verdict.baselines,
        champion=verdict.champion,
        ledger=[LedgerEntry(model_key="old", config_key="cfg-old", returns=[0.001, -0.002])],
        notes=verdict.notes,
        drift={"fold00-test": DriftSummary(clip=10.0, flagged=[], max_mean_shift=0.5)},
        stress_slices=["stress00"],
        evaluation_config=CFG.model_dump(mode="json"),
        env_configs={"k": TrialConfig().env.model_dump(mode="json")},
    )


def test_an_evaluation_json_written_before_the_models_parses_and_dumps_byte_for_byte() -> None:
    raw = GOLDEN.read_bytes()
    ev = Evaluation.parse(raw)
    assert ev.dumps() == raw
    assert ev.sweep_run_id == "f57c834251c240fdb8e11f88ea6f6056" and len(ev.candidates) == 2
    assert ev.baselines is not None and ev.baselines["random"].seeds == [0, 1, 2, 3, 4]
    c = ev.candidates[0]
    assert c.test_totals is not None and isinstance(c.test_totals.trades, int)
    assert c.gates["beats_baselines"].detail and not c.gates["beats_baselines"].passed
    # written before funding was reported: the slices have no funding keys, and get none
    assert "funding" not in json.loads(raw)["candidates"][0]["slices"][0]
    assert "funding" not in json.loads(ev.dumps())["candidates"][0]["slices"][0]


def test_dump_parse_dump_is_the_identity_and_parse_gives_the_same_value(tmp_path: Path) -> None:
    ev = _evaluation()
    first = ev.dumps()
    again = Evaluation.parse(first)
    assert again.dumps() == first
    assert again == ev
    path = ev.write(tmp_path / "evaluation.json")
    assert path.read_bytes() == first and Evaluation.read(path) == ev


def test_keys_are_written_only_when_set() -> None:
    doc = json.loads(_evaluation().dumps())
    judged, failed = doc["candidates"][0], doc["candidates"][-1]
    assert judged["train_end_ns"] == 1_700_000_000_000_000_000 and "report" in judged
    assert "train_end_ns" not in failed and "report" not in failed  # as before #21
    assert failed["decision"] == "retest" and failed["test_totals"]["trades"] == 0
    # a gate writes `note` / `detail` only when it has one
    gates = judged["gates"]
    assert "note" in gates["beats_baselines"] and "note" not in gates["drawdown_under_cap"]
    assert "seeds" not in doc["baselines"]["flat"]  # one seed: no per-seed block
    assert set(doc["drift"]["fold00-test"]) == {"clip", "flagged", "max_mean_shift"}


def test_the_parser_refuses_a_missing_required_key_and_an_unknown_key() -> None:
    doc = json.loads(_evaluation().dumps())
    del doc["best"]
    with pytest.raises(ValidationError, match="best"):
        Evaluation.parse(json.dumps(doc))
    doc = json.loads(_evaluation().dumps())
    doc["candidates"][0]["gates"]["drawdown_under_cap"]["pased"] = True
    with pytest.raises(ValidationError, match="pased"):
        Evaluation.parse(json.dumps(doc))
    doc = json.loads(_evaluation().dumps())
    doc["candidates"][0]["decision"] = "maybe"
    with pytest.raises(ValidationError, match="decision"):
        Evaluation.parse(json.dumps(doc))


def test_numbers_keep_their_json_kind() -> None:
    """A gate value that was an int stays an int (a float field would write 3.0)."""
    c = CandidateEvaluation.model_validate(
        {"candidate_id": "c", "decision": "reject", "gates": {"g": {"passed": False, "value": 3}}}
    )
    assert c.to_json()["gates"] == {"g": {"passed": False, "value": 3}}
    assert json.dumps(c.to_json()).count("3.0") == 0
