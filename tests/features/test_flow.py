"""Events -> slices through the real sampler and ingest partitions, in a real Prefect run."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.atomic import json_bytes
from core.config.features import ExpectationsConfig, FeaturesConfig, WalkForwardConfig
from core.hashing import sha256_file
from core.instrument import XBTUSD
from core.paths import DataLayout
from features.slices import load_fold_index, load_manifest
from features.store import verify_slice

SYMBOL = "XBTUSD"
CFG = FeaturesConfig(
    walk_forward=WalkForwardConfig(
        train_hours=0.06,
        test_hours=0.03,
        step_hours=0.03,
        n_folds=2,
        embargo_s=120,
        stress_windows=((24, 24.2),),
    )
)


def _copy_events(src: Path, dst: Path) -> DataLayout:
    import shutil

    shutil.copytree(src / "events", dst / "events")
    return DataLayout(dst)


def test_build_features_flow_publishes_in_prefect_and_reports_drift(
    events_dir, tmp_path, prefect_harness
):
    from flows.features import build_features_flow

    layout = _copy_events(events_dir, tmp_path / "ok")
    out = build_features_flow(SYMBOL, CFG, str(layout.root))
    assert out == load_fold_index(layout, CFG.spec.spec_hash).model_dump(mode="json")
    m = load_manifest(layout.slices(CFG.spec.spec_hash) / "fold01-test.manifest.json")
    assert m.validation.success and verify_slice(m.path) == []
    assert (
        m.validation.data_docs == str(layout.gx / "index.html")
        and (layout.gx / "index.html").exists()
    )
    # lineage: sha256 of the event partitions' manifests each slice came from
    day1 = sha256_file(layout.events_day(SYMBOL, "2024-01-01") / "manifest.json")
    day2 = sha256_file(layout.events_day(SYMBOL, "2024-01-02") / "manifest.json")
    assert load_manifest(
        layout.slices(CFG.spec.spec_hash) / "fold00-train.manifest.json"
    ).event_partitions == {"2024-01-01": day1}
    # the instrument contract the events were ingested under travels with every slice
    assert (
        load_manifest(layout.slices(CFG.spec.spec_hash) / "fold00-train.manifest.json").instrument
        == XBTUSD.contract()
    )
    for path in layout.slices(CFG.spec.spec_hash).glob("*.manifest.json"):
        # the file is its model's dump, instrument and drift included
        assert json_bytes(load_manifest(path).to_json()) == path.read_bytes()
    s = load_manifest(layout.slices(CFG.spec.spec_hash) / "stress00.manifest.json")
    # its first rows look back across midnight into day 1; no normalised check on stress
    assert s.event_partitions == {"2024-01-01": day1, "2024-01-02": day2}
    assert s.stats_id == out["stress_stats_id"] and "z__" not in str(s.validation)
    assert (
        s.validation.drift is not None and s.validation.drift.features
    )  # measured against the last fold's stats

    assert not any((layout.root / "staging" / "features").iterdir())
    again = build_features_flow(SYMBOL, CFG, str(layout.root))  # cached stage rebuilt
    assert again == out

    # drift against the frozen stats is measured and published, never a refusal: with a
    # clip of 0.01 sigma nearly every normalised value lies beyond it (integrity refusals
    # are tested on crafted crossed books in test_slices.py)
    strict = CFG.model_copy(
        update={
            "expectations": ExpectationsConfig(normalized_abs_max=0.01, data_docs=False),
            "walk_forward": CFG.walk_forward.model_copy(
                update={"n_folds": 1, "stress_windows": ()}
            ),
        }
    )
    drift_layout = _copy_events(events_dir, tmp_path / "drift")
    build_features_flow(SYMBOL, strict, str(drift_layout.root))
    test = load_manifest(drift_layout.slices(strict.spec.spec_hash) / "fold00-test.manifest.json")
    drift = test.validation.drift
    assert test.validation.success and drift is not None and drift.clip == 0.01
    assert drift.max_beyond_clip_share > 0.5 and drift.flagged
    assert set(drift.features) == set(strict.spec.names)


def _set_instrument(layout: DataLayout, day: str, **changes: object) -> None:
    import json

    path = layout.events_day(SYMBOL, day) / "manifest.json"
    m = json.loads(path.read_text())
    m["instrument"].update(changes)
    path.write_text(json.dumps(m))


def test_partitions_must_share_one_instrument_contract_but_not_fees(events_dir, tmp_path):
    """Days ingested under another tick size cannot make one history (refused, naming
    the days); days that differ only in fees can (fees are the account's)."""
    from features.bars import partition_instrument
    from features.slices import SliceBuildError

    layout = _copy_events(events_dir, tmp_path / "fees")
    days = ["2024-01-01", "2024-01-02"]
    assert partition_instrument(layout, SYMBOL, days) == XBTUSD.contract()
    _set_instrument(layout, "2024-01-02", maker_fee=0.0002, taker_fee=0.0005)
    assert partition_instrument(layout, SYMBOL, days) == XBTUSD.contract()
    _set_instrument(layout, "2024-01-02", tick_size=0.1)
    with pytest.raises(SliceBuildError, match=r"different instrument contracts.*2024-01-02"):
        partition_instrument(layout, SYMBOL, days)
