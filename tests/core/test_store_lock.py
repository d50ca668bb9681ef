"""The cross-machine lease on an object store (`core.locks.hold_store_lock`) against a
real S3 API (moto's server on 127.0.0.1): conditional PUTs decide who holds it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.config.storage import StorageConfig
from core.locks import (
    StoreBusy,
    StoreLeaseLost,
    hold_store_lock,
    store_day_lock,
    store_lock_url,
    try_store_lock,
)
from core.objectstore import (
    S3Url,
    client,
    delete_if_match,
    put_conditional,
    read_object,
)
from tests.s3_store import s3_store

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StorageConfig]:
    with s3_store(tmp_path_factory.mktemp("s3"), prefix="locks") as st:
        yield st


def _put_raw(storage: StorageConfig, url: str, holder: dict) -> None:
    """A lock object as another machine's holder left it (no conditions)."""
    loc = S3Url.parse(url)
    client(storage).put_object(Bucket=loc.bucket, Key=loc.key, Body=json.dumps(holder).encode())


OTHER = {"pid": 4242, "host": "other-machine", "stage": "ingest", "command": "chappie ingest"}


def test_conditional_put_creates_once_and_replaces_only_the_etag_read(
    store: StorageConfig,
) -> None:
    url = f"{store.url}/cond/a.lock"
    first = put_conditional(url, b"one", store)
    assert first is not None
    assert put_conditional(url, b"two", store) is None  # If-None-Match: * refused
    got = read_object(url, store)
    assert got is not None and got.body == b"one" and got.etag == first and got.age_s < 60
    second = put_conditional(url, b"three", store, first)  # If-Match the ETag read
    assert second is not None and second != first
    assert put_conditional(url, b"four", store, first) is None  # a stale ETag: refused
    assert not delete_if_match(url, first, store)
    assert read_object(url, store).body == b"three"  # type: ignore[union-attr]
    assert delete_if_match(url, second, store)
    assert read_object(url, store) is None


def test_a_day_held_elsewhere_is_refused_in_one_line_naming_the_holder(
    store: StorageConfig,
) -> None:
    name = store_day_lock("events", "XBTUSD", "2024-01-01")
    url = store_lock_url(store, name)
    assert url == f"{store.url}/locks/events/XBTUSD/2024-01-01.lock"
    with hold_store_lock(store, name, "ingest") as me:
        assert me["pid"] == os.getpid()
        # a second holder, even in this process
        with pytest.raises(StoreBusy) as err, hold_store_lock(store, name, "ingest"):
            pass
        msg = str(err.value)
        assert "\n" not in msg and url in msg and f"pid {os.getpid()}" in msg
        assert "another machine is publishing it" in msg
        with hold_store_lock(store, store_day_lock("events", "XBTUSD", "2024-01-02"), "x"):
            pass  # another day is free
    assert read_object(url, store) is None  # released: the object is gone
    with hold_store_lock(store, name, "ingest"):  # and the day can be taken again
        pass


def test_another_process_holding_the_day_blocks_until_it_releases(
    store: StorageConfig, tmp_path: Path
) -> None:
    """A second process (what another machine is to this one) holds the day; this
    process is refused, then waits (`wait_s`) and gets it once the other releases."""
    name = store_day_lock("events", "XBTUSD", "2024-02-01")
    code = (
        "import sys, time\n"
        "from core.config.storage import StorageConfig\n"
        "from core.locks import hold_store_lock\n"
        f"st = StorageConfig.model_validate_json({store.model_dump_json()!r})\n"
        f"with hold_store_lock(st, {name!r}, 'ingest', lease_s=2.0):\n"
        "    print('held', flush=True)\n"
        "    time.sleep(3.0)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        with (
            pytest.raises(StoreBusy, match=f"pid {proc.pid} "),
            hold_store_lock(store, name, "ingest"),
        ):
            pass
        t0 = time.monotonic()
        with hold_store_lock(store, name, "ingest", wait_s=30, poll_s=0.2) as me:
            assert me["pid"] == os.getpid()
            assert time.monotonic() - t0 > 0.5  # it waited for the release
    finally:
        proc.kill()
        proc.wait()


def test_a_live_lease_is_renewed_and_an_expired_one_taken_over(store: StorageConfig) -> None:
    name = "bars/XBTUSD/renewed"
    with hold_store_lock(store, name, "features", lease_s=3.0):
        time.sleep(6.5)  # over twice the lease: renewed every second, so still held
        with pytest.raises(StoreBusy):
            try_store_lock(store, name, "features", lease_s=3.0)
    dead = store_lock_url(store, "bars/XBTUSD/dead")
    # a holder that stopped renewing. The server's clock (Date, Last-Modified) counts whole
    # seconds, so an age is known to +-1 s: a 2 s lease is live when read at once and
    # certainly over 3 s later (a 1 s lease read at once could already look 1 s old)
    _put_raw(store, dead, {**OTHER, "lease_s": 2.0})
    with pytest.raises(StoreBusy, match="other-machine"):
        try_store_lock(store, "bars/XBTUSD/dead", "features")
    time.sleep(3.1)
    etag, me = try_store_lock(store, "bars/XBTUSD/dead", "features")
    assert me["host"] != "other-machine"
    got = read_object(dead, store)
    assert got is not None and got.etag == etag and json.loads(got.body)["pid"] == os.getpid()


def test_of_two_takeovers_of_one_expired_lease_one_wins(store: StorageConfig) -> None:
    url = store_lock_url(store, "events/XBTUSD/race")
    _put_raw(store, url, {**OTHER, "lease_s": 0.0})
    seen = read_object(url, store)
    assert seen is not None
    assert put_conditional(url, b"machine A", store, seen.etag) is not None
    assert put_conditional(url, b"machine B", store, seen.etag) is None  # B read the same ETag
    assert read_object(url, store).body == b"machine A"  # type: ignore[union-attr]


def test_a_dead_holder_on_this_host_is_taken_over_at_once(store: StorageConfig) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    gone = int(proc.stdout)  # a pid that has exited
    url = store_lock_url(store, "events/XBTUSD/crashed")
    _put_raw(store, url, {**OTHER, "host": socket.gethostname(), "pid": gone, "lease_s": 600})
    _, me = try_store_lock(store, "events/XBTUSD/crashed", "ingest")
    assert me["pid"] == os.getpid()


def test_a_lease_taken_over_while_held_is_reported(store: StorageConfig) -> None:
    name = "events/XBTUSD/stolen"
    url = store_lock_url(store, name)
    with (
        pytest.raises(StoreLeaseLost, match="taken over"),
        hold_store_lock(store, name, "ingest", lease_s=0.6),
    ):
        _put_raw(store, url, {**OTHER, "lease_s": 600})  # another machine's takeover
        time.sleep(2.0)  # a renewal (every 0.2 s) finds another ETag
    assert json.loads(read_object(url, store).body)["host"] == "other-machine"  # type: ignore[union-attr]
