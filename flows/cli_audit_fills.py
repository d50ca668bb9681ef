"""`chappie audit fills`: how often a quote at the best bid fills, under a queue model.

Only the standard library and flows.common at module level (`chappie --help` stays fast);
the handler imports its packages when it runs, each import with its reason.

    chappie audit fills EVENTS... [--queue MODEL] [--power N] [--latency-ms N]
                                  [--size CONTRACTS] [--json]

EVENTS: a data folder, an events/<symbol> folder or day partition folders. Runs the
reference policy quote-best (`envs.fill_audit`) through the queue model and latency
(`envs.queue`) and prints fills, seconds with a fill and contracts filled. Exit status:
0 ok; 2 bad arguments or input.
"""

from __future__ import annotations

import argparse
import json
import sys

HELP = "fills of the quote-best reference policy under a queue model and latency"
QUEUES = ("touch", "trade_through", "risk_averse", "power_prob")


def register_audit(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `chappie audit fills`."""
    p = sub.add_parser("fills", help=HELP, description=HELP + " (envs.fill_audit).")
    p.add_argument(
        "events", nargs="+", metavar="EVENTS", help="data folder, events/<symbol> or day folders"
    )
    p.add_argument(
        "--queue", choices=QUEUES, default="risk_averse", help="queue model (risk_averse)"
    )
    p.add_argument("--power", type=float, default=2.0, help="power_prob exponent n (2)")
    p.add_argument(
        "--latency-ms", type=float, default=0.0, help="order entry and cancel latency, ms (0)"
    )
    p.add_argument("--size", type=int, default=None, help="order size in contracts (one lot)")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.set_defaults(func=_cmd_fills)


def _fail(msg: str) -> int:
    print(f"chappie audit fills: {msg}", file=sys.stderr)
    return 2


def _cmd_fills(args: argparse.Namespace) -> int:
    # slow: numba kernels, polars (~1.5 s); chappie --help imports the stdlib only
    from envs.fill_audit import audit_fills
    from envs.queue import Latency, QueueModel
    from features.audit import AuditInputError, resolve_partitions
    from ingest.events import read_events, read_manifest

    try:
        layout, symbol, days = resolve_partitions(args.events)
        manifest = read_manifest(layout, symbol, days[0]) or {}
        inst = manifest.get("instrument")
        size = inst.get("lot_size") if isinstance(inst, dict) else None
        lot = size if isinstance(size, int) and size > 0 else 1
        book, trades = read_events(layout, symbol, days)
        model = QueueModel(args.queue, args.power)
        latency = Latency(args.latency_ms, args.latency_ms)
        rep = audit_fills(
            book, trades, model=model, latency=latency, size=args.size or lot, lot=lot
        )
    except (AuditInputError, OSError, ValueError) as exc:
        return _fail(str(exc))
    rep.update(symbol=symbol, days=days)
    if args.json:
        print(json.dumps(rep, sort_keys=True))
        return 0
    print(f"fills: {' '.join(args.events)} ({symbol}, {len(days)} day(s))")
    lat = rep["latency_ms"]["entry"]
    print(
        f"  policy quote-best, queue {rep['queue']}, latency {lat:g} ms, size {rep['size']} (lot {lot})"
    )
    print(
        f"  seconds {rep['seconds']} (skipped {rep['seconds_skipped']}), orders {rep['orders']}, "
        f"cancels {rep['cancels']}, post-only rejects {rep['rejected_post_only']}"
    )
    print(
        f"  fills {rep['fills']}, seconds with a fill {rep['seconds_with_fill']}, "
        f"contracts filled {rep['filled_contracts']}"
    )
    return 0
