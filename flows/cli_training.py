"""`chappie` subcommands of the training area (registered by flows/cli.py).

Only the standard library and flows.common at module level (`chappie --help` stays fast);
handlers import their packages when they run, each import with its reason.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from flows.common import (
    DEFAULT_CONFIG,
    command_session,
    data_folder_lock,
    load_experiment,
    resolve_runtime,
)


def _cmd_train(args: argparse.Namespace) -> int:
    cfg = load_experiment(args.config)
    rt = resolve_runtime()
    # slow: training.candidates pulls polars and numpy (~0.5 s); not for chappie --help
    from training.candidates import check_instrument, open_catalog

    spec_hash = cfg.features.spec.spec_hash
    # the folder's lock first (a features run may be building the slices), then, before
    # Prefect starts: slices not built yet (here, or on the store when `storage:` is set
    # and this folder has none), or built under another contract
    with data_folder_lock(rt.data_dir, "train"):
        try:
            catalog = open_catalog(rt.layout, spec_hash, cfg.storage)
        except FileNotFoundError as exc:
            where = f"under {rt.layout.slices(spec_hash)}"
            if cfg.storage is not None and exc.filename is None:  # the store had none either
                where += f" nor on the store ({exc})"
            raise FileNotFoundError(
                f"no slices of this config's features {where}: "
                f"build them first (`chappie features --config {args.config}`)"
            ) from exc
        check_instrument(catalog, cfg.ingest.instrument)
        with command_session(rt.data_dir, "train"):
            # slow: prefect, torch's planning side (~5 s); imported once the Prefect API is set
            from flows.train import train_flow

            out = train_flow(cfg, rt.data_dir, rt.tracking_uri)
    print(f"sweep {out.sweep_run_id}: {out.n_ok}/{len(out.tasks)} tasks finished")
    for name in out.failed:
        print(f"FAILED: {name}", file=sys.stderr)
    print(f"next: chappie evaluate --config {args.config} --sweep {out.sweep_run_id}")
    return 1 if out.failed else 0


def latest_sweep(reports: Path) -> str:
    """The sweep run id of the newest reports/<id>/sweep.json."""
    found = sorted(reports.glob("*/sweep.json"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"no sweep under {reports}: run `chappie train` first")
    return found[-1].parent.name


def _cmd_evaluate(args: argparse.Namespace) -> int:
    cfg = load_experiment(args.config)
    rt = resolve_runtime()
    sweep = args.sweep or latest_sweep(rt.layout.root / "reports")
    with command_session(rt.data_dir, "evaluate"):
        # slow: prefect, mlflow (~5 s); imported once the Prefect API is set
        from flows.evaluate import evaluate_flow

        ev = evaluate_flow(cfg, rt.data_dir, rt.tracking_uri, sweep)
    for c in ev.candidates:
        t = c.test_totals
        pnl, trades = (t.pnl_plus_fees, t.trades) if t is not None else (0.0, 0)
        print(f"{c.candidate_id:<28} {c.decision:<8} pnl+fees {pnl:+.6f} trades {trades}")
        for reason in c.reasons:
            print(f"    - {reason}")
        sheet = (c.report or {}).get("tearsheet.html")
        if sheet:
            print(f"    tear sheet: {sheet}")
    o = ev.overfitting
    pbo, dsr, n = (o.pbo, o.dsr, o.n_trials) if o is not None else (None, None, None)
    print(f"PBO {pbo}  DSR {dsr}  trials {n}")
    print(f"best: {ev.best}  challenger: {ev.challenger}")
    print(f"written: {rt.layout.reports(sweep) / 'evaluation.json'}")
    return 0


def _cmd_audit_overfitting(args: argparse.Namespace) -> int:
    # slow: numpy, polars (~1.8 s); chappie --help imports the stdlib only
    from training.audit import audit_overfitting, render_audit

    rt = resolve_runtime()
    audit = audit_overfitting(rt.layout.reports(args.run_id))
    print(json.dumps(audit.to_json(), indent=2) if args.json else render_audit(audit))
    return 0 if audit.agree else 1


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this area's subcommands to the `chappie` parser."""
    p = sub.add_parser("train", help="train the PPO sweep (trials x seeds x timesteps x folds)")
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"experiment YAML ({DEFAULT_CONFIG})")
    p.set_defaults(func=_cmd_train)
    p = sub.add_parser("evaluate", help="walk-forward backtests, gates, PBO/DSR of a sweep")
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"experiment YAML ({DEFAULT_CONFIG})")
    p.add_argument(
        "--sweep", default=None, metavar="RUN_ID", help="sweep run id (default: the latest)"
    )
    p.set_defaults(func=_cmd_evaluate)


def register_audit(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this area's `chappie audit` subcommands."""
    p = sub.add_parser(
        "overfitting", help="recompute PBO and DSR of a sweep from its saved backtests"
    )
    p.add_argument("run_id", metavar="RUN_ID", help="the sweep's MLflow run id")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_audit_overfitting)
