"""Prefect flow `build-features`: event partitions -> bars -> staged slices -> validated
-> published slices, frozen stats and folds.json.

Wiring only, and the one orchestration of these steps: tasks wrap the adapter functions
of `features.bars` (sampling), `features.publish` (staging, publishing) and
`expectations.runner.validate_staged_slice`, and pass paths, ids, frozen configs and the
typed values the stages hand on (`features.bars.BuiltBars`, `features.slices.SlicePlan`,
`SliceValidation`, `FoldIndex`). Bars and staging are cached
by inputs (`INPUTS + TASK_SOURCE`, persisted results) keyed by the event partitions'
manifest hashes; a cached staging plan whose files are gone, or that an earlier version
wrote, is rebuilt (staging is removed after a successful publish; a failed run keeps it
for inspection). Every slice is validated by its own task; when any fails the flow
raises `SliceValidationError` listing every failed expectation of every failing slice,
and nothing is published.

The flow holds the data folder's lock (`flows.common.data_folder_lock`): two runs never
share a staging folder, and the temp files a crashed run left in the slices, bars, stats
and staging folders are removed when the next run starts (any age: no writer can be
running). Persisted results are JSON (`flows.results`).

With `storage` (the experiment config's `storage:`) the event partitions are read from
the object store and the bars published there (`features.bars.build_bars`); the bars
the slices are cut from are the store's view (a cache folder, bounded with the fetch
cache by `core.objectstore.trim_cache` at the end of the run). Slices, stats and
folds.json are published to `<data_dir>`, then to the store (`features.store_publish`:
every file checked against its sha256, folds.json last, under the store lock of the
spec: another machine publishing it is refused in one line), where the train flow's
workers fetch them, every byte checked again. The whole run holds the store lease on the
symbol's bars of the spec (`bars/<symbol>/<spec12>`, `core.locks.hold_store_lock`).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import INPUTS, TASK_SOURCE

from core.config.features import FeaturesConfig
from core.config.storage import StorageConfig
from core.hashing import fingerprint
from core.jsontypes import JsonObject
from core.locks import hold_store_lock
from core.objectstore import trim_cache, view_root
from core.paths import DataLayout
from expectations.runner import SliceValidationError, validate_staged_slice
from features import bars as bar_files
from features import publish, slices, store_publish
from features.depth_check import check_bars_index
from flows import progress
from flows.common import data_folder_lock
from flows.results import PERSISTED, ensure_result_storage
from ingest.events import list_event_days, read_manifest


def _build_bars(
    cfg: FeaturesConfig,
    data_dir: str,
    symbol: str,
    events_fp: str,
    storage: StorageConfig | None = None,
) -> bar_files.BuiltBars:
    """`events_fp` (the event manifests' hashes) is part of the cache key only. The
    result carries the partitions' instrument contract (recorded in every slice
    manifest)."""
    return bar_files.build_bars(cfg, data_dir, symbol, storage)


def _stage(
    bars_path: str,
    cfg: FeaturesConfig,
    staging_dir: str,
    origin_ns: int,
    day_instruments: dict[str, JsonObject] | None = None,
) -> slices.SlicePlan:
    return publish.stage_slices(bars_path, cfg, staging_dir, origin_ns, day_instruments)


def _validate(
    plan: slices.SlicePlan, slice_id: str, cfg: FeaturesConfig, docs: str | None
) -> slices.SliceValidation:
    return validate_staged_slice(plan, slice_id, cfg, docs)


def _publish(
    plan: slices.SlicePlan,
    validations: dict[str, slices.SliceValidation],
    data_dir: str,
    parts: dict[str, str],
    lookback_ns: int,
    instrument: JsonObject | None,
    day_instruments: dict[str, JsonObject] | None = None,
) -> slices.FoldIndex:
    return publish.publish_slices(
        plan,
        validations,
        DataLayout(Path(data_dir)),
        parts,
        lookback_ns,
        instrument,
        day_instruments,
    )


def _remove_staging(plan: slices.SlicePlan) -> None:
    publish.remove_staging(plan)


def _publish_to_store(storage: StorageConfig, data_dir: str, spec_hash: str, symbol: str) -> str:
    """The spec's local slices, stats, the symbol's funding table (when the data folder
    has one) and folds.json onto the store; its folds.json URL."""
    layout = DataLayout(Path(data_dir))
    return store_publish.publish_spec(storage, layout, spec_hash, "features", symbol)


def _staged_files_exist(plan: slices.SlicePlan) -> bool:
    """True when a (cached) plan is usable: every staged segment it names is still there.
    (A plan an earlier version persisted with other fields does not decode: Prefect
    counts it a cache miss and stages again.)"""
    return all(plan.segment_path(part).exists() for s in plan.slices for part in s.parts)


def _events_layout(data_dir: str, symbol: str, storage: StorageConfig | None) -> DataLayout:
    """Where the event partitions' manifests are: the data folder, or the store's view
    (`ingest.run.events_view`, refreshed from the store)."""
    if storage is None:
        return DataLayout(Path(data_dir))
    # slow: ingest.run loads numba (~0.3 s), only with an object store
    from ingest.run import events_view

    return events_view(storage, symbol)


def _events_fingerprint(data_dir: str, symbol: str, storage: StorageConfig | None = None) -> str:
    layout = _events_layout(data_dir, symbol, storage)
    return fingerprint(
        bar_files.event_partition_hashes(layout, symbol, list_event_days(layout, symbol))
    )


def _remove_leftovers(data_dir: str, spec_hash: str, symbol: str) -> list[str]:
    """Every temp file of a crashed run, whatever its age: the caller holds the lock."""
    return publish.remove_leftovers(DataLayout(Path(data_dir)), spec_hash, symbol, min_age_s=0.0)


remove_leftovers = task(name="remove-leftovers")(_remove_leftovers)
events_fingerprint = task(name="events-fingerprint")(_events_fingerprint)
build_bars = task(name="build-bars", cache_policy=INPUTS + TASK_SOURCE, **PERSISTED)(_build_bars)
stage_slices = task(name="stage-slices", cache_policy=INPUTS + TASK_SOURCE, **PERSISTED)(_stage)
staged_files_exist = task(name="staged-files-exist")(_staged_files_exist)
validate_slice = task(name="validate-slice", task_run_name="validate-{slice_id}")(_validate)
publish_slices = task(name="publish-slices")(_publish)
remove_staging = task(name="remove-staging")(_remove_staging)
publish_to_store = task(name="publish-to-store")(_publish_to_store)


@flow(name="build-features")
def build_features_flow(
    symbol: str, cfg: FeaturesConfig, data_dir: str, storage: StorageConfig | None = None
) -> dict[str, Any]:
    """Build validated walk-forward slices for `symbol` under `<data_dir>/slices`
    (`storage`: from the object store's events, its bars published there).

    Returns the folds.json content. Raises SliceValidationError (listing every failed
    expectation) when any slice fails its suites, SliceBuildError / WalkForwardError
    when the events cannot make the configured slices (DepthError: the spec reads
    deeper into the book than the data holds); FolderBusy when another run holds
    the data folder; ObjectStoreError naming a damaged or unreadable object on the store;
    StoreBusy when another machine holds the store lease of these bars (`_store_lock`).
    """
    with data_folder_lock(data_dir, "features"), _store_lock(storage, symbol, cfg):
        ensure_result_storage()
        try:
            return _build_features(symbol, cfg, data_dir, storage)
        finally:
            if storage is not None:
                trim_cache()


def _store_lock(
    storage: StorageConfig | None, symbol: str, cfg: FeaturesConfig
) -> contextlib.AbstractContextManager[object]:
    """Across machines, the store lease on the bars of `symbol` under this spec (the days
    this run samples and publishes, then the index): another machine's features run of
    them is refused in one line (core.locks.StoreBusy), not interleaved. Nothing without
    a store (the data folder's lock covers one machine)."""
    if storage is None:
        return contextlib.nullcontext()
    name = f"bars/{symbol}/{DataLayout.spec12(cfg.spec.spec_hash)}"
    return hold_store_lock(storage, name, "features")


def _build_features(
    symbol: str, cfg: FeaturesConfig, data_dir: str, storage: StorageConfig | None = None
) -> dict[str, Any]:
    layout = DataLayout(Path(data_dir))
    if storage is None and not layout.events_symbol(symbol).exists():
        raise slices.SliceBuildError(f"no events for {symbol} under {layout.events_symbol(symbol)}")
    leftovers = remove_leftovers(data_dir, cfg.spec.spec_hash, symbol)
    if leftovers:
        get_run_logger().info(
            "removed %d leftovers of a crashed run: %s", len(leftovers), leftovers
        )
    with progress.step(f"bars {symbol}") as st:
        fp = events_fingerprint(data_dir, symbol, storage)
        bars = build_bars(cfg, data_dir, symbol, fp, storage)
        if not Path(bars.bars_path).exists():
            bars = build_bars.with_options(refresh_cache=True)(cfg, data_dir, symbol, fp, storage)
        st.result = f"{progress.count(len(bars.event_partitions), 'event day')} sampled"
    # a spec the data's book depth cannot feed is refused before any feature is computed
    events = layout if storage is None else DataLayout(view_root(storage))  # synced above
    sources = {
        d: (read_manifest(events, symbol, d) or {}).get("book_kind") for d in bars.event_partitions
    }
    check_bars_index(bars.bars_path, cfg.spec, sources)
    folds = slices_from_bars(symbol, bars, cfg, data_dir)
    if storage is not None:  # the slices, stats and folds.json just published, to the store
        with progress.step("publish to store") as st:
            st.result = publish_to_store(storage, data_dir, cfg.spec.spec_hash, symbol)
    return folds


def slices_from_bars(
    symbol: str, bars: bar_files.BuiltBars, cfg: FeaturesConfig, data_dir: str
) -> dict[str, Any]:
    """The flow after sampling: `bars` (what the build-bars task returns) -> staged
    slices -> every slice validated by its own task -> published slices, stats and
    folds.json; returns the folds.json content. Call it inside a flow run (its steps are
    tasks). Raises SliceValidationError listing every failed expectation of every
    failing slice; nothing is published then."""
    layout = DataLayout(Path(data_dir))
    staging = str(publish.staging_dir_for(layout, cfg, bars.bars_sha256))
    with progress.step("features") as st:
        plan = stage_slices(bars.bars_path, cfg, staging, bars.origin_ns, bars.day_instruments)
        if not staged_files_exist(plan):
            plan = stage_slices.with_options(refresh_cache=True)(
                bars.bars_path, cfg, staging, bars.origin_ns, bars.day_instruments
            )
        st.result = f"{progress.count(len(plan.slices), 'slice')} computed"
    docs = str(layout.gx) if cfg.expectations.data_docs else None
    validations: dict[str, slices.SliceValidation] = {}
    failed: list[str] = []
    bad: list[str] = []
    with progress.step("validation", len(plan.slices), "slices") as st:
        for item in plan.slices:
            sid = item.slice_id
            state = validate_slice(plan, sid, cfg, docs, return_state=True)
            st.advance()
            if state.is_completed():
                validations[sid] = state.result()
                continue
            try:
                state.result()
            except SliceValidationError as e:
                bad.append(sid)
                failed += [f"{sid}: {f}" for f in e.failed]
    if failed:
        raise SliceValidationError(",".join(bad), failed)
    with progress.step("publish") as st:
        index = publish_slices(
            plan,
            validations,
            data_dir,
            bars.event_partitions,
            cfg.spec.lookback_ns,
            bars.instrument,
            bars.day_instruments,
        )
        remove_staging(plan)
        st.result = progress.count(len(plan.slices), "slice")
    create_table_artifact(
        key="feature-slices",
        table=[
            {
                "slice": s.slice_id,
                "kind": s.kind,
                "fold": s.fold,
                "rows": s.rows,
                "sha256": s.sha256[:16],
                "stats_id": s.stats_id,
                "expectations": validations[s.slice_id].statistics.get("evaluated_expectations"),
            }
            for s in plan.slices
        ],
        description=f"validated slices of {symbol}, spec {cfg.spec.spec_hash[:12]}",
    )
    return index.model_dump(mode="json")
