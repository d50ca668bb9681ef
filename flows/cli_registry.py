"""`chappie` subcommands of the registry area (registered by flows/cli.py).

Import only argparse at module level; handlers import their packages when they run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DEFAULT_CONFIG = "conf/default.yaml"


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


def _print(result: dict) -> None:
    print(json.dumps(result, indent=2, sort_keys=True, default=str))


def _clean_errors(handler):  # noqa: ANN001, ANN202 - argparse handler decorator
    """Known user errors (missing files, inconsistent evaluation, nothing to roll back)
    print one line and exit 2 instead of a traceback."""

    def run(args: argparse.Namespace) -> int:
        from registry.promotion import PromotionError

        try:
            return int(handler(args))
        except (FileNotFoundError, PromotionError) as exc:
            print(f"chappie {args.command}: error: {exc}", file=sys.stderr)
            return 2

    return run


@_clean_errors
def _cmd_promote(args: argparse.Namespace) -> int:
    from flows.common import load_experiment, resolve_runtime

    cfg = load_experiment(args.config)
    rt = resolve_runtime()
    evaluation = Path(args.evaluation) if args.evaluation else latest_evaluation(rt.data_dir)
    spec = cfg.features.spec.model_dump(mode="json")
    if args.no_flow:
        from registry.promotion import promote

        result = promote(
            evaluation, cfg.registry, rt.tracking_uri, dry_run=args.dry_run, feature_spec=spec
        )
    else:
        from flows.api_server import prefect_api

        with prefect_api():
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


@_clean_errors
def _cmd_rollback(args: argparse.Namespace) -> int:
    from flows.common import load_experiment, resolve_runtime

    cfg = load_experiment(args.config)
    rt = resolve_runtime()
    if args.no_flow:
        from registry.promotion import rollback

        result = rollback(cfg.registry, rt.tracking_uri, dry_run=args.dry_run, reason=args.reason)
    else:
        from flows.api_server import prefect_api

        with prefect_api():
            from flows.promote import rollback_flow

            result = rollback_flow(
                cfg.registry, rt.tracking_uri, dry_run=args.dry_run, reason=args.reason
            )
    if args.dry_run:
        print("DRY RUN (nothing changed):", file=sys.stderr)
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
