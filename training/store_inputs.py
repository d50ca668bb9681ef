"""A training task's inputs on an object store: fetch a slice and its frozen stats on a
worker with every byte verified. Adapter. The features flow publishes them
(`features.store_publish`, which holds the object layout).

The chain of trust: the driver plans each task from its local, checked store, or, on a
machine whose data folder holds no slices of the spec, from the store itself
(`fetch_fold_index`, `fetch_manifest`, `stats_checksums`: folds.json, each manifest
and each stats folder's checksums.json checked against the sha256 the store records
for it, `core.objectstore.fetch_root`), and records the sha256 of the train slice's
manifest file and of the stats folder's `checksums.json` (`StoreInputs`), plus the
slice digest it already carries (`TrainTask.train_sha256`). A worker fetches the
manifest and checks its bytes, checks that its parts hash to the digest, fetches every
segment checked against the sha256 the manifest gives it; likewise checksums.json,
then each stats file against it (core.objectstore.fetch_verified). What it trains on
is a folder of hard links into its content-addressed cache laid out like the local
store, so `ManagementEnv`, `read_slice` and `FrozenStats.load` read it unchanged.

The funding table its trial settles funding from travels the same way: a task whose
`trial.env.funding_rates_path` is the store's table (`features.store_publish.
funding_url`) carries its sha256 (`StoreInputs.funding_sha256`, checked when planned:
`funding_checksum`, or the local table's, `published_funding`), and the worker trains
with a checked copy in its cache (`fetch_funding`, `with_fetched_funding`).
"""

from __future__ import annotations

import json
from pathlib import Path

from core.config.base import FrozenModel, omit_when
from core.config.storage import StorageConfig
from core.config.training import TrialConfig
from core.hashing import sha256_file
from core.objectstore import (
    ObjectStoreError,
    default_cache_dir,
    fetch_root,
    fetch_verified,
    join,
    link_into,
)
from core.paths import DataLayout
from features.slices import FOLDS_FILE, FoldIndex, SliceManifest
from features.stats import CHECKSUMS_FILE
from features.store import MANIFEST_SUFFIX, SliceReadError, part_path, slice_digest
from features.store_publish import (  # the publishing side, re-exported for its callers
    STATS_FILES,
    folds_url,
    funding_url,
    publish_folds,
    publish_funding,
    publish_slice,
    publish_stats,
    published_funding,
    recorded_sha256,
    slice_url,
    stats_url,
    store_funding_url,
)

__all__ = [
    "StoreInputs",
    "fetch_fold_index",
    "fetch_funding",
    "fetch_manifest",
    "fetch_slice",
    "fetch_stats",
    "funding_checksum",
    "funding_url",
    "publish_folds",
    "publish_funding",
    "publish_slice",
    "publish_stats",
    "published_funding",
    "slice_url",
    "stats_checksums",
    "stats_url",
    "store_funding_url",
    "with_fetched_funding",
]


class StoreInputs(FrozenModel):
    """Where a task's train slice and stats are verifiable on the store: the sha256 of the
    slice manifest's bytes and of the stats folder's checksums.json (the task's
    `train_slice` and `stats_dir` are then their s3:// URLs); and when its trial settles
    funding from the store's funding table (`trial.env.funding_rates_path` is then
    `funding_url`), that table's URL and the sha256 of its bytes."""

    storage: StorageConfig
    manifest_sha256: str
    stats_checksums_sha256: str
    funding_url: str | None = None
    funding_sha256: str | None = None

    # a task without a funding table serialises exactly as before the fields existed
    # (task.json and Prefect's input cache key of its earlier runs stay valid)
    _omit = omit_when(funding_url=None, funding_sha256=None)


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
    for name in STATS_FILES:
        local = fetch_verified(join(url, name), recorded_sha256(sums, name, url), storage, root)
        link_into(local, view / name)
    link_into(sums_file, view / CHECKSUMS_FILE)
    return view


def store_folds_url(storage: StorageConfig, layout: DataLayout, spec_hash: str) -> str:
    """Where the store keeps the spec's folds.json (`features.store_publish.folds_url`
    of the local one's place in `layout`)."""
    return folds_url(storage, layout.slices(spec_hash) / FOLDS_FILE)


def fetch_fold_index(
    storage: StorageConfig, layout: DataLayout, spec_hash: str, cache_dir: str | Path | None = None
) -> FoldIndex:
    """The spec's folds.json as the store holds it, its bytes checked against the sha256
    the store records for it (the root of the chain: the features flow publishes it
    last, after everything it names). Raises FileNotFoundError when the store holds
    none (the features flow has not published this spec there), ValueError when it is
    another spec's, ObjectStoreError when it cannot be read or does not check out."""
    url = store_folds_url(storage, layout, spec_hash)
    local = fetch_root(url, storage, cache_dir)
    if local is None:
        raise FileNotFoundError(f"no {url}")
    try:
        index = FoldIndex.model_validate_json(local.read_bytes())
    except ValueError as exc:
        raise ObjectStoreError(f"{url}: not a folds.json: {exc}") from exc
    if index.spec_hash != spec_hash:
        raise ValueError(f"{url} is for spec {index.spec_hash}, not {spec_hash}")
    return index


def fetch_manifest(
    url: str, storage: StorageConfig, cache_dir: str | Path | None = None
) -> tuple[SliceManifest, str]:
    """(the slice manifest at `url`, the sha256 of its bytes), checked against the sha256
    the store records for it; its `path` is `url` (where a worker fetches the slice:
    `fetch_slice`). Raises ObjectStoreError when the store holds none (publish it: run
    `chappie features` with this `storage:`) or its bytes do not check out."""
    local = fetch_root(url, storage, cache_dir)
    if local is None:
        raise ObjectStoreError(
            f"{url} holds nothing, though the store's folds.json names it: publish the "
            "slices with `chappie features` (its storage: set to this store)"
        )
    try:
        m = SliceManifest.model_validate_json(local.read_bytes())
    except ValueError as exc:
        raise ObjectStoreError(f"{url}: not a slice manifest: {exc}") from exc
    return m.model_copy(update={"path": url}), sha256_file(local)


def stats_checksums(
    url: str, storage: StorageConfig, cache_dir: str | Path | None = None
) -> str | None:
    """The sha256 of the checksums.json of the stats folder at `url` (fetched and checked
    against the sha256 the store records for it), None when the store holds none."""
    local = fetch_root(join(url, CHECKSUMS_FILE), storage, cache_dir)
    return None if local is None else sha256_file(local)


def funding_checksum(
    url: str, storage: StorageConfig, cache_dir: str | Path | None = None
) -> str | None:
    """The sha256 of the funding table at `url` (fetched and checked against the sha256
    the store records for it), None when the store holds none (no funding from history,
    as a data folder without the table)."""
    local = fetch_root(url, storage, cache_dir)
    return None if local is None else sha256_file(local)


def fetch_funding(
    url: str, sha256: str, storage: StorageConfig, cache_dir: str | Path | None = None
) -> Path:
    """A local funding table holding exactly the bytes of sha256 `sha256` published at
    `url` (`<cache>/funding/<sha16>/<symbol>.parquet`, a link into the content-addressed
    cache). Raises ObjectStoreError naming the object when its bytes do not match."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    local = fetch_verified(url, sha256, storage, root)
    return link_into(local, root / "funding" / sha256[:16] / url.rsplit("/", 1)[1])


def with_fetched_funding(
    trial: TrialConfig, store: StoreInputs, cache_dir: str | Path | None = None
) -> TrialConfig:
    """`trial` with the store's funding table it settles funding from (`store.
    funding_url`) replaced by a checked copy in this machine's cache (`fetch_funding`);
    `trial` itself when it reads none. Raises ObjectStoreError on a mismatch."""
    env = trial.env
    if store.funding_url is None or env.funding_rates_path != store.funding_url:
        return trial
    if store.funding_sha256 is None:
        raise ObjectStoreError(f"{store.funding_url}: the task records no sha256 for it")
    local = fetch_funding(store.funding_url, store.funding_sha256, store.storage, cache_dir)
    return trial.model_copy(
        update={"env": env.model_copy(update={"funding_rates_path": str(local)})}
    )
