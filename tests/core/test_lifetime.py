"""core.lifetime: process identities that see through dead, zombie and reused pids, and
children that end with their parent (real processes, SIGKILL)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace

import pytest

from core.lifetime import ORPHAN_EXIT, ProcessIdentity

# A middle process that starts a grandchild bound to it, prints the grandchild's pid and
# sleeps. The grandchild sleeps too: only the binding can end it.
MIDDLE = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", {grandchild!r}])
print(child.pid, flush=True)
time.sleep(60)
"""
GRANDCHILD = """
import os, time
from core.lifetime import die_with_parent
die_with_parent(os.getppid(), death_signal={death_signal})
time.sleep(60)
"""


def _identity_of(pid: int) -> ProcessIdentity:
    from core.lifetime import _boot_id, _stat

    st = _stat(pid)
    assert st is not None
    return ProcessIdentity(socket.gethostname(), pid, st[1], _boot_id())


def _gone_within(ident: ProcessIdentity, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if ident.alive() is False:
            return True
        time.sleep(0.05)
    return False


def test_identity_of_a_live_process_is_alive_and_round_trips_through_its_tag():
    me = ProcessIdentity.current()
    assert me.alive() is True
    assert ProcessIdentity.parse(me.tag()) == me
    assert ProcessIdentity.parse("") is None and ProcessIdentity.parse("a|b|c") is None
    assert ProcessIdentity.parse("host||12|") == ProcessIdentity("host", 12, None, None)


def test_identity_of_an_exited_zombie_or_reused_pid_is_dead_and_another_host_unknown():
    child = subprocess.Popen(["sleep", "30"])
    ident = _identity_of(child.pid)
    assert ident.alive() is True
    assert replace(ident, started=(ident.started or 0) + 1).alive() is False  # pid reused
    assert replace(ident, boot_id="another-boot").alive() is False  # rebooted since
    assert replace(ident, host="elsewhere.example").alive() is None
    child.kill()
    time.sleep(0.2)  # killed, not yet reaped: a zombie
    assert ident.alive() is False
    child.wait()
    assert ident.alive() is False


@pytest.mark.parametrize("death_signal", [True, False], ids=["pdeathsig", "watch-thread"])
def test_child_bound_by_die_with_parent_ends_within_a_second_of_a_sigkilled_parent(
    death_signal: bool,
):
    grandchild = GRANDCHILD.format(death_signal=death_signal)
    middle = subprocess.Popen(
        [sys.executable, "-c", MIDDLE.format(grandchild=grandchild)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert middle.stdout is not None
    pid = int(middle.stdout.readline())
    ident = _identity_of(pid)
    time.sleep(0.3)  # the grandchild is past die_with_parent and sleeping
    assert ident.alive() is True
    middle.send_signal(signal.SIGKILL)
    middle.wait()
    assert _gone_within(ident, 2.0), f"pid {pid} outlived its SIGKILLed parent"


def test_server_process_entry_exits_at_once_when_its_parent_is_already_gone():
    """`python -m flows.api_server` checks its parent before importing anything heavy."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    t0 = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "flows.api_server", "--parent", str(dead.pid), "--port", "1"],
        capture_output=True,
        timeout=30,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert out.returncode == ORPHAN_EXIT and time.monotonic() - t0 < 10
