"""`chappie` subcommands of the registry area (registered by flows/cli.py).

Only the standard library and flows.common at module level (`chappie --help` stays fast);
handlers import their packages when they run, each import with its reason.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote

from flows.common import DEFAULT_CONFIG, load_experiment, resolve_runtime

if TYPE_CHECKING:
    from registry.promotion import PromotionResult, RollbackResult


def latest_evaluation(data_dir: str) -> Path:
    """The newest `reports/*/evaluation.json` under the data folder."""
    found = sorted(
        Path(data_dir, "reports").glob("*/evaluation.json"), key=lambda p: p.stat().st_mtime
    )
    if not found:
        raise FileNotFoundError(
            f"no reports/*/evaluation.json under {data_dir}: run `chappie evaluate` first or pass --evaluation"
        )
    return found[-1]


def _print(result: PromotionResult | RollbackResult) -> None:
    print(json.dumps(result.to_json(), indent=2, sort_keys=True, default=str))


def _no_registry_yet(tracking_uri: str) -> str | None:
    """Where the SQLite registry would be when it does not exist yet (nothing was ever
    registered there), else None. Checked before importing mlflow (seconds) or creating
    the database, so that a rollback with nothing to roll back answers at once."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    raw = unquote(tracking_uri.removeprefix("sqlite:///").split("?", 1)[0])
    if raw in ("", ":memory:") or Path(raw).exists():
        return None
    return raw


def _cmd_promote(args: argparse.Namespace) -> int:
    cfg = load_experiment(args.config)
    rt = resolve_runtime()
    evaluation = Path(args.evaluation) if args.evaluation else latest_evaluation(rt.data_dir)
    spec = cfg.features.spec.model_dump(mode="json")
    if args.no_flow:
        # slow: pydantic, config models (~0.4 s); chappie --help imports the stdlib only
        from registry.promotion import promote

        result = promote(
            evaluation, cfg.registry, rt.tracking_uri, dry_run=args.dry_run, feature_spec=spec
        )
    else:
        # slow: subprocess, threads, urllib.request (~0.1 s); not for chappie --help
        from flows.api_server import prefect_api

        with prefect_api():
            # slow: prefect, mlflow (~5 s); imported once the Prefect API is set
            from flows.promote import promote_flow

            result = promote_flow(
                str(evaluation),
                cfg.registry,
                rt.tracking_uri,
                dry_run=args.dry_run,
                feature_spec=spec,
            )
    if args.dry_run:
        print(f"DRY RUN (nothing changed), evaluation {evaluation}:", file=sys.stderr)
    _print(result)
    return 0


def _cmd_rollback(args: argparse.Namespace) -> int:
    # slow: pydantic, config models (~0.4 s); chappie --help imports the stdlib only
    from registry.promotion import PromotionError, rollback, rollback_plan

    cfg = load_experiment(args.config)
    rt = resolve_runtime()
    missing = _no_registry_yet(rt.tracking_uri)
    if missing is not None:
        raise PromotionError(
            f"nothing to roll back: no model registry at {missing} yet "
            "(`chappie promote` registers a champion first)"
        )
    # the plan first, without Prefect: "nothing to roll back" is known before a server
    # starts, and is never retried (the rollback task's retry is for the tracking server);
    # from a SQLite store it is read without importing mlflow (about 2 s)
    from registry.sqlite_aliases import read_aliases  # slow: sqlite3 (~10 ms); not for --help

    current = read_aliases(rt.tracking_uri, cfg.registry.model_name)
    if current is None:
        plan = rollback(cfg.registry, rt.tracking_uri, dry_run=True, reason=args.reason)
    else:
        plan = rollback_plan(cfg.registry, current, reason=args.reason)
    if args.dry_run:
        print("DRY RUN (nothing changed):", file=sys.stderr)
        _print(plan)
        return 0
    if args.no_flow:
        result = rollback(cfg.registry, rt.tracking_uri, dry_run=args.dry_run, reason=args.reason)
    else:
        # slow: subprocess, threads, urllib.request (~0.1 s); not for chappie --help
        from flows.api_server import prefect_api

        with prefect_api():
            # slow: prefect, mlflow (~5 s); imported once the Prefect API is set
            from flows.promote import rollback_flow

            result = rollback_flow(
                cfg.registry, rt.tracking_uri, dry_run=args.dry_run, reason=args.reason
            )
    _print(result)
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this area's subcommands to the `chappie` parser."""
    p = sub.add_parser(
        "promote", help="register the evaluated best model and move the champion alias"
    )
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"experiment YAML ({DEFAULT_CONFIG})")
    p.add_argument(
        "--evaluation", default=None, help="evaluation.json (default: newest under reports/)"
    )
    p.add_argument("--dry-run", action="store_true", help="show what would happen, change nothing")
    p.add_argument("--no-flow", action="store_true", help="run without Prefect (plain function)")
    p.set_defaults(func=_cmd_promote)

    p = sub.add_parser("rollback", help="point champion back at the previous champion")
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"experiment YAML ({DEFAULT_CONFIG})")
    p.add_argument("--dry-run", action="store_true", help="show what would happen, change nothing")
    p.add_argument("--reason", default="manual rollback", help="recorded on the model versions")
    p.add_argument("--no-flow", action="store_true", help="run without Prefect (plain function)")
    p.set_defaults(func=_cmd_rollback)


def register_audit(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this area's `chappie audit` subcommands."""
