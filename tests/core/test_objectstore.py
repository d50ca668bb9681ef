"""The object store adapter against a real S3 API (moto's server on 127.0.0.1), and the
`storage:` config that selects it."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from core.config.experiment import ExperimentConfig
from core.config.storage import StorageConfig
from core.objectstore import (
    ObjectStoreError,
    S3Url,
    cache_path,
    client,
    fetch_verified,
    join,
    publish,
    stored_sha256,
)
from tests.s3_store import s3_store

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StorageConfig]:
    with s3_store(tmp_path_factory.mktemp("s3")) as st:
        yield st


def _put_raw(storage: StorageConfig, url: str, data: bytes) -> None:
    """Replace an object behind the publisher's back (what a damaged store looks like)."""
    loc = S3Url.parse(url)
    client(storage).put_object(Bucket=loc.bucket, Key=loc.key, Body=data)


def test_publish_then_fetch_verified_round_trips_the_bytes(
    store: StorageConfig, tmp_path: Path
) -> None:
    src = tmp_path / "a.bin"
    src.write_bytes(b"segment bytes" * 1000)
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    url = join(store.url, "t1", "a.bin")
    assert publish(src, url, store) == (sha, True)
    assert stored_sha256(url, store) == sha
    assert publish(src, url, store) == (sha, False)  # already there: not uploaded again
    got = fetch_verified(url, sha, store, tmp_path / "cache")
    assert got == cache_path(sha, tmp_path / "cache") and got.read_bytes() == src.read_bytes()


def test_fetch_verified_refuses_an_object_replaced_in_the_store(
    store: StorageConfig, tmp_path: Path
) -> None:
    src = tmp_path / "b.bin"
    src.write_bytes(b"the published bytes")
    url = join(store.url, "t2", "b.bin")
    sha, _ = publish(src, url, store)
    _put_raw(store, url, b"the published bytez")
    cache = tmp_path / "cache"
    with pytest.raises(ObjectStoreError, match=f"expected {sha}") as err:
        fetch_verified(url, sha, store, cache)
    assert "\n" not in str(err.value) and url in str(err.value)
    assert not cache_path(sha, cache).exists()
    assert not any(p.is_file() for p in cache.rglob("*"))  # no temp file left behind


def test_fetch_verified_refetches_a_damaged_cache_entry(
    store: StorageConfig, tmp_path: Path
) -> None:
    src = tmp_path / "c.bin"
    src.write_bytes(b"good bytes")
    url = join(store.url, "t3", "c.bin")
    sha, _ = publish(src, url, store)
    cache = tmp_path / "cache"
    first = fetch_verified(url, sha, store, cache)
    first.write_bytes(b"bad bytes!")  # corrupted on this machine's disk
    again = fetch_verified(url, sha, store, cache)
    assert again.read_bytes() == b"good bytes"


def test_publish_refuses_a_local_file_that_does_not_match_its_sha256(
    store: StorageConfig, tmp_path: Path
) -> None:
    src = tmp_path / "d.bin"
    src.write_bytes(b"damaged locally")
    url = join(store.url, "t4", "d.bin")
    with pytest.raises(ObjectStoreError, match="refusing to publish"):
        publish(src, url, store, sha256="0" * 64)
    assert stored_sha256(url, store) is None


def test_fetch_of_a_missing_object_or_unreachable_store_is_one_line(
    store: StorageConfig, tmp_path: Path
) -> None:
    from tests.conftest import free_port

    with pytest.raises(ObjectStoreError, match="cannot fetch"):
        fetch_verified(join(store.url, "nothing-here"), "a" * 64, store, tmp_path)
    down = store.model_copy(update={"endpoint_url": f"http://127.0.0.1:{free_port()}"})
    with pytest.raises(ObjectStoreError, match="cannot read") as err:
        stored_sha256(join(store.url, "x"), down)
    assert "\n" not in str(err.value)


def test_s3_url_parse_and_join() -> None:
    assert S3Url.parse("s3://bucket/a/b/") == S3Url("bucket", "a/b")
    assert str(S3Url.parse("s3://bucket")) == "s3://bucket"
    assert join("s3://bucket/p/", "slices", "/x.json") == "s3://bucket/p/slices/x.json"
    with pytest.raises(ObjectStoreError):
        S3Url.parse("/local/path")


# ------------------------------------------------------------------ config
@pytest.mark.parametrize(
    "url", ["file:///data", "s3://", "s3://UPPER/x", "s3://ab", "/data", "s3://b b/x"]
)
def test_storage_config_refuses_what_is_not_an_s3_url(url: str) -> None:
    with pytest.raises(ValueError, match="storage.url"):
        StorageConfig(url=url)


def test_experiment_without_storage_dumps_and_fingerprints_as_before() -> None:
    cfg = ExperimentConfig.model_validate(yaml.safe_load((REPO / "conf" / "tiny.yaml").read_text()))
    dumped = cfg.model_dump(mode="json")
    assert "storage" not in dumped and "storage" not in cfg.model_dump_json()
    from core.hashing import fingerprint

    assert cfg.fingerprint == fingerprint(dumped)


def test_experiment_storage_round_trips_and_leaves_the_fingerprint_alone() -> None:
    raw = yaml.safe_load((REPO / "conf" / "tiny.yaml").read_text())
    plain = ExperimentConfig.model_validate(raw)
    stored = ExperimentConfig.model_validate(
        {**raw, "storage": {"url": "s3://chappie/lab/", "endpoint_url": "http://127.0.0.1:9000"}}
    )
    assert stored.storage is not None and stored.storage.url == "s3://chappie/lab"
    again = ExperimentConfig.model_validate(yaml.safe_load(yaml.safe_dump(stored.model_dump())))
    assert again == stored
    assert stored.fingerprint == plain.fingerprint  # where the data lives is not research
    with pytest.raises(ValueError, match="extra"):
        ExperimentConfig.model_validate({**raw, "storage": {"url": "s3://b1/x", "secret": "no"}})


def test_the_cli_reports_an_object_store_error_in_one_line() -> None:
    from flows.cli import user_error

    exc = ObjectStoreError("s3://b/k: sha256 1, expected 2 (damaged or replaced in the store)")
    assert user_error(exc) == (1, str(exc))
