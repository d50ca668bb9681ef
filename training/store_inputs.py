"""A training task's inputs on an object store: publish a slice and its frozen stats
from the local data folder, fetch them on a worker with every byte verified. Adapter.

Object layout: the local data folder's, under `storage.url`:
`slices/<spec12>/<slice_id>.manifest.json`, `slices/<spec12>/segments/<sha256>.arrow`,
`slices/<spec12>/folds.json`, `stats/<stats_id>/{mean.npy,sigma.npy,stats.json,
checksums.json}`. Segments and stats files are published before the manifest or
checksums.json that names them.

The chain of trust: the driver plans each task from its local, checked store and
records the sha256 of the train slice's manifest file and of the stats folder's
`checksums.json` (`StoreInputs`), plus the slice digest it already carries
(`TrainTask.train_sha256`). A worker fetches the manifest and checks its bytes, checks
that its parts hash to the digest, fetches every segment checked against the sha256 the
manifest gives it; likewise checksums.json, then each stats file against it
(core.objectstore.fetch_verified). What it trains on is a folder of hard links into
its content-addressed cache laid out like the local store, so `ManagementEnv`,
`read_slice` and `FrozenStats.load` read it unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from core.config.base import FrozenModel
from core.config.storage import StorageConfig
from core.objectstore import (
    ObjectStoreError,
    default_cache_dir,
    fetch_verified,
    join,
    link_into,
    publish,
    publish_all,
)
from features.stats import CHECKSUMS_FILE, MEAN_FILE, SIGMA_FILE, STATS_FILE
from features.store import (
    MANIFEST_SUFFIX,
    SliceReadError,
    part_path,
    slice_digest,
    slice_parts,
)


class StoreInputs(FrozenModel):
    """Where a task's train slice and stats are verifiable on the store: the sha256 of the
    slice manifest's bytes and of the stats folder's checksums.json (the task's
    `train_slice` and `stats_dir` are then their s3:// URLs)."""

    storage: StorageConfig
    manifest_sha256: str
    stats_checksums_sha256: str


def slice_url(storage: StorageConfig, manifest_path: str | Path) -> str:
    """The store URL of a local slice manifest `<data>/slices/<spec12>/<id>.manifest.json`."""
    p = Path(manifest_path)
    return join(storage.url, "slices", p.parent.name, p.name)


def stats_url(storage: StorageConfig, stats_dir: str | Path) -> str:
    """The store URL of a local stats folder `<data>/stats/<stats_id>`."""
    return join(storage.url, "stats", Path(stats_dir).name)


def publish_slice(storage: StorageConfig, manifest_path: str | Path) -> tuple[str, str]:
    """Publish a local slice: its segments (each checked against the sha256 its manifest
    gives), then the manifest. Returns (manifest URL, sha256 of the manifest's bytes).
    Raises ObjectStoreError for a slice whose digest or segments do not check out."""
    p = Path(manifest_path)
    try:
        m, files = slice_parts(p)
    except SliceReadError as exc:
        raise ObjectStoreError(f"refusing to publish {p}: {exc}") from exc
    digest = slice_digest((part.sha256, part.rows) for part in m.parts)
    if digest != m.sha256:
        raise ObjectStoreError(
            f"refusing to publish {p}: its parts hash to {digest}, the manifest says {m.sha256}"
        )
    url = slice_url(storage, p)
    folder = url.rsplit("/", 1)[0]
    entries: list[tuple[str | Path, str, str | None]] = [
        (f, join(folder, part.file), part.sha256) for part, f in zip(m.parts, files, strict=True)
    ]
    entries.append((p, url, None))  # last: a reader never finds a manifest without parts
    return url, publish_all(entries, storage)[url]


def publish_stats(storage: StorageConfig, stats_dir: str | Path) -> tuple[str, str]:
    """Publish a local frozen-stats folder: its files checked against its checksums.json,
    then checksums.json. Returns (folder URL, sha256 of checksums.json). Raises
    ObjectStoreError when the folder has no checksums (written before they existed:
    re-run features) or a file does not match them."""
    d = Path(stats_dir)
    sums_path = d / CHECKSUMS_FILE
    try:
        sums = json.loads(sums_path.read_text())
    except (OSError, ValueError) as exc:
        raise ObjectStoreError(
            f"refusing to publish stats {d}: no readable {CHECKSUMS_FILE} ({exc}); re-run "
            "features to write it"
        ) from exc
    url = stats_url(storage, d)
    entries: list[tuple[str | Path, str, str | None]] = [
        (d / name, join(url, name), _sum(sums, name, d)) for name in _stats_files()
    ]
    entries.append((sums_path, join(url, CHECKSUMS_FILE), None))
    return url, publish_all(entries, storage)[join(url, CHECKSUMS_FILE)]


def publish_folds(storage: StorageConfig, folds_json: str | Path) -> str:
    """Publish a spec's folds.json (after its slices). Returns its URL."""
    p = Path(folds_json)
    url = join(storage.url, "slices", p.parent.name, p.name)
    publish(p, url, storage)
    return url


def _stats_files() -> tuple[str, ...]:
    """The stats files checksums.json covers (features.stats), in publishing order."""
    return (MEAN_FILE, SIGMA_FILE, STATS_FILE)


def _sum(sums: Any, name: str, where: str | Path) -> str:
    want = sums.get(name) if isinstance(sums, dict) else None
    if not isinstance(want, str):
        raise ObjectStoreError(f"{where}: {CHECKSUMS_FILE} records no sha256 for {name}")
    return want


def fetch_slice(
    url: str,
    manifest_sha256: str,
    digest: str,
    storage: StorageConfig,
    cache_dir: str | Path | None = None,
) -> Path:
    """A local slice manifest (with its segments beside it) holding exactly the slice
    published at `url`: the manifest's bytes hash to `manifest_sha256`, its parts to
    `digest`, every segment to its sha256. Raises ObjectStoreError otherwise."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    manifest_file = fetch_verified(url, manifest_sha256, storage, root)
    try:
        m = json.loads(manifest_file.read_bytes())
        parts = [(str(part["sha256"]), int(part["rows"]), part["file"]) for part in m["parts"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise ObjectStoreError(f"{url}: not a slice manifest: {exc}") from exc
    got = slice_digest((sha, rows) for sha, rows, _ in parts)
    if got != digest or m.get("sha256") != digest:
        raise ObjectStoreError(
            f"{url}: the slice's parts hash to {got}, the task expects {digest}; not used"
        )
    name = url.rsplit("/", 1)[1]
    if not name.endswith(MANIFEST_SUFFIX):
        raise ObjectStoreError(f"{url}: not a slice manifest URL (*{MANIFEST_SUFFIX})")
    view = root / "slices" / manifest_sha256[:32]
    folder = url.rsplit("/", 1)[0]
    for sha, _, file in parts:
        try:
            local = part_path(view, file)  # confined to segments/<sha256>.arrow
        except SliceReadError as exc:
            raise ObjectStoreError(f"{url}: {exc}") from exc
        if local.name != f"{sha}{local.suffix}":
            raise ObjectStoreError(f"{url}: part {file} is not named by its sha256 {sha}")
        link_into(fetch_verified(join(folder, file), sha, storage, root), local)
    return link_into(manifest_file, view / name)  # last, like the publisher


def fetch_stats(
    url: str, checksums_sha256: str, storage: StorageConfig, cache_dir: str | Path | None = None
) -> Path:
    """A local frozen-stats folder holding exactly the stats published at `url`: its
    checksums.json hashes to `checksums_sha256` and every file to the sha256 that
    records. Raises ObjectStoreError otherwise."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    sums_file = fetch_verified(join(url, CHECKSUMS_FILE), checksums_sha256, storage, root)
    try:
        sums = json.loads(sums_file.read_bytes())
    except ValueError as exc:
        raise ObjectStoreError(f"{url}/{CHECKSUMS_FILE}: not JSON: {exc}") from exc
    stats_id = url.rstrip("/").rsplit("/", 1)[1]
    view = root / "stats" / f"{stats_id}-{checksums_sha256[:16]}"
    for name in _stats_files():
        local = fetch_verified(join(url, name), _sum(sums, name, url), storage, root)
        link_into(local, view / name)
    link_into(sums_file, view / CHECKSUMS_FILE)
    return view
