"""`chappie` subcommands of the features area (registered by flows/cli.py).

Only the standard library and flows.common at module level (`chappie --help` stays fast);
handlers import their packages when they run, each import with its reason.

    chappie features [--config PATH] [--data-dir DIR] [--json]
    chappie audit parity EVENTS... [--config PATH] [--bound 1e-12] [--json]   (default spec: FeatureSpec())
    chappie audit lookahead EVENTS... [--config PATH] [--cuts 12] [--json]
    chappie audit slices [--data-dir DIR] [--json]   (re-hash every published slice)

EVENTS: a data folder, an events/<symbol> folder or day partition folders.
Exit status: 0 ok; 1 the audit found a problem (beyond the bound / sees the future) or a
slice failed validation; 2 bad arguments or input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from flows.common import (
    DEFAULT_CONFIG,
    command_session,
    data_folder_lock,
    load_experiment,
    resolve_runtime,
)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this area's subcommands to the `chappie` parser."""
    p = sub.add_parser(
        "features",
        help="build validated walk-forward feature slices and frozen stats from events",
        description="Run the build-features flow: events -> bars -> features -> validated "
        "walk-forward slices (+ manifests, frozen stats, folds.json) under <data>/slices.",
    )
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"experiment YAML ({DEFAULT_CONFIG})")
    p.add_argument(
        "--data-dir", default=None, help="data folder (default CHAPPIE_DATA_DIR or ./data)"
    )
    p.add_argument("--json", action="store_true", help="print folds.json as one JSON object")
    p.set_defaults(func=_cmd_features)


def register_audit(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this area's `chappie audit` subcommands."""
    for name, help_text in (
        ("parity", "batch (polars) vs streaming (live path) features on the same events"),
        ("lookahead", "truncate events at many bar closes: no feature may see the future"),
    ):
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument(
            "events",
            nargs="+",
            metavar="EVENTS",
            help="data folder, events/<symbol> or day folders",
        )
        p.add_argument(
            "--config",
            default=None,
            help="experiment YAML whose features.spec is audited (default: the default "
            "FeatureSpec, which conf/default.yaml uses too)",
        )
        p.add_argument("--json", action="store_true", help="print the report as one JSON object")
        if name == "parity":
            p.add_argument(
                "--bound", type=float, default=1e-12, help="max relative difference (1e-12)"
            )
            p.set_defaults(func=_cmd_parity)
        else:
            p.add_argument("--cuts", type=int, default=12, help="truncation points (12)")
            p.set_defaults(func=_cmd_lookahead)
    p = sub.add_parser(
        "slices",
        help="re-hash every published slice's segments against its manifest",
        description="Check every slice under <data>/slices: each segment's sha256 against "
        "the manifests that list it (each segment hashed once) and each slice digest. "
        "Lists segments no manifest uses (left by a failed run; safe to delete).",
    )
    p.add_argument(
        "--data-dir", default=None, help="data folder (default CHAPPIE_DATA_DIR or ./data)"
    )
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.set_defaults(func=_cmd_audit_slices)


def _fail(cmd: str, msg: str) -> int:
    print(f"chappie {cmd}: {msg}", file=sys.stderr)
    return 2


def _spec(path: str | None) -> Any:
    if path is None:
        # slow: pydantic (~0.2 s); chappie --help imports the stdlib only
        from core.config.features import FeatureSpec

        return FeatureSpec()
    return load_experiment(path).features.spec


def _refuse_events(cfg: Any, data_dir: str) -> int | None:
    """Exit status and one line when the events cannot make this spec's slices (none
    ingested, or a book stream shallower than the spec reads), checked before Prefect
    starts; None when they can."""
    # slow: polars (~0.5 s); a bad config is reported before it
    from core.paths import DataLayout
    from features.depth_check import DepthError, check_declared_depth
    from ingest.events import list_event_days

    try:
        events_root = data_dir
        if cfg.storage is not None:  # the store's published days (their manifests)
            # slow: ingest.run (polars, numba kernels, boto3); only with an object store
            from ingest.run import events_view

            events_root = str(events_view(cfg.storage, cfg.ingest.symbol).root)
        events = DataLayout(Path(events_root))
        if not list_event_days(events, cfg.ingest.symbol):
            return _fail(
                "features",
                f"no events for {cfg.ingest.symbol} under {events.events_symbol(cfg.ingest.symbol)}: "
                "ingest them first (`chappie ingest SOURCE PATH...`)",
            )
        check_declared_depth(events_root, cfg.ingest.symbol, cfg.features.spec)
    except DepthError as exc:
        return _fail("features", str(exc))
    return None


def _cmd_features(args: argparse.Namespace) -> int:
    try:
        cfg = load_experiment(args.config)
    except (OSError, ValueError) as exc:
        return _fail("features", str(exc))
    rt = resolve_runtime(args.data_dir)
    # the folder's lock first: a run busy ingesting is named, not its events half-written
    with data_folder_lock(rt.data_dir, "features"):
        refused = _refuse_events(cfg, rt.data_dir)
        if refused is not None:
            return refused
        # slow: great_expectations (~1 s); only once there is something to validate
        from expectations.runner import SliceValidationError

        try:
            with command_session(rt.data_dir, "features"):
                # slow: prefect (~2 s); imported once the Prefect API is set
                from flows.features import build_features_flow

                index = build_features_flow(
                    cfg.ingest.symbol, cfg.features, rt.data_dir, storage=cfg.storage
                )
        except SliceValidationError as exc:
            print(f"chappie features: {exc}", file=sys.stderr)
            return 1
        except (OSError, ValueError) as exc:
            return _fail("features", f"{type(exc).__name__}: {exc}")
    if args.json:
        print(json.dumps(index, sort_keys=True))
        return 0
    print(f"features {cfg.ingest.symbol} spec {index['spec_hash'][:12]}")
    for f in index["folds"]:
        val = f" validation {f['validation']}" if f["validation"] else ""
        print(f"  fold {f['fold']}: train {f['train']}{val} test {f['test']} stats {f['stats_id']}")
    if index["stress"]:
        print(f"  stress: {', '.join(index['stress'])} (stats {index['stress_stats_id']})")
    print(f"  slices: {rt.layout.slices(index['spec_hash'])}")
    if (rt.layout.gx / "index.html").exists():
        print(f"  validation (Data Docs): {rt.layout.gx / 'index.html'}")
    return 0


def _load(args: argparse.Namespace, cmd: str) -> tuple[Any, Any, Any] | int:
    # slow: polars (~1 s); chappie --help imports the stdlib only
    from features.audit import AuditInputError, load_events

    try:
        spec = _spec(args.config)
        book, trades, _ = load_events(args.events)
    except (AuditInputError, OSError, ValueError) as exc:
        return _fail(f"audit {cmd}", str(exc))
    return spec, book, trades


def _cmd_parity(args: argparse.Namespace) -> int:
    # slow: polars (~1 s); chappie --help imports the stdlib only
    from features.audit import parity_report

    loaded = _load(args, "parity")
    if isinstance(loaded, int):
        return loaded
    spec, book, trades = loaded
    rep = parity_report(book, trades, spec, args.bound)
    if args.json:
        print(json.dumps(rep.model_dump(mode="json"), sort_keys=True))
    else:
        print(
            f"parity batch vs streaming: spec {rep.spec_hash[:12]}, {rep.bars} bars, "
            f"bound {rep.bound:g} (relative)"
        )
        width = max(len(n) for n in rep.features)
        for name, f in rep.features.items():
            print(
                f"  {name:<{width}}  max_abs {f.max_abs:.3g}  max_rel {f.max_rel:.3g}  not bit-equal {f.not_bit_equal}"
            )
        for p in rep.problems:
            print(f"  PROBLEM: {p}")
        print("OK: bit for bit" if rep.bit_equal and rep.ok else ("OK" if rep.ok else "FAILED"))
    return 0 if rep.ok else 1


def _cmd_lookahead(args: argparse.Namespace) -> int:
    # slow: polars (~1 s); chappie --help imports the stdlib only
    from features.audit import lookahead_report

    loaded = _load(args, "lookahead")
    if isinstance(loaded, int):
        return loaded
    spec, book, trades = loaded
    if args.cuts < 1:
        return _fail("audit lookahead", "--cuts must be at least 1")
    rep = lookahead_report(book, trades, spec, args.cuts)
    if args.json:
        print(json.dumps(rep.model_dump(mode="json"), sort_keys=True))
    else:
        print(
            f"look-ahead: spec {rep.spec_hash[:12]}, {rep.bars} bars, events truncated "
            f"at {len(rep.cuts)} bar closes"
        )
        for name, n in rep.features.items():
            print(f"  {name}: {'SEES THE FUTURE on ' + str(n) + ' rows' if n else 'ok'}")
        print("OK: no feature sees the future" if rep.ok else f"FAILED: {rep.sees_future}")
    return 0 if rep.ok else 1


def _cmd_audit_slices(args: argparse.Namespace) -> int:
    # slow: polars, pyarrow (~0.7 s); chappie --help imports the stdlib only
    from features.store import audit_store

    root = resolve_runtime(args.data_dir).layout.slices_root
    folders = sorted(p for p in root.glob("*") if p.is_dir()) if root.is_dir() else []
    if not folders:
        return _fail("audit slices", f"no published slices under {root}")
    reports = [audit_store(f) for f in folders]
    ok = all(r.ok for r in reports)
    if args.json:
        folders_json = [r.model_dump(mode="json") for r in reports]
        print(json.dumps({"ok": ok, "folders": folders_json}, sort_keys=True))
        return 0 if ok else 1
    for r in reports:
        bad = {k: v for k, v in r.slices.items() if v}
        print(f"{r.folder}: {len(r.slices)} slices, {r.segments} segments hashed")
        for sid, problems in bad.items():
            for p in problems:
                print(f"  {sid}: {p}")
        if r.orphans:
            print(f"  {len(r.orphans)} segment(s) no slice uses (safe to delete)")
    print("OK: every slice holds the bytes its manifest names" if ok else "FAILED")
    return 0 if ok else 1
