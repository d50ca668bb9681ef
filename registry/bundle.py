"""The model bundle: one folder per model version that the live loop can trust.

Layout (every file but `bundle.json` is listed in `bundle.json["files"]` with its sha256):

    bundle.json            format, ids, hashes of every other file (written last)
    policy/policy.json     architecture (registry.policy)
    policy/policy.npz      float32 weight arrays, loaded with allow_pickle=False
    policy/policy.onnx     the same actor as ONNX (optional)
    stats/mean.npy, stats/sigma.npy, stats/stats.json   frozen stats (features.stats)
    feature_spec.json      {"spec": FeatureSpec, "spec_hash", "names"}
    env_spec.json          EnvConfig without the reward (JSON)
    reward_spec.json       RewardConfig (JSON)
    lineage.json           candidate, config fingerprint, code version, slice hashes, runs
    gates.json             decision, reasons, every gate, test totals, per-slice results

Nothing in a bundle is a pickle. `verify_bundle` recomputes every sha256 and refuses a
missing, changed or unlisted file. Adapter ring (files), plus pure helpers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from core.atomic import write_json_atomic
from core.config.features import FeatureSpec
from core.hashing import sha256_bytes, sha256_file
from core.schema import ACTION_NAMES, MANAGEMENT_STATE
from features.stats import FrozenStats
from registry.export import export_sb3_zip

BUNDLE_JSON = "bundle.json"
BUNDLE_FORMAT = "chappie-bundle"
BUNDLE_FORMAT_VERSION = 1
POLICY_DIR = "policy"
STATS_DIR = "stats"
STATS_FILES = ("mean.npy", "sigma.npy", "stats.json")
REPO_ROOT = Path(__file__).resolve().parents[1]


class BundleError(ValueError):
    """A bundle is malformed, incomplete or does not match its recorded hashes."""


class BundleMismatchError(BundleError):
    """A bundle was built for another FeatureSpec or stats than the running code expects."""


class BundleManifest(BaseModel):
    """bundle.json: the bundle's format, the ids it was built for, the policy's shape and
    the sha256 of every other file (`files`: path in the bundle -> sha256)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: str
    format_version: int
    spec_hash: str
    stats_id: str
    candidate_id: str | None
    decision: str
    config_fingerprint: str
    obs_dim: int
    n_actions: int
    files: dict[str, str]


@dataclass(frozen=True)
class BundleInfo:
    """What `verify_bundle` returns: the verified bundle.json content and its own sha256."""

    path: Path
    manifest: BundleManifest
    sha256: str

    @property
    def spec_hash(self) -> str:
        return self.manifest.spec_hash

    @property
    def stats_id(self) -> str:
        return self.manifest.stats_id

    @property
    def candidate_id(self) -> str:
        return self.manifest.candidate_id or ""


# ----------------------------------------------------------------------------- pure


def code_version(repo: Path = REPO_ROOT) -> str:
    """The git commit of the code (suffix `-dirty` when the tree has uncommitted changes),
    else the installed `chappie` package version, else "unknown". Reads git, no writes."""
    try:
        sha = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        return f"git:{sha}{'-dirty' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        return f"pkg:{package_version('chappie')}"
    except Exception:  # noqa: BLE001 - no metadata: say so
        return "unknown"


def check_expected(
    info: BundleInfo, expected_spec_hash: str | None, expected_stats_id: str | None
) -> None:
    """Raise BundleMismatchError naming both values when the bundle's spec hash or stats id
    differs from what the running code expects (None: not checked). Pure."""
    if expected_spec_hash is not None and info.spec_hash != expected_spec_hash:
        raise BundleMismatchError(
            f"bundle {info.path} was built for FeatureSpec hash {info.spec_hash}, "
            f"but the running code expects {expected_spec_hash}"
        )
    if expected_stats_id is not None and info.stats_id != expected_stats_id:
        raise BundleMismatchError(
            f"bundle {info.path} carries stats id {info.stats_id}, "
            f"but the running code expects {expected_stats_id}"
        )


def _files_of(folder: Path) -> list[str]:
    return sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and p.relative_to(folder).as_posix() != BUNDLE_JSON
    )


# ----------------------------------------------------------------------------- build


def _as_json(obj: Any) -> Any:
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    return obj


def check_policy_shape(
    n_features: int, spec_window: int, env_json: Mapping[str, Any], obs_dim: int, n_actions: int
) -> None:
    """Raise BundleError unless the policy reads the env's observation (features x window,
    then the management state) and gives one of its actions (`action_mode`; bundles made
    before the target mode have none: toggle)."""
    window = int(env_json.get("window", spec_window))
    n_state = len(MANAGEMENT_STATE)
    expected_obs = n_features * window + n_state
    if obs_dim != expected_obs:
        raise BundleError(
            f"policy observation size {obs_dim} != {n_features} features x "
            f"window {window} + {n_state} = {expected_obs}"
        )
    mode = str(env_json.get("action_mode", "toggle"))
    names = ACTION_NAMES.get(mode)
    if names is None or n_actions != len(names):
        raise BundleError(
            f"policy gives {n_actions} actions; action_mode {mode!r} has {len(names or ())}"
        )


def build_bundle(
    out_dir: str | Path,
    *,
    model_zip: str | Path,
    stats_dir: str | Path,
    feature_spec: Any,
    env_config: Mapping[str, Any] | Any,
    reward_config: Mapping[str, Any] | Any | None = None,
    ppo_config: Mapping[str, Any] | Any | None = None,
    config_fingerprint: str,
    candidate: Mapping[str, Any] | None = None,
    train_slices: Sequence[Mapping[str, str]] = (),
    test_slices: Sequence[Mapping[str, str]] = (),
    decision: str = "unknown",
    reasons: Sequence[str] = (),
    gates: Mapping[str, Any] | None = None,
    lineage: Mapping[str, Any] | None = None,
    onnx: bool = True,
) -> Path:
    """Build a bundle folder at `out_dir` (must not exist or be empty) and return it.

    `model_zip`: our SB3 PPO zip (exported to pickle-free weights, not copied).
    `stats_dir`: a frozen stats folder; its `spec_hash` must equal the FeatureSpec's and
    its feature count must match the policy's observation size (window * F + 7).
    `feature_spec`: a `FeatureSpec` or its JSON dict. `env_config`: an EnvConfig or dict
    (its `reward` entry, if any, goes to reward_spec.json unless `reward_config` is given).

    Raises BundleError on any inconsistency; nothing is left at `out_dir` on failure.
    """
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise BundleError(f"bundle folder {out} is not empty")
    spec = (
        feature_spec
        if isinstance(feature_spec, FeatureSpec)
        else FeatureSpec.model_validate(feature_spec)
    )
    spec_hash = spec.spec_hash
    stats = FrozenStats.load(stats_dir)
    if stats.spec_hash != spec_hash:
        raise BundleError(
            f"stats {stats.stats_id} were fitted for spec {stats.spec_hash}, not {spec_hash}"
        )
    if tuple(stats.feature_names) != tuple(spec.names):
        raise BundleError(
            f"stats features {stats.feature_names} differ from the spec's {spec.names}"
        )

    env_json = dict(_as_json(env_config))
    reward_json = (
        _as_json(reward_config) if reward_config is not None else env_json.pop("reward", None)
    )
    env_json.pop("reward", None)
    staging = out.with_name(f".{out.name}.staging-{os.getpid()}")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        export_sb3_zip(model_zip, staging / POLICY_DIR, onnx=onnx)
        arch = json.loads((staging / POLICY_DIR / "policy.json").read_text())
        check_policy_shape(
            len(spec.names), spec.window, env_json, int(arch["obs_dim"]), int(arch["n_actions"])
        )
        (staging / STATS_DIR).mkdir()
        for name in STATS_FILES:
            shutil.copy2(Path(stats_dir) / name, staging / STATS_DIR / name)
        write_json_atomic(
            staging / "feature_spec.json",
            {
                "spec": spec.model_dump(mode="json"),
                "spec_hash": spec_hash,
                "names": list(spec.names),
            },
        )
        write_json_atomic(staging / "env_spec.json", env_json)
        write_json_atomic(staging / "reward_spec.json", reward_json or {})
        cand = dict(candidate or {})
        write_json_atomic(
            staging / "lineage.json",
            {
                "candidate_id": cand.get("candidate_id"),
                "trial": cand.get("trial"),
                "seed": cand.get("seed"),
                "timesteps": cand.get("timesteps"),
                "config_fingerprint": config_fingerprint,
                "code_version": code_version(),
                "ppo_config": _as_json(ppo_config) if ppo_config is not None else None,
                "sb3_zip_sha256": sha256_file(model_zip),
                "train_slices": [dict(s) for s in train_slices],
                "test_slices": [dict(s) for s in test_slices],
                "stats_train_slices": [dict(s) for s in stats.train_slices],
                **dict(lineage or {}),
            },
        )
        write_json_atomic(
            staging / "gates.json",
            {
                "decision": decision,
                "reasons": list(reasons),
                "gates": dict(gates or {}),
                "test_totals": cand.get("test_totals"),
                "slices": cand.get("slices"),
            },
        )
        files = {rel: sha256_file(staging / rel) for rel in _files_of(staging)}
        manifest = BundleManifest(
            format=BUNDLE_FORMAT,
            format_version=BUNDLE_FORMAT_VERSION,
            spec_hash=spec_hash,
            stats_id=stats.stats_id,
            candidate_id=cand.get("candidate_id"),
            decision=decision,
            config_fingerprint=config_fingerprint,
            obs_dim=int(arch["obs_dim"]),
            n_actions=int(arch["n_actions"]),
            files=files,
        )
        write_json_atomic(staging / BUNDLE_JSON, manifest.model_dump(mode="json"))
        verify_bundle(staging)
        if out.exists():
            out.rmdir()
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return out


# ----------------------------------------------------------------------------- verify


def verify_bundle(
    folder: str | Path,
    expected_spec_hash: str | None = None,
    expected_stats_id: str | None = None,
    expected_sha256: str | None = None,
) -> BundleInfo:
    """Check a bundle folder: bundle.json is of a known format, every listed file exists
    with its recorded sha256, no unlisted file is present, the stats and feature spec
    agree with bundle.json, and (when given) the spec hash, stats id and the sha256 of
    bundle.json itself are the expected ones.

    Reads JSON and hashes bytes only; never unpickles. Raises BundleError (file names in
    the message) or BundleMismatchError (both values named).
    """
    folder = Path(folder)
    meta_path = folder / BUNDLE_JSON
    if not meta_path.is_file():
        raise BundleError(f"{folder} is not a bundle: {BUNDLE_JSON} missing")
    raw = meta_path.read_bytes()
    own_sha = sha256_bytes(raw)
    if expected_sha256 is not None and own_sha != expected_sha256:
        raise BundleError(
            f"{meta_path} has sha256 {own_sha}, but the registry recorded {expected_sha256}"
        )
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise BundleError(f"{meta_path} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise BundleError(f"{meta_path} is not a JSON object")
    if doc.get("format") != BUNDLE_FORMAT or doc.get("format_version") != BUNDLE_FORMAT_VERSION:
        raise BundleError(
            f"{meta_path}: unknown format {doc.get('format')!r} v{doc.get('format_version')!r}"
        )
    try:
        manifest = BundleManifest.model_validate(doc)
    except ValidationError as exc:
        why = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5]
        )
        raise BundleError(f"{meta_path} is not a bundle manifest: {why}") from None
    files = manifest.files
    problems: list[str] = []
    for rel, want in sorted(files.items()):
        path = folder / rel
        if ".." in Path(rel).parts or Path(rel).is_absolute():
            problems.append(f"{rel}: path escapes the bundle")
        elif not path.is_file():
            problems.append(f"{rel}: missing")
        elif (got := sha256_file(path)) != want:
            problems.append(f"{rel}: sha256 {got} != recorded {want}")
    extra = sorted(set(_files_of(folder)) - set(files))
    problems += [f"{rel}: not listed in {BUNDLE_JSON}" for rel in extra]
    required = [f"{POLICY_DIR}/policy.json", f"{POLICY_DIR}/policy.npz", "feature_spec.json"]
    required += [f"{STATS_DIR}/{n}" for n in STATS_FILES]
    problems += [f"{rel}: required file not listed" for rel in required if rel not in files]
    if problems:
        raise BundleError(f"bundle {folder} failed verification: " + "; ".join(problems))
    spec_json = json.loads((folder / "feature_spec.json").read_text())
    stats_json = json.loads((folder / STATS_DIR / "stats.json").read_text())
    if (
        spec_json.get("spec_hash") != manifest.spec_hash
        or stats_json.get("spec_hash") != manifest.spec_hash
    ):
        raise BundleError(
            f"bundle {folder}: spec hash disagrees between bundle.json ({manifest.spec_hash}), "
            f"feature_spec.json ({spec_json.get('spec_hash')}) and stats.json ({stats_json.get('spec_hash')})"
        )
    if stats_json.get("stats_id") != manifest.stats_id:
        raise BundleError(
            f"bundle {folder}: stats id {stats_json.get('stats_id')} in stats.json "
            f"!= {manifest.stats_id} in bundle.json"
        )
    info = BundleInfo(path=folder, manifest=manifest, sha256=own_sha)
    check_expected(info, expected_spec_hash, expected_stats_id)
    return info
