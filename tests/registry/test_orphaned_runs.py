"""A killed command's MLflow runs are marked FAILED on the next start; nobody else's are
(real SQLite store, real processes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import pytest

from core.lifetime import ProcessIdentity
from registry import tracking

# A sweep parent run opened by a process that is then SIGKILLed (what a killed nightly leaves)
OPENER = """
import sys, time
from registry import tracking
tracking.configure(sys.argv[1])
print(tracking.start_parent_run("orphans", "sweep-killed", {}, {"kind": "sweep"}), flush=True)
time.sleep(60)
"""


@pytest.fixture
def store(sqlite_uri: str) -> str:
    tracking.configure(sqlite_uri)
    return sqlite_uri


def _status(run_id: str) -> str:
    return str(tracking.client().get_run(run_id).info.status)


def test_runs_of_dead_owners_are_failed_live_foreign_and_untagged_ones_kept(store: str) -> None:
    mine = tracking.start_parent_run("orphans", "sweep-live", {}, {})
    assert tracking.client().get_run(mine).data.tags[tracking.OWNER_TAG] == (
        ProcessIdentity.current().tag()
    )
    exp = tracking.ensure_experiment("orphans")
    c = tracking.client()

    def run_owned_by(owner: str | None) -> str:
        tags = {tracking.OWNER_TAG: owner} if owner is not None else {}
        return str(c.create_run(exp, run_name="r", tags=tags).info.run_id)

    gone = subprocess.Popen(["sleep", "30"])
    from core.lifetime import _boot_id, _stat

    st = _stat(gone.pid)
    assert st is not None
    dead = ProcessIdentity(ProcessIdentity.current().host, gone.pid, st[1], _boot_id())
    gone.kill()
    gone.wait()
    orphan = run_owned_by(dead.tag())
    reused = run_owned_by(replace(ProcessIdentity.current(), started=1).tag())  # pid reused
    foreign = run_owned_by(replace(dead, host="other-host.example").tag())
    untagged = run_owned_by(None)
    done = run_owned_by(dead.tag())
    tracking.end_run(done, "FINISHED")

    assert sorted(tracking.fail_orphaned_runs()) == sorted([orphan, reused])
    assert _status(orphan) == _status(reused) == "FAILED"
    assert "ended without closing" in c.get_run(orphan).data.tags[tracking.ORPHAN_TAG]
    assert _status(mine) == _status(foreign) == _status(untagged) == "RUNNING"
    assert _status(done) == "FINISHED"
    assert tracking.fail_orphaned_runs() == []  # idempotent


@pytest.mark.slow  # the opener imports mlflow: ~3 s
def test_sweep_run_of_a_sigkilled_process_is_failed_by_the_next_start(store: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", OPENER, store],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "GIT_PYTHON_REFRESH": "quiet"},
    )
    assert proc.stdout is not None
    run_id = proc.stdout.readline().strip()
    assert _status(run_id) == "RUNNING" and tracking.fail_orphaned_runs() == []  # alive
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(0.05)
    assert tracking.fail_orphaned_runs() == [run_id]
    assert _status(run_id) == "FAILED"
