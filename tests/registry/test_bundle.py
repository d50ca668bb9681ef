"""Model bundle: contents, hashes, verification refuses tampering and mismatches."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from core.config.features import FeatureSpec
from core.hashing import sha256_file
from registry.bundle import (
    BundleError,
    BundleMismatchError,
    build_bundle,
    code_version,
    verify_bundle,
)
from registry.champion import load_bundle
from tests.registry.conftest import ENV, OBS_DIM, SPEC


@pytest.fixture()
def bundle_copy(built_bundle: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "bundle"
    shutil.copytree(built_bundle, dst)
    return dst


def test_bundle_lists_every_file_with_its_sha256(built_bundle: Path) -> None:
    meta = json.loads((built_bundle / "bundle.json").read_text())
    on_disk = sorted(
        p.relative_to(built_bundle).as_posix()
        for p in built_bundle.rglob("*")
        if p.is_file() and p.name != "bundle.json"
    )
    assert sorted(meta["files"]) == on_disk
    assert {
        "policy/policy.json",
        "policy/policy.npz",
        "policy/policy.onnx",
        "stats/mean.npy",
        "stats/sigma.npy",
        "stats/stats.json",
        "feature_spec.json",
        "env_spec.json",
        "reward_spec.json",
        "lineage.json",
        "gates.json",
    } == set(on_disk)
    for rel, sha in meta["files"].items():
        assert sha256_file(built_bundle / rel) == sha
    assert meta["spec_hash"] == SPEC.spec_hash and meta["obs_dim"] == OBS_DIM
    assert not any(p.suffix in (".zip", ".pkl", ".pt", ".pth") for p in built_bundle.rglob("*"))


def test_bundle_records_spec_env_reward_lineage_and_gates(built_bundle: Path) -> None:
    spec = json.loads((built_bundle / "feature_spec.json").read_text())
    assert FeatureSpec.model_validate(spec["spec"]).spec_hash == spec["spec_hash"] == SPEC.spec_hash
    env = json.loads((built_bundle / "env_spec.json").read_text())
    assert env["window"] == ENV.window and "reward" not in env
    reward = json.loads((built_bundle / "reward_spec.json").read_text())
    assert reward == ENV.reward.model_dump(mode="json")
    lineage = json.loads((built_bundle / "lineage.json").read_text())
    assert lineage["candidate_id"] == "base-s0-t1024"
    assert lineage["config_fingerprint"] == "f" * 64
    assert lineage["train_slices"] == [{"slice_id": "fold01-train", "sha256": "ab" * 32}]
    assert lineage["code_version"].startswith(("git:", "pkg:"))
    gates = json.loads((built_bundle / "gates.json").read_text())
    assert gates["decision"] == "promote"
    assert gates["gates"]["drawdown_cap"]["threshold"] == 0.05


def test_load_bundle_gives_policy_stats_and_spec(built_bundle: Path) -> None:
    model = load_bundle(built_bundle, expected_spec_hash=SPEC.spec_hash)
    assert model.spec == SPEC
    assert model.stats.feature_names == SPEC.names
    obs = np.zeros(OBS_DIM, np.float32)
    assert model.predict(obs) in (0, 1, 2)
    assert model.metadata.decision == "promote"
    assert model.metadata.gates["drawdown_cap"].passed is True


@pytest.mark.parametrize(
    "target",
    ["policy/policy.npz", "stats/mean.npy", "feature_spec.json", "gates.json"],
)
def test_verify_refuses_a_changed_file(bundle_copy: Path, target: str) -> None:
    path = bundle_copy / target
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=f"{target}: sha256"):
        verify_bundle(bundle_copy)


def test_verify_refuses_missing_and_unlisted_files(bundle_copy: Path) -> None:
    (bundle_copy / "stats" / "sigma.npy").unlink()
    (bundle_copy / "extra.pkl").write_bytes(b"\x80\x04N.")
    with pytest.raises(BundleError) as err:
        verify_bundle(bundle_copy)
    assert "stats/sigma.npy: missing" in str(err.value)
    assert "extra.pkl: not listed" in str(err.value)


def test_verify_refuses_rewritten_bundle_json_against_registry_sha(bundle_copy: Path) -> None:
    original = sha256_file(bundle_copy / "bundle.json")
    meta = json.loads((bundle_copy / "bundle.json").read_text())
    meta["decision"] = "promote-forced"
    (bundle_copy / "bundle.json").write_text(json.dumps(meta))
    verify_bundle(bundle_copy)  # internally consistent...
    with pytest.raises(BundleError, match="registry recorded"):
        verify_bundle(bundle_copy, expected_sha256=original)  # ...but not what was registered


def test_verify_mismatched_spec_hash_names_both(built_bundle: Path) -> None:
    other = FeatureSpec(window=3).spec_hash
    with pytest.raises(BundleMismatchError) as err:
        verify_bundle(built_bundle, expected_spec_hash=other)
    assert SPEC.spec_hash in str(err.value) and other in str(err.value)
    with pytest.raises(BundleMismatchError, match="stats id"):
        verify_bundle(built_bundle, expected_stats_id="0" * 24)


def test_build_refuses_stats_of_another_spec(
    sb3_zip: Path, stats_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(BundleError, match="fitted for spec"):
        build_bundle(
            tmp_path / "b",
            model_zip=sb3_zip,
            stats_dir=stats_dir,
            feature_spec=FeatureSpec(window=3),
            env_config={"window": 3},
            config_fingerprint="f" * 64,
        )
    assert not (tmp_path / "b").exists()
    assert list(tmp_path.iterdir()) == []


def test_build_refuses_policy_of_wrong_observation_size(
    sb3_zip: Path, stats_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(BundleError, match="observation size"):
        build_bundle(
            tmp_path / "b",
            model_zip=sb3_zip,
            stats_dir=stats_dir,
            feature_spec=SPEC,
            env_config={"window": 5},
            config_fingerprint="f" * 64,
        )
    assert list(tmp_path.iterdir()) == []


def test_build_refuses_policy_of_another_action_mode(
    sb3_zip: Path, stats_dir: Path, tmp_path: Path
) -> None:
    # the session's model has 3 actions (toggle); a target env has 4: refused at build,
    # so a bundle can never be read with the other mode's action meanings
    with pytest.raises(BundleError, match="action_mode 'target' has 4"):
        build_bundle(
            tmp_path / "b",
            model_zip=sb3_zip,
            stats_dir=stats_dir,
            feature_spec=SPEC,
            env_config={**ENV.model_dump(mode="json"), "action_mode": "target"},
            config_fingerprint="f" * 64,
        )
    assert list(tmp_path.iterdir()) == []


def test_code_version_is_the_git_commit() -> None:
    v = code_version()
    assert v.startswith("git:") and len(v.removeprefix("git:").removesuffix("-dirty")) == 40
