"""MLflow tracking adapter: experiments, sweep (parent) runs, child runs, batched metrics,
artifacts and slice datasets. The only module training flows call to log anything.

Adapter ring: one I/O concern (the MLflow tracking store), no business rules.

Contract (see /tmp contracts, DEVELOPERS.md "Interfaces"):
- `configure(uri)` once per process before any other call. It sets the tracking and
  registry URI for this process and its children (through `MLFLOW_TRACKING_URI` /
  `MLFLOW_REGISTRY_URI`) and, for `sqlite:///`, creates the database and runs MLflow's
  migrations once, under a file lock, so parallel writers never race on schema creation.
- Metrics go through `MlflowClient.log_batch` in chunks of at most 1000 (MLflow's limit);
  params and tags in chunks of 100.
- A slice dataset carries the slice file's full sha256 (input tag `sha256`, the dataset
  source URI fragment and the dataset profile); MLflow's own `digest` column holds at
  most 36 characters, so it holds the first 32 hex digits only.

- Every run created here carries its owner process (tag `chappie.owner`:
  `core.lifetime.ProcessIdentity.tag()`); `fail_orphaned_runs` marks FAILED the runs
  left RUNNING by an owner that no longer lives (a killed nightly), tagging why.

Raises `TrackingError` with the run id and operation on any store failure that
survives the retries for a locked SQLite database.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlparse

import mlflow
from mlflow import MlflowClient
from mlflow.data.dataset_source import DatasetSource
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunStatus, RunTag, ViewType
from mlflow.exceptions import MlflowException
from mlflow.utils.validation import MAX_INPUT_TAG_VALUE_SIZE

from core.jsontypes import JsonObject
from core.lifetime import ProcessIdentity

__all__ = [
    "TrackingError",
    "client",
    "configure",
    "end_run",
    "ensure_experiment",
    "fail_orphaned_runs",
    "flatten_params",
    "log_artifacts",
    "log_child_run",
    "log_metrics",
    "log_slice_datasets",
    "set_tags",
    "slice_dataset",
    "start_parent_run",
    "tracking_uri",
]

METRICS_PER_BATCH = 1000  # mlflow.utils.validation.MAX_METRICS_PER_BATCH
PARAMS_TAGS_PER_BATCH = 100  # mlflow.utils.validation.MAX_PARAMS_TAGS_PER_BATCH
DIGEST_CHARS = 32  # MLflow's dataset digest column holds at most 36 characters
PARENT_TAG = "mlflow.parentRunId"
# the MLflow UI opens an experiment in its model-training view (runs, Compare), not its
# GenAI traces screen, when the experiment says what kind it is (MLflow 3's own tag)
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
RUN_NAME_TAG = "mlflow.runName"
OWNER_TAG = "chappie.owner"  # ProcessIdentity.tag() of the process that created the run
ORPHAN_TAG = "chappie.failed_reason"

_LOCK_RETRIES = 8
_LOCK_BACKOFF_S = 0.25

_T = TypeVar("_T")

_state: dict[str, str | None] = {"uri": None, "artifact_location": None}


class TrackingError(RuntimeError):
    """An MLflow tracking operation failed (message names the operation and the run)."""


# --------------------------------------------------------------------------- pure helpers


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Flatten nested dicts/lists into dotted MLflow params with string values.

    Pure. `{"ppo": {"net_arch": [64, 64]}}` -> `{"ppo.net_arch": "[64, 64]"}`: dicts are
    expanded with `.`, lists and tuples are kept whole as JSON, None becomes "None".
    """
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_params(value, prefix=f"{name}."))
        elif isinstance(value, list | tuple):
            out[name] = json.dumps(list(value), default=str)
        else:
            out[name] = str(value)
    return out


def _chunks(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI, or None for any other scheme. Pure."""
    if not uri.startswith("sqlite:///"):
        return None
    raw = uri.removeprefix("sqlite:///")
    if raw in ("", ":memory:"):
        return None
    return Path(unquote(raw.split("?", 1)[0]))


# --------------------------------------------------------------------------- store access


def _is_locked(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "database is locked" in text or "database table is locked" in text


def _retry(op: str, fn: Callable[[], _T], run_id: str | None = None) -> _T:
    """Run `fn`, retrying a few times when SQLite reports a locked database."""
    for attempt in range(_LOCK_RETRIES):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - re-raised below unless it is a lock
            if _is_locked(exc) and attempt < _LOCK_RETRIES - 1:
                time.sleep(_LOCK_BACKOFF_S * (attempt + 1))
                continue
            where = f" (run {run_id})" if run_id else ""
            raise TrackingError(f"MLflow {op} failed{where}: {exc}") from exc
    raise AssertionError("unreachable")  # pragma: no cover


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Exclusive advisory lock on `path` (created if missing) for the `with` block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def tracking_uri() -> str:
    """The URI set by `configure`, else MLFLOW_TRACKING_URI, else MLflow's default."""
    return _state["uri"] or os.environ.get("MLFLOW_TRACKING_URI") or mlflow.get_tracking_uri()


def configured_uri() -> str | None:
    """The URI of the last `configure` call in this process, or None."""
    return _state["uri"]


def client() -> MlflowClient:
    """An MlflowClient on the configured tracking and registry URI."""
    uri = tracking_uri()
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def default_artifact_location(uri: str) -> str | None:
    """For a SQLite store: `mlartifacts/` beside the database file (DataLayout); else None
    (the server decides)."""
    db = sqlite_path(uri)
    if db is None:
        return None
    return (db.resolve().parent / "mlartifacts").as_uri()


def configure(tracking_uri: str, artifact_location: str | None = None) -> None:
    """Point this process (and processes it starts) at `tracking_uri`.

    For `sqlite:///<path>`: creates the parent folder, then, holding `<path>.lock`,
    opens the store and lists experiments, which creates the schema and runs MLflow's
    migrations exactly once even with several processes calling `configure` at the same
    time. `artifact_location` is the default for experiments created later (for SQLite,
    default `mlartifacts/` beside the database).

    Raises TrackingError when the store cannot be opened.
    """
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ["MLFLOW_REGISTRY_URI"] = tracking_uri
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    _state["uri"] = tracking_uri
    _state["artifact_location"] = artifact_location or default_artifact_location(tracking_uri)
    db = sqlite_path(tracking_uri)
    if db is None:
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(db.with_name(db.name + ".lock")):
        _retry("open store", lambda: client().search_experiments(max_results=1))


def ensure_experiment(name: str, artifact_location: str | None = None) -> str:
    """The id of experiment `name`, creating it (with `artifact_location`, else the
    configured default) when missing. Safe against a concurrent creator."""
    c = client()
    existing = _retry("get experiment", lambda: c.get_experiment_by_name(name))
    if existing is not None:
        if existing.lifecycle_stage == "deleted":
            _retry("restore experiment", lambda: c.restore_experiment(existing.experiment_id))
        return str(existing.experiment_id)
    location = artifact_location or _state["artifact_location"]
    try:
        return str(c.create_experiment(name, artifact_location=location, tags=EXPERIMENT_TAGS))
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS" and "already exists" not in str(exc).lower():
            raise TrackingError(f"MLflow create experiment {name!r} failed: {exc}") from exc
    again = _retry("get experiment", lambda: c.get_experiment_by_name(name))
    if again is None:  # pragma: no cover - created then deleted by someone else
        raise TrackingError(f"experiment {name!r} vanished while being created")
    return str(again.experiment_id)


def _log_params_tags(run_id: str, params: Mapping[str, Any], tags: Mapping[str, str]) -> None:
    c = client()
    flat = [Param(k, v) for k, v in flatten_params(params).items()]
    run_tags = [RunTag(k, str(v)) for k, v in tags.items()]
    for pchunk in _chunks(flat, PARAMS_TAGS_PER_BATCH):
        _retry("log params", partial(c.log_batch, run_id, params=list(pchunk)), run_id)
    for tchunk in _chunks(run_tags, PARAMS_TAGS_PER_BATCH):
        _retry("set tags", partial(c.log_batch, run_id, tags=list(tchunk)), run_id)


def start_parent_run(experiment: str, run_name: str, params: dict, tags: dict[str, str]) -> str:
    """Create a RUNNING run (a sweep) in `experiment` (created if missing); return its id.

    Nested `params` are flattened with dotted keys. The run stays open until `end_run`.
    """
    exp_id = ensure_experiment(experiment)
    c = client()
    owner = {OWNER_TAG: ProcessIdentity.current().tag()}
    run = _retry("create run", lambda: c.create_run(exp_id, run_name=run_name, tags=owner))
    run_id = str(run.info.run_id)
    _log_params_tags(run_id, params, tags)
    return run_id


def log_metrics(run_id: str, metrics: dict[str, float], step: int | None = None) -> None:
    """Log `metrics` at `step` (default 0) in batches of at most 1000."""
    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, int(step or 0)) for k, v in metrics.items()]
    _log_metric_objects(run_id, items)


def _log_metric_objects(run_id: str, items: Sequence[Metric]) -> None:
    c = client()
    for chunk in _chunks(items, METRICS_PER_BATCH):
        _retry("log metrics", partial(c.log_batch, run_id, metrics=list(chunk)), run_id)


def log_artifacts(run_id: str, paths: list[str], artifact_path: str | None = None) -> None:
    """Upload each file or folder of `paths` to the run's artifacts under `artifact_path`.

    A folder keeps its name (`reports/` -> `<artifact_path>/reports/...`).
    Raises FileNotFoundError naming a missing path before uploading anything.
    """
    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        raise FileNotFoundError(f"artifacts not found for run {run_id}: {missing}")
    c = client()
    for p in map(Path, paths):
        if p.is_dir():
            dest = f"{artifact_path}/{p.name}" if artifact_path else p.name
            _retry("log artifacts", partial(c.log_artifacts, run_id, str(p), dest), run_id)
        else:
            _retry("log artifact", partial(c.log_artifact, run_id, str(p), artifact_path), run_id)


class SliceDatasetSource(DatasetSource):
    """A slice on the data folder (its manifest path), identified by its full sha256 (the
    digest of its segments, each hashed whole: `features.store.slice_digest`)."""

    def __init__(self, path: str, sha256: str) -> None:
        self._path = path
        self._sha256 = sha256

    @property
    def uri(self) -> str:
        path = Path(self._path)
        base = path.as_uri() if path.is_absolute() else self._path
        return f"{base}#sha256={self._sha256}"

    @staticmethod
    def _get_source_type() -> str:
        return "chappie_slice"

    def load(self, **kwargs: Any) -> str:
        return self._path

    @staticmethod
    def _can_resolve(raw_source: Any) -> bool:
        return False

    @classmethod
    def _resolve(cls, raw_source: Any) -> SliceDatasetSource:
        raise NotImplementedError

    def to_dict(self) -> dict[Any, Any]:
        return {"uri": self.uri, "path": self._path, "sha256": self._sha256}

    @classmethod
    def from_dict(cls, source_dict: dict[Any, Any]) -> SliceDatasetSource:
        return cls(source_dict["path"], source_dict["sha256"])


class SliceDataset(MetaDataset):
    """Metadata-only MLflow dataset for one slice manifest (no data is copied)."""

    def __init__(self, manifest: Mapping[str, Any]) -> None:
        self._manifest = dict(manifest)
        sha = str(manifest["sha256"])
        source = SliceDatasetSource(str(manifest.get("path", "")), sha)
        super().__init__(source=source, name=str(manifest["slice_id"]), digest=sha[:DIGEST_CHARS])

    @property
    def profile(self) -> JsonObject:
        """The slice manifest's figures MLflow shows (JSON from the manifest)."""
        m = self._manifest
        keys = ("sha256", "rows", "kind", "fold", "spec_hash", "t_start_ns", "t_end_ns", "stats_id")
        return {k: m.get(k) for k in keys}

    def to_dict(self) -> dict[str, str]:
        config = super().to_dict()
        config["profile"] = json.dumps(self.profile)
        return config


def slice_dataset(manifest: Mapping[str, Any], context: str) -> DatasetInput:
    """The DatasetInput for one slice manifest (contract: slice manifest JSON).

    Input tags: `mlflow.data.context`, `sha256` (full), `slice_id`, `kind`, `fold`,
    `spec_hash`, and the Great Expectations summary of the manifest's `validation`
    (`validation.success`, `validation.suite`, `validation.evaluated`,
    `validation.unsuccessful`, `validation.failed` — the failed expectations, truncated to
    fit a tag). Raises KeyError naming the field when `slice_id` or `sha256` is missing.
    """
    for field in ("slice_id", "sha256"):
        if field not in manifest:
            raise KeyError(f"slice manifest lacks {field!r}: {dict(manifest)!r:.200}")
    ds = SliceDataset(manifest)
    tags = [
        InputTag("mlflow.data.context", context),
        InputTag("sha256", str(manifest["sha256"])),
        InputTag("slice_id", str(manifest["slice_id"])),
    ]
    for key in ("kind", "fold", "spec_hash"):
        if manifest.get(key) is not None:
            tags.append(InputTag(key, str(manifest[key])))
    tags += [InputTag(k, v) for k, v in validation_tags(manifest.get("validation")).items()]
    return DatasetInput(dataset=ds._to_mlflow_entity(), tags=tags)


def validation_tags(validation: Mapping[str, Any] | None) -> dict[str, str]:
    """Tags summarising a slice manifest's validation result; {} when there is none."""
    if not validation:
        return {}
    stats = validation.get("statistics") or {}
    tags = {
        "validation.success": str(bool(validation.get("success"))).lower(),
        "validation.suite": str(validation.get("suite", "")),
        "validation.failed": json.dumps(list(validation.get("failed") or []))[
            :MAX_INPUT_TAG_VALUE_SIZE
        ],
    }
    if "evaluated_expectations" in stats:
        tags["validation.evaluated"] = str(stats["evaluated_expectations"])
    if "unsuccessful_expectations" in stats:
        tags["validation.unsuccessful"] = str(stats["unsuccessful_expectations"])
    return tags


def log_slice_datasets(run_id: str, manifests: list[dict], context: str) -> None:
    """Record slice manifests as the run's dataset inputs (`context`: train/test/...)."""
    if not manifests:
        return
    inputs = [slice_dataset(m, context) for m in manifests]
    c = client()
    for chunk in _chunks(inputs, 500):
        _retry("log inputs", partial(c.log_inputs, run_id, datasets=list(chunk)), run_id)


def log_slice_datasets_by_kind(run_id: str, manifests: list[dict]) -> None:
    """`log_slice_datasets` with each manifest's `kind` (train, test, stress, ...) as its
    context; a manifest without one is train data."""
    by_context: dict[str, list[dict]] = {}
    for m in manifests:
        by_context.setdefault(str(m.get("kind") or "train"), []).append(m)
    for context, group in by_context.items():
        log_slice_datasets(run_id, group, context)


def set_tags(run_id: str, tags: dict[str, str]) -> None:
    """Set run tags (values stringified), batched."""
    _log_params_tags(run_id, {}, tags)


def end_run(run_id: str, status: str = "FINISHED", end_time_ms: int | None = None) -> None:
    """Terminate a run with `status` (FINISHED, FAILED or KILLED), at `end_time_ms`
    (default now).

    Raises ValueError for any other status.
    """
    if status not in ("FINISHED", "FAILED", "KILLED"):
        raise ValueError(f"run status must be FINISHED, FAILED or KILLED, got {status!r}")
    c = client()
    _retry("end run", lambda: c.set_terminated(run_id, status=status, end_time=end_time_ms), run_id)


def fail_orphaned_runs(experiment_ids: Sequence[str] | None = None) -> list[str]:
    """Mark FAILED every RUNNING run whose owner process (tag `chappie.owner`) is gone:
    runs a killed command left open, on this host (an owner elsewhere cannot be checked
    and is left alone, as are runs without the tag). Tags each with `chappie.failed_
    reason`. Searches `experiment_ids` (default: every active experiment). Returns the
    run ids marked. Safe to run from several processes at once."""
    c = client()
    if experiment_ids is None:
        exps = _retry("list experiments", lambda: c.search_experiments(ViewType.ACTIVE_ONLY))
        experiment_ids = [e.experiment_id for e in exps]
    if not experiment_ids:
        return []
    ids = list(experiment_ids)
    marked: list[str] = []
    token: str | None = None
    while True:
        page = _retry(
            "search runs",
            partial(
                c.search_runs,
                ids,
                filter_string="attributes.status = 'RUNNING'",
                max_results=1000,
                page_token=token,
            ),
        )
        for run in page:
            owner = ProcessIdentity.parse(run.data.tags.get(OWNER_TAG, ""))
            if owner is None or owner.alive() is not False:
                continue
            run_id = str(run.info.run_id)
            reason = f"owner process {owner.pid} on {owner.host} ended without closing the run"
            _retry("tag run", partial(c.set_tag, run_id, ORPHAN_TAG, reason), run_id)
            _retry("end run", partial(c.set_terminated, run_id, status="FAILED"), run_id)
            marked.append(run_id)
        token = page.token
        if not token:
            return marked


def log_child_run(
    parent_run_id: str,
    experiment: str,
    run_name: str,
    params: dict,
    tags: dict[str, str],
    metrics_history: list[tuple[str, float, int]],
    final_metrics: dict[str, float],
    artifacts: list[str],
    datasets: list[dict],
    duration_s: float | None = None,
) -> str:
    """Log one finished task as a child of `parent_run_id` and return the child's run id.
    The task ran before it is logged: with `duration_s` (its training wall time) the run
    starts that long before it ends, so MLflow shows the real duration.

    `metrics_history` = (key, value, step) triples (training curves), written in batches
    of 1000; `final_metrics` are logged at the last step of the history (or 0);
    `artifacts` are files or folders; `datasets` are slice manifests (context from the
    manifest's `kind`, default "train"). The child ends FINISHED; on any failure it is
    marked FAILED and the error is re-raised.
    """
    exp_id = ensure_experiment(experiment)
    c = client()
    ended_ms = int(time.time() * 1000)
    started_ms = None if duration_s is None else ended_ms - int(round(duration_s * 1000))
    run = _retry(
        "create run",
        lambda: c.create_run(
            exp_id,
            run_name=run_name,
            start_time=started_ms,
            tags={PARENT_TAG: parent_run_id, OWNER_TAG: ProcessIdentity.current().tag()},
        ),
        parent_run_id,
    )
    run_id = str(run.info.run_id)
    try:
        _log_params_tags(run_id, params, tags)
        now = int(time.time() * 1000)
        history = [Metric(k, float(v), now, int(s)) for k, v, s in metrics_history]
        last_step = max((int(s) for _, _, s in metrics_history), default=0)
        finals = [Metric(k, float(v), now, last_step) for k, v in final_metrics.items()]
        _log_metric_objects(run_id, history + finals)
        log_slice_datasets_by_kind(run_id, datasets)
        if artifacts:
            log_artifacts(run_id, artifacts)
    except BaseException:
        with contextlib.suppress(Exception):
            c.set_terminated(run_id, status=RunStatus.to_string(RunStatus.FAILED))
        raise
    end_run(run_id, "FINISHED", ended_ms if started_ms is not None else None)
    return run_id


def artifact_local_path(uri: str) -> Path | None:
    """Local folder of a `file://` artifact URI, else None. Pure."""
    parsed = urlparse(uri)
    if parsed.scheme not in ("", "file"):
        return None
    return Path(unquote(parsed.path))
