"""Frozen normalisation stats: mean and sigma per feature, fitted on train slices only.

Files (`stats/<stats_id>/`): `mean.npy`, `sigma.npy` (float64, `spec.names` order,
`np.save`; loaded with `allow_pickle=False`) and `stats.json`. `stats_id` is the hash of
the spec hash and the train slices' sha256s, so the same train data gives the same id
and nothing can re-fit stats under an existing id with other data.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.atomic import write_json_atomic, write_with_atomic
from core.hashing import fingerprint

MEAN_FILE, SIGMA_FILE, STATS_FILE = "mean.npy", "sigma.npy", "stats.json"


class StatsError(ValueError):
    """Stats that cannot be fitted, loaded or applied (shape, names, non-finite)."""


def compute_stats_id(spec_hash: str, train_slices: Sequence[dict[str, str]]) -> str:
    """24-hex id from the spec hash and the ordered train slices (id, sha256)."""
    payload = {
        "spec_hash": spec_hash,
        "train": [{"slice_id": s["slice_id"], "sha256": s["sha256"]} for s in train_slices],
    }
    return fingerprint(payload)[:24]


@dataclass(frozen=True)
class FrozenStats:
    """Per-feature mean and floored sigma (float64, `feature_names` order)."""

    stats_id: str
    spec_hash: str
    feature_names: tuple[str, ...]
    mean: np.ndarray
    sigma: np.ndarray
    sigma_floor: float
    n_rows: int
    train_slices: tuple[dict[str, str], ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        n = len(self.feature_names)
        if self.mean.shape != (n,) or self.sigma.shape != (n,):
            raise StatsError(
                f"mean {self.mean.shape} / sigma {self.sigma.shape} do not match {n} features"
            )
        if not (np.all(np.isfinite(self.mean)) and np.all(np.isfinite(self.sigma))):
            raise StatsError("mean and sigma must be finite")
        if np.any(self.sigma < self.sigma_floor):
            raise StatsError(f"sigma below the floor {self.sigma_floor}")

    # ------------------------------------------------------------ pure
    @classmethod
    def fit(
        cls,
        x: np.ndarray,
        feature_names: Sequence[str],
        spec_hash: str,
        sigma_floor: float,
        train_slices: Sequence[dict[str, str]],
    ) -> FrozenStats:
        """Fit on the stacked train rows `x` (rows, features), float64, no warm-up rows.

        sigma is the population standard deviation (ddof=0), floored at `sigma_floor`
        so constant features normalise to 0 instead of dividing by zero. Raises
        StatsError on an empty or non-finite `x` or a column count mismatch.
        """
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(feature_names):
            raise StatsError(f"x has shape {x.shape}, expected (rows, {len(feature_names)})")
        if x.shape[0] == 0:
            raise StatsError("cannot fit stats on zero rows")
        bad = ~np.isfinite(x).all(axis=0)
        if bad.any():
            names = [feature_names[i] for i in np.where(bad)[0]]
            raise StatsError(f"non-finite train values in {names}")
        mean = x.mean(axis=0)
        sigma = np.maximum(x.std(axis=0), sigma_floor)
        slices = tuple({"slice_id": s["slice_id"], "sha256": s["sha256"]} for s in train_slices)
        return cls(
            stats_id=compute_stats_id(spec_hash, slices),
            spec_hash=spec_hash,
            feature_names=tuple(feature_names),
            mean=mean,
            sigma=sigma,
            sigma_floor=float(sigma_floor),
            n_rows=int(x.shape[0]),
            train_slices=slices,
        )

    def normalize(self, x: np.ndarray, clip: float) -> np.ndarray:
        """clip((x - mean) / sigma, -clip, clip) along the last axis; float64 out."""
        x = np.asarray(x, dtype=np.float64)
        if x.shape[-1] != self.mean.shape[0]:
            raise StatsError(f"x has {x.shape[-1]} features, stats have {self.mean.shape[0]}")
        z = (x - self.mean) / self.sigma
        return np.clip(z, -clip, clip)

    def to_json(self) -> dict[str, Any]:
        return {
            "stats_id": self.stats_id,
            "spec_hash": self.spec_hash,
            "feature_names": list(self.feature_names),
            "sigma_floor": self.sigma_floor,
            "n_rows": self.n_rows,
            "train_slices": [dict(s) for s in self.train_slices],
        }

    # ------------------------------------------------------------ adapters
    def save(self, directory: str | Path) -> Path:
        """Write mean.npy, sigma.npy, then stats.json (last, atomically). Idempotent."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        write_with_atomic(d / MEAN_FILE, lambda p: _save_npy(p, self.mean))
        write_with_atomic(d / SIGMA_FILE, lambda p: _save_npy(p, self.sigma))
        write_json_atomic(d / STATS_FILE, self.to_json())
        return d

    @classmethod
    def load(cls, directory: str | Path) -> FrozenStats:
        """Read a stats folder (no pickles). Raises StatsError / FileNotFoundError."""
        d = Path(directory)
        meta = json.loads((d / STATS_FILE).read_text())
        mean = np.load(d / MEAN_FILE, allow_pickle=False)
        sigma = np.load(d / SIGMA_FILE, allow_pickle=False)
        return cls(
            stats_id=meta["stats_id"],
            spec_hash=meta["spec_hash"],
            feature_names=tuple(meta["feature_names"]),
            mean=np.asarray(mean, dtype=np.float64),
            sigma=np.asarray(sigma, dtype=np.float64),
            sigma_floor=float(meta["sigma_floor"]),
            n_rows=int(meta["n_rows"]),
            train_slices=tuple(meta.get("train_slices", [])),
        )


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with open(path, "wb") as fh:
        np.save(fh, np.asarray(arr, dtype=np.float64), allow_pickle=False)
