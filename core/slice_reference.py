"""A slice reference: how one stage names a published slice to the next (training,
evaluation, and later the env and the live loop), in one value instead of parallel
`*_id` / `*_path` / `*_sha256` fields.

Pure: a frozen pydantic model; `of_manifest` reads the fields it needs from a slice
manifest (`features.slices.SliceManifest`, as a dict or model dump).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Self

from core.config.base import FrozenModel

SliceKind = Literal["train", "validation", "test", "stress"]


class SliceReference(FrozenModel):
    """One published slice: its id, kind and fold, where its manifest is (`location`:
    the manifest's absolute path, what the env, backtests and `read_slice` take), the
    sha256 of its content (`features.store.slice_digest` of its parts), the frozen stats
    that normalise it (None: the manifest records none, e.g. a stress slice of an older
    build) and the FeatureSpec hash it was built under."""

    slice_id: str
    kind: SliceKind
    fold: int | None
    location: str
    sha256: str
    stats_id: str | None
    spec_hash: str

    @classmethod
    def of_manifest(cls, manifest: Mapping[str, Any], stats_id: str | None = None) -> Self:
        """The reference of a slice manifest (with its `path`); `stats_id` overrides the
        manifest's (a fold's slices are normalised with the fold's stats)."""
        return cls(
            slice_id=manifest["slice_id"],
            kind=manifest["kind"],
            fold=manifest["fold"],
            location=manifest["path"],
            sha256=manifest["sha256"],
            stats_id=stats_id if stats_id is not None else manifest.get("stats_id"),
            spec_hash=manifest["spec_hash"],
        )
