"""Prefect flow `ingest-events`: raw source -> staged days -> published event partitions.

Wiring only. Tasks wrap `ingest.run` adapter functions and pass paths, ids and frozen
configs. Staging is cached by inputs (`INPUTS + TASK_SOURCE`, persisted results) keyed
by the source fingerprint (config + file sizes and mtimes); publishing is one task per
(source, day) and is idempotent and additive by itself (`ingest.events.publish_merged`:
a current partition is not rewritten, other runs' inputs are kept). The staging cache
key includes the staging format, so a folder staged by an older layout is not reused.
Retries are only on network I/O, in one place: `ingest.download` (backoff, resume; a
refused request is never retried), so the download task has no Prefect retries of its
own (they multiplied the attempts: 5 x 3 for a wrong URL). The staging index is persisted as
JSON (`flows.results`). The flow holds the data folder's lock (`flows.common.
data_folder_lock`), so two runs never stage or publish at once.

With `storage` (the experiment config's `storage:`) the partitions are published to the
object store instead of `<data_dir>/events` (`ingest.run`'s store functions); a day
whose partition on the store is damaged fails alone, after every other day is published.

With an instrument history (`ingest.instrument_history`: given, or stored beside the
events by an earlier run) each day is ingested under the contract in force that day:
the files are split by the contract of the day they are named after and each group is
ingested under its own (`ingest_configs`); one report adds them up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import INPUTS, TASK_SOURCE

from core.config.ingest import IngestConfig
from core.config.storage import StorageConfig
from core.locks import StoreBusy
from core.objectstore import ObjectStoreError
from core.paths import DataLayout
from flows import progress as display
from flows.common import data_folder_lock
from flows.results import PERSISTED, ensure_result_storage
from ingest import run as ingest_run
from ingest.download import download_range
from ingest.instrument_history import (
    InstrumentHistory,
    ingest_configs,
    load_stored_history,
    merge_reports,
    store_history,
)
from ingest.report import IngestOutcome
from ingest.staged import StagedIndex


def _stage(
    cfg: IngestConfig,
    data_dir: str,
    staging_dir: str,
    source_fp: str,
    progress: bool = False,
    staging_format: int = ingest_run.STAGING_FORMAT,
    storage: StorageConfig | None = None,
) -> StagedIndex:
    """`source_fp` and `staging_format` are part of the cache key only. (A staging result
    an earlier version persisted as a plain dict is under another key: this source is
    part of it.)"""
    return ingest_run.stage_source(cfg, data_dir, staging_dir, progress=progress, storage=storage)


def _download(url: str, start: str, end: str, dest_dir: str, kinds: list[str]) -> dict[str, Any]:
    return download_range(url, start, end, dest_dir, tuple(kinds))


fingerprint_source = task(name="fingerprint-source")(ingest_run.source_fingerprint)
stage_source = task(name="stage-source", cache_policy=INPUTS + TASK_SOURCE, **PERSISTED)(_stage)
staged_files_exist = task(name="staged-files-exist")(ingest_run.staged_files_exist)
publish_day = task(name="publish-day", task_run_name="publish-{cfg.source}-{day}")(
    ingest_run.publish_staged_day
)
build_report = task(name="ingest-report")(ingest_run.build_report)
prune_staging = task(name="prune-staging")(ingest_run.prune_staging)
claim_staging = task(name="claim-staging")(ingest_run.claim_staging)
download_dumps = task(name="download-dumps")(_download)  # retries: ingest.download


@flow(name="ingest-events")
def ingest_flow(
    cfg: IngestConfig,
    data_dir: str,
    progress: bool = False,
    download: dict[str, Any] | None = None,
    storage: StorageConfig | None = None,
    history: InstrumentHistory | None = None,
) -> IngestOutcome:
    """Ingest `cfg.source` into `<data_dir>/events` (`storage`: the object store's
    `events/`); returns the report (`IngestReport`) with the staging leftovers removed
    and, when it downloaded, the download (`ingest.report.IngestOutcome`).

    `download` (bitmex-dump only): ``{"url", "start", "end", "kinds"}``: the dumps are
    first downloaded (retries, resume) into ``<data_dir>/raw/bitmex-dump`` and ingested
    from there. Bad input is quarantined and counted, never fatal; raises only when the
    run itself cannot proceed; FolderBusy when another run holds the data folder;
    ObjectStoreError naming every day whose partition on the store is damaged or held by
    another machine publishing it (its store lock, `core.locks.StoreBusy`).

    `history`: the instrument history of `cfg.symbol` (`ingest.instrument_history`);
    each day is ingested under its contract, and the history is stored beside the
    events (`events/<symbol>/instrument_history.json`), where later runs (the nightly)
    find it when none is given. ValueError when a file's day cannot be told under a
    history that changes the contract.
    """
    with data_folder_lock(data_dir, "ingest"):
        ensure_result_storage()
        layout = DataLayout(Path(data_dir))
        if history is None:
            history = load_stored_history(layout, cfg.symbol)
        elif storage is None:
            store_history(layout, history)
        return _ingest(cfg, data_dir, progress, download, storage, history)


def _ingest(
    cfg: IngestConfig,
    data_dir: str,
    progress: bool,
    download: dict[str, Any] | None,
    storage: StorageConfig | None = None,
    history: InstrumentHistory | None = None,
) -> IngestOutcome:
    downloaded = None
    if download is not None:
        dest = str(Path(data_dir) / "raw" / "bitmex-dump")
        downloaded = download_dumps(
            download["url"], download["start"], download["end"], dest, list(download["kinds"])
        )
        files = [*downloaded["downloaded"], *downloaded["skipped"]]
        cfg = cfg.model_copy(update={"source": "bitmex-dump", "paths": (*cfg.paths, *files)})
    configs = [cfg] if history is None else ingest_configs(cfg, history)
    outcomes = [_ingest_one(c, data_dir, progress, storage) for c in configs]
    return IngestOutcome(
        report=merge_reports([o.report for o in outcomes]),
        leftovers_removed=[x for o in outcomes for x in o.leftovers_removed],
        download=downloaded,
    )


def _ingest_one(
    cfg: IngestConfig, data_dir: str, progress: bool, storage: StorageConfig | None
) -> IngestOutcome:
    """Stage and publish `cfg` (one instrument)."""
    fp = fingerprint_source(cfg)
    staging = str(Path(data_dir) / "staging" / "ingest" / fp[:16])
    progress = progress and not display.active()  # the command's display shows it instead
    what = f"ingest {cfg.source}"
    if cfg.source != "synthetic" and display.active():  # how many files the user waits for
        what += f": reading {display.count(len(ingest_run.expand_paths(cfg.paths)), 'file')}"
    with display.step(what) as st:
        index = stage_source(
            cfg, data_dir, staging, fp, progress, ingest_run.STAGING_FORMAT, storage
        )
        # a cache hit may reuse a folder staged long ago: claim it first, so that a
        # concurrent run's pruning spares it, then check that its files are still there
        claim_staging(staging)
        if not staged_files_exist(index):
            index = stage_source.with_options(refresh_cache=True)(
                cfg, data_dir, staging, fp, progress, ingest_run.STAGING_FORMAT, storage
            )
        st.description = f"ingest {cfg.source}"
        n_files, n_days = len(index.files), len(index.days)
        st.result = f"{display.count(n_files, 'file')} read, {display.count(n_days, 'day')} staged"
        if cfg.source == "synthetic":
            st.result = f"{display.count(n_days, 'day')} generated"
    # one day after another on this thread: submitted, each day got a thread of its own
    # (Prefect's thread pool is unbounded) and so a malloc arena of its own, which kept
    # that day's freed memory: the peak grew by ~14 MB a day (#19)
    days = sorted(index.days.items())
    published = []
    damaged: list[str] = []
    with display.step("publish events", len(days), "days") as st:
        for day, staged in days:
            try:
                published.append(publish_day(cfg, data_dir, day, staged, storage))
            except (ObjectStoreError, StoreBusy) as exc:  # that day only: the others publish
                damaged.append(str(exc))
            st.advance()
    if damaged:
        raise ObjectStoreError("; ".join(damaged))
    report = build_report(cfg, index, published)
    prune_staging(data_dir, fp[:16])
    create_table_artifact(
        key="ingest-report",
        table=[dict(row) for row in ingest_run.report_table(report)],  # Prefect's row type
        description=f"ingest {cfg.source} {cfg.symbol}: files, rows in/out/rejected, quarantine reasons",
    )
    return IngestOutcome(report=report, leftovers_removed=list(index.leftovers))
