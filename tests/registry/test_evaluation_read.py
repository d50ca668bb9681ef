"""Promotion reads evaluation.json through its parser (`Evaluation.read`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from registry.promotion import PromotionError, read_evaluation

GOLDEN = Path(__file__).parents[1] / "training" / "data" / "evaluation_before_21.json"


def test_promotion_reads_an_evaluation_written_before_the_models() -> None:
    ev = read_evaluation(GOLDEN)
    assert ev.best is None and ev.challenger == "base-s0-t1024"
    assert ev.candidate("base-s0-t1024") is not None


@pytest.mark.parametrize("key", ["sweep_run_id", "candidates", "best", "challenger"])
def test_an_evaluation_without_a_key_promotion_needs_is_refused_naming_it(
    tmp_path: Path, key: str
) -> None:
    doc = json.loads(GOLDEN.read_text())
    del doc[key]
    path = tmp_path / "evaluation.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(PromotionError, match=f"{key}: Field required"):
        read_evaluation(path)


def test_an_evaluation_that_is_not_json_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evaluation.json"
    path.write_text("{not json")
    with pytest.raises(PromotionError, match="not a valid evaluation"):
        read_evaluation(path)
