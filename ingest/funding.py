"""Funding-rate history -> the funding table `<data>/funding/<symbol>.parquet` (#17).

Inputs (detected from the content):
- BitMEX's funding history (REST ``GET /api/v1/funding``): a JSON list of
  ``{timestamp, symbol, fundingInterval, fundingRate, fundingRateDaily}``; ``timestamp`` is
  the funding time (ISO 8601 UTC), ``fundingInterval`` BitMEX's time-after-2000-01-01
  encoding (``2000-01-01T08:00:00.000Z`` = 8 h), ``fundingRate`` the fraction of notional
  settled then (positive = longs pay shorts).
- tardis.dev ``derivative_ticker`` CSV (.csv / .csv.gz): ``exchange,symbol,timestamp,
  local_timestamp,funding_timestamp,funding_rate,...`` (microseconds). A row announces
  ``funding_rate`` for the funding time ``funding_timestamp``; the rate settled at a
  funding time is the last one announced for it at or before it. Earlier announcements
  are filtered as superseded, announcements after their funding time as late.

Every input row is counted in exactly one of out (a new table row), rejected (bad, with a
reason; the file's rejected rows are written to ``quarantine/funding/<sha16>/reason.json``)
or filtered (another symbol, superseded, already in the table). A file that cannot be
read at all is quarantined whole (copied there), never fatal. Rejected: an unparsable
time or rate, a rate that is not finite or beyond +-5 % an interval (no exchange caps it
that high), a time that is not one of the instrument's funding times
(`core.instrument.funding_time`), an interval other than the instrument's, and a rate
that differs from the table's (or another input's) for the same funding time.

The table: columns ``ts`` (int64 ns UTC, the funding time), ``funding_rate`` (float64),
``symbol``, ``source`` (the sha256 prefix of the file it came from), sorted by ``ts``, one row per
funding time, written atomically. `FundingHistory` reads it; `FundingHistory.rates_at` is
the lookup the env does once when it is built (envs.management).
"""

from __future__ import annotations

import gzip
import io
import json
import math
import shutil
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from core.atomic import write_json_atomic, write_with_atomic
from core.clock import NS_PER_HOUR
from core.config.base import FrozenModel
from core.config.experiment import ExperimentConfig
from core.hashing import sha256_file
from core.instrument import InstrumentSpec, funding_time
from core.jsontypes import JsonObject

MAX_ABS_RATE = 0.05  # beyond this a rate is a unit error, not a market (BitMEX caps far below)
TARDIS_COLUMNS = ("symbol", "timestamp", "funding_timestamp", "funding_rate")
_SAMPLE = 100  # rejected rows kept per file in reason.json
_EPOCH_2000 = datetime.fromisoformat("2000-01-01T00:00:00+00:00")


def funding_table_path(data_dir: str | Path, symbol: str) -> Path:
    """Where the funding table of `symbol` lives under the data folder."""
    return Path(data_dir) / "funding" / f"{symbol}.parquet"


def with_funding_history(cfg: ExperimentConfig, data_dir: str | Path) -> ExperimentConfig:
    """`cfg` with funding settled from the data folder's funding table of its symbol when
    there is one (`chappie ingest funding`), in every trial that does not set `funding`
    itself (`ExperimentConfig.with_funding_table`); else `cfg` unchanged. The train and
    evaluate flows both call it, so a model is judged under the funding it trained with."""
    path = funding_table_path(data_dir, cfg.ingest.symbol)
    return cfg.with_funding_table(str(path)) if path.is_file() else cfg


def _iso_ns(text: Any) -> int:
    if not isinstance(text, str):
        raise ValueError("not a string")
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        raise ValueError("no time zone")
    delta = dt - datetime.fromisoformat("1970-01-01T00:00:00+00:00")
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


@dataclass(frozen=True)
class RejectedRow:
    """A rejected input row: its number in the file (-1: a conflict with the table), why,
    and what it held (sampled into reason.json as text where it is not JSON)."""

    row: int
    reason: str
    value: object


@dataclass
class FundingRead:
    """One input file: its valid rows (funding time -> rate) and the counts of the rest."""

    path: str
    sha256: str = ""
    rows_in: int = 0
    rows: dict[int, float] = field(default_factory=dict)
    rejected: list[RejectedRow] = field(default_factory=list)
    filtered: Counter[str] = field(default_factory=Counter)
    file_reason: str | None = None  # set when the whole file is unusable

    def reject(self, row: int, reason: str, value: Any) -> None:
        self.rejected.append(RejectedRow(row, reason, value))

    def add(self, row: int, ts: int, rate: float, value: Any) -> None:
        """A valid row; a second rate for the same time in this file conflicts."""
        if ts in self.rows:
            if self.rows[ts] == rate:
                self.filtered["duplicate in the file"] += 1
            else:
                self.reject(row, f"a second rate for this funding time ({self.rows[ts]})", value)
            return
        self.rows[ts] = rate


def _check(
    out: FundingRead, row: int, ts: int, rate: Any, spec: InstrumentSpec, value: Any
) -> None:
    """Validate one (funding time, rate) and add it or reject it with a reason."""
    try:
        r = float(rate)
    except (TypeError, ValueError):
        out.reject(row, "bad funding rate", value)
        return
    if not math.isfinite(r):
        out.reject(row, "funding rate not finite", value)
    elif abs(r) > MAX_ABS_RATE:
        out.reject(row, f"implausible funding rate (|rate| > {MAX_ABS_RATE})", value)
    elif funding_time(ts, spec) != ts:
        out.reject(row, f"not a funding time of {spec.symbol}", value)
    else:
        out.add(row, ts, r, value)


def parse_bitmex_funding(data: Any, symbol: str, spec: InstrumentSpec, out: FundingRead) -> None:
    """BitMEX ``/api/v1/funding`` JSON (already decoded) into `out`. Pure."""
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        out.file_reason = "not a BitMEX funding list (a JSON list of objects)"
        return
    out.rows_in += len(data)
    for i, obj in enumerate(data):
        if not isinstance(obj, dict):
            out.reject(i, "not an object", obj)
            continue
        if obj.get("symbol") != symbol:
            out.filtered["other symbol"] += 1
            continue
        try:
            ts = _iso_ns(obj.get("timestamp"))
        except ValueError:
            out.reject(i, "bad timestamp", obj)
            continue
        interval = obj.get("fundingInterval")
        if interval is not None:
            try:
                hours = (_iso_ns(interval) - _iso_ns("2000-01-01T00:00:00Z")) / NS_PER_HOUR
            except ValueError:
                out.reject(i, "bad fundingInterval", obj)
                continue
            if hours != spec.funding_interval_hours:
                out.reject(
                    i,
                    f"funding interval {hours:g} h is not {spec.symbol}'s "
                    f"{spec.funding_interval_hours:g} h",
                    obj,
                )
                continue
        _check(out, i, ts, obj.get("fundingRate"), spec, obj)


def parse_tardis_derivative_ticker(
    df: pl.DataFrame, symbol: str, spec: InstrumentSpec, out: FundingRead
) -> None:
    """A tardis ``derivative_ticker`` table (string columns) into `out`: per funding time,
    the last rate announced at or before it. Pure."""
    out.rows_in += df.height
    df = df.with_row_index("row")
    mine = df.filter(pl.col("symbol") == symbol)
    out.filtered["other symbol"] += df.height - mine.height
    typed = mine.with_columns(
        pl.col("timestamp").cast(pl.Int64, strict=False).alias("t_us"),
        pl.col("funding_timestamp").cast(pl.Int64, strict=False).alias("f_us"),
        pl.col("funding_rate").cast(pl.Float64, strict=False).alias("rate"),
    )
    bad = typed.filter(pl.any_horizontal(pl.col("t_us", "f_us", "rate").is_null()))
    for r in bad.iter_rows(named=True):
        reason = "bad timestamp" if r["t_us"] is None or r["f_us"] is None else "bad funding rate"
        out.reject(int(r["row"]), reason, {k: r[k] for k in TARDIS_COLUMNS})
    good = typed.filter(pl.all_horizontal(pl.col("t_us", "f_us", "rate").is_not_null()))
    late = good.filter(pl.col("t_us") > pl.col("f_us"))
    out.filtered["announced after its funding time"] += late.height
    timely = good.filter(pl.col("t_us") <= pl.col("f_us")).sort("t_us", "row")
    last = timely.group_by("f_us", maintain_order=True).last().sort("f_us")
    out.filtered["superseded by a later announcement"] += timely.height - last.height
    for r in last.iter_rows(named=True):
        value = {k: r[k] for k in TARDIS_COLUMNS}
        _check(out, int(r["row"]), int(r["f_us"]) * 1000, r["rate"], spec, value)


def _tardis_frame(raw: bytes) -> pl.DataFrame | None:
    """The CSV as string columns, or None when it is not a derivative_ticker file."""
    header = raw.split(b"\n", 1)[0].decode("utf-8", "replace").strip().split(",")
    if not set(TARDIS_COLUMNS) <= set(header):
        return None
    return pl.read_csv(io.BytesIO(raw), infer_schema=False, columns=list(TARDIS_COLUMNS))


def read_funding_file(path: str | Path, symbol: str, spec: InstrumentSpec) -> FundingRead:
    """One funding-history file (format detected from its content). Never raises on bad
    content: an unreadable file comes back with `file_reason` set."""
    p = Path(path)
    out = FundingRead(path=str(p))
    try:
        out.sha256 = sha256_file(p)
        raw = p.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        out.file_reason = f"unreadable: {exc}"
        return out
    head = raw.lstrip()[:1]
    if head in (b"[", b"{"):
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            out.file_reason = f"bad JSON: {exc}"
            return out
        parse_bitmex_funding(data, symbol, spec, out)
        return out
    try:
        df = _tardis_frame(raw)
    except (pl.exceptions.PolarsError, ValueError) as exc:
        out.file_reason = f"bad CSV: {exc}"
        return out
    if df is None:
        out.file_reason = (
            "neither a BitMEX funding JSON list nor a tardis derivative_ticker CSV "
            f"(needs columns {', '.join(TARDIS_COLUMNS)})"
        )
        return out
    parse_tardis_derivative_ticker(df, symbol, spec, out)
    return out


@dataclass(frozen=True)
class FundingHistory:
    """The funding table of one symbol: funding times (int64 ns, sorted, unique) and rates."""

    symbol: str
    ts: np.ndarray
    rate: np.ndarray
    source: tuple[str, ...] = ()

    @classmethod
    def load(cls, path: str | Path, symbol: str) -> FundingHistory:
        """Read a funding table (`funding_table_path`). Raises FileNotFoundError, or
        ValueError when it is not a funding table."""
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(
                f"no funding table at {p} (run `chappie ingest funding FILE...` first)"
            )
        try:
            df = pl.read_parquet(p)
            ts = df["ts"].cast(pl.Int64).to_numpy()
            rate = df["funding_rate"].cast(pl.Float64).to_numpy()
            source = tuple(df["source"].cast(pl.String).to_list()) if "source" in df else ()
            symbols = set(df["symbol"].cast(pl.String).to_list())
        except (pl.exceptions.PolarsError, OSError, KeyError) as exc:
            raise ValueError(f"{p} is not a funding table: {exc}") from exc
        if symbols - {symbol}:
            raise ValueError(f"{p} holds funding of {', '.join(sorted(symbols))}, not {symbol}")
        if ts.size and not np.all(np.diff(ts) > 0):
            raise ValueError(f"{p}: funding times are not sorted and unique")
        return cls(symbol, ts, rate, source)

    def rates_at(self, times_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rate, found) at each funding time in `times_ns`: the table's rate where it has
        that exact time (found True), else NaN (found False). Pure."""
        t = np.asarray(times_ns, dtype=np.int64)
        idx = np.searchsorted(self.ts, t)
        ok = idx < self.ts.size
        found = np.zeros(t.shape, dtype=bool)
        found[ok] = self.ts[idx[ok]] == t[ok]
        rates = np.full(t.shape, np.nan)
        rates[found] = self.rate[idx[found]]
        return rates, found


def _table_frame(rows: dict[int, tuple[float, str]], symbol: str) -> pl.DataFrame:
    ts = sorted(rows)
    return pl.DataFrame(
        {
            "ts": pl.Series(ts, dtype=pl.Int64),
            "funding_rate": pl.Series([rows[t][0] for t in ts], dtype=pl.Float64),
            "symbol": pl.Series([symbol] * len(ts), dtype=pl.String),
            "source": pl.Series([rows[t][1] for t in ts], dtype=pl.String),
        }
    )


class FundingQuarantine(FrozenModel):
    """A file set aside: whole (`level` "file": unreadable, copied) or its rejected rows
    ("rows"), in `where` (quarantine/funding/<sha16>/ with reason.json)."""

    path: str
    level: Literal["file", "rows"]
    reason: str
    rows: int  # rows rejected
    where: str


class FundingReport(FrozenModel):
    """What `ingest_funding` did: files and rows in / out / rejected / filtered (rows_in =
    rows_out + rows_rejected + rows_filtered, with reasons), what was quarantined, and the
    funding table after (path, rows, whether it was rewritten, first / last funding time).
    `chappie ingest funding --json` prints its dump."""

    source: Literal["funding"] = "funding"
    symbol: str
    files_in: int
    files_ok: int
    files_quarantined: int
    rows_in: int
    rows_out: int
    rows_rejected: int
    rows_filtered: int
    rejected: dict[str, int]  # reason -> rows, sorted by reason
    filtered: dict[str, int]
    quarantine: list[FundingQuarantine]
    table: str | None  # None: no funding time yet
    table_rows: int
    table_written: bool
    first_funding_ns: int | None
    last_funding_ns: int | None

    def to_json(self) -> JsonObject:
        return self.model_dump(mode="json")


def _quarantine(root: Path, fr: FundingRead, reasons: Counter[str]) -> FundingQuarantine:
    """Write the file's rejected rows (and the file itself, when unusable) to
    quarantine/funding/<sha16>/ with reason.json; the report's quarantine entry."""
    digest = (fr.sha256 or "0" * 16)[:16]
    folder = root / "quarantine" / "funding" / digest
    folder.mkdir(parents=True, exist_ok=True)
    src = Path(fr.path)
    if fr.file_reason is not None and src.is_file() and not (folder / src.name).exists():
        shutil.copy2(src, folder / src.name)
    write_json_atomic(
        folder / "reason.json",
        {
            "path": fr.path,
            "sha256": fr.sha256,
            "file_reason": fr.file_reason,
            "rows_in": fr.rows_in,
            "rows_rejected": len(fr.rejected),
            "row_reasons": dict(sorted(reasons.items())),
            "rejected_rows_sample": json.loads(
                json.dumps([asdict(r) for r in fr.rejected[:_SAMPLE]], default=str)
            ),
        },
    )
    level = "file" if fr.file_reason is not None else "rows"
    reason = fr.file_reason or "; ".join(sorted(reasons))
    return FundingQuarantine(
        path=fr.path, level=level, reason=reason, rows=len(fr.rejected), where=str(folder)
    )


def ingest_funding(
    paths: list[str | Path], data_dir: str | Path, symbol: str, spec: InstrumentSpec
) -> FundingReport:
    """Read every file, merge the valid rows into the symbol's funding table (atomically;
    the table is rewritten only when it gains rows), quarantine the bad ones. Returns the
    report: files and rows in / out / rejected / filtered (with reasons), the table's path,
    rows and first / last funding time. The caller holds the data folder's lock."""
    root = Path(data_dir)
    table_path = funding_table_path(root, symbol)
    table: dict[int, tuple[float, str]] = {}
    if table_path.exists():
        old = FundingHistory.load(table_path, symbol)
        src = old.source or ("",) * old.ts.size
        table = {int(t): (float(r), s) for t, r, s in zip(old.ts, old.rate, src, strict=True)}
    before = len(table)
    files_ok = rows_in = rows_rejected = rows_filtered = 0
    rejected: Counter[str] = Counter()
    filtered: Counter[str] = Counter()
    quarantine: list[FundingQuarantine] = []
    for path in paths:
        fr = read_funding_file(path, symbol, spec)
        for ts, rate in sorted(fr.rows.items()):
            have = table.get(ts)
            if have is None:
                table[ts] = (rate, fr.sha256[:16])
            elif have[0] == rate:
                fr.filtered["already in the table"] += 1
            else:
                fr.reject(
                    -1, f"conflicts with the table's rate {have[0]}", {"ts": ts, "rate": rate}
                )
        reasons = Counter(r.reason for r in fr.rejected)
        rows_in += fr.rows_in
        rows_rejected += len(fr.rejected)
        rows_filtered += sum(fr.filtered.values())
        rejected.update(reasons)
        filtered.update(fr.filtered)
        files_ok += fr.file_reason is None
        if fr.file_reason is not None or fr.rejected:
            quarantine.append(_quarantine(root, fr, reasons))
    rows_out = len(table) - before
    added = rows_out > 0
    if added:
        frame = _table_frame(table, symbol)
        write_with_atomic(table_path, lambda tmp: frame.write_parquet(tmp))
    return FundingReport(
        symbol=symbol,
        files_in=len(paths),
        files_ok=files_ok,
        files_quarantined=len(paths) - files_ok,
        rows_in=rows_in,
        rows_out=rows_out,
        rows_rejected=rows_rejected,
        rows_filtered=rows_filtered,
        rejected=dict(sorted(rejected.items())),
        filtered=dict(sorted(filtered.items())),
        quarantine=quarantine,
        table=str(table_path) if table else None,
        table_rows=len(table),
        table_written=added,
        first_funding_ns=min(table) if table else None,
        last_funding_ns=max(table) if table else None,
    )
