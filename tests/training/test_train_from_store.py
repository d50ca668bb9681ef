"""Training on a machine that did not run features (#19, beyond one machine): the
features flow's publication (`features.store_publish.publish_spec`) from one data folder,
then planning, a tiny sweep and its evaluation from a second, empty data folder whose
config points at the store (moto's S3 server on 127.0.0.1, `tests/s3_store.py`). The
funding table (#17: on by default when the data has it) travels with the slices: every
machine plans with the store's table and every worker trains on a checked copy."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from core.config.experiment import ExperimentConfig
from core.config.storage import StorageConfig
from core.hashing import sha256_file
from core.instrument import XBTUSD
from core.objectstore import SHA256_META, ObjectStoreError, S3Url, client
from core.paths import DataLayout
from features.slices import FOLDS_FILE
from features.stats import FrozenStats
from features.store import read_slice
from features.store_publish import publish_spec, slice_url
from ingest.funding import funding_table_path, ingest_funding, with_funding_history
from tests.s3_store import s3_store
from tests.training import conftest
from tests.training.conftest import TINY, DataDir, build_data_dir
from tests.training.test_flows import small
from training.candidates import (
    fetch_catalog,
    funding_on_store,
    load_catalog,
    open_catalog,
    plan_tasks,
    training_root,
)
from training.sweep import TrainTask, local_inputs
from training.sweep_record import SweepResult

H_NS = 3_600_000_000_000
FUNDING_04H = 1_704_081_600 * 1_000_000_000  # 2024-01-01 04:00 UTC, an XBTUSD funding time
FUNDING_RATE = 0.00037  # the table's rate then (the constant funding_rate is 0.0001)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StorageConfig]:
    with s3_store(tmp_path_factory.mktemp("s3")) as st:
        yield st


def write_funding(data_dir: Path, rate: float = FUNDING_RATE, days: int = 1) -> Path:
    """The XBTUSD funding table of `data_dir` (`chappie ingest funding`'s), `rate` at every
    funding time of `days` days from 2024-01-01 04:00 UTC. Returns its path."""
    times = [FUNDING_04H + k * 8 * H_NS for k in range(3 * days)]
    rows = [
        {
            "timestamp": f"{np.datetime64(t, 'ns').astype('datetime64[ms]')}Z",
            "symbol": "XBTUSD",
            "fundingInterval": "2000-01-01T08:00:00.000Z",
            "fundingRate": rate,
            "fundingRateDaily": 3 * rate,
        }
        for t in times
    ]
    src = data_dir.parent / f"funding-{rate}-{days}.json"
    src.write_text(json.dumps(rows))
    report = ingest_funding([src], data_dir, "XBTUSD", XBTUSD)
    assert report.rows_rejected == 0
    return funding_table_path(data_dir, "XBTUSD")


def _published(
    tmp: Path,
    cfg: ExperimentConfig,
    store: StorageConfig,
    name: str,
    funding: bool = False,
) -> tuple[DataDir, StorageConfig]:
    """A data folder with the spec's slices (validation slices too) and, with `funding`,
    the symbol's funding table, published to the store's `<name>` prefix as the features
    flow publishes them."""
    data = build_data_dir(tmp / "features-machine", cfg, rows=300, validation=True)
    if funding:
        write_funding(data.layout.root)
    prefix = store.model_copy(update={"url": f"{store.url}/{name}"})
    publish_spec(prefix, data.layout, cfg.features.spec.spec_hash, "features", cfg.ingest.symbol)
    return data, prefix


def test_an_empty_data_folder_plans_the_same_tasks_from_the_store(
    tmp_path: Path, tiny_cfg: ExperimentConfig, store: StorageConfig
) -> None:
    """The tasks planned from the store's folds.json and manifests are the tasks the
    features machine plans from its local slices and points at the store
    (`flows.train._tasks_on_store`): same URLs, digests and sha256s."""
    from flows.train import _tasks_from_store, _tasks_on_store

    data, prefix = _published(tmp_path, tiny_cfg, store, "plan")
    spec_hash = tiny_cfg.features.spec.spec_hash
    empty = DataLayout((tmp_path / "planning-machine").resolve())
    assert not empty.slices(spec_hash).exists()

    remote = open_catalog(empty, spec_hash, prefix, tiny_cfg.ingest.symbol)
    local = load_catalog(data.layout, spec_hash)
    # no funding table here nor on the store: no funding from history, as without a store
    assert remote.funding_table is None
    with_store = tiny_cfg.model_copy(update={"storage": prefix})
    assert funding_on_store(with_store, empty, remote) == (with_store, None)
    assert open_catalog(data.layout, spec_hash, prefix) == local  # local slices: as before
    assert remote.stress_ids == local.stress_ids == ("stress00",)
    assert remote.manifests.keys() == local.manifests.keys()
    for sid, m in remote.manifests.items():
        assert m.path == slice_url(prefix, local.manifests[sid].path)
        assert remote.store_sha256[m.path] == sha256_file(local.manifests[sid].path)
        assert m.model_copy(update={"path": ""}) == local.manifests[sid].model_copy(
            update={"path": ""}
        )
    for r, f in zip(remote.folds, local.folds, strict=True):
        assert r.stats_dir == f"{prefix.url}/stats/{f.stats_id}"
        assert remote.store_sha256[r.stats_dir] == sha256_file(Path(f.stats_dir, "checksums.json"))
        assert r.validation is not None and r.validation.location.startswith("s3://")

    # what the evaluate flow backtests on: the slices it reads, fetched and checked
    fetched = fetch_catalog(remote, prefix, tmp_path / "cache")
    for f, want in zip(fetched.folds, local.folds, strict=True):
        assert f.train == remote.folds[f.fold].train  # never read by a backtest: not fetched
        for got, ref in ((f.test, want.test), (f.validation, want.validation)):
            assert got is not None and ref is not None
            assert Path(got.location).is_relative_to(tmp_path / "cache")
            assert read_slice(got.location).equals(read_slice(ref.location))
        assert FrozenStats.load(f.stats_dir).stats_id == want.stats_id
    (stress,) = fetched.stress_paths
    assert read_slice(stress).equals(read_slice(local.stress_paths[0]))
    assert fetched.manifests["stress00"].path == stress

    sweep = tiny_cfg.sweep.model_copy(update={"seeds": (0, 1)})
    root = training_root(empty, spec_hash)
    from_store = _tasks_from_store(prefix, remote, plan_tasks(sweep, remote.folds, root))
    from_local = _tasks_on_store(
        prefix,
        data.layout,
        spec_hash,
        local,
        plan_tasks(sweep, local.folds, root),
        logging.getLogger("test"),
    )
    assert len(from_store) == 2 * 2 * len(sweep.trials) * len(sweep.timesteps)
    assert from_store == from_local
    assert all(t.train_slice.startswith(f"{prefix.url}/slices/") for t in from_store)
    # a task without a funding table serialises as before the funding fields existed
    assert all("funding_url" not in t.model_dump(mode="json")["store"] for t in from_store)


def _plan_both(
    tmp: Path, cfg: ExperimentConfig, data: DataDir, prefix: StorageConfig
) -> tuple[ExperimentConfig, list[TrainTask], ExperimentConfig, list[TrainTask]]:
    """(config, tasks) as the train flow plans them on the features machine (its slices
    and funding table, `storage:` set) and on an empty data folder (the store's), both
    under one training root (out dirs compared too)."""
    from flows.train import _tasks_from_store, _tasks_on_store

    spec_hash = cfg.features.spec.spec_hash
    sweep = cfg.sweep.model_copy(update={"seeds": (0, 1)})
    cfg = cfg.model_copy(update={"storage": prefix, "sweep": sweep})
    root = training_root(data.layout, spec_hash)
    # features machine: train_flow's with_funding_history, then _train_policies
    local_cfg = with_funding_history(cfg, data.layout.root)
    local_cat = open_catalog(data.layout, spec_hash, prefix, cfg.ingest.symbol)
    local_cfg, local_funding = funding_on_store(local_cfg, data.layout, local_cat)
    local_tasks = _tasks_on_store(
        prefix,
        data.layout,
        spec_hash,
        local_cat,
        plan_tasks(local_cfg.sweep, local_cat.folds, root),
        logging.getLogger("test"),
        local_funding,
    )
    # a machine with an empty data folder: no table here, the store's
    empty = DataLayout((tmp / "planning-machine").resolve())
    remote_cfg = with_funding_history(cfg, empty.root)
    assert remote_cfg == cfg
    remote_cat = open_catalog(empty, spec_hash, prefix, cfg.ingest.symbol)
    remote_cfg, remote_funding = funding_on_store(remote_cfg, empty, remote_cat)
    remote_tasks = _tasks_from_store(
        prefix, remote_cat, plan_tasks(remote_cfg.sweep, remote_cat.folds, root), remote_funding
    )
    return local_cfg, local_tasks, remote_cfg, remote_tasks


def test_the_funding_table_travels_with_the_slices(
    tmp_path: Path,
    tiny_cfg: ExperimentConfig,
    store: StorageConfig,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The features machine publishes its funding table beside the slices; a machine with
    an empty data folder turns funding on from it exactly as the features machine does
    from its own, so both plan identical tasks (URL and sha256 of the table in their
    StoreInputs), and a worker trains with a checked copy in its cache: the funding the
    local run settles, at the table's rate."""
    # envs.management: numba kernels (~1 s), only this test builds an env
    from envs.management import ManagementEnv

    monkeypatch.setattr(conftest, "T0", FUNDING_04H - 150 * 10**9)  # fold00-train spans 04:00
    data, prefix = _published(tmp_path, tiny_cfg, store, "funding", funding=True)
    table = funding_table_path(data.layout.root, "XBTUSD")
    url = f"{prefix.url}/funding/XBTUSD.parquet"
    local_cfg, local_tasks, remote_cfg, remote_tasks = _plan_both(tmp_path, tiny_cfg, data, prefix)

    assert remote_cfg == local_cfg and remote_cfg.fingerprint == local_cfg.fingerprint
    assert remote_tasks == local_tasks and len(remote_tasks) == 4
    for t in remote_tasks:
        assert t.trial.env.funding and t.trial.env.funding_rates_path == url
        assert t.store is not None and t.store.funding_url == url
        assert t.store.funding_sha256 == sha256_file(table)

    # the run without a store: its data folder's slices and table (the local settings)
    sweep = tiny_cfg.sweep.model_copy(update={"seeds": (0, 1)})  # as _plan_both's
    plain_cfg = with_funding_history(tiny_cfg.model_copy(update={"sweep": sweep}), data.layout.root)
    spec_hash = tiny_cfg.features.spec.spec_hash
    plain_tasks = plan_tasks(
        plain_cfg.sweep, load_catalog(data.layout, spec_hash).folds, tmp_path / "plain"
    )
    assert plain_tasks[0].trial.env.funding_rates_path == str(table)
    # a worker on another machine: its own cache
    cache = tmp_path / "worker-cache"
    monkeypatch.setenv("CHAPPIE_STORE_CACHE", str(cache))
    for t, p in list(zip(remote_tasks, plain_tasks, strict=True))[:2]:  # folds 0 and 1
        worker = local_inputs(t)
        fetched = Path(worker.trial.env.funding_rates_path or "")
        assert fetched.is_relative_to(cache) and sha256_file(fetched) == sha256_file(table)
        assert worker.trial == p.trial.model_copy(
            update={"env": p.trial.env.model_copy(update={"funding_rates_path": str(fetched)})}
        )
        got = ManagementEnv(worker.train_slice, worker.stats_dir, worker.trial.env)
        ref = ManagementEnv(p.train_slice, p.stats_dir, p.trial.env)
        assert got.funding_schedule.rate.tolist() == ref.funding_schedule.rate.tolist()
        assert got.funding_schedule.from_history.tolist() == [True] * (t.fold == 0)
        # fold 0's train slice crosses 04:00 UTC: settled at the table's rate
        assert got.funding_schedule.rate.tolist() == [FUNDING_RATE] * (t.fold == 0)


def test_a_tampered_funding_table_is_refused_naming_it(
    tmp_path: Path,
    tiny_cfg: ExperimentConfig,
    store: StorageConfig,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A funding table replaced in the store behind the publisher's back (other bytes,
    the old sha256) is refused when planning from the store and by a worker holding a
    task planned before; a features machine whose table was ingested since the store's
    was published is told to publish it."""
    data, prefix = _published(tmp_path, tiny_cfg, store, "funding-tampered", funding=True)
    table = funding_table_path(data.layout.root, "XBTUSD")
    _, (task, *_), _, _ = _plan_both(tmp_path, tiny_cfg, data, prefix)
    url = f"{prefix.url}/funding/XBTUSD.parquet"
    held = S3Url.parse(url)
    other = write_funding(tmp_path / "other-data", rate=-FUNDING_RATE)
    client(prefix).put_object(
        Bucket=held.bucket,
        Key=held.key,
        Body=other.read_bytes(),
        Metadata={SHA256_META: sha256_file(table)},  # the old sha256, other bytes
    )
    monkeypatch.setenv("CHAPPIE_STORE_CACHE", str(tmp_path / "fresh-cache"))
    spec_hash = tiny_cfg.features.spec.spec_hash
    with pytest.raises(ObjectStoreError, match=f"{url}: sha256 .* expected"):
        open_catalog(DataLayout(tmp_path / "empty"), spec_hash, prefix, "XBTUSD")
    with pytest.raises(ObjectStoreError, match=f"{url}: sha256 .* expected"):
        local_inputs(task)
    assert not any((tmp_path / "fresh-cache").glob("funding/*/*"))  # nothing laid out

    write_funding(data.layout.root, days=2)  # ingested since: the store's is not this
    cfg = with_funding_history(tiny_cfg.model_copy(update={"storage": prefix}), data.layout.root)
    with pytest.raises(ObjectStoreError, match=f"{url} holds .*`chappie features`"):
        funding_on_store(cfg, data.layout, load_catalog(data.layout, spec_hash))


def test_a_manifest_replaced_in_the_store_is_refused_when_planning(
    tmp_path: Path, tiny_cfg: ExperimentConfig, store: StorageConfig
) -> None:
    """Planning reads only what checks out: a manifest whose bytes no longer hash to the
    sha256 the store records for it (replaced behind the publisher's back) is named."""
    data, prefix = _published(tmp_path, tiny_cfg, store, "replaced")
    spec_hash = tiny_cfg.features.spec.spec_hash
    m = load_catalog(data.layout, spec_hash).manifests["fold01-test"]
    url = slice_url(prefix, m.path)
    held = S3Url.parse(url)
    body = json.dumps({**json.loads(Path(m.path).read_text()), "rows": m.rows + 1}).encode()
    client(prefix).put_object(
        Bucket=held.bucket,
        Key=held.key,
        Body=body,
        Metadata={SHA256_META: sha256_file(m.path)},  # the old sha256, other bytes
    )
    with pytest.raises(ObjectStoreError, match=f"{url}: sha256 .* expected"):
        open_catalog(DataLayout(tmp_path / "empty"), spec_hash, prefix)


def test_train_with_no_slices_here_nor_on_the_store_is_one_line_before_prefect(
    tmp_path: Path, store: StorageConfig
) -> None:
    from tests.test_cli_errors import assert_user_error, chappie

    prefix = store.model_copy(update={"url": f"{store.url}/never-published"})
    config = tmp_path / "tiny-store.yaml"
    config.write_text(
        TINY.read_text()
        + f"\nstorage:\n  url: {prefix.url}\n  endpoint_url: {prefix.endpoint_url}\n"
        f"  region: {prefix.region}\n"
    )
    result = chappie(tmp_path, "train", "--config", str(config))
    assert_user_error(
        result,
        2,
        "no slices of this config's features under",
        f"nor on the store (no {prefix.url}/slices/",
        f"/{FOLDS_FILE})",
        "chappie features",
    )
    assert not any((tmp_path / "prefect").iterdir())  # no Prefect server started


@pytest.fixture(scope="module")
def trained(
    prefect_harness: None,
    tmp_path_factory: pytest.TempPathFactory,
    tiny_cfg: ExperimentConfig,
    store: StorageConfig,
) -> Iterator[tuple[ExperimentConfig, Path, str, SweepResult, Path]]:
    """A tiny sweep (one seed, two folds) trained by the train flow from an empty data
    folder on the slices and funding table another folder published (fold 1's test slice
    crosses a funding time): (config, data folder, tracking URI, sweep, store cache)."""
    from flows.train import train_flow

    tmp = tmp_path_factory.mktemp("trained")
    cache = tmp / "planning-cache"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CHAPPIE_STORE_CACHE", str(cache))
        with pytest.MonkeyPatch.context() as t0:
            t0.setattr(conftest, "T0", FUNDING_04H - 1700 * 10**9)  # fold01-test spans 04:00
            _, prefix = _published(tmp, tiny_cfg, store, "train", funding=True)
        cfg = small(tiny_cfg, seeds=(0,)).model_copy(update={"storage": prefix})
        empty = (tmp / "planning-machine").resolve()
        uri = f"sqlite:///{tmp}/mlflow.db"
        yield cfg, empty, uri, train_flow(cfg, str(empty), uri), cache


def test_train_on_a_machine_that_did_not_run_features(
    trained: tuple[ExperimentConfig, Path, str, SweepResult, Path],
) -> None:
    """The train flow from an empty data folder trains on the store's slices."""
    cfg, empty, _, sweep, cache = trained
    assert cfg.storage is not None
    assert [t.ok for t in sweep.tasks] == [True, True] and sweep.failed == []
    spec_hash = cfg.features.spec.spec_hash
    for row in sweep.tasks:
        assert row.task.store is not None
        assert row.task.train_slice.startswith(f"{cfg.storage.url}/slices/")
        assert Path(row.out_dir).parent == training_root(DataLayout(empty), spec_hash)
        assert Path(row.model_zip or "").is_file()
        # funding on from the store's table, as the features machine has it from its own
        url = f"{cfg.storage.url}/funding/XBTUSD.parquet"
        assert row.task.trial.env.funding_rates_path == url == row.task.store.funding_url
    # the worker (in this process: sequential) trained on the views it fetched
    assert sorted(p.name for p in cache.glob("slices/*/*-train.manifest.json")) == [
        "fold00-train.manifest.json",
        "fold01-train.manifest.json",
    ]
    assert not DataLayout(empty).slices(spec_hash).exists()  # nothing laid out as local
    (table,) = cache.glob("funding/*/XBTUSD.parquet")  # the worker's checked copy
    assert {sha256_file(table)} == {
        r.task.store and r.task.store.funding_sha256 for r in sweep.tasks
    }


@pytest.mark.slow
def test_evaluate_on_a_machine_that_did_not_run_features(
    trained: tuple[ExperimentConfig, Path, str, SweepResult, Path],
) -> None:
    """The evaluate flow there backtests on the slices it fetched, checked, into its
    cache (~40 s: the baseline panel and MLflow)."""
    from flows.evaluate import evaluate_flow

    cfg, empty, uri, sweep, cache = trained
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CHAPPIE_STORE_CACHE", str(cache))
        ev = evaluate_flow(cfg, str(empty), uri, sweep.sweep_run_id)
    (cand,) = ev.candidates
    assert cand.test_totals is not None and cand.decision
    assert Path(cand.stats_dir).is_relative_to(cache)  # the last fold's stats, fetched
    out = DataLayout(empty).reports(sweep.sweep_run_id) / cand.candidate_id
    judged = json.loads((out / "backtest.json").read_text())
    kinds = sorted(s["slice"]["kind"] for s in judged["slices"])
    assert kinds == ["stress", "test", "test", "validation", "validation"]
    assert all(Path(s["slice"]["path"]).is_relative_to(cache) for s in judged["slices"])
    assert ev.stress_slices == ["stress00"]
    # judged with the funding it trained with: fold 1's test slice crosses 04:00 UTC
    (crossing,) = [s for s in judged["slices"] if s["metrics"]["funding_times"]]
    assert crossing["slice"]["slice_id"] == "fold01-test"
    assert crossing["metrics"]["funding_rate_mean"] == FUNDING_RATE
    assert cand.execution is not None
    assert cand.execution.funding_rates_path == f"{cfg.storage.url}/funding/XBTUSD.parquet"
