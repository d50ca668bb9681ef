"""Training inputs on an object store (moto's S3 server on 127.0.0.1): slices and frozen
stats published from the local store (as the features flow does), fetched by workers with
every byte verified, and the train flow on a local Dask cluster training from them."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from core.config.experiment import ExperimentConfig
from core.config.storage import StorageConfig
from core.config.training import PPOConfig
from core.objectstore import ObjectStoreError, S3Url, client, join, publish
from features.stats import FrozenStats
from features.store import read_slice, verify_slice
from features.store_publish import publish_spec
from tests.s3_store import s3_store
from tests.training.conftest import DataDir, build_data_dir
from tests.training.test_sweep import make_task
from training.store_inputs import fetch_slice, fetch_stats, publish_slice, publish_stats
from training.sweep import TrainTask, local_inputs, train_one


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StorageConfig]:
    with s3_store(tmp_path_factory.mktemp("s3")) as st:
        yield st


def _replace_object(storage: StorageConfig, url: str, data: bytes) -> None:
    loc = S3Url.parse(url)
    client(storage).put_object(Bucket=loc.bucket, Key=loc.key, Body=data)


def _published(data: DataDir, storage: StorageConfig, fold: int = 0) -> tuple[str, str, str, str]:
    t = make_task(data, Path("unused"), fold=fold)
    slice_url, manifest_sha = publish_slice(storage, t.train_slice)
    stats_url, sums_sha = publish_stats(storage, t.stats_dir)
    return slice_url, manifest_sha, stats_url, sums_sha


def _digest(data: DataDir, fold: int = 0) -> str:
    return str(
        json.loads(Path(make_task(data, Path("x"), fold=fold).train_slice).read_text())["sha256"]
    )


def test_a_published_slice_and_its_stats_come_back_identical(
    tiny_data: DataDir, store: StorageConfig, tmp_path: Path
) -> None:
    local = make_task(tiny_data, tmp_path)
    slice_url, manifest_sha, stats_url, sums_sha = _published(tiny_data, store)
    spec12 = Path(local.train_slice).parent.name
    assert slice_url == f"{store.url}/slices/{spec12}/fold00-train.manifest.json"
    assert stats_url == f"{store.url}/stats/{local.stats_id}"

    cache = tmp_path / "cache"
    manifest = fetch_slice(slice_url, manifest_sha, _digest(tiny_data), store, cache)
    assert manifest.name == "fold00-train.manifest.json" and cache in manifest.parents
    assert verify_slice(manifest) == []
    assert read_slice(manifest).equals(read_slice(local.train_slice))
    stats = FrozenStats.load(fetch_stats(stats_url, sums_sha, store, cache))
    want = FrozenStats.load(local.stats_dir)
    assert stats.stats_id == want.stats_id
    assert np.array_equal(stats.mean, want.mean) and np.array_equal(stats.sigma, want.sigma)
    # a second fetch reads the verified cache and gives the same files
    assert fetch_slice(slice_url, manifest_sha, _digest(tiny_data), store, cache) == manifest


def test_a_segment_damaged_in_the_store_is_refused_not_trained_on(
    tmp_path: Path, tiny_cfg: ExperimentConfig, store: StorageConfig
) -> None:
    data = build_data_dir(tmp_path / "d", tiny_cfg, rows=300)
    prefix = store.model_copy(update={"url": f"{store.url}/damaged-segment"})
    slice_url, manifest_sha, _, _ = _published(data, prefix)
    m = json.loads(Path(make_task(data, tmp_path).train_slice).read_text())
    part = m["parts"][0]
    _replace_object(prefix, join(slice_url.rsplit("/", 1)[0], part["file"]), b"not the segment")
    cache = tmp_path / "cache"
    with pytest.raises(ObjectStoreError, match=f"expected {part['sha256']}"):
        fetch_slice(slice_url, manifest_sha, m["sha256"], prefix, cache)
    assert not list(cache.glob("slices/*/*.manifest.json"))  # no slice to read


def test_a_manifest_or_stats_replaced_in_the_store_is_refused(
    tmp_path: Path, tiny_cfg: ExperimentConfig, store: StorageConfig
) -> None:
    data = build_data_dir(tmp_path / "d", tiny_cfg, rows=300)
    prefix = store.model_copy(update={"url": f"{store.url}/damaged-manifest"})
    slice_url, manifest_sha, stats_url, sums_sha = _published(data, prefix)
    digest = _digest(data)
    with pytest.raises(ObjectStoreError, match="the task expects"):  # another slice's digest
        fetch_slice(slice_url, manifest_sha, "f" * 64, prefix, tmp_path / "c0")
    m = json.loads(Path(make_task(data, tmp_path).train_slice).read_text())
    _replace_object(prefix, slice_url, json.dumps({**m, "rows": m["rows"] + 1}).encode())
    with pytest.raises(ObjectStoreError, match=f"expected {manifest_sha}"):
        fetch_slice(slice_url, manifest_sha, digest, prefix, tmp_path / "c1")
    _replace_object(prefix, join(stats_url, "mean.npy"), b"\x93NUMPY not these")
    with pytest.raises(ObjectStoreError, match="expected"):
        fetch_stats(stats_url, sums_sha, prefix, tmp_path / "c2")


def test_publish_refuses_a_slice_whose_segment_is_damaged_locally(
    tmp_path: Path, tiny_cfg: ExperimentConfig, store: StorageConfig
) -> None:
    data = build_data_dir(tmp_path / "d", tiny_cfg, rows=300)
    path = Path(make_task(data, tmp_path).train_slice)
    part = json.loads(path.read_text())["parts"][0]["file"]
    (path.parent / part).write_bytes(b"flipped")
    with pytest.raises(ObjectStoreError, match="refusing to publish"):
        publish_slice(store.model_copy(update={"url": f"{store.url}/local-damage"}), path)


def _store_tasks(
    data: DataDir, storage: StorageConfig, out: Path, seeds: list[int]
) -> list[TrainTask]:
    """The sweep's tasks for fold 0, published as the features flow does and pointed at
    the store by the train flow's own step."""
    from flows.train import _tasks_on_store
    from training.candidates import load_catalog

    spec_hash = data.cfg.features.spec.spec_hash
    publish_spec(storage, data.layout, spec_hash, "test")
    catalog = load_catalog(data.layout, spec_hash)
    trial = data.cfg.sweep.trials[0].model_copy(
        update={"ppo": PPOConfig(n_steps=64, batch_size=64, n_epochs=1, net_arch=(16,))}
    )
    local = [
        make_task(data, out / f"s{s}", seed=s, timesteps=64).model_copy(update={"trial": trial})
        for s in seeds
    ]
    tasks = _tasks_on_store(
        storage, data.layout, spec_hash, catalog, local, logging.getLogger("test")
    )
    assert all(t.train_slice.startswith("s3://") and t.store is not None for t in tasks)
    assert {t.train_sha256 for t in tasks} == {catalog.folds[0].train.sha256}
    return tasks


def test_a_task_whose_store_object_was_replaced_raises_the_reason(
    tmp_path: Path, tiny_cfg: ExperimentConfig, store: StorageConfig
) -> None:
    data = build_data_dir(tmp_path / "d", tiny_cfg, rows=300)
    prefix = store.model_copy(update={"url": f"{store.url}/sweep-damaged"})
    (task,) = _store_tasks(data, prefix, tmp_path / "runs", [0])
    _replace_object(prefix, join(task.stats_dir, "checksums.json"), b"{}")
    with pytest.raises(ObjectStoreError, match="checksums.json"):
        train_one(task)  # the flow's task runner retries it and reports the error
    assert not (Path(task.out_dir) / "model.zip").exists()


def test_training_from_a_store_the_slices_were_not_published_to_is_refused_in_one_line(
    tmp_path: Path, tiny_cfg: ExperimentConfig, store: StorageConfig
) -> None:
    """The train flow only reads the store: a slice the features flow did not publish
    there (or another version of it) is named, with what to run."""
    from flows.train import _tasks_on_store
    from training.candidates import load_catalog

    data = build_data_dir(tmp_path / "d", tiny_cfg, rows=300)
    spec_hash = data.cfg.features.spec.spec_hash
    catalog = load_catalog(data.layout, spec_hash)
    tasks = [make_task(data, tmp_path / "run")]
    prefix = store.model_copy(update={"url": f"{store.url}/never-published"})
    with pytest.raises(ObjectStoreError) as err:
        _tasks_on_store(prefix, data.layout, spec_hash, catalog, tasks, logging.getLogger("t"))
    msg = str(err.value)
    assert "\n" not in msg and "fold00-train.manifest.json holds nothing" in msg
    assert "chappie features" in msg
    publish_spec(prefix, data.layout, spec_hash, "test")
    other = tmp_path / "checksums.json"
    other.write_text("{}")  # another machine's stats of the same id, published over these
    stats_id = Path(catalog.folds[0].stats_dir).name
    publish(other, join(prefix.url, "stats", stats_id, "checksums.json"), prefix)
    with pytest.raises(ObjectStoreError, match="checksums.json holds sha256"):
        _tasks_on_store(prefix, data.layout, spec_hash, catalog, tasks, logging.getLogger("t"))


def test_a_local_task_is_serialised_exactly_as_before_the_store_existed(
    tiny_data: DataDir, tmp_path: Path
) -> None:
    t = make_task(tiny_data, tmp_path)
    assert t.store is None and "store" not in t.model_dump() and "store" not in t.model_dump_json()
    assert local_inputs(t) is t


def _dask_sweep_from_the_store(
    tmp_path: Path,
    tiny_cfg: ExperimentConfig,
    store: StorageConfig,
    monkeypatch: pytest.MonkeyPatch,
    **sweep: object,
) -> None:
    """The train flow with `sweep.executor: dask` (plus `sweep`) and `storage:` set: every
    task names its slice and stats by s3:// URL, and the workers train on what they
    fetched into their cache."""
    from flows.train import train_flow

    worker_cache = tmp_path / "worker-cache"
    monkeypatch.setenv("CHAPPIE_STORE_CACHE", str(worker_cache))
    data = build_data_dir(tmp_path / "d", tiny_cfg, rows=300)
    update = {"executor": "dask", "timesteps": (256,), "seeds": (0,), **sweep}
    prefix = store.model_copy(update={"url": f"{store.url}/flow"})
    publish_spec(prefix, data.layout, tiny_cfg.features.spec.spec_hash, "features")
    cfg = tiny_cfg.model_copy(
        update={"sweep": tiny_cfg.sweep.model_copy(update=update), "storage": prefix}
    )
    out = train_flow(cfg, str(data.root), f"sqlite:///{data.root}/mlflow.db")
    assert [t.ok for t in out.tasks] == [True, True] and out.failed == []
    for row in out.tasks:
        assert row.task.train_slice.startswith(f"{prefix.url}/slices/")
        assert row.task.stats_dir.startswith(f"{prefix.url}/stats/")
        recorded = json.loads((Path(row.out_dir) / "task.json").read_text())
        assert recorded["train_slice"] == row.task.train_slice and recorded["store"]
    views = sorted(p.name for p in worker_cache.glob("slices/*/*.manifest.json"))
    assert views == ["fold00-train.manifest.json", "fold01-train.manifest.json"]
    assert all(verify_slice(v) == [] for v in worker_cache.glob("slices/*/*.manifest.json"))
    assert len(list(worker_cache.glob("stats/*/checksums.json"))) == 2
    # what a worker trained on is the view it fetched (the cache), not the local store's
    (view,) = worker_cache.glob("slices/*/fold00-train.manifest.json")
    assert local_inputs(out.tasks[0].task).train_slice == str(view)


def test_train_flow_on_a_dask_cluster_reads_its_slices_from_the_store(
    prefect_harness: None,
    tmp_path: Path,
    tiny_cfg: ExperimentConfig,
    store: StorageConfig,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In the default suite (#19): a running Dask cluster the sweep connects to by
    address (`sweep.dask_address`, as a shared cluster is), its one worker in this
    process (no worker process to start and import torch: the slow test below runs
    the flow's own cluster of worker processes)."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        _dask_sweep_from_the_store(
            tmp_path, tiny_cfg, store, monkeypatch, dask_address=cluster.scheduler_address
        )


@pytest.mark.slow
def test_train_flow_on_dask_reads_its_slices_from_the_store(
    prefect_harness: None,
    tmp_path: Path,
    tiny_cfg: ExperimentConfig,
    store: StorageConfig,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The flow's own local cluster (prefect-dask; two worker processes)."""
    _dask_sweep_from_the_store(tmp_path, tiny_cfg, store, monkeypatch, n_workers=2)
