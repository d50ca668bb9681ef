"""What a reader returns per raw file, and the ingest run report. Pure data.

Counting rules (every run checks both balance equations, per file and in total):
- ``files_in = files_ok + files_quarantined``
- ``rows_in = rows_out + rows_rejected + rows_filtered``. A *row* is one input unit,
  counted from the file itself before any symbol filter: every line of a CSV after its
  header (blank, comma-less and ragged lines included); for a websocket recording every
  line, except that a line holding a message with ``data`` counts as its data
  elements; one generated event for synthetic data.
  - out: kept (in the published partition, written now or by an earlier run);
  - rejected: bad (malformed, off-tick, ...), with a reason, sampled to quarantine;
  - filtered: not bad, not ours: blank lines, other symbols, other tables, a file or a
    trade already published (same sha256 / same exchange trade id), with a reason.
  A file quarantined as a whole turns its unfiltered rows into rejected ones.
  ``events_out`` counts canonical rows written (a quote row gives two book deltas, so
  it is reported separately).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, model_validator

from core.jsontypes import JsonObject, JsonValue


def json_safe(obj: object, depth: int = 0) -> JsonValue:
    """`obj` as strict JSON values for quarantine samples: a non-finite float or any other
    non-JSON value becomes its text, nesting deeper than 20 becomes text (bounded)."""
    if obj is None or isinstance(obj, bool | int | str):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else repr(obj)
    if depth < 20 and isinstance(obj, dict):
        return {str(k): json_safe(v, depth + 1) for k, v in obj.items()}
    if depth < 20 and isinstance(obj, list | tuple):
        return [json_safe(v, depth + 1) for v in obj]
    return str(obj)[:300]


class CountError(AssertionError):
    """A reader's counts do not balance: a bug in the reader, never bad input."""


@dataclass
class FileRead:
    """One raw file read into canonical events (possibly several days)."""

    path: str
    sha256: str | None
    book: pl.DataFrame
    trades: pl.DataFrame
    rows_in: int = 0
    rows_rejected: int = 0
    file_reason: str | None = None  # set when the whole file is quarantined
    row_reasons: Counter[str] = field(default_factory=Counter)
    #: sample for quarantine: {"reason", "row" (the row as strict JSON, `json_safe`)}
    rejected_rows: list[JsonObject] = field(default_factory=list)
    book_kind: str | None = None  # which book stream the file carries (BOOK_KIND_RANK)
    rows_filtered: int = 0
    filtered_reasons: Counter[str] = field(default_factory=Counter)
    #: the exchange's trade id of each row of `trades` (String, null where none); None
    #: when the format has no ids
    trade_ids: pl.Series | None = None
    #: kept rows already written to disk by day (`ingest.run` spills each file as it
    #: is read): (kind "book" | "trades", day, path, rows), in file order
    spill: list[tuple[str, str, str, int]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.file_reason is None

    @property
    def n_book(self) -> int:
        """Book rows kept, in memory or spilled."""
        return self.book.height + sum(n for k, _, _, n in self.spill if k == "book")

    def spilled_days(self, kind: str) -> list[str]:
        """Days of the spilled rows of `kind`, in order of first appearance."""
        return list(dict.fromkeys(d for k, d, _, _ in self.spill if k == kind))

    @property
    def rows_out(self) -> int:
        return self.rows_in - self.rows_rejected - self.rows_filtered

    def filter(self, reason: str, n: int = 1) -> None:
        """Count `n` rows already in `rows_in` as filtered (not bad, not ours)."""
        if n:
            self.rows_filtered += n
            self.filtered_reasons[reason] += n

    def check_balance(self, kept: int) -> None:
        """Check the reader's independent count of kept rows against ``rows_in`` (counted
        from the file) minus the rejected and filtered ones. Raises CountError (a reader
        bug: a row counted twice or nowhere), never for bad input."""
        if self.ok and kept != self.rows_out:
            raise CountError(
                f"{self.path}: {self.rows_in} rows in != {kept} out + {self.rows_rejected} "
                f"rejected + {self.rows_filtered} filtered"
            )

    def reject(self, reason: str, row: Any = None, keep: int = 1000) -> None:
        """Count one rejected input row (keeping up to `keep` samples for quarantine)."""
        self.rows_rejected += 1
        self.row_reasons[reason] += 1
        if len(self.rejected_rows) < keep:
            self.rejected_rows.append({"reason": reason, "row": json_safe(row)})

    def quarantine_if_nothing_valid(self, symbol: str) -> bool:
        """Quarantine a readable file that has no valid row for `symbol`."""
        if self.ok and self.rows_out <= 0:
            if self.rows_rejected:
                top = "; ".join(f"{r} x{n}" for r, n in self.row_reasons.most_common(3))
                self.quarantine_file(f"no valid rows for symbol {symbol}: {top}")
            else:
                self.quarantine_file(f"no rows for symbol {symbol}")
        return not self.ok

    def quarantine_file(self, reason: str) -> None:
        """Reject the whole file: every row read so far that was not filtered becomes
        rejected (filtered rows were not ours: they stay filtered)."""
        self.file_reason = reason
        self.rows_rejected = self.rows_in - self.rows_filtered


# Book streams from richest to poorest. One run feeds ONE book: mixing streams (a full
# L2 book and a depth-1 quote book) would corrupt it, so poorer book files are set aside.
BOOK_KIND_RANK: tuple[str, ...] = (
    "tardis:incremental_book_L2",
    "ws:orderBookL2",
    "ws:orderBookL2_25",
    "tardis:book_snapshot",
    "ws:orderBook10",
    "tardis:quotes",
    "ws:quote",
    "bitmex-dump:quote",
)
# Book levels per side a stream carries where its format fixes them (the others carry the
# whole book, or as many levels as the file has: `tardis:book_snapshot_N`).
BOOK_KIND_LEVELS: dict[str, int] = {
    "ws:orderBookL2_25": 25,
    "ws:orderBook10": 10,
    "tardis:quotes": 1,
    "ws:quote": 1,
    "bitmex-dump:quote": 1,
}


def set_aside_poorer_books(reads: list[FileRead]) -> None:
    """Quarantine every file whose book stream is poorer than the run's richest one."""
    kinds = [fr.book_kind for fr in reads if fr.ok and fr.book_kind and fr.n_book]
    if len(set(kinds)) < 2:
        return
    best = min(kinds, key=BOOK_KIND_RANK.index)
    for fr in reads:
        if fr.ok and fr.book_kind and fr.n_book and fr.book_kind != best:
            fr.quarantine_file(
                f"book stream {fr.book_kind} set aside: the run also has the richer {best} (one book per run)"
            )


class QuarantineEntry(BaseModel):
    model_config = ConfigDict(frozen=True)

    path: str
    level: Literal["file", "row"]
    reason: str
    rows: int
    where: str | None = None  # quarantine folder


class IngestReport(BaseModel):
    """Outcome of one ingest run (also the JSON printed by ``chappie ingest --json``)."""

    model_config = ConfigDict(frozen=True)

    source: str
    symbol: str
    files_in: int
    files_ok: int
    files_quarantined: int
    rows_in: int
    rows_out: int
    rows_rejected: int
    events_out: dict[str, int]
    partitions_written: list[str]
    partitions_unchanged: list[str]
    desyncs: dict[str, int]
    quarantine: list[QuarantineEntry]
    reasons: dict[str, int]
    rows_filtered: int = 0
    filtered: dict[str, int] = {}  # reason -> rows

    @model_validator(mode="after")
    def _balances(self) -> IngestReport:
        if self.files_in != self.files_ok + self.files_quarantined:
            raise ValueError(
                f"files_in {self.files_in} != files_ok {self.files_ok} + files_quarantined {self.files_quarantined}"
            )
        if self.rows_in != self.rows_out + self.rows_rejected + self.rows_filtered:
            raise ValueError(
                f"rows_in {self.rows_in} != rows_out {self.rows_out} + rows_rejected "
                f"{self.rows_rejected} + rows_filtered {self.rows_filtered}"
            )
        if sum(self.filtered.values()) != self.rows_filtered:
            raise ValueError(
                f"filtered reasons do not add up to rows_filtered {self.rows_filtered}"
            )
        return self

    @property
    def balanced(self) -> bool:
        return True  # guaranteed by the validator


class IngestOutcome(BaseModel):
    """What one ingest flow run returns: the report, the staging leftovers of earlier
    runs it removed, and what it downloaded first (`chappie ingest bitmex-dump
    --download`; None when nothing was). `to_json` is the JSON `chappie ingest --json`
    prints and the nightly records: the report's keys plus ``leftovers_removed`` and,
    after a download, ``download``."""

    model_config = ConfigDict(frozen=True)

    report: IngestReport
    leftovers_removed: list[str] = []
    download: JsonObject | None = None

    def to_json(self) -> JsonObject:
        out: JsonObject = self.report.model_dump(mode="json")
        out["leftovers_removed"] = list(self.leftovers_removed)
        if self.download is not None:
            out["download"] = self.download
        return out
