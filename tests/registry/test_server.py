"""Against a real `mlflow server` on 127.0.0.1 (SQLite backend, proxied artifacts):
register, promote, load from a fresh process, tamper (refused), roll back, and the
`chappie promote --dry-run` / `chappie rollback` commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from core.config.registry import RegistryConfig
from registry import store, tracking
from registry.bundle import BundleError
from registry.champion import load_champion, resolve_alias_version
from registry.promotion import promote
from tests.conftest import REPO, free_port
from tests.registry.conftest import SPEC, candidate_record, evaluation_doc

CFG = RegistryConfig(model_name="chappie-srv")


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    artifacts = root / "artifacts"
    cmd = [
        str(Path(sys.executable).with_name("mlflow")),
        "server",
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination",
        str(artifacts),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    env = {**os.environ, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    log = open(root / "server.log", "w")  # noqa: SIM115 - closed in teardown
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"mlflow server exited: {(root / 'server.log').read_text()[-3000:]}"
                )
            try:
                if httpx.get(f"{uri}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("mlflow server did not start within 90 s")
            time.sleep(0.3)
        yield uri, artifacts
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _fresh_process_load(uri: str, cache: Path, alias: str = "champion") -> dict:
    code = f"""
import json, sys, numpy as np
import registry
try:
    m = registry.load_champion({CFG.model_name!r}, alias={alias!r}, cache_dir={str(cache)!r},
                               timeout_s=30, expected_spec_hash={SPEC.spec_hash!r})
    print(json.dumps({{"version": m.metadata.version, "candidate": m.metadata.candidate_id,
                      "action": m.policy.predict(np.zeros(m.policy.obs_dim, np.float32))}}))
except Exception as exc:
    print(json.dumps({{"error": type(exc).__name__, "message": str(exc)}}))
"""
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _cli(args: list[str], uri: str, data_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "CHAPPIE_DATA_DIR": str(data_dir)}
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.mark.slow
def test_register_promote_tamper_rollback_against_real_server(
    mlflow_server: tuple[str, Path], tmp_path: Path, sb3_zip: Path, stats_dir: Path
) -> None:
    uri, artifacts = mlflow_server
    a = candidate_record("base-s0-t1024", "promote", sb3_zip, stats_dir, 1.0)
    ev1 = tmp_path / "r1" / "evaluation.json"
    ev1.parent.mkdir()
    ev1.write_text(json.dumps(evaluation_doc([a], "base-s0-t1024", None, "sweep-a")))
    r1 = promote(ev1, CFG, uri)
    assert r1.aliases == {"champion": "1"}
    assert _fresh_process_load(uri, tmp_path / "c1")["version"] == "1"
    assert resolve_alias_version(CFG.model_name, tracking_uri=uri) == "1"

    b = candidate_record("base-s1-t1024", "promote", sb3_zip, stats_dir, 2.0)
    ev2 = tmp_path / "r2" / "evaluation.json"
    ev2.parent.mkdir()
    ev2.write_text(json.dumps(evaluation_doc([b], "base-s1-t1024", None, "sweep-b")))
    r2 = promote(ev2, CFG, uri)
    assert r2.aliases == {"champion": "2", "previous-champion": "1"}
    res = _fresh_process_load(uri, tmp_path / "c2")
    assert (res["version"], res["candidate"]) == ("2", "base-s1-t1024")

    # tamper with v2's stored stats on the server's artifact store: refused, nothing cached
    tracking.configure(uri)
    mv = tracking.client().get_model_version(CFG.model_name, "2")
    model_id = mv.source.removeprefix("models:/")
    [mean] = [m for m in artifacts.rglob("mean.npy") if model_id in m.parts and "bundle" in m.parts]
    original = mean.read_bytes()
    arr = np.load(mean, allow_pickle=False)
    with open(mean, "wb") as fh:
        np.save(fh, arr * 1.01, allow_pickle=False)
    try:
        with pytest.raises(BundleError, match="stats/mean.npy: sha256"):
            load_champion(CFG.model_name, tracking_uri=uri, cache_dir=tmp_path / "c3", timeout_s=30)
        bad = _fresh_process_load(uri, tmp_path / "c4")
        assert bad["error"] == "BundleError" and "stats/mean.npy" in bad["message"]
    finally:
        mean.write_bytes(original)

    # roll back through the CLI: dry run first changes nothing
    conf = tmp_path / "exp.yaml"
    conf.write_text(
        "features:\n  spec: {window: 2}\n"
        "sweep:\n  trials:\n    - {name: base, env: {window: 2}}\n"
        f"registry: {{model_name: {CFG.model_name}}}\n"
    )
    dry = _cli(["rollback", "--config", str(conf), "--dry-run", "--no-flow"], uri, tmp_path)
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert json.loads(dry.stdout)["to_version"] == "1"
    assert store.aliases(CFG.model_name)["champion"] == "2"
    done = _cli(["rollback", "--config", str(conf), "--no-flow", "--reason", "test"], uri, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert store.aliases(CFG.model_name) == {"champion": "1"}
    assert _fresh_process_load(uri, tmp_path / "c5")["version"] == "1"
    assert store.version_tags(CFG.model_name, "2")["rolled_back_reason"] == "test"

    # `chappie promote --dry-run` on a new evaluation: shows the plan, changes nothing
    c = candidate_record("base-s2-t1024", "promote", sb3_zip, stats_dir, 3.0)
    report = tmp_path / "reports" / "sweep-c" / "evaluation.json"
    report.parent.mkdir(parents=True)
    report.write_text(json.dumps(evaluation_doc([c], "base-s2-t1024", None, "sweep-c")))
    dry_p = _cli(["promote", "--config", str(conf), "--dry-run", "--no-flow"], uri, tmp_path)
    assert dry_p.returncode == 0, dry_p.stderr[-2000:]
    plan = json.loads(dry_p.stdout)
    assert (
        plan["dry_run"] and plan["action"] == "promote" and plan["candidate_id"] == "base-s2-t1024"
    )
    assert plan["plan"]["demote_to_previous"] == "1"
    assert store.aliases(CFG.model_name) == {"champion": "1"}
    assert len(tracking.client().search_model_versions(f"name = '{CFG.model_name}'")) == 2
