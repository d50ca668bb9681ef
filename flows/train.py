"""Prefect flow `train-policies`: the PPO sweep. Control flow only.

One task per (trial, seed, timesteps, fold), on a process pool by default (one torch
thread per process), on Dask when `sweep.executor == "dask"`, or one at a time
("sequential"). Tasks retry `sweep.retries` times and are cached by their inputs
(INPUTS + TASK_SOURCE, results persisted), so a re-run resumes where it stopped; a task
that still fails is reported in the result and on the sweep's MLflow run, never dropped.

MLflow (through `registry.tracking`): one parent run per sweep, a child run per task
named after its knobs, the full config as params and as a JSON artifact, SB3 metrics in
batches, the train slice as a dataset input and the model zip as an artifact. Runs left
RUNNING by a killed earlier process are marked FAILED when the flow starts
(`registry.tracking.fail_orphaned_runs`); this flow's runs carry their owner process.

Nothing outlives the command: pool workers end when the process that started them dies
(`core.lifetime.init_pool_worker`) and use its Prefect API (PREFECT_API_URL, inherited)
instead of booting servers of their own. The flow holds the data folder's lock; task
results are persisted as JSON (`flows.results`).

With `storage:` set, tasks read their slices and stats from the object store: planned
from the data folder's slices (checked to be the store's) when it has them, else from
the store's own folds.json and manifests (`training.candidates.open_catalog`), so a
machine that did not run features can plan and train. Their funding table too: the
trials settle funding from the store's copy of the symbol's table, the same bytes
whichever machine plans (`training.candidates.funding_on_store`), each task carries its
sha256 and its worker trains with a checked copy (`training.store_inputs.StoreInputs`).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from prefect import flow, get_run_logger, task
from prefect.cache_policies import INPUTS, TASK_SOURCE
from prefect.client.orchestration import get_client
from prefect.futures import as_completed
from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner

from core.config.experiment import ExperimentConfig
from core.config.storage import StorageConfig
from core.config.training import SweepConfig
from core.lifetime import init_pool_worker
from core.paths import DataLayout
from features.slices import SliceManifest
from features.store_publish import published_slice, published_stats
from flows import progress
from flows.common import data_folder_lock
from flows.results import PERSISTED, ensure_result_storage
from ingest.funding import with_funding_history
from training.candidates import (
    SliceCatalog,
    StoreFunding,
    check_instrument,
    funding_on_store,
    open_catalog,
    plan_tasks,
    training_root,
)
from training.store_inputs import StoreInputs
from training.sweep import (
    TrainResult,
    TrainTask,
    finished_result,
    read_metrics_csv,
    read_progress,
    train_one,
)
from training.sweep_record import SWEEP_JSON, SweepResult, SweepRow


@task(name="train-policy", cache_policy=INPUTS + TASK_SOURCE, **PERSISTED)
def train_policy(train_task: TrainTask) -> dict[str, Any]:
    """One PPO run (training.sweep.train_one); returns the TrainResult as JSON."""
    return train_one(train_task).model_dump(mode="json")


def init_worker(parent_pid: int, stderr_path: str | None = None) -> None:
    """Pool worker initializer: `core.lifetime.init_pool_worker`, and its stderr into
    `stderr_path` when the command's progress display is live (`progress.WorkerOutput`
    relays it above the rows)."""
    if stderr_path:
        progress.redirect_stderr(stderr_path)
    init_pool_worker(parent_pid)


def task_runner(sweep: SweepConfig, stderr_path: str | None = None) -> TaskRunner:  # type: ignore[type-arg]
    """Process pool (default; workers die with this process), Dask (prefect-dask), or
    one worker thread. Create it in the process that runs the flow."""
    if sweep.executor == "process":
        return ProcessPoolTaskRunner(
            max_workers=sweep.n_workers,
            initializer=init_worker,
            initargs=(os.getpid(), stderr_path),
        )
    if sweep.executor == "dask":
        from prefect_dask import DaskTaskRunner  # slow: prefect-dask (~0.3 s); dask sweeps only

        if sweep.dask_address:
            return DaskTaskRunner(address=sweep.dask_address)
        return DaskTaskRunner(
            cluster_kwargs={
                "n_workers": sweep.n_workers,
                "threads_per_worker": 1,
                "processes": True,
                "host": "127.0.0.1",
                "dashboard_address": None,
            }
        )
    return ThreadPoolTaskRunner(max_workers=1)


def _log_task(
    parent: str,
    experiment: str,
    cfg: ExperimentConfig,
    t: TrainTask,
    res: TrainResult,
    manifest: SliceManifest,
) -> str:
    # slow: mlflow (~3 s); pool workers import this module to train, never to log
    from registry import tracking

    params = {
        "trial": t.trial.model_dump(mode="json"),
        "seed": t.seed,
        "timesteps": t.timesteps,
        "fold": t.fold,
        "train_slice_id": t.train_slice_id,
        "stats_id": t.stats_id,
    }
    tags = {
        "candidate_id": t.candidate_id,
        "trial": t.trial.name,
        "trial_fingerprint": t.trial_fingerprint,
        "config_fingerprint": cfg.fingerprint,
        "spec_hash": cfg.features.spec.spec_hash,
        "seed": str(t.seed),
        "timesteps": str(t.timesteps),
        "fold": str(t.fold),
        "reward_version": t.trial.env.reward.version,
        "attempts": str(res.attempts),
    }
    history = read_metrics_csv(res.metrics_csv) if res.metrics_csv else []
    finals = {
        "timesteps_done": float(res.timesteps_done),
        "wall_s": res.wall_s,
        "steps_per_s": res.steps_per_s,
    }
    artifacts = [p for p in (res.model_zip, res.task_json, res.metrics_csv) if p]
    return tracking.log_child_run(
        parent,
        experiment,
        t.run_name,
        params,
        tags,
        history,
        finals,
        artifacts,
        [manifest.to_json()],  # the manifest's JSON, as on disk
        duration_s=res.wall_s or None,
    )


def _run_count(fut: Any) -> int:
    """How many times Prefect ran the future's task (retries included; 0 when its result
    came from the cache)."""
    with get_client(sync_client=True) as client:
        return int(client.read_task_run(fut.task_run_id).run_count)


def _await(fut: Any, t: TrainTask, retries: int) -> TrainResult:
    """The task's TrainResult, or a failed one carrying the task's own exception."""
    fut.wait()
    if fut.state.is_completed():
        res = TrainResult.model_validate(fut.result())
        runs = _run_count(fut)  # a task that succeeded on a retry ran more than once
        return res.model_copy(update={"attempts": runs}) if runs > res.attempts else res
    exc = fut.result(raise_on_failure=False)
    err = (
        f"{type(exc).__name__}: {exc}" if isinstance(exc, BaseException) else str(fut.state.message)
    )
    return TrainResult(
        run_name=t.run_name,
        candidate_id=t.candidate_id,
        fold=t.fold,
        ok=False,
        attempts=retries + 1,
        error=err,
    )


class _TaskRows:
    """A display row per training task while it trains (timesteps done of its total),
    read from the `.progress` file its worker writes (`training.sweep.read_progress`)."""

    def __init__(
        self,
        tasks: list[TrainTask],
        pending: list[int],
        before: dict[int, tuple[int, int] | None] | None = None,
    ) -> None:
        self.tasks = tasks
        self.pending = set(pending)
        self.open: dict[int, progress.Step] = {}
        # what a killed run left: read before this run submitted its tasks (or now)
        self.before = (
            before if before is not None else {i: read_progress(tasks[i].out_dir) for i in pending}
        )
        self.lock = threading.Lock()

    def poll(self) -> None:
        with self.lock:
            for i in sorted(self.pending):
                now = read_progress(self.tasks[i].out_dir)
                if now is None or (i not in self.open and now == self.before[i]):
                    continue  # not started in this run yet
                if i not in self.open:
                    t = self.tasks[i]
                    label = f"  fold {t.fold} {t.trial.name} seed {t.seed}"
                    self.open[i] = progress.open_step(label, now[1], "timesteps")
                self.open[i].update(completed=now[0])

    def finish(self, i: int) -> None:
        with self.lock:
            self.pending.discard(i)
            st = self.open.pop(i, None)
        if st is not None:
            st.update(completed=st.total)
            st.close()

    def close(self) -> None:
        with self.lock:
            for st in self.open.values():
                st.close(ok=False)
            self.open.clear()


@contextlib.contextmanager
def _task_rows(
    tasks: list[TrainTask], before: dict[int, tuple[int, int] | None]
) -> Iterator[_TaskRows]:
    rows = _TaskRows(tasks, list(before), before)
    try:
        with progress.polling(rows.poll):
            yield rows
    finally:
        rows.close()


class _Submitted(NamedTuple):
    done: dict[int, TrainResult]  # finished before: reused
    futures: dict[Any, int]  # future -> task index
    before: dict[int, tuple[int, int] | None]  # each task's .progress before submission


def _submit_sweep(cfg: ExperimentConfig, tasks: list[TrainTask]) -> _Submitted:
    """Submit every task that has not finished before. Finished work (same task, model on disk) is reused without
    starting a worker; everything else goes to the task runner, where Prefect's input
    cache is the second net. Called before the sweep's MLflow parent run is made, so the
    pool's workers start (a fresh interpreter each: prefect, torch, SB3, ~2 s CPU) and
    train while this process sets MLflow up, not after it (should that setup fail, the
    runner's exit waits for the tasks already running; their results are cached)."""
    done: dict[int, TrainResult] = {
        i: r for i, t in enumerate(tasks) if (r := finished_result(t)) is not None
    }
    before = {i: read_progress(t.out_dir) for i, t in enumerate(tasks) if i not in done}
    submit = train_policy.with_options(retries=cfg.sweep.retries)
    futures = {submit.submit(t): i for i, t in enumerate(tasks) if i not in done}
    return _Submitted(done, futures, before)


def _run_sweep(
    cfg: ExperimentConfig,
    tasks: list[TrainTask],
    submitted: _Submitted,
    parent: str,
    experiment: str,
    manifests: dict[str, SliceManifest],
    logger: Any,
) -> list[SweepRow]:
    """Await the `submitted` tasks (`_submit_sweep`) in completion order (progress bar,
    child runs), report in task order."""
    done, futures, before = submitted
    logger.info("%d tasks already finished, %d to run", len(done), len(futures))
    if done:
        progress.note(f"train: {len(done)} of {len(tasks)} tasks already trained (reused)")
    with progress.step("train", len(tasks), "tasks") as bar, _task_rows(tasks, before) as rows_of:
        rows: dict[int, SweepRow] = {}

        def record(i: int, res: TrainResult) -> None:
            t = tasks[i]
            run_id = None
            if res.ok:
                run_id = _log_task(parent, experiment, cfg, t, res, manifests[t.train_slice_id])
            else:
                logger.error(
                    "task %s failed after %d attempts: %s", t.run_name, res.attempts, res.error
                )
            rows[i] = SweepRow(**dict(res), run_id=run_id, out_dir=t.out_dir, task=t)
            rows_of.finish(i)
            bar.advance()

        for i, res in done.items():
            record(i, res)
        for fut in as_completed(list(futures)):
            i = futures[fut]
            res = _await(fut, tasks[i], cfg.sweep.retries)
            if res.ok and not (res.model_zip and Path(res.model_zip).exists()):
                # a cached result whose files were deleted since: train again
                logger.warning("cached result of %s lost its model; retraining", tasks[i].run_name)
                again = train_policy.with_options(retries=cfg.sweep.retries, refresh_cache=True)
                res = _await(again.submit(tasks[i]), tasks[i], cfg.sweep.retries)
            record(i, res)
    return [rows[i] for i in range(len(tasks))]


def _funding_inputs(t: TrainTask, funding: StoreFunding | None) -> dict[str, str]:
    """The StoreInputs fields of the store's funding table for a task whose trial reads
    it (`training.candidates.funding_on_store`); none for one that does not."""
    if funding is None or t.trial.env.funding_rates_path != funding.url:
        return {}
    return {"funding_url": funding.url, "funding_sha256": funding.sha256}


def _tasks_on_store(
    storage: StorageConfig,
    layout: DataLayout,
    spec_hash: str,
    catalog: SliceCatalog,
    tasks: list[TrainTask],
    logger: Any,
    funding: StoreFunding | None = None,
) -> list[TrainTask]:
    """Point every task at the object store, where the features flow published the
    spec's slices and frozen stats (`features.store_publish`): each train slice and stats
    folder must be there with the sha256 of the local copy the tasks were planned from
    (ObjectStoreError, one line naming it, when not). Its workers fetch and verify their
    inputs (training.store_inputs), the funding table `funding` among them."""
    slices = {t.train_slice: published_slice(storage, t.train_slice) for t in tasks}
    stats = {t.stats_dir: published_stats(storage, t.stats_dir) for t in tasks}
    digests = {m.path: m.sha256 for m in catalog.manifests.values()}
    logger.info("slices and stats of %s found on %s", layout.spec12(spec_hash), storage.url)
    progress.note(f"train: {len(slices)} train slices and their stats on {storage.url}")
    out = []
    for t in tasks:
        (slice_url, manifest_sha), (stats_url, sums_sha) = slices[t.train_slice], stats[t.stats_dir]
        store = StoreInputs(
            storage=storage,
            manifest_sha256=manifest_sha,
            stats_checksums_sha256=sums_sha,
            **_funding_inputs(t, funding),
        )
        out.append(
            t.model_copy(
                update={
                    "train_slice": slice_url,
                    "train_sha256": digests[t.train_slice],  # what the worker checks against
                    "stats_dir": stats_url,
                    "store": store,
                }
            )
        )
    return out


def _tasks_from_store(
    storage: StorageConfig,
    catalog: SliceCatalog,
    tasks: list[TrainTask],
    funding: StoreFunding | None = None,
) -> list[TrainTask]:
    """Tasks planned from the store's own catalog (`training.candidates.
    load_store_catalog`: their slices and stats are s3:// URLs already) with the sha256s
    their workers check what they fetch against (`StoreInputs`), the funding table
    `funding`'s among them."""
    sha = catalog.store_sha256
    return [
        t.model_copy(
            update={
                "store": StoreInputs(
                    storage=storage,
                    manifest_sha256=sha[t.train_slice],
                    stats_checksums_sha256=sha[t.stats_dir],
                    **_funding_inputs(t, funding),
                )
            }
        )
        for t in tasks
    ]


@flow(name="train-policies")
def train_policies_flow(cfg: ExperimentConfig, data_dir: str, tracking_uri: str) -> SweepResult:
    """Run the sweep (module docstring); returns the sweep's result and writes it to
    reports/<sweep_run_id>/sweep.json (its dump). Raises FolderBusy when another run
    holds the data folder."""
    with data_folder_lock(data_dir, "train"):
        ensure_result_storage()
        return _train_policies(cfg, data_dir, tracking_uri)


def _train_policies(cfg: ExperimentConfig, data_dir: str, tracking_uri: str) -> SweepResult:
    # slow: mlflow (~3 s); pool workers import this module to train, never to log
    from registry import tracking

    logger = get_run_logger()
    layout = DataLayout(Path(data_dir).resolve())
    spec_hash = cfg.features.spec.spec_hash
    # the data folder's slices when it has them, else the store's (training.candidates.
    # open_catalog): a planning machine need not have run features itself
    catalog = open_catalog(layout, spec_hash, cfg.storage, cfg.ingest.symbol)
    check_instrument(catalog, cfg.ingest.instrument)
    funding = None
    if cfg.storage is not None:  # the funding table the workers fetch: the store's
        cfg, funding = funding_on_store(cfg, layout, catalog)
    tasks = plan_tasks(cfg.sweep, catalog.folds, training_root(layout, spec_hash))
    if cfg.storage is not None and catalog.store_sha256:
        logger.info(
            "planned from %s: no local slices of %s", cfg.storage.url, layout.spec12(spec_hash)
        )
        progress.note(f"train: planned from the slices on {cfg.storage.url}")
        tasks = _tasks_from_store(cfg.storage, catalog, tasks, funding)
    elif cfg.storage is not None:
        tasks = _tasks_on_store(cfg.storage, layout, spec_hash, catalog, tasks, logger, funding)
    if funding is not None:
        progress.note(f"train: funding from {funding.url} (sha256 {funding.sha256[:12]})")
    tracking.configure(tracking_uri)  # a bad tracking URI fails here, before any training
    submitted = _submit_sweep(cfg, tasks)
    orphans = tracking.fail_orphaned_runs()
    if orphans:
        logger.warning("marked %d runs of killed processes FAILED: %s", len(orphans), orphans)
    experiment = cfg.registry.experiment
    parent = tracking.start_parent_run(
        experiment,
        f"sweep-{cfg.name}-{cfg.fingerprint[:8]}",
        params=cfg.model_dump(mode="json"),
        tags={
            "config_fingerprint": cfg.fingerprint,
            "spec_hash": spec_hash,
            "kind": "sweep",
            "n_tasks": str(len(tasks)),
        },
    )
    with tempfile.TemporaryDirectory() as tmp:
        cfg_path = Path(tmp) / "experiment_config.json"
        cfg_path.write_text(json.dumps(cfg.model_dump(mode="json"), indent=2, sort_keys=True))
        tracking.log_artifacts(parent, [str(cfg_path)])
    logger.info(
        "sweep %s: %d tasks on %s x%d", parent, len(tasks), cfg.sweep.executor, cfg.sweep.n_workers
    )

    try:
        out = _run_sweep(cfg, tasks, submitted, parent, experiment, catalog.manifests, logger)
    except BaseException:
        tracking.end_run(parent, "FAILED")
        raise
    failed = [r.run_name for r in out if not r.ok]
    tracking.set_tags(parent, {"failed_tasks": ",".join(failed) or "none"})
    tracking.end_run(parent, "FAILED" if failed and len(failed) == len(out) else "FINISHED")
    result = SweepResult(
        sweep_run_id=parent,
        tasks=out,
        failed=failed,
        config_fingerprint=cfg.fingerprint,
        spec_hash=spec_hash,
    )
    result.write(layout.reports(parent) / SWEEP_JSON)
    return result


def train_flow(cfg: ExperimentConfig, data_dir: str, tracking_uri: str) -> SweepResult:
    """Entry point (nightly, CLI): the `train-policies` flow on the task runner that
    `cfg.sweep` asks for."""
    cfg = with_funding_history(cfg, data_dir)  # on when the data has the funding history
    workers = progress.WorkerOutput()
    try:
        with progress.polling(workers.relay):
            runner = task_runner(cfg.sweep, workers.path)
            return train_policies_flow.with_options(task_runner=runner)(  # type: ignore[arg-type]
                cfg, data_dir, tracking_uri
            )
    finally:
        workers.close()
