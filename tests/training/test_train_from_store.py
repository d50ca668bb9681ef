"""Training on a machine that did not run features (#19, beyond one machine): the
features flow's publication (`features.store_publish.publish_spec`) from one data folder,
then planning, a tiny sweep and its evaluation from a second, empty data folder whose
config points at the store (moto's S3 server on 127.0.0.1, `tests/s3_store.py`)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.config.experiment import ExperimentConfig
from core.config.storage import StorageConfig
from core.hashing import sha256_file
from core.objectstore import SHA256_META, ObjectStoreError, S3Url, client
from core.paths import DataLayout
from features.slices import FOLDS_FILE
from features.stats import FrozenStats
from features.store import read_slice
from features.store_publish import publish_spec, slice_url
from tests.s3_store import s3_store
from tests.training.conftest import TINY, DataDir, build_data_dir
from tests.training.test_flows import small
from training.candidates import (
    fetch_catalog,
    load_catalog,
    open_catalog,
    plan_tasks,
    training_root,
)
from training.sweep_record import SweepResult


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StorageConfig]:
    with s3_store(tmp_path_factory.mktemp("s3")) as st:
        yield st


def _published(
    tmp: Path, cfg: ExperimentConfig, store: StorageConfig, name: str
) -> tuple[DataDir, StorageConfig]:
    """A data folder with the spec's slices (validation slices too), published to the
    store's `<name>` prefix as the features flow publishes them."""
    data = build_data_dir(tmp / "features-machine", cfg, rows=300, validation=True)
    prefix = store.model_copy(update={"url": f"{store.url}/{name}"})
    publish_spec(prefix, data.layout, cfg.features.spec.spec_hash, "features")
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

    remote = open_catalog(empty, spec_hash, prefix)
    local = load_catalog(data.layout, spec_hash)
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
    folder on the slices another folder published: (config, data folder, tracking URI,
    sweep, store cache)."""
    from flows.train import train_flow

    tmp = tmp_path_factory.mktemp("trained")
    cache = tmp / "planning-cache"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CHAPPIE_STORE_CACHE", str(cache))
        _, prefix = _published(tmp, tiny_cfg, store, "train")
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
    # the worker (in this process: sequential) trained on the views it fetched
    assert sorted(p.name for p in cache.glob("slices/*/*-train.manifest.json")) == [
        "fold00-train.manifest.json",
        "fold01-train.manifest.json",
    ]
    assert not DataLayout(empty).slices(spec_hash).exists()  # nothing laid out as local


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
