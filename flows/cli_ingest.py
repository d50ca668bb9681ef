"""`chappie` subcommands of the ingest area (registered by flows/cli.py).

Import only argparse at module level; handlers import their packages when they run.

    chappie ingest SOURCE [PATH ...] [--symbol XBTUSD] [--instrument FILE]
        [--instrument-history FILE] [--json]
    chappie ingest synthetic [--config conf/default.yaml]
    chappie ingest bitmex-dump --url BASE --start YYYY-MM-DD --end YYYY-MM-DD [--kinds trade,quote]
    chappie ingest funding FILE... [--symbol XBTUSD] [--instrument FILE] [--json]
      (BitMEX /api/v1/funding JSON or tardis derivative_ticker CSV -> <data>/funding/<symbol>.parquet)

Exit status 0 when the run completed (even with quarantined files); 2 when it could
not proceed (bad arguments, unreadable instrument file, unwritable data folder).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from flows.common import command_session, data_folder_lock, load_experiment, resolve_runtime

if TYPE_CHECKING:  # a type only: this module imports nothing heavy (chappie --help)
    from core.instrument import InstrumentSpec

SOURCES = ("synthetic", "tardis", "bitmex-dump", "ws-recording", "funding")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this area's subcommands to the `chappie` parser."""
    p = sub.add_parser(
        "ingest",
        help="read raw data (tardis, bitmex-dump, ws-recording, synthetic) into canonical events; "
        "funding: funding-rate history into <data>/funding",
        description="Read raw order-book data into canonical event partitions under "
        "<data>/events. Bad files and rows are quarantined with a reason, never fatal.",
    )
    p.add_argument("source", choices=SOURCES, help="raw data format")
    p.add_argument("paths", nargs="*", metavar="PATH", help="files or folders (walked recursively)")
    p.add_argument(
        "--symbol", default=None, help="instrument symbol (default XBTUSD or the config's)"
    )
    p.add_argument(
        "--instrument",
        default=None,
        metavar="FILE",
        help="BitMEX instrument JSON or an InstrumentSpec YAML/JSON",
    )
    p.add_argument(
        "--config",
        default=None,
        metavar="PATH",
        help="experiment YAML whose `ingest:` section is used",
    )
    p.add_argument(
        "--instrument-history",
        default=None,
        metavar="FILE",
        help="the contract over time (tardis `instrument` channel, BitMEX instrument objects "
        "or tardis metadata): each day is ingested under the contract in force then, and the "
        "history is kept beside the events for later runs",
    )
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.add_argument(
        "--data-dir", default=None, help="data folder (default CHAPPIE_DATA_DIR or ./data)"
    )
    g = p.add_argument_group("bitmex-dump download mode")
    g.add_argument("--url", default=None, help="base URL of the dump bucket (…/data)")
    g.add_argument("--start", default=None, help="first day, YYYY-MM-DD")
    g.add_argument("--end", default=None, help="last day, YYYY-MM-DD (inclusive)")
    g.add_argument("--kinds", default="trade,quote", help="dump kinds to download (trade,quote)")
    p.set_defaults(func=_cmd_ingest)


def register_audit(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this area's `chappie audit` subcommands."""


def _fail(msg: str) -> int:
    print(f"chappie ingest: {msg}", file=sys.stderr)
    return 2


def _symbol_instrument(args: argparse.Namespace) -> tuple[str, InstrumentSpec]:
    """(symbol, InstrumentSpec) from --symbol / --instrument / --config's `ingest:`.
    Raises ValueError (also when no spec of the symbol is known)."""
    # slow: pydantic config models (~0.2 s), kept off chappie --help
    from core.config.ingest import IngestConfig

    base = IngestConfig()
    if args.config:
        base = load_experiment(args.config).ingest
    symbol = args.symbol or base.symbol
    if args.instrument:
        # slow: ingest pulls polars and pydantic (~0.2 s), kept off chappie --help
        from ingest.instruments import load_instrument

        return symbol, load_instrument(args.instrument, symbol)
    if base.instrument.symbol != symbol:
        raise ValueError(f"no instrument spec for {symbol}: pass --instrument FILE")
    return symbol, base.instrument


def build_config(args: argparse.Namespace) -> tuple[object, dict[str, object] | None]:
    """(IngestConfig, download spec or None) from the arguments. Raises ValueError (also
    for a PATH that does not exist)."""
    # slow: pydantic config models (~0.2 s), kept off chappie --help
    from core.config.ingest import IngestConfig

    base = IngestConfig()
    if args.config:
        base = load_experiment(args.config).ingest
    symbol = args.symbol or base.symbol
    instrument = base.instrument
    if args.instrument:
        # slow: ingest pulls polars and pydantic (~0.2 s), kept off chappie --help
        from ingest.instruments import load_instrument

        instrument = load_instrument(args.instrument, symbol)
    elif instrument.symbol != symbol:
        raise ValueError(f"no instrument spec for {symbol}: pass --instrument FILE")
    download = None
    if args.url or args.start or args.end:
        if args.source != "bitmex-dump":
            raise ValueError("--url/--start/--end are for the bitmex-dump source")
        if not (args.url and args.start and args.end):
            raise ValueError("download mode needs --url, --start and --end")
        kinds = [k for k in args.kinds.split(",") if k]
        download = {"url": args.url, "start": args.start, "end": args.end, "kinds": kinds}
    if args.source not in ("synthetic",) and not args.paths and download is None:
        raise ValueError(f"source {args.source} needs at least one PATH")
    # a PATH that does not exist is a typo, not a bad file to quarantine: say so before a
    # Prefect server starts (files found inside a folder are still quarantined when bad)
    missing = [p for p in args.paths if not Path(p).exists()]
    if missing:
        raise ValueError(f"no such file or folder: {', '.join(missing)} (check the PATH arguments)")
    cfg = base.model_copy(
        update={
            "source": args.source,
            "symbol": symbol,
            "instrument": instrument,
            "paths": tuple(args.paths),
        }
    )
    return IngestConfig.model_validate(cfg.model_dump()), download


def _print_human(report: dict[str, object]) -> None:
    r = report
    print(f"ingest {r['source']} {r['symbol']}")
    print(f"  files: in {r['files_in']}, ok {r['files_ok']}, quarantined {r['files_quarantined']}")
    print(
        f"  rows:  in {r['rows_in']}, out {r['rows_out']}, rejected {r['rows_rejected']}, "
        f"filtered {r.get('rows_filtered', 0)}  (events out {r['events_out']})"
    )
    for reason, n in dict(r.get("filtered") or {}).items():  # type: ignore[call-overload]
        print(f"  filtered: {reason} [{n} rows]")
    print(f"  partitions written: {', '.join(r['partitions_written']) or '-'}")  # type: ignore[arg-type]
    print(f"  partitions unchanged: {', '.join(r['partitions_unchanged']) or '-'}")  # type: ignore[arg-type]
    if r["desyncs"]:
        print(f"  book desyncs per day: {r['desyncs']}")
    for q in r["quarantine"]:  # type: ignore[attr-defined]
        print(f"  quarantined ({q['level']}): {q['path']}: {q['reason']} [{q['rows']} rows]")


def _cmd_ingest_funding(args: argparse.Namespace) -> int:
    """`chappie ingest funding FILE...`: funding-rate history into the funding table
    (ingest.funding), under the data folder's lock; no Prefect server needed."""
    if not args.paths:
        return _fail("source funding needs at least one FILE")
    missing = [p for p in args.paths if not Path(p).is_file()]
    if missing:
        return _fail(f"no such file: {', '.join(missing)} (check the FILE arguments)")
    try:
        symbol, instrument = _symbol_instrument(args)
    except (ValueError, OSError) as exc:
        return _fail(str(exc))
    # slow: ingest pulls polars and pydantic (~0.2 s), kept off chappie --help
    from ingest.funding import ingest_funding

    rt = resolve_runtime(args.data_dir)
    with data_folder_lock(rt.data_dir, "ingest"):
        try:
            report = ingest_funding(list(args.paths), rt.data_dir, symbol, instrument)
        except (OSError, ValueError) as exc:
            return _fail(f"{type(exc).__name__}: {exc}")
    if args.json:
        print(json.dumps(report.to_json(), sort_keys=True))
        return 0
    r = report
    print(f"ingest funding {r.symbol}")
    print(f"  files: in {r.files_in}, ok {r.files_ok}, quarantined {r.files_quarantined}")
    print(
        f"  rows:  in {r.rows_in}, out {r.rows_out}, rejected {r.rows_rejected}, "
        f"filtered {r.rows_filtered}"
    )
    for reason, n in r.filtered.items():
        print(f"  filtered: {reason} [{n} rows]")
    for q in r.quarantine:
        print(f"  quarantined ({q.level}): {q.path}: {q.reason} [{q.rows} rows]")
    n = r.table_rows
    print(f"  table: {r.table or '-'} ({n} funding time{'' if n == 1 else 's'})")
    return 0


def _cmd_ingest(args: argparse.Namespace) -> int:
    if args.source == "funding":
        return _cmd_ingest_funding(args)
    try:
        cfg, download = build_config(args)
    except (ValueError, OSError) as exc:
        return _fail(str(exc))
    history = None
    if args.instrument_history:
        # slow: ingest pulls polars and pydantic (~0.2 s), kept off chappie --help
        from ingest.instrument_history import read_instrument_history

        try:
            symbol, instrument = cfg.symbol, cfg.instrument  # type: ignore[attr-defined]
            history = read_instrument_history(args.instrument_history, symbol, base=instrument)
        except (ValueError, OSError) as exc:
            return _fail(f"--instrument-history: {exc}")
    # cycle: flows.cli imports this module
    from flows.cli import user_error

    if download is not None:  # a wrong URL fails here, before a Prefect server starts
        # slow: ingest pulls polars and pydantic (~0.2 s), kept off chappie --help
        from ingest.download import preflight

        try:
            preflight(str(download["url"]), str(download["start"]), tuple(download["kinds"]))  # type: ignore[arg-type]
        except ValueError as exc:
            return _fail(f"bad --start or --kinds: {exc}")
    rt = resolve_runtime(args.data_dir)
    try:
        with command_session(rt.data_dir, "ingest"):
            # slow: prefect (~2 s), imported once the command runs
            from flows.ingest import ingest_flow

            report = ingest_flow(  # type: ignore[arg-type,call-overload]
                cfg, rt.data_dir, progress=not args.json, download=download, history=history
            ).to_json()
    except (OSError, ValueError, RuntimeError) as exc:
        if user_error(exc) is not None:
            raise  # a busy folder, a refused download...: one line, printed by `chappie`
        return _fail(f"{type(exc).__name__}: {exc}")
    if args.json:
        print(json.dumps(report, sort_keys=True))
    else:
        _print_human(report)
        print(f"  data: {rt.data_dir}")
    return 0
