"""load_champion on a SQLite registry: verification, mismatches, no pickle, timeouts,
a fresh process, and the cheap alias poll."""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from core.config.features import FeatureSpec
from core.config.registry import RegistryConfig
from registry import store, tracking
from registry.bundle import BundleError, BundleMismatchError
from registry.champion import ChampionLoadError, load_champion, resolve_alias_version
from registry.promotion import promote
from tests.conftest import REPO, free_port
from tests.registry.conftest import OBS_DIM, SPEC, candidate_record, evaluation_doc

CFG = RegistryConfig(model_name="chappie-champ")


@pytest.fixture(scope="module")
def registry_uri(
    tmp_path_factory: pytest.TempPathFactory, _template_db: Path, sb3_zip: Path, stats_dir: Path
) -> str:
    root = tmp_path_factory.mktemp("reg")
    shutil.copy2(_template_db, root / "mlflow.db")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    cand = candidate_record("base-s0-t1024", "promote", sb3_zip, stats_dir, 1.0)
    ev = root / "evaluation.json"
    ev.write_text(json.dumps(evaluation_doc([cand], "base-s0-t1024", None)))
    assert promote(ev, CFG, uri).version == "1"
    return uri


def _artifact_bundle_dir(uri: str) -> Path:
    tracking.configure(uri)
    base = tracking.client().get_model_version_download_uri(CFG.model_name, "1")
    local = tracking.artifact_local_path(base)
    assert local is not None
    return local / "artifacts" / "bundle"


def test_load_champion_returns_verified_policy_stats_spec_and_metadata(
    registry_uri: str, tmp_path: Path, sb3_zip: Path, recorded_obs: np.ndarray
) -> None:
    model = load_champion(
        CFG.model_name,
        tracking_uri=registry_uri,
        cache_dir=tmp_path,
        expected_spec_hash=SPEC.spec_hash,
    )
    assert model.metadata.version == "1" and model.metadata.alias == "champion"
    assert model.metadata.spec_hash == SPEC.spec_hash
    assert model.metadata.stats_id == model.stats.stats_id
    assert model.metadata.gates["drawdown_cap"].passed is True
    assert model.metadata.run_id and model.metadata.decision == "promote"
    assert model.spec == SPEC
    from stable_baselines3 import PPO

    sb3 = PPO.load(sb3_zip, device="cpu")
    want, _ = sb3.predict(recorded_obs[:1000], deterministic=True)
    got = [model.policy.predict(o) for o in recorded_obs[:1000]]
    assert got == want.tolist()
    # second load reuses the verified cache
    again = load_champion(CFG.model_name, tracking_uri=registry_uri, cache_dir=tmp_path)
    assert again.metadata.bundle_dir == model.metadata.bundle_dir


def test_load_champion_never_unpickles(
    registry_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cloudpickle

    def refuse(*_a: object, **_k: object) -> None:
        raise AssertionError("something tried to unpickle")

    for mod in (pickle, cloudpickle):
        monkeypatch.setattr(mod, "load", refuse)
        monkeypatch.setattr(mod, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    model = load_champion(CFG.model_name, tracking_uri=registry_uri, cache_dir=tmp_path)
    assert model.policy.predict(np.zeros(OBS_DIM, np.float32)) in (0, 1, 2)


def test_load_champion_wrong_spec_hash_names_both(registry_uri: str, tmp_path: Path) -> None:
    other = FeatureSpec(window=5).spec_hash
    with pytest.raises(BundleMismatchError) as err:
        load_champion(
            CFG.model_name, tracking_uri=registry_uri, cache_dir=tmp_path, expected_spec_hash=other
        )
    assert other in str(err.value) and SPEC.spec_hash in str(err.value)
    with pytest.raises(BundleMismatchError, match="stats id"):
        load_champion(
            CFG.model_name,
            tracking_uri=registry_uri,
            cache_dir=tmp_path,
            expected_stats_id="0" * 24,
        )
    # nothing unverified was left in the cache
    assert not list((tmp_path / CFG.model_name).glob("v1-*"))


def test_load_champion_unknown_alias_is_a_clean_error(registry_uri: str, tmp_path: Path) -> None:
    with pytest.raises(ChampionLoadError, match="no alias 'nobody'"):
        load_champion(CFG.model_name, alias="nobody", tracking_uri=registry_uri, cache_dir=tmp_path)


def test_load_champion_unreachable_server_fails_within_timeout(tmp_path: Path) -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    with pytest.raises(ChampionLoadError, match="not reachable"):
        load_champion("m", tracking_uri=uri, timeout_s=2.0, cache_dir=tmp_path)
    assert time.monotonic() - t0 < 3.0


def test_load_champion_silent_server_fails_within_timeout(tmp_path: Path) -> None:
    import socket

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)  # accepts connections, never answers
    try:
        uri = f"http://127.0.0.1:{srv.getsockname()[1]}"
        t0 = time.monotonic()
        with pytest.raises(ChampionLoadError, match="did not answer within"):
            load_champion("m", tracking_uri=uri, timeout_s=1.5, cache_dir=tmp_path)
        assert time.monotonic() - t0 < 3.0
        with pytest.raises(ChampionLoadError):
            resolve_alias_version("m", tracking_uri=uri, timeout_s=1.0)
    finally:
        srv.close()


def test_load_champion_refuses_tampered_artifact(registry_uri: str, tmp_path: Path) -> None:
    target = _artifact_bundle_dir(registry_uri) / "policy" / "policy.npz"
    backup = tmp_path / "backup.npz"
    shutil.copy2(target, backup)
    try:
        with np.load(backup, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        arrays["b0"] = arrays["b0"] + np.float32(0.5)  # a plausible, silent edit
        with open(target, "wb") as fh:
            np.savez(fh, **arrays)
        with pytest.raises(BundleError, match="policy/policy.npz: sha256"):
            load_champion(CFG.model_name, tracking_uri=registry_uri, cache_dir=tmp_path / "c")
        assert not list((tmp_path / "c" / CFG.model_name).glob("v1-*"))
    finally:
        shutil.copy2(backup, target)


def test_resolve_alias_version_polls_cheaply(registry_uri: str) -> None:
    assert resolve_alias_version(CFG.model_name, tracking_uri=registry_uri) == "1"
    assert resolve_alias_version(CFG.model_name, "challenger", tracking_uri=registry_uri) is None
    assert store.aliases(CFG.model_name) == {"champion": "1"}


def test_load_champion_in_a_fresh_process_without_sb3_or_prefect(
    registry_uri: str, tmp_path: Path
) -> None:
    code = f"""
import sys, json, numpy as np
import registry
m = registry.load_champion({CFG.model_name!r}, tracking_uri={registry_uri!r}, cache_dir={str(tmp_path)!r},
                           expected_spec_hash={SPEC.spec_hash!r})
a = m.policy.predict(np.zeros({OBS_DIM}, np.float32))
bad = sorted(k for k in sys.modules if k.split('.')[0] in ('stable_baselines3', 'prefect', 'torch'))
print(json.dumps({{"version": m.metadata.version, "action": a, "bad": bad}}))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["version"] == "1" and res["action"] in (0, 1, 2)
    assert res["bad"] == []


def test_registered_version_serves_as_mlflow_pyfunc_with_signature(
    registry_uri: str, recorded_obs: np.ndarray, tmp_path: Path
) -> None:
    import mlflow

    tracking.configure(registry_uri)
    pyfunc = mlflow.pyfunc.load_model(f"models:/{CFG.model_name}@champion")
    sig = pyfunc.metadata.signature
    assert sig is not None and tuple(sig.inputs.inputs[0].shape) == (-1, OBS_DIM)
    ours = load_champion(CFG.model_name, tracking_uri=registry_uri, cache_dir=tmp_path)
    served = np.asarray(pyfunc.predict(recorded_obs[:500]))
    np.testing.assert_array_equal(served, ours.policy.predict_batch(recorded_obs[:500]))
    assert pyfunc.metadata.metadata["spec_hash"] == SPEC.spec_hash


def test_load_champion_missing_sqlite_store_is_refused_without_creating_it(tmp_path: Path) -> None:
    db = tmp_path / "nowhere" / "mlflow.db"
    with pytest.raises(ChampionLoadError, match="no MLflow database"):
        load_champion("m", tracking_uri=f"sqlite:///{db}", cache_dir=tmp_path)
    assert not db.exists()


def test_import_registry_is_light() -> None:
    code = "import sys, registry; print(sorted(m for m in ('mlflow', 'torch', 'prefect', 'stable_baselines3') if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
