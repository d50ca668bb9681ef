"""The slice reference (`core.slice_reference.SliceReference`): what the catalog hands
training and evaluation for each fold's slices."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from core.slice_reference import SliceReference
from tests.training.conftest import DataDir
from training.candidates import load_catalog


def test_the_catalog_names_each_fold_slice_by_one_reference(tiny_data: DataDir) -> None:
    spec_hash = tiny_data.cfg.features.spec.spec_hash
    catalog = load_catalog(tiny_data.layout, spec_hash)
    index = json.loads((tiny_data.layout.slices(spec_hash) / "folds.json").read_text())
    assert [f.fold for f in catalog.folds] == [e["fold"] for e in index["folds"]]
    for f, entry in zip(catalog.folds, index["folds"], strict=True):
        assert f.validation is None  # built without validation slices
        for ref, kind in ((f.train, "train"), (f.test, "test")):
            manifest = json.loads(Path(ref.location).read_text())
            assert ref.slice_id == entry[kind] == manifest["slice_id"]
            assert (ref.kind, ref.fold) == (kind, f.fold)
            assert ref.sha256 == manifest["sha256"] and ref.spec_hash == spec_hash
            assert ref.stats_id == entry["stats_id"]  # the fold's stats normalise both
        assert f.stats_id == entry["stats_id"] and Path(f.stats_dir).name == entry["stats_id"]


def test_a_reference_of_a_manifest_takes_the_fold_stats_over_the_manifests() -> None:
    manifest = {
        "slice_id": "stress00",
        "kind": "stress",
        "fold": None,
        "path": "/s/stress00.manifest.json",
        "sha256": "c" * 64,
        "stats_id": None,
        "spec_hash": "a" * 64,
        "rows": 10,  # the rest of a manifest is not part of the reference
    }
    ref = SliceReference.of_manifest(manifest)
    assert ref.stats_id is None and ref.location == "/s/stress00.manifest.json"
    assert SliceReference.of_manifest(manifest, "st1").stats_id == "st1"
    with pytest.raises(ValidationError):
        SliceReference.of_manifest({**manifest, "kind": "holdout"})
