"""`chappie audit market`: the statistics that matter to a maker, on any event data.

Only the standard library and flows.common at module level (`chappie --help` stays fast);
the handler imports its packages when it runs, each import with its reason.

    chappie audit market EVENTS... [--config YAML] [--feature NAME] [--json]
    chappie audit market --synthetic YAML [--feature NAME] [--json]

EVENTS: a data folder, an events/<symbol> folder or day partition folders (real or
synthetic). `--synthetic` generates the YAML's synthetic market in memory instead (no
files). The planted edge of a synthetic market is known by construction: `--config`
names the experiment YAML the partitions were ingested from (its market fingerprint
must match the partitions'), `--synthetic` knows it. `--feature` is the feature whose
correlation with the forward mid move is reported (default: the planted edge's, else
imbalance_l1). Exit status: 0 ok; 2 bad arguments or input.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from flows.common import load_experiment

HELP = "maker-relevant market statistics: queues, spread, message mix, sweeps, markouts"


def register_audit(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `chappie audit market`."""
    p = sub.add_parser("market", help=HELP, description=HELP + " (features.market_audit).")
    p.add_argument(
        "events", nargs="*", metavar="EVENTS", help="data folder, events/<symbol> or day folders"
    )
    p.add_argument(
        "--config",
        default=None,
        help="experiment YAML the (synthetic) partitions were ingested from: shows the "
        "planted edge",
    )
    p.add_argument(
        "--synthetic",
        default=None,
        metavar="YAML",
        help="audit the synthetic market of this experiment YAML, generated in memory",
    )
    p.add_argument("--feature", default=None, help="feature for the edge correlation")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.set_defaults(func=_cmd_market)


def _fail(msg: str) -> int:
    print(f"chappie audit market: {msg}", file=sys.stderr)
    return 2


def _synthetic_events(path: str) -> tuple[Any, Any, dict[str, Any]]:
    # slow: polars, the synthetic market (~1.4 s); chappie --help imports the stdlib only
    import polars as pl

    from ingest.events import empty_book, empty_trades
    from ingest.synthetic import generate_market, market_metadata

    cfg = load_experiment(path).ingest
    days = list(generate_market(cfg.synthetic, cfg.instrument))
    book = pl.concat([empty_book(), *(b for _, b, _ in days)])
    trades = pl.concat([empty_trades(), *(t for _, _, t in days)])
    return book, trades, dict(market_metadata(cfg.synthetic))


def _partition_events(paths: list[str], config: str | None) -> tuple[Any, Any, dict[str, Any]]:
    # slow: polars (~1 s); chappie --help imports the stdlib only
    from features.audit import resolve_partitions
    from ingest.events import read_events, read_manifest

    layout, symbol, days = resolve_partitions(paths)
    manifests = [read_manifest(layout, symbol, d) or {} for d in days]
    book, trades = read_events(layout, symbol, days)
    sources = sorted({str(m.get("source")) for m in manifests})
    meta: dict[str, Any] = {"source": ", ".join(sources), "symbol": symbol, "days": days}
    recorded = [m.get("extra", {}).get("market") for m in manifests]
    if config is not None:  # a config given is checked, whether the manifests record it or not
        # slow: numba, polars (~1.4 s); chappie --help imports the stdlib only
        from ingest.synthetic import market_metadata

        syn = market_metadata(load_experiment(config).ingest.synthetic)
        fps = {i.get("sha256") for m in manifests for i in m.get("inputs", [])}
        fps |= {r.get("fingerprint") for r in recorded if r is not None}
        if sources != ["synthetic"] or fps != {syn["fingerprint"]}:
            raise ValueError(
                f"{config}: its synthetic market (fingerprint {syn['fingerprint'][:12]}) is "
                "not the one these partitions were generated from"
            )
        meta.update(syn)
    if recorded[0] is not None:
        meta.update(recorded[0])
    return book, trades, meta


def _cmd_market(args: argparse.Namespace) -> int:
    if bool(args.events) == bool(args.synthetic):
        return _fail("give EVENTS or --synthetic YAML (one of them)")
    # slow: polars (~1.4 s); chappie --help and a usage error import the stdlib only
    from features.audit import AuditInputError
    from features.market_audit import format_report, market_report

    try:
        if args.synthetic:
            book, trades, meta = _synthetic_events(args.synthetic)
            title = f"market: synthetic {args.synthetic}"
        else:
            book, trades, meta = _partition_events(args.events, args.config)
            title = f"market: {' '.join(args.events)}"
        feature = args.feature or (meta.get("edge") or {}).get("feature") or "imbalance_l1"
        rep = market_report(book, trades, edge_feature=feature, metadata=meta)
    except (AuditInputError, OSError, ValueError) as exc:
        return _fail(str(exc))
    if args.json:
        print(json.dumps(rep.to_json(), sort_keys=True))
    else:
        print(format_report(rep, title))
    return 0
