"""Events and bars on an S3 API server (moto on 127.0.0.1): the nightly's ingest ->
features -> train through the flows with `storage:` set, every event partition and
bars part on the store and none in the data folder; a damaged object named in one line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.config.experiment import load_config
from core.config.ingest import IngestConfig
from core.config.market import SyntheticMarketConfig
from core.config.storage import StorageConfig
from core.config.training import PPOConfig
from core.hashing import sha256_file
from core.locks import StoreBusy, hold_store_lock, store_day_lock
from core.objectstore import ObjectStoreError, S3Url, client, fetch_root, join
from core.paths import DataLayout
from features.slices import load_fold_index, load_manifest
from features.store_publish import publish_spec
from tests.features.test_flow import CFG, SYMBOL
from tests.s3_store import s3_store

INGEST = IngestConfig(synthetic=SyntheticMarketConfig(seed=9, days=2, day_hours=0.2))
DAYS = ["2024-01-01", "2024-01-02"]
TINY = Path(__file__).resolve().parents[2] / "conf" / "tiny.yaml"
#: test_flow's features with one fold and no stress window: every stage, fewer slices
CFG = CFG.model_copy(
    update={
        "walk_forward": CFG.walk_forward.model_copy(update={"n_folds": 1, "stress_windows": ()})
    }
)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StorageConfig]:
    with s3_store(tmp_path_factory.mktemp("s3"), prefix="nightly") as st:
        yield st


def _objects(storage: StorageConfig, under: str) -> dict[str, str]:
    """key below `storage.url` -> the sha256 its metadata records, for every object
    under `under`."""
    loc = S3Url.parse(join(storage.url, under))
    s3 = client(storage)
    base = S3Url.parse(storage.url).key + "/"
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=loc.bucket, Prefix=loc.key):
        for o in page.get("Contents", []):
            meta = s3.head_object(Bucket=loc.bucket, Key=o["Key"])["Metadata"]
            out[o["Key"].removeprefix(base)] = meta["sha256"]
    return out


def _replace(storage: StorageConfig, key: str, data: bytes) -> None:
    """Overwrite an object's bytes, keeping the sha256 its metadata records."""
    loc = S3Url.parse(join(storage.url, key))
    s3 = client(storage)
    meta = s3.head_object(Bucket=loc.bucket, Key=loc.key)["Metadata"]
    s3.put_object(Bucket=loc.bucket, Key=loc.key, Body=data, Metadata=meta)


@pytest.fixture(scope="module")
def nightly(
    store: StorageConfig, tmp_path_factory: pytest.TempPathFactory, prefect_harness: None
) -> dict[str, Any]:
    """Ingest then features through the flows, as the nightly runs them, on the store."""
    from flows.features import build_features_flow
    from flows.ingest import ingest_flow

    data = tmp_path_factory.mktemp("data")
    report = ingest_flow(INGEST, str(data), storage=store).to_json()
    folds = build_features_flow(SYMBOL, CFG, str(data), storage=store)
    return {"data": data, "report": report, "folds": folds}


def test_events_and_bars_live_on_the_store_and_not_in_the_data_folder(
    nightly: dict[str, Any], store: StorageConfig, events_dir: Path
) -> None:
    data, report = nightly["data"], nightly["report"]
    assert report["partitions_written"] == DAYS
    events = _objects(store, f"events/{SYMBOL}")
    spec12 = CFG.spec.spec_hash[:12]
    bars = _objects(store, f"bars/{SYMBOL}/{spec12}")
    for day in DAYS:
        m = json.loads(
            fetch_root(join(store.url, f"events/{SYMBOL}/{day}/manifest.json"), store).read_bytes()
        )  # type: ignore[union-attr]
        assert {
            f"events/{SYMBOL}/{day}/{n}": s for n, s in m["outputs"].items()
        }.items() <= events.items()
        # the same partition a local ingest of the same market publishes, byte for byte
        local = DataLayout(events_dir).events_day(SYMBOL, day)
        assert m["outputs"] == json.loads((local / "manifest.json").read_text())["outputs"]
    (index_key,) = [k for k in bars if k.endswith(".json") and "/days/" not in k]
    index = json.loads(fetch_root(join(store.url, index_key), store).read_bytes())  # type: ignore[union-attr]
    assert all(bars[f"bars/{SYMBOL}/{spec12}/{p['file']}"] == p["sha256"] for p in index["parts"])
    assert sum(k.endswith(".state.npz") for k in bars) == len(DAYS)
    # nothing of it in the data folder (staging and the slices are the flows' own)
    assert not (data / "events").exists() and not (data / "bars").exists()
    held = {sha256_file(p) for p in data.rglob("*") if p.is_file()}
    assert not held & (set(events.values()) | set(bars.values()))
    # the slices were cut from the store's events: lineage names the store's manifests
    m0 = load_manifest(DataLayout(data).slices(CFG.spec.spec_hash) / "fold00-train.manifest.json")
    assert m0.event_partitions == {DAYS[0]: events[f"events/{SYMBOL}/{DAYS[0]}/manifest.json"]}


def test_the_features_flow_publishes_slices_stats_and_folds_to_the_store(
    nightly: dict[str, Any], store: StorageConfig
) -> None:
    """#19: whoever trains finds the spec's slices, their stats and folds.json on the store,
    each object recording the sha256 of the local file the features flow wrote (the train
    flow only checks them: features.store_publish.published_slice)."""
    layout = DataLayout(nightly["data"])
    spec_hash = CFG.spec.spec_hash
    spec12 = layout.spec12(spec_hash)
    local = layout.slices(spec_hash)
    on_store = _objects(store, f"slices/{spec12}")
    index = load_fold_index(layout, spec_hash)
    assert index.model_dump(mode="json") == nightly["folds"]
    assert on_store[f"slices/{spec12}/folds.json"] == sha256_file(local / "folds.json")
    ids = [s for f in index.folds for s in (f.train, f.validation, f.test) if s] + index.stress
    for sid in ids:
        manifest = local / f"{sid}.manifest.json"
        assert on_store[f"slices/{spec12}/{manifest.name}"] == sha256_file(manifest)
        for part in load_manifest(manifest).parts:
            assert on_store[f"slices/{spec12}/{part.file}"] == part.sha256
    for f in index.folds:
        stats = _objects(store, f"stats/{f.stats_id}")
        assert {k.rsplit("/", 1)[1]: v for k, v in stats.items()} == {
            p.name: sha256_file(p) for p in layout.stats(f.stats_id).iterdir()
        }
    # the publication's store lock was released; another holder refuses a second publisher
    assert not _objects(store, "locks")
    with (
        hold_store_lock(store, f"slices/{spec12}", "features on another machine"),
        pytest.raises(StoreBusy, match=f"locks/slices/{spec12}.lock is held by"),
    ):
        publish_spec(store, layout, spec_hash, "features")


def test_a_features_run_whose_bars_another_machine_holds_is_refused_in_one_line(
    nightly: dict[str, Any], store: StorageConfig, tmp_path: Path
) -> None:
    from flows.cli import BUSY_EXIT, user_error
    from flows.features import build_features_flow

    name = f"bars/{SYMBOL}/{DataLayout.spec12(CFG.spec.spec_hash)}"
    before = _objects(store, f"bars/{SYMBOL}")
    with (
        hold_store_lock(store, name, "features on another machine"),
        pytest.raises(StoreBusy) as err,
    ):
        build_features_flow(SYMBOL, CFG, str(tmp_path / "data"), storage=store)
    known = user_error(err.value)
    assert known is not None
    code, line = known
    assert code == BUSY_EXIT and "\n" not in line and f"locks/{name}.lock is held by" in line
    assert _objects(store, f"bars/{SYMBOL}") == before  # nothing published meanwhile


def test_a_damaged_event_object_is_named_and_the_days_before_it_are_kept(
    nightly: dict[str, Any], store: StorageConfig
) -> None:
    from flows.features import build_features_flow

    key = next(
        k
        for k in _objects(store, f"events/{SYMBOL}/{DAYS[1]}")
        if k.split("/")[-1].startswith("book-")
    )
    _replace(store, key, b"not the day's book")
    other = CFG.model_copy(update={"spec": CFG.spec.model_copy(update={"interval_ms": 2000})})
    with pytest.raises(ObjectStoreError) as err:
        build_features_flow(SYMBOL, other, str(nightly["data"]), storage=store)
    msg = str(err.value)
    assert "\n" not in msg and join(store.url, key) in msg and "sha256" in msg
    # the day before the damaged one was sampled and published; the damaged one was not
    days = _objects(store, f"bars/{SYMBOL}/{other.spec.spec_hash[:12]}/days")
    assert [k.rsplit("/", 1)[1][:10] for k in days if k.endswith(".json")] == [DAYS[0]]


def test_ingest_names_a_damaged_partition_on_the_store_and_publishes_the_other_days(
    store: StorageConfig, tmp_path: Path, prefect_harness: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.ingest import ingest_flow

    storage = store.model_copy(update={"url": f"{store.url}/damaged"})
    ingest_flow(INGEST, str(tmp_path / "a"), storage=storage)
    before = _objects(storage, "events")
    # day 2 gone from the store (to be published again), day 1's manifest damaged
    loc = S3Url.parse(storage.url)
    for k in _objects(storage, f"events/{SYMBOL}/{DAYS[1]}"):
        client(storage).delete_object(Bucket=loc.bucket, Key=f"{loc.key}/{k}")
    key = f"events/{SYMBOL}/{DAYS[0]}/manifest.json"
    _replace(storage, key, b'{"not": "the manifest"}')
    # a machine whose cache never held these bytes (a cached copy of the sha256 the
    # object records would be used, and is the right bytes)
    monkeypatch.setenv("CHAPPIE_STORE_CACHE", str(tmp_path / "fresh-cache"))
    with pytest.raises(ObjectStoreError) as err:
        ingest_flow(INGEST, str(tmp_path / "b"), storage=storage)
    msg = str(err.value)
    assert "\n" not in msg and join(storage.url, key) in msg and "sha256" in msg
    assert DAYS[1] not in msg
    # the other day was published again, the same bytes; the damaged one left as it was
    assert _objects(storage, "events") == before


def test_a_day_another_machine_is_publishing_is_refused_and_the_other_days_publish(
    store: StorageConfig, tmp_path: Path, prefect_harness: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The day's pull-merge-push holds its store lock (`events/<symbol>/<day>`): while
    another holder has day 1, its publish waits (here 0.3 s), then the run names it in
    one line; day 2 is published, and nothing of day 1 is written."""
    import ingest.run
    from flows.ingest import ingest_flow

    monkeypatch.setattr(ingest.run, "STORE_DAY_WAIT_S", 0.3)
    storage = store.model_copy(update={"url": f"{store.url}/busy"})
    with hold_store_lock(storage, store_day_lock("events", SYMBOL, DAYS[0]), "ingest"):
        with pytest.raises(ObjectStoreError) as err:
            ingest_flow(INGEST, str(tmp_path / "a"), storage=storage)
        msg = str(err.value)
        assert "\n" not in msg and f"events/{SYMBOL}/{DAYS[0]}" in msg
        assert "another machine is publishing it" in msg and DAYS[1] not in msg
        published = _objects(storage, "events")
        assert any(k.startswith(f"events/{SYMBOL}/{DAYS[1]}/") for k in published), published
        assert not any(k.startswith(f"events/{SYMBOL}/{DAYS[0]}/") for k in published)
    # released: the same run publishes day 1 now, day 2 is unchanged
    ingest_flow(INGEST, str(tmp_path / "a"), storage=storage)
    assert any(k.startswith(f"events/{SYMBOL}/{DAYS[0]}/") for k in _objects(storage, "events"))


@pytest.mark.slow
def test_the_nightly_chain_trains_on_the_store_with_no_event_or_bar_in_the_data_folder(
    store: StorageConfig, tmp_path: Path, prefect_harness: None
) -> None:
    """conf/tiny.yaml with `storage:` set, its stages run as the nightly runs them
    (ingest -> features -> train): the sweep trains on slices fetched from the store,
    and the data folder never held an event partition or a bars part."""
    from flows.features import build_features_flow
    from flows.ingest import ingest_flow
    from flows.train import train_flow

    tiny = load_config(TINY)
    trial = tiny.sweep.trials[0].model_copy(
        update={"ppo": PPOConfig(n_steps=64, batch_size=64, n_epochs=1, net_arch=(16,))}
    )
    sweep = tiny.sweep.model_copy(
        update={"executor": "sequential", "seeds": (0,), "timesteps": (64,), "trials": (trial,)}
    )
    wf = tiny.features.walk_forward.model_copy(update={"n_folds": 1})
    storage = store.model_copy(update={"url": f"{store.url}/tiny"})
    cfg = tiny.model_copy(
        update={
            "sweep": sweep,
            "storage": storage,
            "features": tiny.features.model_copy(update={"walk_forward": wf}),
        }
    )
    data = tmp_path / "data"
    ingest_flow(cfg.ingest, str(data), storage=cfg.storage)
    build_features_flow(cfg.ingest.symbol, cfg.features, str(data), storage=cfg.storage)
    out = train_flow(cfg, str(data), f"sqlite:///{data}/mlflow.db")
    assert [t.ok for t in out.tasks] == [True] and out.failed == []
    assert out.tasks[0].task.train_slice.startswith(f"{storage.url}/slices/")
    on_store = {**_objects(storage, "events"), **_objects(storage, "bars")}
    assert any(k.endswith("manifest.json") for k in on_store) and any(
        "/days/" in k for k in on_store
    )
    assert not (data / "events").exists() and not (data / "bars").exists()
    held = {sha256_file(p) for p in data.rglob("*") if p.is_file()}
    assert not held & set(on_store.values())


def test_a_root_object_is_checked_against_its_recorded_sha256(
    store: StorageConfig, tmp_path: Path
) -> None:
    """A manifest or index is trusted only as the sha256 its object records: absent is
    None, no record or other bytes are refused naming the object."""
    from core.objectstore import publish

    url = join(store.url, "roots/manifest.json")
    assert fetch_root(url, store, tmp_path / "c") is None
    (tmp_path / "m.json").write_text('{"day": 1}')
    publish(tmp_path / "m.json", url, store)
    got = fetch_root(url, store, tmp_path / "c")
    assert got is not None and got.read_text() == '{"day": 1}'
    _replace(store, "roots/manifest.json", b'{"day": 2}')
    with pytest.raises(ObjectStoreError, match=r"roots/manifest.json: sha256 .* expected"):
        fetch_root(url, store, tmp_path / "other-cache")
    loc = S3Url.parse(url)
    client(store).put_object(Bucket=loc.bucket, Key=loc.key, Body=b"{}")
    with pytest.raises(ObjectStoreError, match="records no sha256"):
        fetch_root(url, store, tmp_path / "c")


def test_the_cache_is_trimmed_to_its_bound_least_recently_used_first(tmp_path: Path) -> None:
    import os

    from core.objectstore import cache_path, trim_cache

    files = []
    for i in range(4):
        p = cache_path(f"{i:02x}" * 32, tmp_path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x" * 100)
        os.utime(p, (1000 + i, 1000 + i))
        files.append(p)
    assert trim_cache(250, tmp_path) == files[:2]
    assert [p.exists() for p in files] == [False, False, True, True]


def test_the_store_view_keeps_the_current_bars_only(tmp_path: Path) -> None:
    from features.bars import _prune_view

    folder = tmp_path / "bars"
    (folder / "days").mkdir(parents=True)
    names = ["2024-01-01-aaaa", "2024-01-02-bbbb"]
    keep = ["bars-bbbb.json", "bars-bbbb-tail.arrow"]
    keep += [f"days/{n}{s}" for n in names for s in (".arrow", ".state.npz", ".json")]
    old = ["bars-aaaa.json", "bars-aaaa-tail.arrow"]
    for f in keep + old:
        (folder / f).write_text("{}")
    parts = [{"file": "days/2024-01-01-aaaa.arrow"}, {"file": "bars-bbbb-tail.arrow"}]
    (folder / "bars-bbbb.json").write_text(json.dumps({"parts": parts}))
    removed = _prune_view(folder / "bars-bbbb.json", names)
    assert sorted(p.name for p in removed) == sorted(old)
    assert all((folder / f).exists() for f in keep)
