"""Where the live loop's model comes from, and the champion swap.

Orchestration ring. `RegistrySource` is the only path to a model in production: it
resolves `name@alias` (one cheap registry call, polled) and loads a version through
`registry.load_champion`, which verifies every sha256 and never unpickles. `BundleSource`
loads a verified bundle folder (`registry.load_bundle`, offline replays).

`poll_model` is the swap rule: called between decisions (never during one), it returns
what to do: keep the model, swap in a new verified one, or drop to observe-only, each
with the reason to log. A model that fails to load or verify is never swapped in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

import registry  # free: its load_champion and friends resolve on first use
from core.config.features import FeatureSpec
from core.jsontypes import JsonObject
from live.predictor import Normalizer, Predictor


@dataclass(frozen=True)
class LoadedChampion:
    """A verified model ready to decide. `version` is the source's own version id (what
    `ModelSource.resolve` returns, e.g. "3" for a registry version), `predictor.version`
    the label decisions carry (e.g. "chappie-xbtusd@v3"); the poll compares `version`."""

    predictor: Predictor
    spec: FeatureSpec
    stats: Normalizer
    env_config: JsonObject = field(default_factory=dict)  # its env_spec.json (EnvConfig)
    version: str | None = None


class ModelSource(Protocol):
    def resolve(self) -> str | None: ...  # version the alias points at (None: unset)

    def load(self, version: str) -> LoadedChampion: ...  # raises on any failure


def _champion(model: Any, label: str, version: str) -> LoadedChampion:
    env = dict(model.env_config)
    predictor = Predictor(model.policy, label, action_mode=str(env.get("action_mode", "toggle")))
    return LoadedChampion(predictor, model.spec, model.stats, env, version)


def same_stats(a: Normalizer | None, b: Normalizer | None) -> bool:
    """True when two frozen stats normalise identically: the same object, or equal
    `stats_id` and (when they carry them) bit-equal `mean` and `sigma`. Pure."""
    if a is None or b is None:
        return False
    if a is b:
        return True
    ida, idb = getattr(a, "stats_id", None), getattr(b, "stats_id", None)
    if ida is None or ida != idb:
        return False
    for name in ("mean", "sigma"):
        xa, xb = getattr(a, name, None), getattr(b, name, None)
        if xa is None and xb is None:
            continue
        if xa is None or xb is None or not np.array_equal(xa, xb):
            return False
    return True


class RegistrySource:
    """`name@alias` in the MLflow registry (timeouts bound every call)."""

    def __init__(self, name: str, alias: str, tracking_uri: str, timeout_s: float = 30.0) -> None:
        self.name, self.alias, self.tracking_uri, self.timeout_s = (
            name,
            alias,
            tracking_uri,
            timeout_s,
        )

    def resolve(self) -> str | None:
        return registry.resolve_alias_version(
            self.name, self.alias, self.tracking_uri, timeout_s=min(self.timeout_s, 10.0)
        )

    def load(self, version: str) -> LoadedChampion:
        model = registry.load_champion(
            self.name, alias=self.alias, tracking_uri=self.tracking_uri, timeout_s=self.timeout_s
        )
        version = str(model.version)  # the alias may have moved between resolve and load
        return _champion(model, f"{self.name}@v{version}", version)


class BundleSource:
    """A bundle folder (verified on load); its version is its bundle sha256."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def resolve(self) -> str | None:
        return "bundle:" + self.folder.name

    def load(self, version: str) -> LoadedChampion:
        label = f"bundle:{self.folder.name}"
        return _champion(registry.load_bundle(self.folder), label, label)


@dataclass(frozen=True)
class PollOutcome:
    action: Literal["keep", "swap", "observe"]
    reason: str
    champion: LoadedChampion | None = None
    version: str | None = None


def _keeping(current_version: str | None) -> str:
    return f"keeping {current_version}" if current_version else "staying observe-only"


def poll_model(
    source: ModelSource, current_version: str | None, expected_spec_hash: str | None = None
) -> PollOutcome:
    """One poll of the alias (blocking: run it off the event loop). `current_version` is
    the source's version id of the model in use (`LoadedChampion.version`), never the
    predictor's label: a registry resolves to "3", the label is "name@v3".

    - alias unchanged -> keep;
    - alias moved and the new version loads and verifies -> swap (a different FeatureSpec
      is allowed: the caller rebuilds the observation pipeline and warms up again, unless
      `expected_spec_hash` pins it, then it is refused and the old model kept);
    - the registry cannot be reached, or the new version fails to load/verify -> keep
      the old model (or stay observe-only when there is none), with the reason;
    - the alias was removed -> observe-only (the champion was withdrawn).
    """
    try:
        version = source.resolve()
    except Exception as exc:  # noqa: BLE001
        return PollOutcome(
            "keep", f"alias not resolved ({type(exc).__name__}: {exc}); {_keeping(current_version)}"
        )
    if version is None:
        if current_version is None:
            return PollOutcome("keep", "no champion")
        return PollOutcome("observe", f"alias removed: dropping {current_version}, observe-only")
    if version == current_version:
        return PollOutcome("keep", "unchanged")
    try:
        champ = source.load(version)
    except Exception as exc:  # noqa: BLE001
        return PollOutcome(
            "keep",
            f"version {version} refused ({type(exc).__name__}: {exc}); {_keeping(current_version)}",
        )
    if expected_spec_hash is not None and champ.spec.spec_hash != expected_spec_hash:
        return PollOutcome(
            "keep",
            f"version {version} has spec {champ.spec.spec_hash[:12]}, expected {expected_spec_hash[:12]}; "
            f"{_keeping(current_version)}",
        )
    loaded = champ.version if champ.version is not None else version
    if loaded == current_version:  # the alias moved back between resolve and load
        return PollOutcome("keep", "unchanged")
    return PollOutcome("swap", f"swapped in {loaded} (was {current_version})", champ, loaded)
