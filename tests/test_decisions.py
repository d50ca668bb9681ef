"""The pipeline judged on markets whose truth is known (#16): the real nightly, as a user
runs it (`chappie nightly --config ...` on a fresh data folder), promotes a model on the
market with a planted edge and sets no `champion` on the market without one.

Slow: nine full nightlies (minutes each on 2 cores), the three configs on market seeds
7, 8 and 9 (bench/RESULTS_decisions.md has what each measured); `bench/bench_decisions.py`
runs the same and prints the share of correct decisions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.bench_decisions import ROOT, run_nightly

pytestmark = pytest.mark.slow


# the one case measured wrong under the shipped configs: the market rose over the test
# days and the best model's +0.080 did not beat holding long's +0.048 (paired p 0.16;
# bench/RESULTS_decisions.md, "The mirror average"): a false negative of the learner
MISSED = pytest.mark.xfail(reason="measured: the learner's false negative on this market seed")


@pytest.mark.timeout(1500)
@pytest.mark.parametrize(
    ("config", "promotes", "seed"),
    [
        ("conf/planted-fair-value.yaml", True, 7),
        ("conf/planted-fair-value.yaml", True, 8),
        pytest.param("conf/planted-fair-value.yaml", True, 9, marks=MISSED),
        *[("conf/planted-edge.yaml", True, s) for s in (7, 8, 9)],
        *[("conf/no-edge.yaml", False, s) for s in (7, 8, 9)],
    ],
)
def test_nightly_decides_right_on_a_known_market(
    config: str, promotes: bool, seed: int, tmp_path: Path
) -> None:
    row = run_nightly(ROOT / config, seed, tmp_path)
    assert row["rc"] == 0, Path(row["folder"], "nightly.log").read_text()[-3000:]
    assert (row["champion"] is not None) == promotes, json.dumps(row)
    if promotes:
        # the promoted candidate passed every gate, beats_baselines included
        assert row["decision"] == "promote" and row["failed"] == [], json.dumps(row)
    else:
        assert row.get("decision") != "promote", json.dumps(row)
