"""`chappie live` wiring: config, model, replay server (`sim`), then `live.loop.run_live`.

Orchestration ring. The model comes only through `registry.load_champion` (verified,
pickle-free bundle); any failure to load it leaves the loop observe-only with the reason
printed. Keys are never read here (only the order path reads `core.settings.Settings`).
"""

from __future__ import annotations

import argparse
import time
import uuid
from typing import IO, Any
from urllib.parse import urlsplit

from core.clock import Clock
from core.config.experiment import load_config
from core.config.features import FeatureSpec
from core.config.live import MAINNET_REST, MAINNET_WS, LiveConfig
from core.config.market import SyntheticMarketConfig
from core.instrument import XBTUSD
from core.jsontypes import JsonObject
from core.settings import load_settings
from envs.broker import BrokerRules
from ingest.synthetic import generate_market
from live.exchange import BitmexRest
from live.journal import Journal
from live.loop import LiveRun, ScaledClock, run_live
from live.model_watch import (
    BundleSource,
    LoadedChampion,
    ModelSource,
    RegistrySource,
    poll_model,
)
from live.orders import OrderManager
from live.recording import load_recording
from sim.replay_server import ReplayServerThread, canonical_to_messages


def initial_model(source: ModelSource) -> tuple[LoadedChampion | None, str]:
    """The champion at start, or None (observe-only) with the reason (never raises)."""
    outcome = poll_model(source, None)
    if outcome.action == "swap" and outcome.champion is not None:
        return outcome.champion, ""
    return None, outcome.reason if outcome.reason != "no champion" else "the alias is not set"


def is_mainnet_url(url: str) -> bool:
    """True for a BitMEX production host (anything on bitmex.com that is not testnet)."""
    host = (urlsplit(url).hostname or "").lower()
    on_bitmex = host == "bitmex.com" or host.endswith(".bitmex.com")
    return on_bitmex and not (host.startswith("testnet.") or ".testnet." in host)


def trade_refusal(cfg: LiveConfig) -> str:
    """Why trading must not start with this config ('' when it may). Pure."""
    if not cfg.allow_trade:
        return "allow_trade is off"
    if not cfg.mainnet and (is_mainnet_url(cfg.rest_url) or is_mainnet_url(cfg.ws_url)):
        return "a mainnet URL without --mainnet"
    if cfg.stake_contracts > cfg.risk.max_order_contracts:
        return f"stake {cfg.stake_contracts} exceeds max order size {cfg.risk.max_order_contracts}"
    return ""


def build_order_manager(cfg: LiveConfig, settings: Any) -> Any:
    """REST client with keys from the environment only, journal under <data>/live/."""
    key, secret = settings.bitmex_api_key, settings.bitmex_api_secret
    if key is None or secret is None:
        raise SystemExit(
            "chappie live: --allow-trade needs CHAPPIE_BITMEX_API_KEY and CHAPPIE_BITMEX_API_SECRET"
        )
    session = uuid.uuid4().hex[:8]
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    journal = Journal(settings.layout.live / f"journal-{stamp}-{session}.jsonl", session)
    rest = BitmexRest(cfg.rest_url, key, secret, timeout_s=cfg.rest_timeout_s)
    return OrderManager(
        rest,
        symbol=cfg.symbol,
        instrument=XBTUSD,
        risk=cfg.risk,
        stake_contracts=cfg.stake_contracts,
        session=session,
        journal=journal,
        dead_man_timeout_ms=cfg.dead_man_timeout_ms,
        dead_man_refresh_s=cfg.dead_man_refresh_s,
    )


def replay_messages(what: str, synthetic_cfg: Any, symbol: str) -> list[tuple[int, JsonObject]]:
    """Messages to replay: a recording file, or `synthetic` (the first day of the configured
    synthetic market, at most its first hour unless the config says fewer, as BitMEX
    orderBookL2 + trade messages)."""
    if what != "synthetic":
        return load_recording(what)

    base = synthetic_cfg or SyntheticMarketConfig()
    cfg = base.model_copy(update={"days": 1, "day_hours": min(base.day_hours, 1.0)})
    _day, book, trades = next(iter(generate_market(cfg)))
    return canonical_to_messages(book, trades, symbol, XBTUSD.tick_size)


def run_live_cli(args: argparse.Namespace, out: IO[str]) -> int:
    spec = FeatureSpec()
    live_cfg = LiveConfig()
    rules = BrokerRules()
    synthetic_cfg = None
    if args.config:
        exp = load_config(args.config)
        spec = exp.features.spec
        live_cfg = exp.live
        synthetic_cfg = exp.ingest.synthetic
        if exp.sweep.trials:
            rules = BrokerRules.from_env_config(exp.sweep.trials[0].env.model_dump(mode="json"))
    # the command line's overrides of the live config, validated with it
    updates: JsonObject = {"feed": args.feed, "symbol": args.symbol, "alias": args.alias}
    if args.mainnet:
        updates.update(ws_url=MAINNET_WS, rest_url=MAINNET_REST, mainnet=True)
    if args.ws_url:
        updates["ws_url"] = args.ws_url
    if args.rest_url:
        updates["rest_url"] = args.rest_url
    if args.model:
        updates["model_name"] = args.model
    if args.book_table:
        updates["book_table"] = args.book_table
    updates["speed"] = args.speed
    updates["allow_trade"] = bool(args.allow_trade)
    live_cfg = LiveConfig.model_validate({**live_cfg.model_dump(), **updates})

    if live_cfg.allow_trade:
        refusal = trade_refusal(live_cfg)
        if refusal:
            print(f"chappie live: refusing to trade: {refusal}", file=out)
            return 2

    if live_cfg.feed == "replay" and not (args.replay or args.ws_url):
        print("chappie live: --feed replay needs --replay PATH or --ws-url URL", file=out)
        return 2
    if live_cfg.allow_trade and getattr(args, "paper_out", None):
        print("chappie live: --paper-out is observe-only (trading follows the exchange)", file=out)
        return 2
    if args.replay and live_cfg.speed <= 0:
        print("chappie live: --speed must be > 0 for the live loop", file=out)
        return 2

    source: ModelSource | None = None
    champion: LoadedChampion | None = None
    no_model = "--no-model"
    if not args.no_model:
        if args.bundle:
            source = BundleSource(args.bundle)
        else:
            settings = load_settings()
            source = RegistrySource(live_cfg.model_name, live_cfg.alias, settings.tracking_uri)
        # a champion's own observation contract and env config win over --config (run_live)
        champion, no_model = initial_model(source)
    orders = None
    if live_cfg.allow_trade:
        if champion is None:
            print(
                f"chappie live: refusing to trade without a verified model ({no_model})", file=out
            )
            return 2
        orders = build_order_manager(live_cfg, load_settings())

    clock: Clock | None = None
    max_skew_s: float | None = 30.0
    server: ReplayServerThread | None = None
    if live_cfg.feed == "replay":
        max_skew_s = None  # a replay's exchange times are from the past by design
        if args.replay:
            messages = replay_messages(args.replay, synthetic_cfg, live_cfg.symbol)
            if not messages:
                print(f"chappie live: {args.replay} holds no message", file=out)
                return 2
            server = ReplayServerThread(messages, speed=live_cfg.speed)
            url = server.start()
            live_cfg = LiveConfig.model_validate({**live_cfg.model_dump(), "ws_url": url})
            clock = ScaledClock(min(ts for ts, _ in messages), live_cfg.speed)
            print(
                f"chappie live: replaying {args.replay} at {live_cfg.speed:g}x on {url}", file=out
            )

    run = LiveRun(
        live=live_cfg,
        spec=spec,
        rules=rules,
        duration_s=args.duration,
        decisions_out=args.decisions_out,
        paper_out=getattr(args, "paper_out", None),
        record=args.record,
        max_skew_s=max_skew_s,
        no_model_reason=no_model,
    )
    try:
        summary = run_live(
            run,
            champion,
            orders=orders,
            clock=clock,
            model_source=None if args.bundle else source,
            source_done=None if server is None else server.finished,
            out=out,
        )
    finally:
        if server is not None:
            server.stop()
    return 0 if summary.stopped and not summary.stopped.startswith("fatal") else 1
