"""Real `chappie` commands: one run per data folder, and nothing outlives a SIGKILLed
command (its temporary Prefect server, pool workers, resource tracker)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from core.locks import hold_folder
from flows.cli import BUSY_EXIT
from tests.infra.processes import TINY, command_env, marked, start, survivors_after, wait_for

COMMANDS = {
    "features": ["features", "--config", str(TINY)],
    "nightly": ["nightly", "--config", str(TINY)],
    "ingest": ["ingest", "synthetic", "--config", str(TINY)],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_second_run_on_a_busy_data_folder_exits_with_one_line_naming_the_holder(
    tmp_path: Path, command: str
) -> None:
    env = command_env(tmp_path)
    with hold_folder(tmp_path, "nightly") as holder:
        p = start(COMMANDS[command], env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = p.communicate(timeout=120)
    assert p.returncode == BUSY_EXIT, err
    assert out == "" and len(err.splitlines()) == 1
    assert f"chappie {command}: data folder {tmp_path.resolve()} is in use by pid" in err
    assert f"pid {holder['pid']}" in err and f"since {holder['since']}" in err
    assert not (tmp_path / "prefect").exists() or not any((tmp_path / "prefect").iterdir())
    assert not marked(env["CHAPPIE_TEST_PROCESS_MARK"])  # no server was started


# A command's main module that spawns a worker the way the sweep's process pool does
# (multiprocessing, spawn), then sleeps; the worker would sleep for a minute.
SPAWNER = """
import multiprocessing, os, sys, time
if __name__ == "__main__":  # what `chappie` sets (the worker inherits it)
    os.environ["CHAPPIE_COMMAND_PID"] = str(os.getpid())
import flows.cli  # noqa: F401 - the command's main module imports it

def work():
    time.sleep(60)

if __name__ == "__main__":
    child = multiprocessing.get_context("spawn").Process(target=work)
    child.start()
    print(child.pid, flush=True)
    time.sleep(60)
"""


def test_worker_spawned_by_a_sigkilled_command_ends_without_waiting_for_its_imports(
    tmp_path: Path,
) -> None:
    from core.lifetime import ProcessIdentity

    script = tmp_path / "command.py"
    script.write_text(SPAWNER)
    p = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    worker = ProcessIdentity(ProcessIdentity.current().host, int(p.stdout.readline()))
    time.sleep(1.0)  # the worker is up and sleeping in `work`
    assert worker.alive() is True
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert wait_for(lambda: worker.alive() is False, 2.0), "the worker outlived its command"


def _server_up(mark: str) -> bool:
    for _, _, cmd in marked(mark):
        if "flows.api_server" in cmd:
            port = cmd.split("--port ")[1].split()[0]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=1):
                    return True
            except OSError:
                return False
    return False


@pytest.mark.slow  # boots a real Prefect server: 5-20 s on 2 busy cores
def test_sigkilled_ingest_leaves_no_process_behind(tmp_path: Path) -> None:
    env = command_env(tmp_path / "data")
    mark = env["CHAPPIE_TEST_PROCESS_MARK"]
    p = start(COMMANDS["ingest"], env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: _server_up(mark), 120), "the temporary server never answered"
        assert [c for _, _, c in marked(mark) if "uvicorn" in c or "api_server" in c]
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert survivors_after(mark, 5.0) == []


@pytest.mark.slow  # ingest, features, then a 2-worker sweep on tiny: 1-3 min
def test_sigkilled_train_leaves_no_server_or_worker_and_workers_boot_no_server(
    tmp_path: Path,
) -> None:
    env = command_env(tmp_path / "data")
    mark = env["CHAPPIE_TEST_PROCESS_MARK"]
    for args in (COMMANDS["ingest"], COMMANDS["features"]):
        done = start(args, env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert done.wait(600) == 0, done.stderr.read() if done.stderr else ""
    p = start(
        ["train", "--config", str(TINY)], env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:

        def workers() -> list[str]:
            return [c for _, _, c in marked(mark) if "spawn_main" in c]

        assert wait_for(lambda: len(workers()) == 2, 300), marked(mark)
        servers = [c for _, _, c in marked(mark) if "uvicorn" in c or "api_server" in c]
        assert len(servers) == 1, servers  # the command's; none per worker
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert survivors_after(mark, 5.0) == []
