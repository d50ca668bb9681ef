"""`chappie` subcommands of the ops area (registered by flows/cli.py): `serve`, `status`.

Only the standard library and flows.common at module level (`chappie --help` stays fast);
handlers import their packages when they run, each import with its reason.
"""

from __future__ import annotations

import argparse

from flows.common import DEFAULT_CONFIG

DEFAULT_CRON = "0 2 * * *"  # mirrors flows.serve.DEFAULT_CRON (not imported: keeps --help light)


def _cmd_serve(args: argparse.Namespace) -> int:
    # slow: prefect (~2 s); chappie --help imports the stdlib only
    from flows.serve import run_serve_cli

    return run_serve_cli(args.config, args.cron)


def _cmd_status(args: argparse.Namespace) -> int:
    # slow: config models, numpy (~0.4 s); chappie --help imports the stdlib only
    from flows.status import run_status_cli

    return run_status_cli(as_json=args.json, config_path=args.config)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this area's subcommands to the `chappie` parser."""
    p = sub.add_parser(
        "serve",
        help="serve the nightly flow on a cron schedule against a Prefect server",
        description="Register the nightly deployment with the Prefect server at PREFECT_API_URL "
        "and run its scheduled runs in this process (Ctrl-C stops). Start a local server "
        "with `infra/local-stack.sh start`.",
    )
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"experiment YAML ({DEFAULT_CONFIG})")
    p.add_argument(
        "--cron", default=DEFAULT_CRON, help=f"cron expression in UTC (default {DEFAULT_CRON!r})"
    )
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser(
        "status",
        help="data inventory, latest slices, champion/challenger and the last nightly",
    )
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    p.add_argument(
        "--config", default=None, help="experiment YAML naming the registered model (default names)"
    )
    p.set_defaults(func=_cmd_status)


def register_audit(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this area's `chappie audit` subcommands."""
