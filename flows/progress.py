"""The one progress display of a `chappie` command: live rows on stderr (rich) that log
lines do not break. Control flow only.

The CLI wraps every command in `display()` (unless `--quiet`); flows and their helpers
open rows with `step(...)` wherever a user waits (ingest files, bars, features and
validation, each training task with its timesteps, evaluation, baselines). Outside a
`display()` (flows called from Python, tests, a Prefect deployment) `step` is a no-op, so
flows never depend on it.

- On an interactive terminal the rows are a rich `Progress` (live, transient). Log lines
  (Prefect's console handler, any `logging.StreamHandler` on stderr, warnings, prints)
  are printed above the rows instead of through them: the display retargets those
  handlers at its own stderr proxy while it is live and restores them when it stops.
  Worker processes, which inherit the terminal, write their stderr into a file whose
  lines are printed the same way (`WorkerOutput`).
- Elsewhere (a pipe, a file, CI) nothing is animated: each finished row becomes one line.
- On both, a finished row leaves one line `✓ what: N unit in T`, so the record of what
  ran stays on screen while the live rows show only what is running.
- `--quiet` (CHAPPIE_QUIET=1, inherited by worker processes): no rows and no lines; only
  results and errors.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

QUIET_VAR = "CHAPPIE_QUIET"


def quiet() -> bool:
    """True under `chappie --quiet` (CHAPPIE_QUIET=1)."""
    return os.environ.get(QUIET_VAR) == "1"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, s = divmod(int(round(seconds)), 60)
    return f"{minutes} min {s:02d} s"


def _amount(x: float) -> str:
    return f"{x:,.0f}" if float(x).is_integer() else f"{x:,.1f}"


def count(n: int, noun: str) -> str:
    """`1 file`, `2 files`: a count for a summary line."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


class Step:
    """One row of the display. `advance`, `update` are thread-safe and cheap; a Step of
    no display (`active` False) ignores them."""

    def __init__(self, display: _Display | None, description: str, total: float | None, unit: str):
        self._display = display
        self.description = description
        self.total = total
        self.unit = unit
        self.completed = 0.0
        self.result: str | None = None  # what the summary line says instead of the count
        self.started = time.monotonic()
        self._task: Any = None
        if display is not None:
            self._task = display.add(self)

    @property
    def active(self) -> bool:
        return self._display is not None

    def advance(self, n: float = 1) -> None:
        self.update(completed=self.completed + n)

    def update(
        self,
        completed: float | None = None,
        total: float | None = None,
        description: str | None = None,
    ) -> None:
        if completed is not None:
            self.completed = completed
        if total is not None:
            self.total = total
        if description is not None:
            self.description = description
        if self._display is not None:
            self._display.refresh(self)

    def close(self, ok: bool = True) -> None:
        """Remove the row; `ok` leaves its one-line summary. Idempotent."""
        d, self._display = self._display, None
        if d is not None:
            d.finish(self, ok)

    def summary(self) -> str:
        took = _duration(time.monotonic() - self.started)
        if self.result is not None:
            return f"✓ {self.description.strip()}: {self.result} in {took}"
        amount = _amount(self.completed)
        if self.total is not None and self.completed != self.total:
            amount += f"/{_amount(self.total)}"
        unit = f" {self.unit}" if self.unit else ""
        return f"✓ {self.description.strip()}: {amount}{unit} in {took}"


class _Display:
    """The rows of one command (see the module docstring)."""

    def __init__(self) -> None:
        # slow: rich (~0.1 s); chappie --help imports the stdlib only
        from rich.console import Console

        self.console = Console(stderr=True, highlight=False, soft_wrap=True)
        self.live = self.console.is_terminal and self.console.is_interactive
        self._lock = threading.RLock()
        self._progress: Any = None
        self._moved: list[tuple[logging.StreamHandler[Any], Any, Any]] = []
        self._orig_stderr = sys.stderr

    # ---- rows
    def add(self, st: Step) -> Any:
        if not self.live:
            return None
        with self._lock:
            if self._progress is None:
                self._start()
            return self._progress.add_task(
                st.description, total=st.total, completed=st.completed, unit=st.unit
            )

    def refresh(self, st: Step) -> None:
        if st._task is not None and self._progress is not None:
            self._progress.update(
                st._task, completed=st.completed, total=st.total, description=st.description
            )

    def finish(self, st: Step, ok: bool) -> None:
        with self._lock:
            if st._task is not None and self._progress is not None:
                self._progress.remove_task(st._task)
            if ok:
                self.console.print(st.summary(), markup=False)

    def note(self, line: str) -> None:
        with self._lock:
            self.console.print(line, markup=False)

    # ---- the live region
    def _start(self) -> None:
        # slow: rich (~0.1 s); chappie --help imports the stdlib only
        from rich.progress import (
            BarColumn,
            Progress,
            ProgressColumn,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.text import Text

        class Amount(ProgressColumn):
            """`completed/total unit` (`completed unit` while the total is unknown)."""

            def render(self, task: Any) -> Text:
                done = _amount(task.completed)
                total = f"/{_amount(task.total)}" if task.total is not None else ""
                return Text(f"{done}{total} {task.fields.get('unit', '')}".rstrip())

        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            Amount(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
            redirect_stdout=sys.stdout.isatty(),  # never move piped results to stderr
            redirect_stderr=True,
        )
        self._progress.start()
        self._retarget_log_handlers()

    def _retarget_log_handlers(self) -> None:
        """Stream handlers that write to the real stderr (set up before the display, e.g.
        Prefect's) write through the display while it is live: their stream becomes the
        display's stderr proxy, and a handler that prints through a rich Console of its
        own (Prefect's console handler: rich unwraps the proxy and would write straight to
        the terminal, through the rows) prints through the display's console instead."""
        proxy = sys.stderr  # rich's FileProxy while the display is live
        if proxy is self._orig_stderr:
            return
        targets = {id(self._orig_stderr), id(sys.__stderr__)}
        loggers = [logging.getLogger()] + [
            lg
            for lg in logging.Logger.manager.loggerDict.values()
            if isinstance(lg, logging.Logger)
        ]
        seen: set[int] = set()
        for h in (h for lg in loggers for h in lg.handlers):
            if id(h) in seen or not isinstance(h, logging.StreamHandler):
                continue
            seen.add(id(h))
            if isinstance(h, logging.FileHandler) or id(h.stream) not in targets:
                continue
            console = getattr(h, "console", None)
            self._moved.append((h, h.stream, console))
            h.setStream(proxy)
            if console is not None:
                h.console = _PlainConsole(self.console)  # type: ignore[attr-defined]

    def stop(self) -> None:
        with self._lock:
            for h, stream, console in reversed(self._moved):
                h.setStream(stream)
                if console is not None:
                    h.console = console  # type: ignore[attr-defined]
            self._moved.clear()
            if self._progress is not None:
                self._progress.stop()
                self._progress = None


class _PlainConsole:
    """What a log handler's `console.print(message, ...)` needs, printing the message as
    plain text (never markup) above the display's rows."""

    def __init__(self, console: Any) -> None:
        self._console = console

    def print(self, message: Any, *args: Any, **kwargs: Any) -> None:
        from rich.text import Text  # slow: rich (~0.1 s); chappie --help imports the stdlib only

        text = message if isinstance(message, Text) else Text(str(message))
        self._console.print(text, soft_wrap=kwargs.get("soft_wrap", True))


_DISPLAY: _Display | None = None


@contextlib.contextmanager
def display() -> Iterator[None]:
    """The command's display for the `with` block (nothing under --quiet; re-entrant)."""
    global _DISPLAY
    if quiet() or _DISPLAY is not None:
        yield
        return
    _DISPLAY = _Display()
    try:
        yield
    finally:
        d, _DISPLAY = _DISPLAY, None
        d.stop()


@contextlib.contextmanager
def step(description: str, total: float | None = None, unit: str = "") -> Iterator[Step]:
    """A row for the `with` block: `description`, `completed/total unit`, elapsed and
    remaining time; on a normal exit it leaves one line `✓ description: N unit in T`.
    A no-op outside `display()`."""
    st = open_step(description, total, unit)
    ok = False
    try:
        yield st
        ok = True
    finally:
        st.close(ok)


def open_step(description: str, total: float | None = None, unit: str = "") -> Step:
    """`step` for rows whose end is not a `with` block: call `Step.close()` yourself."""
    return Step(_DISPLAY, description, total, unit)


def note(line: str) -> None:
    """One permanent line above the rows (stderr), e.g. what a step found; nothing under
    --quiet or outside `display()`."""
    if _DISPLAY is not None:
        _DISPLAY.note(line)


def active() -> bool:
    """True inside a `display()` (a `chappie` command without --quiet)."""
    return _DISPLAY is not None


@contextlib.contextmanager
def polling(fn: Callable[[], None], interval_s: float = 0.5) -> Iterator[None]:
    """Call `fn` every `interval_s` seconds in a daemon thread for the `with` block (and
    once more at its end), e.g. to read workers' progress files. A failing `fn` only
    stops the polling: progress is never a reason to fail a run."""
    if _DISPLAY is None:
        yield
        return
    stop = threading.Event()

    def loop() -> None:
        with contextlib.suppress(Exception):
            while not stop.wait(interval_s):
                fn()

    thread = threading.Thread(target=loop, name="chappie-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
        with contextlib.suppress(Exception):
            fn()


class WorkerOutput:
    """Where worker processes (the training pool) write their stderr while the display is
    live: they inherit the terminal and would write through the rows. Each worker sends
    its stderr to a temporary file (`redirect_stderr`, in its initializer) and `relay`
    prints the file's new complete lines above the rows. Off a live display `path` is
    None and workers keep the command's stderr."""

    def __init__(self) -> None:
        self.path: str | None = None
        self._offset = 0
        self._partial = b""
        self._lock = threading.Lock()
        d = _DISPLAY
        if d is not None and d.live:
            import tempfile  # slow: tempfile (~3 ms, random); only a live display needs it

            fd, self.path = tempfile.mkstemp(prefix="chappie-workers-", suffix=".log")
            os.close(fd)

    def relay(self) -> None:
        if self.path is None:
            return
        with self._lock:
            try:
                with open(self.path, "rb") as fh:
                    fh.seek(self._offset)
                    data = fh.read()
            except OSError:
                return
            self._offset += len(data)
            *lines, self._partial = (self._partial + data).split(b"\n")
        for line in lines:
            note(line.decode("utf-8", "replace").rstrip("\r"))

    def close(self) -> None:
        """Relay what is left and remove the file."""
        if self.path is None:
            return
        self.relay()
        if self._partial:
            note(self._partial.decode("utf-8", "replace"))
            self._partial = b""
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        self.path = None


def redirect_stderr(path: str) -> None:
    """In a worker process: send file descriptor 2 (sys.stderr, logging, C libraries) to
    `path`, appending (`WorkerOutput`)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.dup2(fd, 2)
    finally:
        os.close(fd)
