"""`chappie audit paper`: replay a paper-trading record through the env.

Only the standard library and flows.common at module level (`chappie --help` stays fast);
the handler imports the live package when it runs, each import with its reason.

    chappie audit paper RECORD.jsonl [--json]

RECORD: what `chappie live --paper-out RECORD.jsonl` wrote in observe mode (the bars the
paper account used, its fills and the decisions). The bars are stepped through
`envs.management.ManagementEnv` with the recorded actions (`live.paper_replay`), and the
fills, resting orders, account and equity after every bar must agree exactly. Exit
status: 0 they agree; 1 they do not (the first differences are printed); 2 the record
cannot be read or replayed.
"""

from __future__ import annotations

import argparse
import json
import sys

HELP = "replay a paper-trading record (chappie live --paper-out) through the env"


def register_audit(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `chappie audit paper`."""
    p = sub.add_parser(
        "paper",
        help=HELP,
        description=HELP + ": fills, position and equity must agree exactly (live.paper_replay).",
    )
    p.add_argument(
        "record", metavar="RECORD", help="JSON lines written by chappie live --paper-out"
    )
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.set_defaults(func=_cmd_paper)


def _cmd_paper(args: argparse.Namespace) -> int:
    # slow: the env and its numba kernels (~1.3 s); chappie --help imports the stdlib only
    from live.paper_replay import PaperRecordError, replay_paper_record

    try:
        rep = replay_paper_record(args.record)
    except (PaperRecordError, OSError) as exc:
        print(f"chappie audit paper: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"record": args.record, **rep.as_dict()}, sort_keys=True))
        return 0 if rep.agree else 1
    verdict = "agree exactly" if rep.agree else f"DISAGREE ({rep.mismatch_count} differences)"
    print(f"paper: {args.record}: record and env {verdict}")
    print(
        f"  {rep.sessions} session(s), {rep.bars} bars, {rep.decisions} decisions, "
        f"fills {rep.fills_record} recorded / {rep.fills_env} in the env"
    )
    if rep.equity_record is not None:
        print(f"  final equity {rep.equity_record!r} recorded / {rep.equity_env!r} in the env")
    for msg in rep.mismatches:
        print(f"  {msg}")
    if rep.mismatch_count > len(rep.mismatches):
        print(f"  ... and {rep.mismatch_count - len(rep.mismatches)} more")
    return 0 if rep.agree else 1
