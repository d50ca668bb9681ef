"""The `chappie` command. Control flow only.

`chappie --help` must return in well under 2 seconds: this module and the
`flows/cli_*.py` modules it registers import only the standard library and the flows
modules that import nothing else (common, progress, ui) at import time; every handler
imports what it needs when it runs, each import with its reason (tests/test_layers.py).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from flows import (
    cli_audit_fills,
    cli_audit_market,
    cli_audit_paper,
    cli_features,
    cli_ingest,
    cli_live,
    cli_ops,
    cli_registry,
    cli_training,
)
from flows.common import (
    DEFAULT_CONFIG,
    check_reachable,
    command_session,
    load_experiment,
    resolve_runtime,
)
from flows.progress import QUIET_VAR, display  # standard library only at import
from flows.ui import run_ui

BUSY_EXIT = 75  # EX_TEMPFAIL: another run holds the data folder; try again later
COMMAND_PID_VAR = "CHAPPIE_COMMAND_PID"


def _bind_spawned_child_to_command() -> None:
    """A process the command spawns through multiprocessing (the sweep's pool workers)
    imports the command's main module before anything else (the spawn start method), so
    this runs in it first: bind it to the command now, not seconds later after its Prefect
    and torch imports, so that a command killed while its workers start leaves none
    (`core.lifetime.watch_parent`). Only in direct children of the command."""
    pid = os.environ.get(COMMAND_PID_VAR, "")
    spawned = sys.orig_argv[-1:] == ["--multiprocessing-fork"]  # sys.argv is the parent's here
    if spawned and pid.isdigit() and os.getppid() == int(pid):
        # slow: ctypes, socket (~20 ms); only the command's spawned pool workers need it
        from core.lifetime import watch_parent

        watch_parent(int(pid))


_bind_spawned_child_to_command()


def _prepare_environment(args: argparse.Namespace) -> None:
    """Process-wide settings that must exist before torch or prefect are imported (no
    command handler has imported them yet: handlers import their packages when run)."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # the client side of the same choice: no SDK telemetry, and no first-run notice of it
    # printed through the progress display (set DO_NOT_TRACK=0 to allow it)
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "60")
    os.environ.setdefault("TQDM_MININTERVAL", "1")
    # no library chatter at the default level (Prefect's task-run lines, MLflow's migration
    # lines); --verbose shows them; --quiet shows errors only and no progress display
    # (CHAPPIE_QUIET reaches worker processes); a level set in the environment wins
    level = "INFO" if getattr(args, "verbose", False) else "WARNING"
    if getattr(args, "quiet", False):
        level = "ERROR"
        os.environ[QUIET_VAR] = "1"
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", level)
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", level)
    # no pickle in Prefect's result files, for any task (flows.results guards ours on read)
    os.environ.setdefault("PREFECT_RESULTS_DEFAULT_SERIALIZER", "json")
    from core.settings import load_settings  # slow: pydantic-settings (~0.3 s); not for --help

    # Prefect's own database lives with the data (the command's --data-dir, else
    # CHAPPIE_DATA_DIR or ./data) unless the user points PREFECT_HOME elsewhere.
    settings = load_settings()
    if getattr(args, "data_dir", None):
        settings = settings.model_copy(update={"data_dir": Path(args.data_dir)})
    os.environ.setdefault("PREFECT_HOME", str(settings.layout.prefect_home))
    if args.command == "audit":  # never starts Prefect: no folder where users audit data
        return
    # Prefect cannot create its SQLite database under a missing folder (a fresh data dir).
    with contextlib.suppress(OSError):
        Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)


def _cmd_nightly(args: argparse.Namespace) -> int:
    # the config was validated by `main` before this (no Prefect yet)
    with command_session(resolve_runtime().data_dir, "nightly"):
        # slow: prefect and every stage (~5 s); imported once the Prefect API is set
        from flows.nightly import run_nightly_cli

        return run_nightly_cli(args.config)


def _cmd_ui(args: argparse.Namespace) -> int:
    return run_ui(host=args.host, port=args.port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chappie",
        description="Chappie: raw BitMEX order-book data to a gated PPO policy and a live bot.",
        epilog="Data folder: CHAPPIE_DATA_DIR (default ./data). MLflow: MLFLOW_TRACKING_URI "
        "(default sqlite:///<data>/mlflow.db).",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the traceback of an error (also after the command, or CHAPPIE_DEBUG=1)",
    )
    output = parser.add_mutually_exclusive_group()
    output.add_argument(
        "--verbose",
        action="store_true",
        help="library log lines at INFO (Prefect task runs, MLflow), above the progress "
        "display; default: warnings only",
    )
    output.add_argument(
        "--quiet",
        action="store_true",
        help="no progress display and no warnings: only results and errors",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("nightly", help="run the whole pipeline once as one Prefect flow")
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"experiment YAML ({DEFAULT_CONFIG})")
    p.set_defaults(func=_cmd_nightly)

    cli_ingest.register(sub)
    cli_features.register(sub)
    cli_training.register(sub)
    cli_registry.register(sub)
    cli_live.register(sub)

    p = sub.add_parser("ui", help="open the MLflow UI on 127.0.0.1")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    p.set_defaults(func=_cmd_ui)

    audit = sub.add_parser("audit", help="audit features and backtests on your own data")
    audit_sub = audit.add_subparsers(dest="audit_command", metavar="AUDIT", required=True)
    cli_features.register_audit(audit_sub)
    cli_training.register_audit(audit_sub)
    cli_audit_market.register_audit(audit_sub)
    cli_audit_fills.register_audit(audit_sub)
    cli_audit_paper.register_audit(audit_sub)

    cli_ops.register(sub)
    return parser


USAGE_EXIT = 2  # a usage or config error: the command line or the files it names


def _loaded(module: str, name: str) -> type[BaseException] | None:
    """The exception class `module.name` when that module is already imported, else None:
    an exception of a class whose module was never imported cannot have been raised, and
    importing it here would cost what `chappie` avoids at start-up (mlflow, prefect)."""
    mod = sys.modules.get(module)
    cls = getattr(mod, name, None) if mod is not None else None
    return cls if isinstance(cls, type) and issubclass(cls, BaseException) else None


def _is(exc: BaseException, module: str, name: str) -> bool:
    cls = _loaded(module, name)
    return cls is not None and isinstance(exc, cls)


def _unreachable_server(exc: BaseException) -> bool:
    """A connection to a server (Prefect API, MLflow tracking server) that nobody answers."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:  # the cause chain: wrapped by a client
        seen.add(id(cur))
        if isinstance(cur, ConnectionRefusedError) or _is(cur, "httpx", "ConnectError"):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def user_error(exc: BaseException) -> tuple[int, str] | None:
    """(exit status, one line) for an error the user can fix, None for a bug (which keeps
    its traceback). The line says what is wrong; the messages raised for user errors say
    what to do."""
    if _is(exc, "core.locks", "FolderBusy"):
        return BUSY_EXIT, str(exc)
    if _is(exc, "core.locks", "StoreBusy"):  # another machine publishing: names it
        return BUSY_EXIT, str(exc)
    if _is(exc, "core.locks", "StoreLeaseLost"):  # says what to check
        return 1, str(exc)
    if _is(exc, "flows.common", "ConfigError"):  # missing, not YAML, bad or unknown key
        return USAGE_EXIT, str(exc)
    if _is(exc, "flows.common", "ServerUnreachable"):  # says what to do
        return 1, str(exc)
    if _is(exc, "flows.api_server", "ServerStartError"):
        return USAGE_EXIT, str(exc)
    if _is(exc, "flows.serve", "PrefectServerUnavailable"):
        return USAGE_EXIT, str(exc)
    if _is(exc, "features.depth_check", "DepthError"):  # names features, days, source
        return USAGE_EXIT, str(exc)
    if _is(exc, "registry.promotion", "PromotionError"):  # e.g. nothing to roll back
        return USAGE_EXIT, str(exc)
    if _is(exc, "core.objectstore", "ObjectStoreError"):  # names the object (and sha256s)
        return 1, str(exc)
    if _is(exc, "ingest.download", "DownloadRefused"):  # says to check the URL
        return 1, str(exc)
    if _is(exc, "ingest.download", "DownloadError"):  # retried already: a server outage
        return 1, f"{exc} (try again later)"
    if isinstance(exc, FileNotFoundError | NotADirectoryError | IsADirectoryError):
        if not exc.filename:  # raised by us with a message that says what to do
            return USAGE_EXIT, str(exc)
        return USAGE_EXIT, f"{exc.strerror}: {exc.filename} (check the path)"
    if isinstance(exc, PermissionError):
        return USAGE_EXIT, f"permission denied: {exc.filename or exc} (check the path's owner)"
    if _unreachable_server(exc):
        return 1, (
            f"cannot reach a server: {exc} "
            "(check PREFECT_API_URL / MLFLOW_TRACKING_URI, or unset them to use local ones)"
        )
    return None


GLOBAL_FLAGS = ("--verbose", "--quiet")  # also accepted after the command


def _debug_requested(argv: list[str]) -> tuple[list[str], bool]:
    """`--debug` anywhere before a `--` (a global flag users also type after the
    command), or CHAPPIE_DEBUG=1; returns argv without it, and with `--verbose` and
    `--quiet` moved in front of the command wherever they were typed."""
    end = argv.index("--") if "--" in argv else len(argv)
    head = [a for a in argv[:end] if a != "--debug"]
    debug = len(head) < end or os.environ.get("CHAPPIE_DEBUG") == "1"
    flags = [a for a in head if a in GLOBAL_FLAGS]
    head = [a for a in head if a not in GLOBAL_FLAGS]
    return [*flags, *head, *argv[end:]], debug


def _validate_config(args: argparse.Namespace) -> None:
    """Every command given an experiment `--config` reads and validates it here, before a
    handler starts a Prefect server or a flow (seconds), so a bad file fails at once.
    Raises ConfigError (ConfigNotFound when missing)."""
    path = getattr(args, "config", None)
    if path is not None:
        load_experiment(path)


# commands that run Prefect flows (against PREFECT_API_URL when set) and that talk to the
# MLflow tracking server (MLFLOW_TRACKING_URI when set)
USES_PREFECT = frozenset(
    {"nightly", "ingest", "features", "train", "evaluate", "promote", "rollback"}
)
USES_MLFLOW = frozenset({"nightly", "train", "evaluate", "promote", "rollback", "status"})


def _check_servers(args: argparse.Namespace) -> None:
    """A configured server that does not answer stops the command before it starts.
    Raises flows.common.ServerUnreachable."""
    no_flow = getattr(args, "no_flow", False)
    prefect_url = os.environ.get("PREFECT_API_URL")
    if prefect_url and args.command in USES_PREFECT and not no_flow:
        check_reachable(prefect_url, "Prefect API", "PREFECT_API_URL")
    mlflow_url = os.environ.get("MLFLOW_TRACKING_URI")
    if mlflow_url and args.command in USES_MLFLOW:
        check_reachable(mlflow_url, "MLflow tracking server", "MLFLOW_TRACKING_URI")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one `chappie` command; returns its exit status.

    One error handler for every command: a user error (`user_error`: a missing or invalid
    config, a bad path, nothing to roll back, an unreachable server, a refused download)
    prints one line `chappie CMD: error: ...` on stderr and exits non-zero (2 for usage and
    config errors, BUSY_EXIT when another run holds the data folder, 1 otherwise); with
    `--debug` (or CHAPPIE_DEBUG=1) it re-raises, showing the traceback. Anything else is a
    bug and keeps its traceback."""
    args_list, debug = _debug_requested(list(sys.argv[1:] if argv is None else argv))
    parser = build_parser()
    args = parser.parse_args(args_list)
    args.debug = debug
    _prepare_environment(args)
    os.environ[COMMAND_PID_VAR] = str(os.getpid())
    command = " ".join(c for c in (args.command, getattr(args, "audit_command", None)) if c)
    try:
        _validate_config(args)
        _check_servers(args)
        with display():  # one live progress display for the whole command (not --quiet)
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        known = user_error(exc)
        if known is None or debug:
            raise
        status, message = known
        line = " ".join(message.split())  # one line, whatever the message held
        prefix = "" if status == BUSY_EXIT else "error: "
        print(f"chappie {command}: {prefix}{line}", file=sys.stderr)
        if status != BUSY_EXIT:
            print("(run again with --debug for the traceback)", file=sys.stderr)
        return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
