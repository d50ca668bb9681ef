"""Process identity and lifetime: who owns a lock or an MLflow run, whether that process
still lives, and child processes that die with their parent.

Adapter (the OS process table). POSIX; on Linux a process is identified beyond its pid by
its start time (`/proc/<pid>/stat`) and the boot id, so a reused pid or a reboot is never
mistaken for the owner, and a zombie (killed, not yet reaped) counts as dead.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
#: exit status of a child that ended because its parent died (nobody reads it: the
#: parent is gone; distinct from a crash for whoever traces it)
ORPHAN_EXIT = 70
WATCH_INTERVAL_S = 0.25


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def _stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks after boot) of `pid` from /proc, or None
    when there is no such process or no /proc."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses; split at the last
    rest = raw[raw.rfind(")") + 2 :].split()
    return rest[0], int(rest[19])  # field 3 (state) and field 22 (starttime)


@dataclass(frozen=True)
class ProcessIdentity:
    """A process as other processes can check it later: host, boot, pid, start time."""

    host: str
    pid: int
    started: int | None = None  # clock ticks after boot (Linux), None when unknown
    boot_id: str | None = None

    @classmethod
    def current(cls) -> ProcessIdentity:
        """This process."""
        st = _stat(os.getpid())
        return cls(socket.gethostname(), os.getpid(), st[1] if st else None, _boot_id())

    def alive(self) -> bool | None:
        """True while the process lives, False once it is gone (exited, a zombie, its pid
        reused by another process, or the machine rebooted), None when it cannot be known
        from here (another host)."""
        if self.host != socket.gethostname():
            return None
        boot = _boot_id()
        if self.boot_id and boot and self.boot_id != boot:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # someone else's process: it exists
            pass
        st = _stat(self.pid)
        if st is None:
            return True  # no /proc (macOS): the pid exists, that is all we know
        state, started = st
        if state in ("Z", "X"):
            return False
        return self.started is None or started == self.started

    def tag(self) -> str:
        """One string (`host|boot_id|pid|started`) for an MLflow tag or a lock file."""
        return f"{self.host}|{self.boot_id or ''}|{self.pid}|{'' if self.started is None else self.started}"

    @classmethod
    def parse(cls, tag: str) -> ProcessIdentity | None:
        """The identity `tag()` wrote, or None for anything else."""
        parts = tag.split("|")
        if len(parts) != 4 or not parts[0] or not parts[2].isdigit():
            return None
        host, boot, pid, started = parts
        return cls(host, int(pid), int(started) if started.isdigit() else None, boot or None)


def set_parent_death_signal(sig: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send `sig` to this process when its parent dies (Linux
    PR_SET_PDEATHSIG; True when set). The "parent" is the thread that forked this
    process: call it only in children started from a thread that lives as long as the
    parent process (the main thread). Preserved across exec."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name or not hasattr(os, "getppid"):
        return False
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(libc_name, use_errno=True)
        return bool(libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0)
    return False


def watch_parent(parent_pid: int, interval_s: float = WATCH_INTERVAL_S) -> threading.Thread:
    """A daemon thread that ends this process (exit status ORPHAN_EXIT, no cleanup) once
    its parent is no longer `parent_pid` (the parent died and init or a subreaper
    adopted it). Works whatever thread started the process; reacts within `interval_s`.
    """

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(ORPHAN_EXIT)
            time.sleep(interval_s)

    thread = threading.Thread(target=watch, name="chappie-parent-watch", daemon=True)
    thread.start()
    return thread


def die_with_parent(parent_pid: int, death_signal: bool = True) -> None:
    """Make this child process end when `parent_pid` (its parent) dies: the kernel's
    parent-death signal when `death_signal` (see set_parent_death_signal for the thread
    caveat), and the watch thread as well (any thread, any POSIX). Exits at once when
    the parent is already gone (it died before this call)."""
    if death_signal:
        set_parent_death_signal()
    if os.getppid() != parent_pid:
        os._exit(ORPHAN_EXIT)
    watch_parent(parent_pid)


def init_pool_worker(parent_pid: int) -> None:
    """Initializer of a process-pool worker (training): one math thread, and the worker
    ends when the command that started the pool dies (watch thread only: pool workers
    are started from short-lived threads, so no parent-death signal)."""
    # slow: pydantic-settings (~0.3 s); the Prefect API server process imports this module
    from core.settings import ensure_single_thread_math

    ensure_single_thread_math()
    die_with_parent(parent_pid, death_signal=False)
