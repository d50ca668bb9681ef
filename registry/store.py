"""MLflow model store adapter: log a bundle as a pyfunc model, register a version with
tags, read and move aliases, download a version's bundle. No business rules (which alias
moves when is decided in registry/promotion.py).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types import Schema, TensorSpec

from registry import tracking
from registry.bundle import BUNDLE_JSON, verify_bundle

MODEL_ARTIFACT_NAME = "model"
BUNDLE_ARTIFACT = "bundle"
SB3_ARTIFACT = "sb3_model_zip"
PYFUNC_FILE = Path(__file__).with_name("pyfunc_model.py")
REGISTRY_PKG = Path(__file__).resolve().parent
TAG_VALUE_MAX = 5000


def _tag_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text[:TAG_VALUE_MAX]


def gate_tags(gates: Mapping[str, Any]) -> dict[str, str]:
    """Flatten gate results into version tags: `gate.<name>` = passed (true/false) and
    `gate.<name>.value` / `.threshold` / `.definition` when present. Pure."""
    out: dict[str, str] = {}
    for name, result in gates.items():
        if isinstance(result, Mapping):
            out[f"gate.{name}"] = str(bool(result.get("passed"))).lower()
            for key in ("value", "threshold", "definition"):
                if key in result:
                    out[f"gate.{name}.{key}"] = _tag_value(result[key])
        else:
            out[f"gate.{name}"] = _tag_value(result)
    return out


def log_bundle_model(
    bundle_dir: str | Path,
    run_id: str,
    sb3_zip: str | Path | None = None,
) -> Any:
    """Log the verified bundle as an MLflow models-from-code pyfunc model in run `run_id`.

    Artifacts: `bundle/` (everything the live loop needs) and, for retraining only,
    `sb3_model_zip`. Signature: float32 tensor (-1, obs_dim) -> int64 (-1,); the input
    example is a zero observation. Returns MLflow's ModelInfo.
    """
    info = verify_bundle(bundle_dir)
    obs_dim = info.manifest.obs_dim
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, obs_dim))]),
        outputs=Schema([TensorSpec(np.dtype(np.int64), (-1,))]),
    )
    artifacts = {BUNDLE_ARTIFACT: str(Path(bundle_dir).resolve())}
    if sb3_zip is not None:
        artifacts[SB3_ARTIFACT] = str(Path(sb3_zip).resolve())
    mlflow.set_tracking_uri(tracking.tracking_uri())
    with mlflow.start_run(run_id=run_id):
        return mlflow.pyfunc.log_model(
            name=MODEL_ARTIFACT_NAME,
            python_model=str(PYFUNC_FILE),
            artifacts=artifacts,
            code_paths=[str(REGISTRY_PKG)],
            signature=signature,
            input_example=np.zeros((1, obs_dim), dtype=np.float32),
            pip_requirements=["mlflow==3.17.2", "numpy"],
            metadata={
                "spec_hash": info.spec_hash,
                "stats_id": info.stats_id,
                "bundle_sha256": info.sha256,
            },
        )


def register_version(model_uri: str, name: str, run_id: str, tags: Mapping[str, Any]) -> str:
    """Register `model_uri` as a new version of `name` (created if missing) with `tags`;
    returns the version number as a string."""
    c = tracking.client()
    try:
        c.get_registered_model(name)
    except Exception:  # noqa: BLE001 - RESOURCE_DOES_NOT_EXIST: create it
        try:
            c.create_registered_model(name, description="Chappie PPO management policy bundles")
        except Exception as exc:  # noqa: BLE001 - a concurrent creator won
            if "already exists" not in str(exc).lower():
                raise
    model_id = None
    if model_uri.startswith("models:/m-"):
        model_id = model_uri.removeprefix("models:/").split("/", 1)[0]
    mv = c.create_model_version(
        name,
        source=model_uri,
        run_id=run_id,
        tags={k: _tag_value(v) for k, v in tags.items()},
        model_id=model_id,
    )
    return str(mv.version)


def get_alias_version(name: str, alias: str) -> str | None:
    """The version `alias` points at, or None when the alias (or the model) does not exist."""
    c = tracking.client()
    try:
        return str(c.get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def aliases(name: str) -> dict[str, str]:
    """alias -> version of registered model `name` ({} when it does not exist)."""
    try:
        rm = tracking.client().get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return {}
        raise
    return {str(k): str(v) for k, v in (rm.aliases or {}).items()}


def set_alias(name: str, alias: str, version: str) -> None:
    tracking.client().set_registered_model_alias(name, alias, str(version))


def delete_alias(name: str, alias: str) -> None:
    tracking.client().delete_registered_model_alias(name, alias)


def set_version_tags(name: str, version: str, tags: Mapping[str, Any]) -> None:
    c = tracking.client()
    for key, value in tags.items():
        c.set_model_version_tag(name, str(version), key, _tag_value(value))


def version_tags(name: str, version: str) -> dict[str, str]:
    mv = tracking.client().get_model_version(name, str(version))
    return dict(mv.tags or {})


def find_version_by_tag(name: str, key: str, value: str) -> str | None:
    """Newest version of `name` whose tag `key` equals `value`, or None."""
    try:
        found = tracking.client().search_model_versions(
            f"name = '{name}' and tags.`{key}` = '{value}'"
        )
    except MlflowException:
        return None
    versions = sorted((int(mv.version) for mv in found), reverse=True)
    return str(versions[0]) if versions else None


def download_bundle(name: str, version: str, dst_dir: str | Path) -> Path:
    """Download version `version`'s bundle into a new folder under `dst_dir`; return it.

    Only the `bundle/` artifact is fetched (never the SB3 zip). Nothing is verified here:
    the caller verifies (registry.champion).
    """
    c = tracking.client()
    base = c.get_model_version_download_uri(name, str(version)).rstrip("/")
    dst = Path(dst_dir)
    dst.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"v{version}-", dir=dst))
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=f"{base}/artifacts/{BUNDLE_ARTIFACT}",
        dst_path=str(tmp),
        tracking_uri=tracking.tracking_uri(),
    )
    path = Path(local)
    if not (path / BUNDLE_JSON).exists():
        raise FileNotFoundError(
            f"model {name} v{version} has no {BUNDLE_ARTIFACT}/{BUNDLE_JSON} at {base}"
        )
    return path
