"""A spec's slices, frozen stats and folds.json on an object store: published by the
features flow right after it publishes them locally, checked by whoever trains. Adapter.

Object layout: the local data folder's, under `storage.url`:
`slices/<spec12>/<slice_id>.manifest.json`, `slices/<spec12>/segments/<sha256>.arrow`,
`slices/<spec12>/folds.json`, `stats/<stats_id>/{mean.npy,sigma.npy,stats.json,
checksums.json}`, `funding/<symbol>.parquet` (the symbol's funding table,
`ingest.funding`, when the data folder holds one). Segments and stats files are
published before the manifest or checksums.json that names them, every slice, its stats
and the funding table before folds.json (a reader of folds.json finds everything it
names, and the funding the slices train with), each file checked against the sha256 its
manifest or checksums.json records (a file damaged locally is refused, never
published); what the store already holds with the same sha256 is not sent again.

The funding table is one object per symbol, shared by every spec (as the data folder's
is): publishing replaces it whole with the data folder's current table. A task planned
from it records its sha256 (`training.store_inputs.StoreInputs`), so a table replaced
since is refused by the worker, never silently used.

Publishing holds the store lock `slices/<spec12>` (`core.locks.hold_store_lock`): two
machines publishing one spec at once are refused in one line, not interleaved.
Readers (`training.store_inputs`) fetch every byte checked against these sha256s.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from core.config.storage import StorageConfig
from core.hashing import sha256_file
from core.locks import hold_store_lock
from core.objectstore import ObjectStoreError, join, publish, publish_all, stored_sha256
from core.paths import DataLayout
from features.slices import FOLDS_FILE, load_fold_index, manifest_path
from features.stats import CHECKSUMS_FILE, MEAN_FILE, SIGMA_FILE, STATS_FILE
from features.store import SliceReadError, slice_digest, slice_parts
from ingest.funding import funding_table_path

#: the stats files checksums.json covers (features.stats), in publishing order
STATS_FILES = (MEAN_FILE, SIGMA_FILE, STATS_FILE)


def slice_url(storage: StorageConfig, manifest: str | Path) -> str:
    """The store URL of a local slice manifest `<data>/slices/<spec12>/<id>.manifest.json`."""
    p = Path(manifest)
    return join(storage.url, "slices", p.parent.name, p.name)


def stats_url(storage: StorageConfig, stats_dir: str | Path) -> str:
    """The store URL of a local stats folder `<data>/stats/<stats_id>`."""
    return join(storage.url, "stats", Path(stats_dir).name)


def folds_url(storage: StorageConfig, folds_json: str | Path) -> str:
    """The store URL of a spec's local `<data>/slices/<spec12>/folds.json`."""
    p = Path(folds_json)
    return join(storage.url, "slices", p.parent.name, p.name)


def funding_url(storage: StorageConfig, table: str | Path) -> str:
    """The store URL of a local funding table `<data>/funding/<symbol>.parquet`."""
    return join(storage.url, "funding", Path(table).name)


def store_funding_url(storage: StorageConfig, layout: DataLayout, symbol: str) -> str:
    """Where the store keeps the funding table of `symbol` (the data folder's place of it,
    `ingest.funding.funding_table_path`, under the store's URL)."""
    return funding_url(storage, funding_table_path(layout.root, symbol))


def publish_slice(storage: StorageConfig, manifest: str | Path) -> tuple[str, str]:
    """Publish a local slice: its segments (each checked against the sha256 its manifest
    gives), then the manifest. Returns (manifest URL, sha256 of the manifest's bytes).
    Raises ObjectStoreError for a slice whose digest or segments do not check out."""
    p = Path(manifest)
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
        (d / name, join(url, name), recorded_sha256(sums, name, d)) for name in STATS_FILES
    ]
    entries.append((sums_path, join(url, CHECKSUMS_FILE), None))
    return url, publish_all(entries, storage)[join(url, CHECKSUMS_FILE)]


def publish_funding(storage: StorageConfig, table: str | Path) -> tuple[str, str]:
    """Publish a local funding table (`ingest.funding`), replacing the store's when its
    bytes differ. Returns (URL, sha256 of its bytes)."""
    url = funding_url(storage, table)
    return url, publish(Path(table), url, storage)[0]


def publish_folds(storage: StorageConfig, folds_json: str | Path) -> str:
    """Publish a spec's folds.json (after its slices and stats). Returns its URL."""
    url = folds_url(storage, folds_json)
    publish(Path(folds_json), url, storage)
    return url


def recorded_sha256(sums: Any, name: str, where: str | Path) -> str:
    """The sha256 a checksums.json (`sums`, parsed) records for `name`. Raises
    ObjectStoreError when it records none."""
    want = sums.get(name) if isinstance(sums, dict) else None
    if not isinstance(want, str):
        raise ObjectStoreError(f"{where}: {CHECKSUMS_FILE} records no sha256 for {name}")
    return want


def _spec_files(layout: DataLayout, spec_hash: str) -> tuple[list[Path], list[Path], Path]:
    """(every slice manifest folds.json names, every stats folder, folds.json)."""
    index = load_fold_index(layout, spec_hash)
    ids = [s for f in index.folds for s in (f.train, f.validation, f.test) if s] + index.stress
    stats = [f.stats_id for f in index.folds]
    if index.stress_stats_id:
        stats.append(index.stress_stats_id)
    return (
        [manifest_path(layout, spec_hash, i) for i in dict.fromkeys(ids)],
        [layout.stats(s) for s in dict.fromkeys(stats)],
        layout.slices(spec_hash) / FOLDS_FILE,
    )


def publish_spec(
    storage: StorageConfig,
    layout: DataLayout,
    spec_hash: str,
    stage: str,
    symbol: str | None = None,
) -> str:
    """Publish the spec's local slices, their frozen stats, the funding table of `symbol`
    when the data folder holds one (`publish_funding`), then folds.json to the store,
    holding the store lock `slices/<spec12>` (StoreBusy, one line, when another machine
    holds it). Returns the folds.json URL. Raises ObjectStoreError naming a file that
    does not check out or an unreachable store."""
    manifests, stats, folds = _spec_files(layout, spec_hash)
    table = funding_table_path(layout.root, symbol) if symbol else None
    with hold_store_lock(storage, f"slices/{layout.spec12(spec_hash)}", stage):
        for m in manifests:
            publish_slice(storage, m)
        for d in stats:
            publish_stats(storage, d)
        if table is not None and table.is_file():
            publish_funding(storage, table)
        return publish_folds(storage, folds)


def published_slice(storage: StorageConfig, manifest: str | Path) -> tuple[str, str]:
    """(URL, sha256) of the local slice manifest `manifest` as the store holds it: the
    object's recorded sha256 must be the local file's. Raises ObjectStoreError, one line
    naming the slice, when the store holds another or none (publish it: run the features
    flow with this `storage:`)."""
    return _published(slice_url(storage, manifest), Path(manifest), storage)


def published_stats(storage: StorageConfig, stats_dir: str | Path) -> tuple[str, str]:
    """(folder URL, sha256 of checksums.json) of the local stats folder as the store holds
    it; raises like `published_slice`."""
    url = stats_url(storage, stats_dir)
    _published(join(url, CHECKSUMS_FILE), Path(stats_dir) / CHECKSUMS_FILE, storage)
    return url, sha256_file(Path(stats_dir) / CHECKSUMS_FILE)


def published_funding(storage: StorageConfig, table: str | Path) -> tuple[str, str]:
    """(URL, sha256) of the local funding table `table` as the store holds it; raises like
    `published_slice` when the store holds another table or none (a table ingested since
    the features flow last published: run it again)."""
    return _published(funding_url(storage, table), Path(table), storage)


def _published(url: str, local: Path, storage: StorageConfig) -> tuple[str, str]:
    sha = sha256_file(local)
    held = stored_sha256(url, storage)
    if held != sha:
        now = "nothing" if held is None else f"sha256 {held}"
        raise ObjectStoreError(
            f"{url} holds {now}, the local {local.name} is sha256 {sha}: publish it with "
            "`chappie features` (its storage: set to this store) before training from it"
        )
    return url, sha
