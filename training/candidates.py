"""Sweep planning and per-candidate walk-forward backtests on disk.

- `plan_tasks` (pure): the experiment grid, trials x seeds x timesteps x folds, as
  TrainTasks whose out dirs depend only on what determines the model (run name and the
  train slice's sha256), so a re-run finds finished work.
- `backtest_candidate` (adapter): one candidate's fold models on their own fold's test
  (and validation) slices, the last-fold model also on the stress slices, each model's
  slices in one lockstep pass; results saved as `backtest.npz` + `backtest.json` so a
  Prefect task can return a path and the evaluation can reload them. The same models on
  the same test slices under `training.evaluation.touch_bound_env` (touch, no latency),
  run in the same lockstep passes (`walk_forward`), give the touch bound, saved the same
  way under `touch_bound/` (`load_touch_bound`).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from pydantic import Field

from core.atomic import write_bytes_atomic, write_json_atomic
from core.config.base import FrozenModel
from core.config.env import EnvConfig
from core.config.experiment import ExperimentConfig
from core.config.storage import StorageConfig
from core.config.training import EvaluationConfig, SweepConfig, TrialConfig
from core.hashing import fingerprint
from core.instrument import InstrumentSpec, family_mismatch
from core.objectstore import is_store_url
from core.paths import DataLayout
from core.settings import ensure_single_thread_math
from core.slice_reference import SliceReference
from features.slices import (
    FOLDS_FILE,
    FoldIndex,
    SliceManifest,
    load_fold_index,
    load_manifest,
    manifest_path,
)
from features.stats import FrozenStats
from ingest.funding import funding_table_path
from training.backtest import BatchPolicy, SliceInput, SliceResult, backtest, sb3_batch_policy
from training.evaluation import (
    CHAMPION,
    CandidateBacktest,
    ReferenceBacktest,
    env_key,
    touch_bound_env,
)
from training.evaluation_record import SliceLink
from training.metrics import SliceMetrics
from training.store_inputs import (
    fetch_fold_index,
    fetch_funding,
    fetch_manifest,
    fetch_slice,
    fetch_stats,
    funding_checksum,
    published_funding,
    slice_url,
    stats_checksums,
    stats_url,
    store_funding_url,
)
from training.sweep import TrainTask, candidate_id

BACKTEST_NPZ = "backtest.npz"
BACKTEST_JSON = "backtest.json"
TOUCH_BOUND_DIR = "touch_bound"  # under a candidate's out dir: its touch bound's results


class FoldSlices(FrozenModel):
    """What one fold contributes: its train, validation (when there is one) and test
    slices, and the frozen stats they are normalised with (`stats_dir`, the folder of the
    fold's `stats_id`)."""

    fold: int
    train: SliceReference
    validation: SliceReference | None = None
    test: SliceReference
    stats_dir: str

    @property
    def stats_id(self) -> str:
        return self.train.stats_id or ""


def training_root(layout: DataLayout, spec_hash: str) -> Path:
    """Where task out dirs live: <data>/training/<spec12>/."""
    return layout.root / "training" / layout.spec12(spec_hash)


def plan_tasks(sweep: SweepConfig, folds: Sequence[FoldSlices], root: Path) -> list[TrainTask]:
    """Every (trial, seed, timesteps, fold) as a TrainTask, grid order (trial, seed,
    timesteps, fold). Pure. Raises ValueError on duplicate trial names (candidate ids
    must be unique)."""
    names = [t.name for t in sweep.trials]
    if len(set(names)) != len(names):
        raise ValueError(f"trial names must be unique, got {names}")
    tasks = []
    for trial in sweep.trials:
        for seed in sweep.seeds:
            for timesteps in sweep.timesteps:
                for f in folds:
                    t = TrainTask(
                        trial=trial,
                        seed=seed,
                        timesteps=timesteps,
                        fold=f.fold,
                        train_slice=f.train.location,
                        train_slice_id=f.train.slice_id,
                        train_sha256=f.train.sha256,
                        stats_dir=f.stats_dir,
                        stats_id=f.stats_id,
                        out_dir="",
                    )
                    out = root / f"{t.run_name}-{f.train.sha256[:8] or 'nohash'}"
                    tasks.append(t.model_copy(update={"out_dir": str(out)}))
    return tasks


class CandidatePlan(FrozenModel):
    """One candidate's backtest: its model per fold (fold order) and the slices."""

    candidate_id: str
    trial: TrialConfig
    seed: int
    timesteps: int
    model_zips: tuple[str, ...]  # one per fold, fold order
    folds: tuple[FoldSlices, ...]
    stress_paths: tuple[str, ...] = ()
    stress_ids: tuple[str, ...] = ()
    evaluation: EvaluationConfig = EvaluationConfig()
    out_dir: str
    model_sha256: tuple[str, ...] = Field(default=())  # ties the task cache to the models' bytes


def group_candidates(tasks: Sequence[TrainTask]) -> dict[str, list[TrainTask]]:
    """Tasks by candidate id, each list in fold order. Pure."""
    out: dict[str, list[TrainTask]] = {}
    for t in tasks:
        out.setdefault(candidate_id(t.trial.name, t.seed, t.timesteps), []).append(t)
    return {k: sorted(v, key=lambda t: t.fold) for k, v in out.items()}


def _load_policy(zip_path: str) -> Any:
    ensure_single_thread_math()
    # slow: torch (~2.5 s), only when a model is loaded
    import torch

    torch.set_num_threads(1)
    # slow: stable_baselines3 (~1 s), imported once torch's threads are set
    from stable_baselines3 import PPO

    if not Path(zip_path).exists():
        raise FileNotFoundError(f"model not found: {zip_path}")
    return sb3_batch_policy(PPO.load(zip_path, device="cpu"))


def backtest_folds(
    policy_for_fold: Callable[[int], BatchPolicy],
    folds: Sequence[FoldSlices],
    stress_paths: Sequence[str],
    stress_ids: Sequence[str],
    env: EnvConfig,
    evaluation: EvaluationConfig,
    stats_for_fold: Callable[[int], str] | None = None,
) -> list[SliceResult]:
    """Every fold's policy (`policy_for_fold(k)`, k the fold's position) on its own fold's
    validation and test slices, the last fold's policy on the stress slices too, each
    fold's slices in one lockstep pass, normalised with the fold's frozen stats (or
    `stats_for_fold(k)`: the champion brings its own). The one walk-forward loop behind
    candidates, baselines and the champion. Raises on a bad slice or stats."""
    return walk_forward(
        policy_for_fold, folds, stress_paths, stress_ids, env, evaluation, stats_for_fold
    )[0]


def walk_forward(
    policy_for_fold: Callable[[int], BatchPolicy],
    folds: Sequence[FoldSlices],
    stress_paths: Sequence[str],
    stress_ids: Sequence[str],
    env: EnvConfig,
    evaluation: EvaluationConfig,
    stats_for_fold: Callable[[int], str] | None = None,
    bound_env: EnvConfig | None = None,
) -> tuple[list[SliceResult], list[SliceResult]]:
    """`backtest_folds`, and with `bound_env` each fold's test slice also under
    `bound_env` in the same lockstep pass (the policy's forward pass serves both).
    Returns (the results of `backtest_folds`, the test slices under `bound_env` in fold
    order; empty without it)."""
    results: list[SliceResult] = []
    bound: list[SliceResult] = []
    last = len(folds) - 1
    for k, f in enumerate(folds):
        inputs = []
        if f.validation is not None:
            inputs.append(
                SliceInput(f.validation.location, f.validation.slice_id, "validation", f.fold)
            )
        test = SliceInput(f.test.location, f.test.slice_id, "test", f.fold)
        inputs.append(test)
        if k == last:
            inputs += [
                SliceInput(p, sid, "stress", None)
                for p, sid in zip(stress_paths, stress_ids, strict=True)
            ]
        envs = [env] * len(inputs) + ([bound_env] if bound_env is not None else [])
        extra = [test] if bound_env is not None else []
        stats_dir = stats_for_fold(k) if stats_for_fold is not None else f.stats_dir
        out = backtest(policy_for_fold(k), inputs + extra, stats_dir, envs, evaluation)
        results += out[: len(inputs)]
        bound += out[len(inputs) :]
    return results, bound


def backtest_candidate(plan: CandidatePlan) -> str:
    """Backtest every fold model of `plan` (`backtest_folds`) and its touch bound: the
    same models on their test slices under `touch_bound_env`, in the same lockstep passes
    (`walk_forward`; the judged results themselves when the env is already touch without
    latency). Write backtest.npz/backtest.json into `plan.out_dir` and the bound's under
    `<out_dir>/touch_bound/`; return the out dir. Raises on a missing model or bad slice."""
    env = plan.trial.env
    bound_env = touch_bound_env(env)
    results, bound = walk_forward(
        lambda k: _load_policy(plan.model_zips[k]),
        plan.folds,
        plan.stress_paths,
        plan.stress_ids,
        env,
        plan.evaluation,
        bound_env=None if bound_env == env else bound_env,
    )
    if bound_env == env:
        bound = [r for r in results if r.slice.kind == "test"]
    out = Path(plan.out_dir)
    save_results(out / TOUCH_BOUND_DIR, bound)
    save_results(out, results)
    return plan.out_dir


def load_touch_bound(out_dir: str | Path) -> list[SliceResult] | None:
    """The touch bound's results saved by `backtest_candidate` in `out_dir`, or None when
    there are none (a backtest folder written before the bound existed)."""
    d = Path(out_dir) / TOUCH_BOUND_DIR
    return load_results(d) if (d / BACKTEST_JSON).exists() else None


class ReferencePlan(FrozenModel):
    """One reference policy's backtest under one env: a baseline (name, seed) here, or the
    champion (a verified bundle folder with its own stats: `registry.reference`)."""

    name: str
    seed: int = 0
    env: EnvConfig
    env_key: str
    folds: tuple[FoldSlices, ...]
    feature_names: tuple[str, ...]
    window: int
    stress_paths: tuple[str, ...] = ()
    stress_ids: tuple[str, ...] = ()
    evaluation: EvaluationConfig = EvaluationConfig()
    out_dir: str
    bundle_dir: str | None = None  # the champion's verified bundle
    bundle_sha256: str | None = None  # ties the task cache to the champion's bytes


def plan_references(
    trials: Sequence[TrialConfig],
    catalog: SliceCatalog,
    evaluation: EvaluationConfig,
    feature_names: Sequence[str],
    window: int,
    out_root: Path,
    champion: tuple[str, str] | None = None,
) -> list[ReferencePlan]:
    """Every baseline run (`training.baselines.baseline_runs`) and, when given as
    (bundle_dir, bundle_sha256), the champion, once per distinct env of `trials`; out dirs
    `<out_root>/<env_key>/<name>-s<seed>`. Pure."""
    # slow: training.baselines pulls envs.management, gymnasium and numba (~0.3 s)
    from training.baselines import baseline_runs

    plans: list[ReferencePlan] = []
    seen: set[str] = set()
    for trial in trials:
        key = env_key(trial)
        if key in seen:
            continue
        seen.add(key)
        runs: list[tuple[str, int, str | None, str | None]] = [
            (name, seed, None, None) for name, seed in baseline_runs(evaluation.baselines)
        ]
        if champion is not None:
            runs.append((CHAMPION, 0, champion[0], champion[1]))
        for name, seed, bundle_dir, bundle_sha in runs:
            plans.append(
                ReferencePlan(
                    name=name,
                    seed=seed,
                    env=trial.env,
                    env_key=key,
                    folds=catalog.folds,
                    feature_names=tuple(feature_names),
                    window=window,
                    stress_paths=catalog.stress_paths,
                    stress_ids=catalog.stress_ids,
                    evaluation=evaluation,
                    out_dir=str(out_root / key / f"{name}-s{seed}"),
                    bundle_dir=bundle_dir,
                    bundle_sha256=bundle_sha,
                )
            )
    return plans


KINDS = ("test", "stress", "validation")


def by_kind(
    results: Sequence[SliceResult],
) -> tuple[list[SliceResult], list[SliceResult], list[SliceResult]]:
    """(test, stress, validation) results, each in input order. Pure."""
    test, stress, validation = ([r for r in results if r.slice.kind == k] for k in KINDS)
    return test, stress, validation


def reference_backtest(plan: ReferencePlan, results: Sequence[SliceResult]) -> ReferenceBacktest:
    """The evaluation view of a reference policy's saved results."""
    test, stress, validation = by_kind(results)
    return ReferenceBacktest(plan.name, plan.seed, plan.env_key, test, stress, validation)


def backtest_reference(plan: ReferencePlan) -> str:
    """Backtest one baseline walk-forward (`backtest_folds`) and save the results like a
    candidate's; returns the out dir. Raises ValueError for a champion plan (it needs the
    registry: `registry.reference.backtest_champion`)."""
    # slow: training.baselines pulls envs.management, gymnasium and numba (~0.3 s)
    from training.baselines import ObservationLayout, baseline_policy_for_fold

    if plan.bundle_dir is not None:
        raise ValueError("a champion plan is backtested by registry.reference.backtest_champion")
    layout = ObservationLayout(plan.feature_names, plan.window, plan.env.action_mode)

    def fold_stats(k: int) -> tuple[Sequence[str], np.ndarray, np.ndarray]:
        st = FrozenStats.load(plan.folds[k].stats_dir)
        return st.feature_names, st.mean, st.sigma

    policy_for_fold = baseline_policy_for_fold(
        plan.name, plan.seed, layout, plan.evaluation.baselines, fold_stats
    )
    results = backtest_folds(
        policy_for_fold, plan.folds, plan.stress_paths, plan.stress_ids, plan.env, plan.evaluation
    )
    save_results(Path(plan.out_dir), results)
    return plan.out_dir


def save_results(out_dir: Path, results: Sequence[SliceResult]) -> None:
    """backtest.npz (curves) then backtest.json (slices, metrics, trades), atomically."""
    arrays: dict[str, np.ndarray] = {}
    meta = []
    for i, r in enumerate(results):
        arrays[f"ts{i}"] = r.ts_ns
        arrays[f"eq{i}"] = r.equity
        arrays[f"pos{i}"] = r.position_size
        arrays[f"act{i}"] = r.actions
        meta.append(
            {
                "slice": {
                    "path": r.slice.path,
                    "slice_id": r.slice.slice_id,
                    "kind": r.slice.kind,
                    "fold": r.slice.fold,
                },
                "metrics": r.metrics.as_dict() if r.metrics else None,
                "fees_paid": r.fees_paid,
                "trades": r.trades,
                "tick_size": r.tick_size,
            }
        )
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    out_dir.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(out_dir / BACKTEST_NPZ, buf.getvalue())
    write_json_atomic(out_dir / BACKTEST_JSON, {"slices": meta})


def load_results(out_dir: str | Path) -> list[SliceResult]:
    """The SliceResults written by `save_results` (no pickles)."""
    d = Path(out_dir)
    meta = json.loads((d / BACKTEST_JSON).read_text())["slices"]
    with np.load(d / BACKTEST_NPZ, allow_pickle=False) as z:
        return [
            SliceResult(
                slice=SliceInput(**m["slice"]),
                ts_ns=z[f"ts{i}"],
                equity=z[f"eq{i}"],
                position_size=z[f"pos{i}"],
                actions=z[f"act{i}"],
                trades=m["trades"],
                fees_paid=float(m["fees_paid"]),
                metrics=SliceMetrics(**m["metrics"]) if m["metrics"] else None,
                tick_size=m.get("tick_size"),  # absent in results saved before it
            )
            for i, m in enumerate(meta)
        ]


def candidate_backtest(
    plan: CandidatePlan,
    results: Sequence[SliceResult],
    touch_bound: Sequence[SliceResult] | None = None,
) -> CandidateBacktest:
    """The evaluation view of a candidate: test slices gated; stress and validation
    slices and the touch bound (`load_touch_bound`) reported, never gated."""
    test, stress, validation = by_kind(results)
    return CandidateBacktest(
        candidate_id=plan.candidate_id,
        trial=plan.trial,
        seed=plan.seed,
        timesteps=plan.timesteps,
        test=test,
        stress=stress,
        validation=validation,
        model_zip=plan.model_zips[-1] if plan.model_zips else "",
        stats_dir=plan.folds[-1].stats_dir if plan.folds else "",
        train_slices=[
            SliceLink(slice_id=f.train.slice_id, sha256=f.train.sha256) for f in plan.folds
        ],
        test_slices=[SliceLink(slice_id=f.test.slice_id, sha256=f.test.sha256) for f in plan.folds],
        model_key=model_key(plan.model_sha256),
        touch_bound=list(touch_bound) if touch_bound is not None else None,
    )


def model_key(model_sha256: Sequence[str]) -> str:
    """Identity of a candidate's fold models (their bytes, fold order): evaluating the
    same models again is the same trial. Empty for no models. Pure."""
    return fingerprint(list(model_sha256))[:32] if model_sha256 else ""


class SliceCatalog(FrozenModel):
    """The folds and stress slices of a spec, with every slice manifest by slice id."""

    spec_hash: str
    folds: tuple[FoldSlices, ...]
    stress_ids: tuple[str, ...]
    stress_paths: tuple[str, ...]
    manifests: dict[str, SliceManifest]
    #: from a store (`load_store_catalog`): the sha256 of each manifest's bytes and of
    #: each stats folder's checksums.json, by URL; empty for the data folder's catalog
    store_sha256: dict[str, str] = Field(default_factory=dict)
    #: from a store: the URL of the store's funding table of the symbol when it holds
    #: one (its sha256 in `store_sha256`); None otherwise (the data folder's table, if
    #: any, is `ingest.funding.with_funding_history`'s)
    funding_table: str | None = None


def check_instrument(catalog: SliceCatalog, instrument: InstrumentSpec) -> None:
    """Refuse (ValueError, one line) to train or backtest on slices whose events were
    ingested as another instrument than the experiment's (`core.instrument.
    FAMILY_FIELDS`: symbol, settle currency, inverse or linear, multiplier): their
    prices and sizes would be read as something they are not, and every backtest figure
    would be wrong without a sign. Compared slice by slice: a slice's tick and lot size
    may differ (XBTUSD's tick 0.5 -> 0.1 USD on 2024-07-31), the env prices and rounds
    each slice in the contract its manifest records (`envs.management.slice_instrument`);
    fees may differ (the account's assumption). Slices that record no contract
    (published before manifests carried one) are not checked."""
    other: dict[str, list[str]] = {}
    for slice_id, m in sorted(catalog.manifests.items()):
        why = family_mismatch(m.instrument, instrument) if m.instrument is not None else None
        if why:
            other.setdefault(why, []).append(slice_id)
    if other:
        seen = "; ".join(f"{', '.join(ids)}: {why}" for why, ids in other.items())
        raise ValueError(
            f"slices of another instrument than the experiment's {instrument.symbol} "
            f"({seen}): set ingest.instrument to the one the events were ingested with, "
            "or re-ingest"
        )


def load_catalog(layout: DataLayout, spec_hash: str) -> SliceCatalog:
    """Read folds.json and every manifest it names. Raises FileNotFoundError when the
    features stage has not run, ValueError when a slice failed validation or a listed
    file is missing."""
    folder = layout.slices(spec_hash)

    def locate(slice_id: str, m: SliceManifest) -> str:
        missing = [p.file for p in m.parts if not (folder / p.file).exists()]
        if missing:
            raise ValueError(f"slice {slice_id}: segment file(s) missing: {missing}")
        # where the manifest is now (the data folder may have moved since it was written)
        return str(manifest_path(layout, spec_hash, slice_id).resolve())

    def stats_dir(fold: int, stats_id: str) -> str:
        stats = layout.stats(stats_id)
        if not (stats / "stats.json").exists():
            raise ValueError(f"fold {fold}: stats {stats_id} missing at {stats}")
        return str(stats.resolve())

    return _catalog(
        load_fold_index(layout, spec_hash),
        lambda slice_id: load_manifest(manifest_path(layout, spec_hash, slice_id)),
        locate,
        stats_dir,
    )


def load_store_catalog(
    storage: StorageConfig, layout: DataLayout, spec_hash: str, symbol: str | None = None
) -> SliceCatalog:
    """`load_catalog` from the object store, for a machine whose data folder holds no
    slices of the spec: folds.json and every manifest it names as the features flow
    published them (`features.store_publish.publish_spec`), each checked against the
    sha256 the store records for it (`training.store_inputs.fetch_fold_index`,
    `fetch_manifest`). Every location is an s3:// URL (a manifest's `path`, a fold's
    `stats_dir`), and `store_sha256` holds the sha256 of each manifest's bytes and of
    each stats folder's checksums.json by URL: what the train flow's `StoreInputs` carry
    and workers check their fetches against. Segments are not read here (a worker checks
    each one it fetches). `layout` only names the objects (the store's layout is the data
    folder's). With `symbol`, the store's funding table of it (`features.store_publish.
    publish_spec` publishes the data folder's before folds.json), checked like the rest,
    is `funding_table` (None when the store holds none). Raises FileNotFoundError when
    the store holds no folds.json for the spec, ValueError like load_catalog (a slice
    that failed validation, stats missing), core.objectstore.ObjectStoreError for an
    unreachable store or bytes that do not check out."""
    index = fetch_fold_index(storage, layout, spec_hash)
    shas: dict[str, str] = {}

    def load(slice_id: str) -> SliceManifest:
        m, sha = fetch_manifest(
            slice_url(storage, manifest_path(layout, spec_hash, slice_id)), storage
        )
        shas[m.path] = sha
        return m

    def stats_dir(fold: int, stats_id: str) -> str:
        url = stats_url(storage, layout.stats(stats_id))
        sha = shas.get(url) or stats_checksums(url, storage)
        if sha is None:
            raise ValueError(f"fold {fold}: stats {stats_id} missing at {url}")
        shas[url] = sha
        return url

    catalog = _catalog(index, load, lambda _, m: m.path, stats_dir)
    funding = None
    if symbol is not None:
        url = store_funding_url(storage, layout, symbol)
        sha = funding_checksum(url, storage)
        if sha is not None:
            funding, shas[url] = url, sha
    return catalog.model_copy(update={"store_sha256": shas, "funding_table": funding})


def open_catalog(
    layout: DataLayout,
    spec_hash: str,
    storage: StorageConfig | None,
    symbol: str | None = None,
) -> SliceCatalog:
    """The spec's catalog to plan from: the data folder's (`load_catalog`) when it holds
    the spec's folds.json or no store is configured, else the store's
    (`load_store_catalog`, with the store's funding table of `symbol`: a machine that did
    not run features itself). Raises as those two: FileNotFoundError when the one it
    reads has no folds.json for the spec (from the store: no filename, the message names
    the object)."""
    if storage is None or (layout.slices(spec_hash) / FOLDS_FILE).exists():
        return load_catalog(layout, spec_hash)
    return load_store_catalog(storage, layout, spec_hash, symbol)


class StoreFunding(NamedTuple):
    """The store's funding table a config's trials settle funding from: its URL (their
    `env.funding_rates_path`) and the sha256 of its bytes (what workers check)."""

    url: str
    sha256: str


def funding_on_store(
    cfg: ExperimentConfig, layout: DataLayout, catalog: SliceCatalog
) -> tuple[ExperimentConfig, StoreFunding | None]:
    """`cfg` (with `storage:`) with its funding table on the store, so every machine
    that plans from it, and every worker, trains with the same bytes: trials that read
    the data folder's table (`ingest.funding.with_funding_history`) read the store's copy
    of it instead, which must hold exactly those bytes (`features.store_publish.
    published_funding`: ObjectStoreError, one line, when the features flow has not
    published it since it was ingested); without a local table, funding is turned on
    from the store's table (a store catalog's `funding_table`, else looked up) exactly as
    `with_funding_history` turns it on from a local one. Returns (the config, the table;
    None when no trial reads one: no funding from history, as without a table locally).
    Raises ValueError without `cfg.storage`, ObjectStoreError for a table whose bytes do
    not match the sha256 the store records."""
    storage = cfg.storage
    if storage is None:
        raise ValueError("funding_on_store needs a config with storage:")
    local = funding_table_path(layout.root, cfg.ingest.symbol)

    def reads_local(env: EnvConfig) -> bool:
        p = env.funding_rates_path
        return p is not None and not is_store_url(p) and Path(p).resolve() == local.resolve()

    if any(reads_local(t.env) for t in cfg.sweep.trials):
        url, sha = published_funding(storage, local)
        trials = tuple(
            t.model_copy(update={"env": t.env.model_copy(update={"funding_rates_path": url})})
            if reads_local(t.env)
            else t
            for t in cfg.sweep.trials
        )
        sweep = cfg.sweep.model_copy(update={"trials": trials})
        return cfg.model_copy(update={"sweep": sweep}), StoreFunding(url, sha)
    table: str | None
    if catalog.store_sha256:  # the store's catalog: its table, checked when it was read
        table = catalog.funding_table
        table_sha = catalog.store_sha256.get(table) if table is not None else None
    else:  # no table here: the store's, as a machine planning from the store sees it
        table = store_funding_url(storage, layout, cfg.ingest.symbol)
        table_sha = funding_checksum(table, storage)
    if table is not None and table_sha is not None:
        on = cfg.with_funding_table(table)
        if on != cfg:
            return on, StoreFunding(table, table_sha)
    return cfg, None


def fetch_trained_funding(
    tasks: Iterable[TrainTask], cache_dir: str | Path | None = None
) -> dict[str, str]:
    """{store URL: local path} of every funding table `tasks` trained with (their
    `StoreInputs`), each fetched into this machine's cache and checked against the sha256
    the task recorded (`training.store_inputs.fetch_funding`): a backtest settles the
    funding its model trained with. Raises core.objectstore.ObjectStoreError when the
    store's bytes are not those (replaced since), ValueError when two tasks recorded
    different bytes for one URL."""
    wanted: dict[str, tuple[str, StorageConfig]] = {}
    for t in tasks:
        st = t.store
        if st is None or st.funding_url is None or st.funding_sha256 is None:
            continue
        seen = wanted.setdefault(st.funding_url, (st.funding_sha256, st.storage))
        if seen[0] != st.funding_sha256:
            raise ValueError(
                f"{st.funding_url}: the sweep's tasks trained with two versions of it "
                f"(sha256 {seen[0]} and {st.funding_sha256})"
            )
    return {
        url: str(fetch_funding(url, sha, storage, cache_dir))
        for url, (sha, storage) in wanted.items()
    }


def with_local_funding(env: EnvConfig, tables: Mapping[str, str]) -> EnvConfig:
    """`env` settling funding from the local copy (`tables`: URL -> path,
    `fetch_trained_funding`) of the store's table it names; `env` itself otherwise.
    Pure."""
    p = env.funding_rates_path
    if p is None or p not in tables:
        return env
    return env.model_copy(update={"funding_rates_path": tables[p]})


def fetch_catalog(
    catalog: SliceCatalog, storage: StorageConfig, cache_dir: str | Path | None = None
) -> SliceCatalog:
    """A store catalog (`load_store_catalog`) with the slices a backtest reads (each
    fold's validation and test slices, the stress slices) and every fold's stats fetched
    into this machine's cache, every byte checked (`training.store_inputs.fetch_slice`,
    `fetch_stats`; into `cache_dir`, default CHAPPIE_STORE_CACHE), their locations local
    paths laid out like the data folder. Train slices stay on the store (a backtest never
    reads them). A local catalog is returned as it is. Raises core.objectstore.ObjectStoreError on a mismatch."""
    if not catalog.store_sha256:
        return catalog
    sha = catalog.store_sha256
    local: dict[str, str] = {}

    def fetched(m: SliceManifest) -> SliceManifest:
        if m.path not in local:
            local[m.path] = str(fetch_slice(m.path, sha[m.path], m.sha256, storage, cache_dir))
        return m.model_copy(update={"path": local[m.path]})

    def ref(r: SliceReference) -> SliceReference:
        return r.model_copy(update={"location": fetched(catalog.manifests[r.slice_id]).path})

    folds = tuple(
        f.model_copy(
            update={
                "validation": ref(f.validation) if f.validation is not None else None,
                "test": ref(f.test),
                "stats_dir": str(fetch_stats(f.stats_dir, sha[f.stats_dir], storage, cache_dir)),
            }
        )
        for f in catalog.folds
    )
    stress = [fetched(catalog.manifests[s]) for s in catalog.stress_ids]
    manifests = {
        sid: m.model_copy(update={"path": local[m.path]}) if m.path in local else m
        for sid, m in catalog.manifests.items()
    }
    return catalog.model_copy(
        update={
            "folds": folds,
            "stress_paths": tuple(m.path for m in stress),
            "manifests": manifests,
        }
    )


def _catalog(
    index: FoldIndex,
    load: Callable[[str], SliceManifest],
    locate: Callable[[str, SliceManifest], str],
    stats_dir: Callable[[int, str], str],
) -> SliceCatalog:
    """The catalog of `index`: each slice's manifest (`load`), refused when it failed
    validation, at `locate(slice_id, manifest)`; each fold's stats at `stats_dir(fold,
    stats_id)`. Raises what those raise, ValueError for a slice that failed validation."""
    manifests: dict[str, SliceManifest] = {}

    def manifest(slice_id: str) -> SliceManifest:
        m = load(slice_id)
        if not m.validation.success:
            raise ValueError(f"slice {slice_id} failed validation: {m.validation.failed}")
        m = m.model_copy(update={"path": locate(slice_id, m)})
        manifests[slice_id] = m
        return m

    folds = []
    for f in index.folds:
        tr, te = manifest(f.train), manifest(f.test)
        va = manifest(f.validation) if f.validation else None
        stats = stats_dir(f.fold, f.stats_id)
        folds.append(
            FoldSlices(
                fold=f.fold,
                train=SliceReference.of_manifest(tr.to_json(), f.stats_id),
                validation=SliceReference.of_manifest(va.to_json(), f.stats_id) if va else None,
                test=SliceReference.of_manifest(te.to_json(), f.stats_id),
                stats_dir=stats,
            )
        )
    stress = [manifest(s) for s in index.stress]
    return SliceCatalog(
        spec_hash=index.spec_hash,
        folds=tuple(folds),
        stress_ids=tuple(m.slice_id for m in stress),
        stress_paths=tuple(m.path for m in stress),
        manifests=manifests,
    )
