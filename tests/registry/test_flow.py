"""The Prefect flows `promote-model` / `rollback-model` through a real (test) Prefect run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.config.registry import RegistryConfig
from registry import store
from tests.registry.conftest import SPEC, candidate_record, evaluation_doc

CFG = RegistryConfig(model_name="chappie-flow")


@pytest.mark.slow  # the session Prefect harness; the nightly e2e test also runs promote_flow
def test_promote_and_rollback_flows(
    prefect_harness: None, tmp_path: Path, sqlite_uri: str, sb3_zip: Path, stats_dir: Path
) -> None:
    from flows.promote import promote_flow, rollback_flow

    uri = sqlite_uri
    paths = []
    for i, sweep in enumerate(("sweep-a", "sweep-b")):
        cand = candidate_record(f"base-s{i}-t1024", "promote", sb3_zip, stats_dir, 1.0 + i)
        path = tmp_path / sweep / "evaluation.json"
        path.parent.mkdir()
        path.write_text(json.dumps(evaluation_doc([cand], cand["candidate_id"], None, sweep)))
        paths.append(str(path))
    spec = SPEC.model_dump(mode="json")
    dry = promote_flow(paths[0], CFG, uri, dry_run=True, feature_spec=spec)
    assert dry.dry_run and dry.version is None
    assert store.aliases(CFG.model_name) == {}
    assert promote_flow(paths[0], CFG, uri, feature_spec=spec).version == "1"
    second = promote_flow(paths[1], CFG, uri, feature_spec=spec)
    assert second.aliases == {"champion": "2", "previous-champion": "1"}
    back = rollback_flow(CFG, uri, reason="flow test")
    assert (back.from_version, back.to_version) == ("2", "1")
    assert store.aliases(CFG.model_name) == {"champion": "1"}
