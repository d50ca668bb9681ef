"""The trial ledger: every candidate ever evaluated on the same FeatureSpec and test data,
kept as tags on its MLflow training run, so the Deflated Sharpe Ratio and PBO count every
trial that was tried, not only this sweep's (Bailey & Lopez de Prado 2014: a DSR that
forgets discarded trials is not deflated).

A ledger entry is the run of a candidate's last-fold model, tagged with
`ledger.spec_hash`, `ledger.data_key` (`training.evaluation.data_key`: test slices and
return period), `ledger.model_key` (the fold models' bytes: a re-evaluation of the same
models is the same trial), `ledger.config_key` (the trial config without the seed) and
`ledger.returns` (the non-overlapping test returns as JSON, 6 significant digits; empty
when longer than an MLflow tag holds, then the trial counts for the DSR through
`ledger.sharpe` but not in PBO). Adapter: MLflow only, no statistics.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import numpy as np
from mlflow.utils.validation import MAX_TAG_VAL_LENGTH

from registry import tracking
from training.evaluation import LedgerTrial
from training.overfitting import sharpe_per_period

SPEC = "ledger.spec_hash"
DATA = "ledger.data_key"
MODEL = "ledger.model_key"
CONFIG = "ledger.config_key"
RETURNS = "ledger.returns"
SHARPE = "ledger.sharpe"


def ledger_tags(
    spec_hash: str, data_key: str, model_key: str, config_key: str, returns: Sequence[float]
) -> dict[str, str]:
    """The tags that make a run a ledger entry. Pure."""
    text = json.dumps([float(f"{x:.6g}") for x in returns], separators=(",", ":"))
    arr = np.asarray(returns, dtype=np.float64)
    sr = float(sharpe_per_period(arr)[0]) if arr.size >= 2 else float("nan")
    return {
        SPEC: spec_hash,
        DATA: data_key,
        MODEL: model_key,
        CONFIG: config_key,
        RETURNS: text if len(text) <= MAX_TAG_VAL_LENGTH else "",
        SHARPE: repr(sr) if math.isfinite(sr) else "nan",
    }


def record_trial(run_id: str, tags: dict[str, str]) -> None:
    """Tag `run_id` as a ledger entry (`ledger_tags`)."""
    tracking.set_tags(run_id, tags)


def read_ledger(experiment: str, spec_hash: str, data_key: str) -> list[LedgerTrial]:
    """Every ledger entry of `experiment` under (spec_hash, data_key), one per model key
    (the newest run wins), oldest first. An experiment that does not exist yet: []."""
    c = tracking.client()
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        return []
    query = f"tags.`{SPEC}` = '{spec_hash}' and tags.`{DATA}` = '{data_key}'"
    runs = []
    token = None
    while True:
        page = c.search_runs(
            [exp.experiment_id],
            filter_string=query,
            max_results=1000,
            order_by=["attributes.start_time ASC"],
            page_token=token,
        )
        runs += list(page)
        token = page.token
        if not token:
            break
    trials: dict[str, LedgerTrial] = {}
    for run in runs:
        tags = run.data.tags
        returns = json.loads(tags.get(RETURNS) or "[]")
        if not returns:
            sr = float(tags.get(SHARPE, "nan"))
            # the Sharpe alone is what the DSR needs: two returns with that Sharpe
            returns = [] if not math.isfinite(sr) else _series_with_sharpe(sr)
        trials[tags[MODEL]] = LedgerTrial(
            tags[MODEL], tags.get(CONFIG, ""), tuple(float(x) for x in returns)
        )
    return list(trials.values())


def _series_with_sharpe(sr: float) -> list[float]:
    """Three returns whose per-period Sharpe (ddof=1) is `sr`: mean sr, standard
    deviation 1 (-1, 0, 1 shifted by sr). Stands in for a series too long for a tag."""
    return [sr - 1.0, sr, sr + 1.0]
