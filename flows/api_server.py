"""The temporary Prefect API server of a `chappie` command, which dies with the command.

Prefect's ephemeral mode starts a uvicorn server subprocess per process that needs the
API and stops it only from `atexit`: a SIGKILLed command left it running, parented to
init, and every process-pool worker of the sweep booted one of its own. Here the command
starts one server itself (the same Prefect app, same settings, same database under
PREFECT_HOME) and exports PREFECT_API_URL, so Prefect starts none and pool workers use
this one. The server process ends with its parent: the kernel's parent-death signal
(Linux) and a watch thread on its parent pid (any POSIX) - see `core.lifetime`.

`python -m flows.api_server --parent PID --port N` is the server process itself.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence

from core.lifetime import die_with_parent

#: what Prefect's own ephemeral server sets: no UI, services of an ephemeral server
SERVER_ENV = {
    "PREFECT_UI_ENABLED": "0",
    "PREFECT__SERVER_EPHEMERAL": "1",
    "PREFECT__SERVER_FINAL": "1",
}
PORT_IN_USE_EXIT = 3  # uvicorn's exit status when it cannot bind
STOP_TIMEOUT_S = 5.0


class ServerStartError(RuntimeError):
    """The temporary Prefect server did not answer its health check in time."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class TemporaryServer:
    """One Prefect API server process on 127.0.0.1 that ends with this process."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def _spawn(self) -> subprocess.Popen[bytes]:
        self.port = _free_port()
        cmd = [sys.executable, "-m", "flows.api_server", "--parent", str(os.getpid())]
        cmd += ["--port", str(self.port)]
        # PR_SET_PDEATHSIG follows the thread that forks: only from the main thread
        if threading.current_thread() is threading.main_thread():
            cmd.append("--death-signal")
        # own session: a Ctrl-C in the terminal reaches the command, which then stops the
        # server after its last API calls (not the server first, under the command)
        return subprocess.Popen(
            cmd, env={**os.environ, **SERVER_ENV}, stdin=subprocess.DEVNULL, start_new_session=True
        )

    def start(self, timeout_s: float) -> str:
        """Start the server and wait for its health check; returns the API URL.

        Raises ServerStartError (with the server's exit status) after `timeout_s`."""
        self.process = self._spawn()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code == PORT_IN_USE_EXIT:  # lost the port to another process: another one
                self.process = self._spawn()
                continue
            if code is not None:
                raise ServerStartError(f"the temporary Prefect server exited with status {code}")
            if _healthy(self.api_url):
                return self.api_url
            time.sleep(0.1)
        self.stop()
        raise ServerStartError(
            f"the temporary Prefect server did not answer within {timeout_s:.0f} s "
            "(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS)"
        )

    def stop(self) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after STOP_TIMEOUT_S) and reap it."""
        p, self.process = self.process, None
        if p is None or p.poll() is not None:
            return
        p.terminate()
        try:
            p.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _drain_prefect_clients() -> None:
    """Send the logs and events Prefect still buffers while the server is up (Prefect's
    own test harness does the same before it stops its server)."""
    if "prefect" not in sys.modules:
        return
    with contextlib.suppress(Exception):
        # slow: prefect (~2 s); drained only when the command already imported it
        from prefect.logging.handlers import APILogWorker

        APILogWorker.instance().drain()
    with contextlib.suppress(Exception):
        # slow: prefect (~2 s); drained only when the command already imported it
        from prefect.events.worker import EventsWorker

        EventsWorker.drain_all()


def configured_api_url() -> str | None:
    """PREFECT_API_URL from the environment or, once prefect is imported, from its
    settings context (a profile, a test harness); None when Prefect would go ephemeral."""
    url = os.environ.get("PREFECT_API_URL")
    if not url and "prefect" in sys.modules:
        # slow: prefect (~2 s); read only when the command already imported it
        from prefect.settings import get_current_settings

        url = get_current_settings().api.url
    return url or None


@contextlib.contextmanager
def prefect_api() -> Iterator[str]:
    """A Prefect API for the `with` block; yields its URL.

    When a server is configured (`configured_api_url`), it is used and nothing is started.
    Otherwise a
    temporary server is started (startup timeout PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_
    SECONDS, default 60) and PREFECT_API_URL points at it for this process and its
    children, until the block ends and the server is stopped. Enter it before prefect is
    imported (Prefect reads its settings at import); if it already was, the URL is also
    put into Prefect's settings context. Raises ServerStartError.
    """
    given = configured_api_url()
    if given:
        yield given
        return
    server = TemporaryServer()
    try:
        timeout = float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "60"))
        url = server.start(timeout)
        os.environ["PREFECT_API_URL"] = url
        with contextlib.ExitStack() as stack:
            if "prefect" in sys.modules:
                # slow: prefect (~2 s); updated only when the command already imported it
                from prefect.settings import PREFECT_API_URL, temporary_settings

                stack.enter_context(temporary_settings(updates={PREFECT_API_URL: url}))
            try:
                yield url
            finally:
                _drain_prefect_clients()
    finally:
        os.environ.pop("PREFECT_API_URL", None)
        server.stop()


def main(argv: Sequence[str] | None = None) -> None:
    """The server process: die with the parent, then serve Prefect's API app."""
    parser = argparse.ArgumentParser(prog="python -m flows.api_server")
    parser.add_argument("--parent", type=int, required=True, help="pid of the command")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--death-signal", action="store_true", help="PR_SET_PDEATHSIG too")
    args = parser.parse_args(argv)
    die_with_parent(args.parent, death_signal=args.death_signal)
    import uvicorn  # slow: uvicorn (~0.2 s); only the server process serves, after the check

    uvicorn.run(
        "prefect.server.api.server:create_app",
        factory=True,
        host="127.0.0.1",
        port=args.port,
        log_level="error",
        lifespan="on",
    )


if __name__ == "__main__":  # pragma: no cover - the server process
    main()
