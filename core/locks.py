"""One lock per data folder: a second writer waits or stops with one line naming the holder.

The lock is an exclusive `flock` on `<folder>/chappie.lock`, which the kernel releases
when its holder exits in any way (a SIGKILLed holder leaves no lock to clean: the next
run simply takes it over). The file holds who has the lock (JSON: pid, host, command,
stage, since) so the refusal can name the holder. The descriptor is close-on-exec, so no
child process (Prefect server, pool worker) can keep a lock alive after its command.

Re-entrant within a process: a nightly that holds the lock runs the ingest and features
flows, which take it again. Adapter (files only).
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

from core.jsontypes import JsonObject
from core.lifetime import ProcessIdentity

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
