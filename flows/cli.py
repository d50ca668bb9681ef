"""The `chappie` command. Control flow only.

`chappie --help` must return in well under 2 seconds: this module and the
`flows/cli_*.py` modules it registers import only argparse and the standard library
at import time; every handler imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

DEFAULT_CONFIG = "conf/default.yaml"
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
        from core.lifetime import watch_parent

        watch_parent(int(pid))


_bind_spawned_child_to_command()


def _prepare_environment(args: argparse.Namespace) -> None:
    """Process-wide settings that must exist before torch or prefect are imported (no
    command handler has imported them yet: handlers import their packages when run)."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "60")
    os.environ.setdefault("TQDM_MININTERVAL", "1")
    # no pickle in Prefect's result files, for any task (flows.results guards ours on read)
    os.environ.setdefault("PREFECT_RESULTS_DEFAULT_SERIALIZER", "json")
    from core.settings import load_settings

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
    from flows.common import command_session, resolve_runtime

    with command_session(resolve_runtime().data_dir, "nightly"):
        from flows.nightly import run_nightly_cli

        return run_nightly_cli(args.config)


def _cmd_ui(args: argparse.Namespace) -> int:
    from flows.ui import run_ui

    return run_ui(host=args.host, port=args.port)


def build_parser() -> argparse.ArgumentParser:
    from flows import (
        cli_audit_fills,
        cli_audit_market,
        cli_features,
        cli_ingest,
        cli_live,
        cli_ops,
        cli_registry,
        cli_training,
    )

    parser = argparse.ArgumentParser(
        prog="chappie",
        description="Chappie: raw BitMEX order-book data to a gated PPO policy and a live bot.",
        epilog="Data folder: CHAPPIE_DATA_DIR (default ./data). MLflow: MLFLOW_TRACKING_URI "
        "(default sqlite:///<data>/mlflow.db).",
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

    cli_ops.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one `chappie` command; returns its exit status (BUSY_EXIT when another run
    holds the data folder, with one line naming it)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _prepare_environment(args)
    os.environ[COMMAND_PID_VAR] = str(os.getpid())
    from core.locks import FolderBusy
    from flows.api_server import ServerStartError

    try:
        return int(args.func(args) or 0)
    except FolderBusy as exc:
        print(f"chappie {args.command}: {exc}", file=sys.stderr)
        return BUSY_EXIT
    except ServerStartError as exc:
        print(f"chappie {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
