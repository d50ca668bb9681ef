"""core.locks: one lock per data folder, held across real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.locks import LOCK_FILE, FolderBusy, hold_folder, read_holder

HOLDER = """
import sys, time
from core.locks import hold_folder
with hold_folder(sys.argv[1], "features"):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def _holder(folder: Path, seconds: float) -> subprocess.Popen[str]:
    p = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert p.stdout is not None and p.stdout.readline().strip() == "held"
    return p


def test_second_holder_is_refused_with_one_line_naming_pid_command_and_since(tmp_path):
    p = _holder(tmp_path, 30)
    try:
        with pytest.raises(FolderBusy) as err, hold_folder(tmp_path, "nightly"):
            pass
        msg = str(err.value)
        assert "\n" not in msg
        assert f"pid {p.pid}" in msg and "features" in msg and "since 20" in msg
        assert str(tmp_path.resolve()) in msg
        assert err.value.holder["pid"] == p.pid
    finally:
        p.kill()
        p.wait()


def test_lock_of_a_sigkilled_holder_is_taken_over_and_renamed(tmp_path):
    p = _holder(tmp_path, 30)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert read_holder(tmp_path)["pid"] == p.pid  # its name is still in the file
    with hold_folder(tmp_path, "ingest") as me:
        assert me["pid"] == os.getpid() and read_holder(tmp_path) == me
    assert read_holder(tmp_path) is None  # released: nobody named


def test_waiter_gets_the_lock_when_the_holder_finishes(tmp_path):
    p = _holder(tmp_path, 0.6)
    t0 = time.monotonic()
    with hold_folder(tmp_path, "features", wait_s=10, poll_s=0.05):
        assert 0.2 < time.monotonic() - t0 < 5
    p.wait()


def test_lock_is_reentrant_within_a_process_and_not_inherited_by_children(tmp_path):
    with hold_folder(tmp_path, "nightly") as outer:
        with hold_folder(tmp_path, "ingest") as inner:  # the nightly's subflow
            assert inner == outer
        # a child started under the lock (a server, a worker) does not keep it alive
        child = subprocess.Popen(["sleep", "30"])
    try:
        with hold_folder(tmp_path, "features"):
            pass  # free although the child lives
    finally:
        child.kill()
        child.wait()


def test_holder_file_names_the_command(tmp_path):
    with hold_folder(tmp_path, "train"):
        holder = json.loads((tmp_path / LOCK_FILE).read_text())
    assert holder["stage"] == "train" and holder["command"] and holder["host"]
    assert holder["process"].split("|")[2] == str(os.getpid())
