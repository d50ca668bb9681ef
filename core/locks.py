"""One lock per data folder: a second writer waits or stops with one line naming the holder;
and one lease per store object group across machines (`hold_store_lock`, below).

The lock is an exclusive `flock` on `<folder>/chappie.lock`, which the kernel releases
when its holder exits in any way (a SIGKILLed holder leaves no lock to clean: the next
run simply takes it over). The file holds who has the lock (JSON: pid, host, command,
stage, since) so the refusal can name the holder. The descriptor is close-on-exec, so no
child process (Prefect server, pool worker) can keep a lock alive after its command.

Re-entrant within a process: a nightly that holds the lock runs the ingest and features
flows, which take it again. Adapter (files; the store lease through core.objectstore).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from core.config.storage import StorageConfig
from core.jsontypes import JsonObject
from core.lifetime import ProcessIdentity
from core.objectstore import ObjectStoreError, delete_if_match, join, put_conditional, read_object

LOCK_FILE = "chappie.lock"
POLL_S = 0.5

_guard = threading.Lock()
_held: dict[Path, list[int]] = {}  # folder -> [fd, depth]: locks this process holds


class FolderBusy(RuntimeError):
    """Another live process holds the folder's lock. `str()` is one line naming it."""

    def __init__(self, folder: Path, holder: JsonObject | None) -> None:
        self.folder = folder
        self.holder = holder or {}
        h = self.holder
        who = (
            f"pid {h.get('pid')} on {h.get('host')} ({h.get('stage')}: {h.get('command')}) "
            f"since {h.get('since')}"
            if h.get("pid")
            else "a process that is starting"
        )
        super().__init__(
            f"data folder {folder} is in use by {who}; wait for it to finish "
            "(or set CHAPPIE_LOCK_WAIT_S to wait)"
        )


def _command() -> str:
    argv = [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv and sys.argv[0] else ["python"]
    return shlex.join(argv)[:300]


def read_holder(folder: str | os.PathLike[str]) -> JsonObject | None:
    """Who holds (or last held) the folder's lock, as its holder wrote it (JSON: pid,
    host, process, stage, command, since; shown, never trusted); None when the file is
    missing, empty (released) or being written."""
    try:
        text = (Path(folder) / LOCK_FILE).read_text()
        holder = json.loads(text) if text.strip() else None
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _try_lock(path: Path) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _busy(folder: Path) -> FolderBusy:
    holder = None
    for _ in range(5):  # the holder may be between taking the lock and writing its name
        holder = read_holder(folder)
        if holder:
            break
        time.sleep(0.05)
    return FolderBusy(folder, holder)


@contextlib.contextmanager
def hold_folder(
    folder: str | os.PathLike[str], stage: str, wait_s: float = 0.0, poll_s: float = POLL_S
) -> Iterator[JsonObject]:
    """Hold `folder`'s lock for the `with` block (creating the folder and lock file);
    yields the holder record written into the lock file.

    Re-entrant within a process (an inner `hold_folder` of the same folder returns at
    once). When another process holds it, retries every `poll_s` for up to `wait_s`
    seconds, then raises FolderBusy naming the holder (pid, host, command, since). A lock
    whose holder died is free: the kernel released it with the process.
    """
    root = Path(folder).resolve()
    with _guard:
        entry = _held.get(root)
        if entry is not None:
            entry[1] += 1
    if entry is not None:
        try:
            yield read_holder(root) or {}
        finally:
            with _guard:
                entry[1] -= 1
        return
    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK_FILE
    deadline = time.monotonic() + max(wait_s, 0.0)
    while (fd := _try_lock(path)) is None:
        if time.monotonic() >= deadline:
            raise _busy(root)
        time.sleep(poll_s)
    me = ProcessIdentity.current()
    holder: JsonObject = {
        "pid": me.pid,
        "host": me.host,
        "process": me.tag(),
        "stage": stage,
        "command": _command(),
        "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder, sort_keys=True).encode() + b"\n", 0)
        with _guard:
            _held[root] = [fd, 1]
        try:
            yield holder
        finally:
            with _guard:
                _held.pop(root, None)
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)  # released: nobody holds it
    finally:
        os.close(fd)  # closing the only descriptor releases the flock


# ---------------------------------------------------------------- across machines
# A folder lock (`hold_folder`) cannot see another machine publishing the same day to an
# object store: two ingests of one day each pull the store's partition, merge their own
# rows and push, and the last manifest wins. `hold_store_lock` is a lease on the store
# itself: a lock object `<storage.url>/locks/<name>.lock` created with a conditional PUT
# (`If-None-Match: *`: one atomic request on the server, whichever machine asks), renewed
# by its holder every third of the lease (`If-Match` on the ETag it wrote), deleted on
# release (`If-Match`: never someone else's). A holder that died leaves the object: it is
# taken over once its lease has run out by the server's clock (no renewal for `lease_s`),
# or at once when the holder was a process on this host that is gone, again by
# compare-and-swap on the ETag read, so of two machines taking over one wins.

STORE_LOCKS = "locks"
LEASE_S = 300.0  # CHAPPIE_STORE_LEASE_S: how long a silent holder keeps a store lock


class StoreBusy(RuntimeError):
    """Another holder's lease on a store lock is live. `str()` is one line naming it."""

    def __init__(self, url: str, holder: JsonObject, age_s: float, lease_s: float) -> None:
        self.url = url
        self.holder = holder
        h = holder
        who = f"pid {h.get('pid')} on {h.get('host')} ({h.get('stage')}: {h.get('command')})"
        super().__init__(
            f"{url} is held by {who} since {h.get('since')} (renewed {age_s:.0f} s ago, lease "
            f"{lease_s:.0f} s); another machine is publishing it: wait for it to finish (or "
            "set CHAPPIE_LOCK_WAIT_S to wait)"
        )


class StoreLeaseLost(RuntimeError):
    """The holder's lease on a store lock was taken over while it held it (it could not
    renew for a whole lease): what it published may have raced another writer."""


def store_lock_url(storage: StorageConfig, name: str) -> str:
    """`<storage.url>/locks/<name>.lock`."""
    return join(storage.url, STORE_LOCKS, f"{name}.lock")


def store_day_lock(kind: str, symbol: str, day: str) -> str:
    """The store lock name of one day of `kind` (events, bars) of `symbol`."""
    return f"{kind}/{symbol}/{day}"


def lock_wait_seconds() -> float:
    """CHAPPIE_LOCK_WAIT_S (`core.settings.Settings.lock_wait_s`): how long a lock held
    elsewhere is waited for before the one-line refusal."""
    # slow: pydantic-settings (~0.3 s); only a store lock's user reads it
    from core.settings import load_settings

    return load_settings().lock_wait_s


def lease_seconds() -> float:
    """CHAPPIE_STORE_LEASE_S, default `LEASE_S`."""
    return float(os.environ.get("CHAPPIE_STORE_LEASE_S") or LEASE_S)


def _lease_body(stage: str, lease_s: float) -> tuple[JsonObject, bytes]:
    me = ProcessIdentity.current()
    holder: JsonObject = {
        "pid": me.pid,
        "host": me.host,
        "boot_id": me.boot_id,
        "started": me.started,
        "stage": stage,
        "command": _command(),
        "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "lease_s": lease_s,
    }
    return holder, json.dumps(holder, sort_keys=True).encode()


def _parse_holder(body: bytes) -> JsonObject:
    try:
        holder = json.loads(body)
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


def _holder_gone(holder: JsonObject) -> bool:
    """True only when the holder was a process on this host that no longer runs."""
    pid, host = holder.get("pid"), holder.get("host")
    if not isinstance(pid, int) or not isinstance(host, str):
        return False
    started = holder.get("started")
    boot = holder.get("boot_id")
    ident = ProcessIdentity(
        host,
        pid,
        started if isinstance(started, int) else None,
        boot if isinstance(boot, str) else None,
    )
    return ident.alive() is False


def try_store_lock(
    storage: StorageConfig, name: str, stage: str, lease_s: float | None = None
) -> tuple[str, JsonObject]:
    """Take the store lock `name` once: returns (the lock object's ETag, the holder record
    written). Raises StoreBusy naming the holder when its lease is live,
    ObjectStoreError when the store cannot be reached."""
    lease = lease_seconds() if lease_s is None else lease_s
    url = store_lock_url(storage, name)
    holder, body = _lease_body(stage, lease)
    for _ in range(3):  # a release or takeover between our two requests: ask again
        etag = put_conditional(url, body, storage)
        if etag is not None:
            return etag, holder
        now = read_object(url, storage)
        if now is None:
            continue  # released in between
        other = _parse_holder(now.body)
        their_lease = other.get("lease_s")
        their = float(their_lease) if isinstance(their_lease, (int, float)) else lease
        if now.age_s < their and not _holder_gone(other):
            raise StoreBusy(url, other, now.age_s, their)
        etag = put_conditional(url, body, storage, now.etag)  # take over: compare-and-swap
        if etag is not None:
            return etag, holder
    now = read_object(url, storage)
    raise StoreBusy(url, _parse_holder(now.body) if now else {}, now.age_s if now else 0.0, lease)


class _Renewer(threading.Thread):
    """Rewrites the lock object every third of the lease (If-Match its own ETag)."""

    def __init__(
        self, storage: StorageConfig, url: str, etag: str, body: bytes, lease_s: float
    ) -> None:
        super().__init__(name=f"lease {url}", daemon=True)
        self.storage, self.url, self.etag, self.body = storage, url, etag, body
        self.every = max(lease_s / 3.0, 0.05)
        self.stop = threading.Event()
        self.lost = False

    def run(self) -> None:
        while not self.stop.wait(self.every):
            try:
                etag = put_conditional(self.url, self.body, self.storage, self.etag)
            except ObjectStoreError:
                continue  # the store is unreachable for now: the lease has slack
            if etag is None:
                self.lost = True
                return
            self.etag = etag


@contextlib.contextmanager
def hold_store_lock(
    storage: StorageConfig,
    name: str,
    stage: str,
    wait_s: float | None = None,
    lease_s: float | None = None,
    poll_s: float = POLL_S,
) -> Iterator[JsonObject]:
    """Hold the store lock `name` (`store_day_lock` for a day) for the `with` block, across
    machines (see above); yields the holder record. When another holder's lease is live,
    retries every `poll_s` for up to `wait_s` seconds (None: CHAPPIE_LOCK_WAIT_S, as the
    data folder's lock, default 0), then raises StoreBusy (one line naming the holder).
    Raises StoreLeaseLost at the end of the block when the lease was taken over while held
    (it could not be renewed for a whole lease)."""
    lease = lease_seconds() if lease_s is None else lease_s
    wait = lock_wait_seconds() if wait_s is None else wait_s
    deadline = time.monotonic() + max(wait, 0.0)
    while True:
        try:
            etag, holder = try_store_lock(storage, name, stage, lease)
            break
        except StoreBusy:
            if time.monotonic() >= deadline:
                raise
            time.sleep(poll_s)
    url = store_lock_url(storage, name)
    renewer = _Renewer(storage, url, etag, json.dumps(holder, sort_keys=True).encode(), lease)
    renewer.start()
    failed = True
    try:
        yield holder
        failed = False
    finally:
        renewer.stop.set()
        renewer.join()
        if not renewer.lost:
            with contextlib.suppress(ObjectStoreError):  # unreachable: the lease runs out
                delete_if_match(url, renewer.etag, storage)
    if renewer.lost and not failed:
        raise StoreLeaseLost(
            f"{url}: the lease was taken over while {stage} held it (not renewed for "
            f"{lease:.0f} s); check what it published"
        )
