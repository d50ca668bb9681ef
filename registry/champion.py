"""Load the model version behind a registry alias, for the live loop.

`load_champion` resolves the alias, downloads only the bundle, verifies every sha256
(and the sha256 of bundle.json against the version's `bundle_sha256` tag), refuses a
FeatureSpec hash or stats id other than the running code's, and loads the policy with
numpy (`allow_pickle=False`) — nothing is ever unpickled. Every registry call runs under
one deadline (`timeout_s`): an unreachable tracking server is a clean
`ChampionLoadError` within the timeout, not a hang.

Imports numpy, mlflow (through registry.store/tracking, lazily) and core/features only;
never stable_baselines3, torch or prefect.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlparse

import numpy as np
from pydantic import ValidationError

from core.config.features import FeatureSpec
from core.jsontypes import JsonObject
from features.stats import FrozenStats
from registry.bundle import (
    POLICY_DIR,
    STATS_DIR,
    BundleError,
    BundleInfo,
    BundleMismatchError,
    check_expected,
    check_policy_shape,
    verify_bundle,
)
from registry.policy import NumpyPolicy
from training.evaluation_record import Gate

_T = TypeVar("_T")
DEFAULT_TIMEOUT_S = 30.0


class ChampionLoadError(RuntimeError):
    """The alias could not be resolved or its bundle downloaded (names server and alias)."""


@dataclass(frozen=True)
class ChampionMetadata:
    """Who the loaded model is: its registry name, alias and version, the ids and hashes
    its bundle was verified against, and its decision and gates (gates.json)."""

    name: str
    alias: str
    version: str
    run_id: str | None
    spec_hash: str
    stats_id: str
    bundle_sha256: str
    candidate_id: str | None
    decision: str | None
    gates: dict[str, Gate]
    code_version: str | None
    config_fingerprint: str | None
    bundle_dir: str
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LoadedModel:
    """A verified bundle ready to decide: `policy.predict(obs) -> int`."""

    policy: NumpyPolicy
    stats: FrozenStats
    spec: FeatureSpec
    env_config: JsonObject  # env_spec.json as the bundle recorded it (EnvConfig JSON)
    reward_config: JsonObject  # reward_spec.json ({} when the bundle has none)
    metadata: ChampionMetadata

    @property
    def version(self) -> str:
        return self.metadata.version

    def predict(self, obs: np.ndarray) -> int:
        return self.policy.predict(obs)


# --------------------------------------------------------------------------- deadline


def _run_with_deadline(fn: Callable[[], _T], deadline: float, what: str, uri: str) -> _T:
    """Run `fn` in a daemon thread and wait until `deadline` (time.monotonic()).

    MLflow's REST client retries for minutes against a dead server; the thread is left
    to finish on its own, the caller gets ChampionLoadError at the deadline."""
    value: list[_T] = []  # what `fn` returned, once it did
    error: list[BaseException] = []  # or what it raised

    def target() -> None:
        try:
            value.append(fn())
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            error.append(exc)

    thread = threading.Thread(target=target, name=f"chappie-registry-{what}", daemon=True)
    thread.start()
    thread.join(max(0.0, deadline - time.monotonic()))
    if thread.is_alive():
        raise ChampionLoadError(f"{what}: tracking server {uri} did not answer within the timeout")
    if error:
        raise error[0]
    return value[0]


def _probe(uri: str, deadline: float) -> None:
    """For http(s) URIs: one TCP connect, so a dead server fails in milliseconds."""
    parsed = urlparse(uri)
    if parsed.scheme not in ("http", "https"):
        return
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    timeout = max(0.05, deadline - time.monotonic())
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", port), timeout=timeout):
            pass
    except OSError as exc:
        raise ChampionLoadError(f"tracking server {uri} is not reachable: {exc}") from exc


def _use_uri(tracking_uri: str | None) -> str:
    """Configure `tracking_uri` once (again only when it changes); return the URI in use."""
    # slow: mlflow (~3 s); chappie live --bundle or --no-model never needs it
    from registry import tracking

    if tracking_uri is not None and tracking_uri != tracking.configured_uri():
        tracking.configure(tracking_uri)
    return tracking.tracking_uri()


# --------------------------------------------------------------------------- public


def resolve_alias_version(
    name: str, alias: str = "champion", tracking_uri: str | None = None, timeout_s: float = 5.0
) -> str | None:
    """The version `alias` points at now (None when unset). One cheap registry call, for
    the live loop to poll between decisions. Raises ChampionLoadError on an unreachable
    server within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    uri = _use_uri_with_deadline(tracking_uri, deadline)
    # slow: mlflow (~3 s); chappie live --bundle or --no-model never needs it
    from registry import store

    return _run_with_deadline(
        lambda: store.get_alias_version(name, alias), deadline, "resolve alias", uri
    )


def _use_uri_with_deadline(tracking_uri: str | None, deadline: float) -> str:
    # slow: mlflow (~3 s); chappie live --bundle or --no-model never needs it
    from registry.tracking import sqlite_path

    target = tracking_uri or _current_uri()
    db = sqlite_path(target)
    if db is not None and not db.is_file():  # a read must not create an empty store
        raise ChampionLoadError(f"no MLflow database at {db} (tracking URI {target})")
    _probe(target, deadline)
    return _run_with_deadline(lambda: _use_uri(tracking_uri), deadline, "open store", target)


def _current_uri() -> str:
    # slow: mlflow (~3 s); chappie live --bundle or --no-model never needs it
    from registry import tracking

    return tracking.tracking_uri()


def load_champion(
    name: str,
    alias: str = "champion",
    tracking_uri: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    expected_spec_hash: str | None = None,
    expected_stats_id: str | None = None,
    cache_dir: str | Path | None = None,
) -> LoadedModel:
    """Resolve `name@alias`, download its bundle into `cache_dir` (default a
    `chappie-models` folder in the system temp dir), verify it and load it.

    Raises:
      ChampionLoadError: the server is unreachable or slow beyond `timeout_s`, the alias
        does not exist, or the version has no bundle.
      BundleError: a file is missing, altered or unlisted, or bundle.json differs from
        the sha256 recorded on the model version.
      BundleMismatchError: the bundle's FeatureSpec hash or stats id differs from
        `expected_spec_hash` / `expected_stats_id` (both values named).
    """
    # slow: mlflow (~3 s); chappie live --bundle or --no-model never needs it
    from registry import store, tracking

    deadline = time.monotonic() + timeout_s
    uri = _use_uri_with_deadline(tracking_uri, deadline)

    def resolve() -> tuple[str, str | None, dict[str, str]]:
        version = store.get_alias_version(name, alias)
        if version is None:
            raise ChampionLoadError(f"model {name!r} has no alias {alias!r} at {uri}")
        mv = tracking.client().get_model_version(name, version)
        return version, mv.run_id, dict(mv.tags or {})

    version, run_id, tags = _run_with_deadline(resolve, deadline, f"resolve {name}@{alias}", uri)
    if "bundle_sha256" not in tags:
        raise BundleError(f"model {name} v{version} has no bundle_sha256 tag: not a Chappie bundle")
    root = (
        Path(cache_dir) if cache_dir is not None else Path(tempfile.gettempdir()) / "chappie-models"
    )
    final = root / name / f"v{version}-{tags['bundle_sha256'][:12]}"
    if final.is_dir():
        try:
            info = verify_bundle(final, expected_sha256=tags["bundle_sha256"])
        except BundleError:
            shutil.rmtree(final, ignore_errors=True)  # a damaged cache is re-downloaded
        else:
            return _load_verified(
                final,
                info,
                name,
                alias,
                version,
                run_id,
                tags,
                expected_spec_hash,
                expected_stats_id,
            )
    staging = root / name / ".downloads"
    path = _run_with_deadline(
        lambda: store.download_bundle(name, version, staging),
        deadline,
        f"download {name} v{version}",
        uri,
    )
    try:  # only a verified, expected bundle reaches the cache folder
        info = verify_bundle(path, expected_sha256=tags["bundle_sha256"])
        check_expected(info, expected_spec_hash, expected_stats_id)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            shutil.rmtree(final)
        os.replace(path, final)
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)  # the download's temp folder
    info = verify_bundle(final, expected_sha256=tags["bundle_sha256"])
    return _load_verified(
        final, info, name, alias, version, run_id, tags, expected_spec_hash, expected_stats_id
    )


def load_bundle(
    folder: str | Path,
    expected_spec_hash: str | None = None,
    expected_stats_id: str | None = None,
) -> LoadedModel:
    """Verify and load a bundle folder directly (no registry): for tests, replays and
    offline use. Same checks as `load_champion` except the registry's bundle sha256."""
    folder = Path(folder)
    info = verify_bundle(folder)
    return _load_verified(folder, info, "", "", "", None, {}, expected_spec_hash, expected_stats_id)


def _gates(folder: Path, doc: dict[str, object]) -> dict[str, Gate]:
    """gates.json's gates, parsed. Raises BundleError naming what is wrong."""
    try:
        return {name: Gate.model_validate(g) for name, g in doc.items()}
    except ValidationError as exc:
        e = exc.errors()[0]
        where = ".".join(str(p) for p in e["loc"])
        raise BundleError(f"bundle {folder}: gates.json: {where}: {e['msg']}") from None


def _load_verified(
    folder: Path,
    info: BundleInfo,
    name: str,
    alias: str,
    version: str,
    run_id: str | None,
    tags: dict[str, str],
    expected_spec_hash: str | None,
    expected_stats_id: str | None,
) -> LoadedModel:
    check_expected(info, expected_spec_hash, expected_stats_id)
    spec_doc = json.loads((folder / "feature_spec.json").read_text())
    spec = FeatureSpec.model_validate(spec_doc["spec"])
    if spec.spec_hash != info.spec_hash:
        raise BundleMismatchError(
            f"bundle {folder} records FeatureSpec hash {info.spec_hash}, but this code computes "
            f"{spec.spec_hash} for the same spec (feature definitions changed)"
        )
    stats = FrozenStats.load(folder / STATS_DIR)
    policy = NumpyPolicy.load(folder / POLICY_DIR)
    n_features = len(spec.names)
    env_config = json.loads((folder / "env_spec.json").read_text())
    try:
        check_policy_shape(n_features, spec.window, env_config, policy.obs_dim, policy.n_actions)
    except BundleError as exc:
        raise BundleError(f"bundle {folder}: {exc}") from None
    gates_doc = (
        json.loads((folder / "gates.json").read_text()) if (folder / "gates.json").exists() else {}
    )
    lineage = (
        json.loads((folder / "lineage.json").read_text())
        if (folder / "lineage.json").exists()
        else {}
    )
    meta = ChampionMetadata(
        name=name,
        alias=alias,
        version=version,
        run_id=run_id,
        spec_hash=info.spec_hash,
        stats_id=info.stats_id,
        bundle_sha256=info.sha256,
        candidate_id=info.manifest.candidate_id,
        decision=gates_doc.get("decision"),
        gates=_gates(folder, gates_doc.get("gates") or {}),
        code_version=lineage.get("code_version"),
        config_fingerprint=info.manifest.config_fingerprint,
        bundle_dir=str(folder),
        tags=tags,
    )
    reward = (
        json.loads((folder / "reward_spec.json").read_text())
        if (folder / "reward_spec.json").exists()
        else {}
    )
    return LoadedModel(
        policy=policy,
        stats=stats,
        spec=spec,
        env_config=env_config,
        reward_config=reward,
        metadata=meta,
    )
