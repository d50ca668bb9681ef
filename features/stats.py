"""Frozen normalisation stats: mean and sigma per feature, fitted on train slices only.

Files (`stats/<stats_id>/`): `mean.npy`, `sigma.npy` (float64, `spec.names` order,
`np.save`; loaded with `allow_pickle=False`), `stats.json`, and, written last,
`checksums.json`: the sha256 of the three (``{"mean.npy": sha, "sigma.npy": sha,
"stats.json": sha}``). `load` refuses files that do not hold those bytes
(`verify_stats_dir`, also run by `chappie audit slices`); a folder written before the
checksums (no `checksums.json`) still loads, unverified, and the audit says so. `stats_id` is the hash of the spec hash and the train slices'
sha256s, so the same train data gives the same id and nothing can re-fit stats under an
existing id with other data.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from core.atomic import json_bytes, publish_if_changed
from core.hashing import fingerprint, sha256_bytes
from core.leftovers import remove_stale_temps

MEAN_FILE, SIGMA_FILE, STATS_FILE = "mean.npy", "sigma.npy", "stats.json"
CHECKSUMS_FILE = "checksums.json"


class StatsError(ValueError):
    """Stats that cannot be fitted, loaded or applied (shape, names, non-finite)."""


def compute_stats_id(spec_hash: str, train_slices: Sequence[dict[str, str]]) -> str:
    """24-hex id from the spec hash and the ordered train slices (id, sha256)."""
    payload = {
        "spec_hash": spec_hash,
        "train": [{"slice_id": s["slice_id"], "sha256": s["sha256"]} for s in train_slices],
    }
    return fingerprint(payload)[:24]


class StatsMeta(BaseModel):
    """`stats.json`: what the arrays are (their feature names, in order), the floor
    their sigma was held at, how many train rows fitted them and which train slices
    (`{slice_id, sha256}`, in order; absent in the oldest folders)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    stats_id: str
    spec_hash: str
    feature_names: list[str]
    sigma_floor: float
    n_rows: int
    train_slices: list[dict[str, str]] = []


class StatsRecord(StatsMeta):
    """`StatsMeta` with the arrays as lists of floats (JSON round-trips a float64
    exactly): stats carried in a staging plan before they are saved."""

    mean: list[float]
    sigma: list[float]


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
        return cls._fitted(
            mean, sigma, x.shape[0], feature_names, spec_hash, sigma_floor, train_slices
        )

    @classmethod
    def fit_columns(
        cls,
        columns: Iterable[np.ndarray],
        feature_names: Sequence[str],
        spec_hash: str,
        sigma_floor: float,
        train_slices: Sequence[dict[str, str]],
    ) -> FrozenStats:
        """`fit` on one 1-D array per feature (e.g. zero-copy views of a frame's
        columns): no (rows, features) matrix is assembled. Bit-identical to `fit` on
        the column-major matrix polars' `DataFrame.to_numpy` returns (numpy reduces a
        contiguous column with the same pairwise sum either way), in two passes per
        column instead of five (`_mean_var`). Same errors as `fit`.

        The columns are read one at a time, in order, and none is kept: an iterator
        may hand out one reused buffer refilled per column (`features.publish` does for
        a window that spans two chunks of the feature frame).
        """
        names = list(feature_names)
        mean = np.empty(len(names))
        var = np.empty(len(names))
        bad: list[str] = []
        n_rows = -1
        i = -1
        for i, col in enumerate(columns):
            c = np.asarray(col, dtype=np.float64)
            if i >= len(names) or c.ndim != 1:
                raise StatsError(f"need one 1-D column per feature ({len(names)})")
            if n_rows < 0:
                n_rows = c.shape[0]
            elif c.shape[0] != n_rows:
                raise StatsError("feature columns differ in length")
            if n_rows == 0:
                raise StatsError("cannot fit stats on zero rows")
            mean[i], var[i] = _mean_var(c)
            if not (np.isfinite(mean[i]) and np.isfinite(var[i])) and not np.isfinite(c).all():
                bad.append(names[i])
        if i + 1 != len(names):  # fewer columns than names (more raised in the loop)
            raise StatsError(f"need one 1-D column per feature ({len(names)})")
        if n_rows <= 0:
            raise StatsError("cannot fit stats on zero rows")
        if bad:
            raise StatsError(f"non-finite train values in {bad}")
        sigma = np.maximum(np.sqrt(var), sigma_floor)
        return cls._fitted(mean, sigma, n_rows, names, spec_hash, sigma_floor, train_slices)

    @classmethod
    def _fitted(
        cls,
        mean: np.ndarray,
        sigma: np.ndarray,
        n_rows: int,
        feature_names: Sequence[str],
        spec_hash: str,
        sigma_floor: float,
        train_slices: Sequence[dict[str, str]],
    ) -> FrozenStats:
        slices = tuple({"slice_id": s["slice_id"], "sha256": s["sha256"]} for s in train_slices)
        return cls(
            stats_id=compute_stats_id(spec_hash, slices),
            spec_hash=spec_hash,
            feature_names=tuple(feature_names),
            mean=mean,
            sigma=sigma,
            sigma_floor=float(sigma_floor),
            n_rows=int(n_rows),
            train_slices=slices,
        )

    def normalize(self, x: np.ndarray, clip: float) -> np.ndarray:
        """clip((x - mean) / sigma, -clip, clip) along the last axis; float64 out."""
        x = np.asarray(x, dtype=np.float64)
        if x.shape[-1] != self.mean.shape[0]:
            raise StatsError(f"x has {x.shape[-1]} features, stats have {self.mean.shape[0]}")
        z = (x - self.mean) / self.sigma
        return np.clip(z, -clip, clip)

    def meta(self) -> StatsMeta:
        """What stats.json holds."""
        return StatsMeta(
            stats_id=self.stats_id,
            spec_hash=self.spec_hash,
            feature_names=list(self.feature_names),
            sigma_floor=self.sigma_floor,
            n_rows=self.n_rows,
            train_slices=[dict(s) for s in self.train_slices],
        )

    # ------------------------------------------------------------ adapters
    def save(self, directory: str | Path) -> Path:
        """Write mean.npy, sigma.npy, then stats.json (last), each atomically. Idempotent:
        a file that already holds the same bytes is left untouched."""
        d = Path(directory)
        remove_stale_temps(d)  # a crashed save's temp files (older than an hour)
        publish_if_changed(self.files(d))
        return d

    def files(self, directory: str | Path) -> list[tuple[Path, bytes]]:
        """What `save` writes: (path, bytes) of mean.npy, sigma.npy, stats.json, then
        checksums.json (the sha256 of the other three)."""
        d = Path(directory)
        out = [
            (d / MEAN_FILE, _npy_bytes(self.mean)),
            (d / SIGMA_FILE, _npy_bytes(self.sigma)),
            (d / STATS_FILE, json_bytes(self.meta().model_dump(mode="json"))),
        ]
        sums = {p.name: sha256_bytes(data) for p, data in out}
        return [*out, (d / CHECKSUMS_FILE, json_bytes(sums))]

    def to_record(self) -> StatsRecord:
        """`meta` plus `mean` and `sigma`: stats carried in a staging plan."""
        return StatsRecord(
            **self.meta().model_dump(), mean=self.mean.tolist(), sigma=self.sigma.tolist()
        )

    @classmethod
    def from_record(cls, record: StatsRecord) -> FrozenStats:
        """The inverse of `to_record`. Raises StatsError."""
        return cls._from_meta(record, record.mean, record.sigma)

    @classmethod
    def load(cls, directory: str | Path) -> FrozenStats:
        """Read a stats folder (no pickles), checking the arrays' bytes against the
        sha256 stats.json records. Raises StatsError (a checksum mismatch, a damaged
        file) / FileNotFoundError."""
        d = Path(directory)
        meta, blobs, _ = _read_checked(d)
        try:
            mean = np.load(io.BytesIO(blobs[MEAN_FILE]), allow_pickle=False)
            sigma = np.load(io.BytesIO(blobs[SIGMA_FILE]), allow_pickle=False)
            return cls._from_meta(meta, mean, sigma)
        except (ValueError, TypeError, EOFError) as exc:
            if isinstance(exc, StatsError):
                raise
            raise StatsError(f"{d}: damaged stats: {exc}") from exc

    @classmethod
    def _from_meta(
        cls, meta: StatsMeta, mean: np.ndarray | list[float], sigma: np.ndarray | list[float]
    ) -> FrozenStats:
        return cls(
            stats_id=meta.stats_id,
            spec_hash=meta.spec_hash,
            feature_names=tuple(meta.feature_names),
            mean=np.asarray(mean, dtype=np.float64),
            sigma=np.asarray(sigma, dtype=np.float64),
            sigma_floor=meta.sigma_floor,
            n_rows=meta.n_rows,
            train_slices=tuple(meta.train_slices),
        )


def _read_checked(d: Path) -> tuple[StatsMeta, dict[str, bytes], bool]:
    """(stats.json, {file: bytes}, checked) of a stats folder, the bytes checked against
    checksums.json when there is one (`checked`). Raises StatsError / FileNotFoundError."""
    blobs = {name: (d / name).read_bytes() for name in (MEAN_FILE, SIGMA_FILE, STATS_FILE)}
    checked = (d / CHECKSUMS_FILE).exists()
    if checked:
        try:
            sums = json.loads((d / CHECKSUMS_FILE).read_text())
        except ValueError as exc:
            raise StatsError(f"{d / CHECKSUMS_FILE}: not JSON: {exc}") from exc
        for name, data in blobs.items():
            want = sums.get(name) if isinstance(sums, dict) else None
            if sha256_bytes(data) != want:
                raise StatsError(
                    f"{d / name} does not match its sha256 in {CHECKSUMS_FILE} "
                    "(damaged or replaced)"
                )
    try:
        meta = StatsMeta.model_validate_json(blobs[STATS_FILE])
    except ValidationError as exc:  # not JSON, or not what stats.json holds
        raise StatsError(f"{d / STATS_FILE}: not a stats record: {exc}") from exc
    return meta, blobs, checked


def verify_stats_dir(directory: str | Path) -> list[str]:
    """Problems of a stats folder: missing files, arrays that do not match the sha256
    stats.json records, arrays that do not load or fit the names; "no checksums" for a
    folder written before them. Empty when every byte checks out."""
    d = Path(directory)
    try:
        _, _, checked = _read_checked(d)
        FrozenStats.load(d)
    except FileNotFoundError as exc:
        return [f"missing {Path(str(exc.filename)).name}"]
    except (StatsError, OSError, KeyError, TypeError, ValueError) as exc:
        return [str(exc)]
    if not checked:
        return [f"no {CHECKSUMS_FILE} (written before checksums were recorded): re-run features"]
    return []


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(arr, dtype=np.float64), allow_pickle=False)
    return buf.getvalue()


def _mean_var(c: np.ndarray) -> tuple[float, float]:
    """`(c.mean(), c.var())` bit for bit as numpy computes them (`numpy/_core/_methods.py`:
    a pairwise sum divided by n; then the pairwise sum of squared deviations from that
    mean, divided by n), with the sum and the deviations computed once. Non-finite
    values make both non-finite."""
    n = c.shape[0]
    with np.errstate(invalid="ignore", over="ignore"):
        mean = np.add.reduce(c) / n
        d = np.subtract(c, mean)
        np.multiply(d, d, out=d)
        return float(mean), float(np.add.reduce(d) / n)
