"""The command's progress display (flows.progress) and `--quiet` / `--verbose`.

In-process tests drive the display on a captured stderr that rich treats as an
interactive terminal (TTY_COMPATIBLE / TTY_INTERACTIVE); the slow tests run `chappie
ingest` as a user types it, on a pseudo-terminal and with --quiet."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import pty
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows import progress
from flows.cli import _debug_requested, build_parser

REPO = Path(__file__).resolve().parents[1]
CHAPPIE = Path(sys.executable).with_name("chappie")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


TOKEN = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])|([\r\n])|([^\x1b\r\n]+)")


def _lines(text: str) -> list[str]:
    """The lines a terminal shows after `text`: carriage return, newline, erase line
    (ESC[2K, ESC[K) and cursor up (ESC[nA) applied, other codes ignored."""
    lines, col = [""], 0
    for m in TOKEN.finditer(text.replace("\r\n", "\n")):
        args, cmd, ctl, txt = m.groups()
        if txt:
            cur = lines[-1]
            lines[-1] = cur[:col] + txt + cur[col + len(txt) :]
            col += len(txt)
        elif ctl == "\r":
            col = 0
        elif ctl == "\n":
            lines.append("")
            col = 0
        elif cmd == "K":
            lines[-1] = "" if args == "2" else lines[-1][:col]
        elif cmd == "A":
            for _ in range(int(args or 1)):
                if len(lines) > 1:
                    lines.pop()
    return [ln.rstrip() for ln in lines]


@pytest.fixture()
def terminal(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Terminal]:
    """sys.stderr as an interactive terminal for the test body (set here, inside the body's
    capture, not in fixture setup: pytest re-installs its own stderr for the call)."""
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    monkeypatch.setenv("TTY_INTERACTIVE", "1")
    monkeypatch.delenv(progress.QUIET_VAR, raising=False)
    yield _Terminal()


@contextlib.contextmanager
def stderr_to(out: io.StringIO) -> Iterator[io.StringIO]:
    saved, sys.stderr = sys.stderr, out
    try:
        yield out
    finally:
        sys.stderr = saved


def test_log_line_during_live_rows_prints_whole_above_them(terminal: _Terminal) -> None:
    logger = logging.getLogger("chappie-test-progress")
    handler = logging.StreamHandler(terminal)  # set up before the display, like Prefect's
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with stderr_to(terminal), progress.display():
            with progress.step("work", 3, "items") as st:
                st.advance()
                time.sleep(0.15)  # a refresh of the live rows
                logger.warning("a warning in the middle of the work")
                st.advance(2)
                time.sleep(0.15)
            assert handler.stream is not terminal  # retargeted while live
        assert handler.stream is terminal  # restored
    finally:
        logger.removeHandler(handler)
    lines = _lines(terminal.getvalue())
    assert "a warning in the middle of the work" in lines  # a line of its own, not mixed in
    done = [ln for ln in lines if ln.startswith("✓ work: 3 items in ")]
    assert len(done) == 1, lines
    assert "work" in ANSI.sub("", terminal.getvalue()).split("1/3 items")[0]  # a live row drawn


def test_prefect_console_handler_prints_above_the_rows_not_through_them(
    terminal: _Terminal,
) -> None:
    """Prefect's handler prints through a rich Console of its own, which would unwrap the
    display's stderr proxy and write straight through the rows."""
    from prefect.logging.handlers import PrefectConsoleHandler

    logger = logging.getLogger("chappie-test-progress-prefect")
    handler = PrefectConsoleHandler(stream=terminal)
    own_console = handler.console
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with stderr_to(terminal), progress.display(), progress.step("work", 2, "items") as st:
            st.advance()
            time.sleep(0.15)  # the row is drawn
            logger.warning("Task run 'x' - [bold]not markup[/bold]")
            time.sleep(0.15)
            st.advance()
        assert handler.console is own_console and handler.stream is terminal  # restored
    finally:
        logger.removeHandler(handler)
    lines = _lines(terminal.getvalue())
    assert "Task run 'x' - [bold]not markup[/bold]" in lines, lines  # whole, on its own line
    assert [ln for ln in lines if ln.startswith("✓ work")] == [lines[-2]]  # rows erased after


def test_not_a_terminal_gets_one_line_per_finished_step(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)
    monkeypatch.delenv("TTY_INTERACTIVE", raising=False)
    monkeypatch.delenv(progress.QUIET_VAR, raising=False)
    out = io.StringIO()
    with stderr_to(out), progress.display():
        with progress.step("bars XBTUSD") as st:
            st.result = "2 event days sampled"
        with pytest.raises(ValueError), progress.step("validation", 7, "slices"):
            raise ValueError("a failed step leaves no ✓ line")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("✓ bars XBTUSD: 2 event days sampled in "), lines
    assert "\x1b" not in out.getvalue()  # no animation codes in a pipe or a log file


def test_quiet_and_outside_a_command_show_nothing(
    monkeypatch: pytest.MonkeyPatch, terminal: _Terminal
) -> None:
    with (
        stderr_to(terminal),
        progress.step("outside any display", 2) as st,
    ):  # a flow called from Python
        st.advance()
        assert not st.active
    monkeypatch.setenv(progress.QUIET_VAR, "1")
    with stderr_to(terminal), progress.display(), progress.step("quiet", 2) as st:
        st.advance(2)
        progress.note("a note")
        assert not progress.active()
    assert terminal.getvalue() == ""


def test_polling_reads_until_the_block_ends(terminal: _Terminal) -> None:
    seen: list[float] = []
    poll = progress.polling(lambda: seen.append(time.monotonic()), 0.05)
    with stderr_to(terminal), progress.display(), poll:
        time.sleep(0.3)
    assert len(seen) >= 3  # polled while the block ran, and once more at its end
    n = len(seen)
    time.sleep(0.15)
    assert len(seen) == n  # stopped with the block


def test_quiet_and_verbose_are_global_flags_accepted_after_the_command() -> None:
    argv, debug = _debug_requested(["nightly", "--config", "x.yaml", "--quiet", "--debug"])
    assert argv == ["--quiet", "nightly", "--config", "x.yaml"] and debug
    args = build_parser().parse_args(argv)
    assert args.quiet and not args.verbose
    with pytest.raises(SystemExit):  # one or the other
        build_parser().parse_args(["--quiet", "--verbose", "nightly"])


def _chappie_env(tmp_path: Path) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "CHAPPIE_"))
    }
    env.pop("DO_NOT_TRACK", None)  # the command sets it itself
    env.pop("TQDM_DISABLE", None)
    env.update(CHAPPIE_DATA_DIR=str(tmp_path / "data"), PREFECT_HOME=str(tmp_path / "prefect"))
    return env


@pytest.mark.slow
def test_ingest_on_a_terminal_shows_steps_without_library_chatter(tmp_path: Path) -> None:
    """A real pseudo-terminal: the live display runs, each step leaves its line, and
    Prefect's first-run telemetry notice and INFO lines do not appear."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [str(CHAPPIE), "ingest", "synthetic", "--config", "conf/tiny.yaml"],
        cwd=REPO,
        env={**_chappie_env(tmp_path), "COLUMNS": "120"},
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # the command ended: EIO on Linux
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=120) == 0
    text = b"".join(chunks).decode("utf-8", "replace")
    lines = _lines(text)
    assert any(ln.startswith("✓ ingest synthetic: 2 days generated in ") for ln in lines), lines
    assert any(ln.startswith("✓ publish events: 2 days in ") for ln in lines), lines
    assert "ingest synthetic XBTUSD" in lines  # the result
    assert "Prefect collects anonymous usage data" not in text
    assert "| INFO" not in text and "Traceback" not in text


@pytest.mark.slow
def test_quiet_ingest_prints_only_its_result(tmp_path: Path) -> None:
    out = subprocess.run(
        [str(CHAPPIE), "ingest", "synthetic", "--config", "conf/tiny.yaml", "--quiet"],
        cwd=REPO,
        env=_chappie_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    assert out.stdout.splitlines()[0] == "ingest synthetic XBTUSD"


def test_quiet_sets_libraries_to_errors_for_the_command_and_its_workers() -> None:
    code = (
        "import os, sys\n"
        "from flows.cli import build_parser, _prepare_environment\n"
        "_prepare_environment(build_parser().parse_args(sys.argv[1:]))\n"
        "print(os.environ['PREFECT_LOGGING_LEVEL'], os.environ['MLFLOW_LOGGING_LEVEL'],\n"
        "      os.environ.get('CHAPPIE_QUIET'), os.environ.get('DO_NOT_TRACK'))\n"
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PREFECT_LOGGING_LEVEL", "MLFLOW_LOGGING_LEVEL", "CHAPPIE_QUIET")
        and k != "DO_NOT_TRACK"
    }
    out = subprocess.run(
        [sys.executable, "-c", code, "--quiet", "audit", "slices"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    assert out.stdout.split() == ["ERROR", "ERROR", "1", "1"]


def test_worker_stderr_is_relayed_above_the_rows(terminal: _Terminal) -> None:
    """Pool workers inherit the terminal; on a live display they write their stderr into a
    file whose lines the command prints above the rows."""
    assert progress.WorkerOutput().path is None  # no display: workers keep stderr
    worker = (
        "import os, sys\n"
        "from flows.progress import redirect_stderr\n"
        "redirect_stderr(sys.argv[1])\n"
        "print('a warning from a worker', file=sys.stderr, flush=True)\n"
        "os.write(2, b'raw bytes from C code\\npartial')\n"
    )
    with stderr_to(terminal), progress.display(), progress.step("train", 2, "tasks") as st:
        out = progress.WorkerOutput()
        assert out.path is not None
        subprocess.run([sys.executable, "-c", worker, out.path], cwd=REPO, check=True)
        out.relay()
        st.advance(2)
        path = Path(out.path)
        out.close()
        assert not path.exists()
    lines = _lines(terminal.getvalue())
    for line in ("a warning from a worker", "raw bytes from C code", "partial"):
        assert line in lines, lines
