"""`chappie live`: the live loop (observe-only and testnet by default).

Only the standard library and flows.common at module level (`chappie --help` stays fast);
the handler imports the live package when it runs, each import with its reason.
"""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this area's subcommands to the `chappie` parser."""
    p = sub.add_parser(
        "live",
        help="run the live loop (observe-only on testnet unless told otherwise)",
        description=(
            "Connect to BitMEX (or a replay), rebuild the training observation every bar and "
            "log the champion's decision. Observe-only unless --allow-trade; testnet unless "
            "--mainnet. Keys only from CHAPPIE_BITMEX_API_KEY / CHAPPIE_BITMEX_API_SECRET."
        ),
    )
    p.add_argument("--feed", choices=("bitmex", "replay"), default="bitmex")
    p.add_argument("--ws-url", default=None, help="BitMEX-compatible websocket URL")
    p.add_argument("--rest-url", default=None, help="BitMEX REST base URL")
    p.add_argument("--symbol", default="XBTUSD")
    p.add_argument("--model", default=None, help="registered model name (default from config)")
    p.add_argument("--alias", default="champion")
    p.add_argument(
        "--no-model", action="store_true", help="do not load a model: observe-only, actions none"
    )
    p.add_argument(
        "--bundle", default=None, help="a verified model bundle folder instead of the registry"
    )
    p.add_argument("--duration", type=float, default=None, help="stop cleanly after SECONDS")
    p.add_argument("--decisions-out", default=None, help="write decisions as JSON lines to PATH")
    p.add_argument(
        "--paper-out",
        default=None,
        help="observe mode: record the paper account's bars, fills and decisions as JSON lines "
        "to PATH (replay it with chappie audit paper PATH)",
    )
    p.add_argument(
        "--record", default=None, help="record every received message as JSON lines to PATH"
    )
    p.add_argument(
        "--allow-trade", action="store_true", help="send orders (testnet unless --mainnet)"
    )
    p.add_argument("--mainnet", action="store_true", help="use BitMEX mainnet URLs")
    p.add_argument(
        "--replay",
        default=None,
        help="with --feed replay: serve this recording (capture .txt or JSON lines), or `synthetic`, on 127.0.0.1",
    )
    p.add_argument("--speed", type=float, default=1.0, help="replay speed, x real time (> 0)")
    p.add_argument(
        "--config", default=None, help="experiment YAML (FeatureSpec when no model; live section)"
    )
    p.add_argument("--book-table", choices=("orderBookL2", "orderBookL2_25"), default=None)
    p.set_defaults(func=_cmd_live)


def register_audit(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this area's `chappie audit` subcommands."""


def _cmd_live(args: argparse.Namespace) -> int:
    # slow: the live loop (~2 s); chappie --help imports the stdlib only
    from live.app import run_live_cli

    return run_live_cli(args, out=sys.stdout)
