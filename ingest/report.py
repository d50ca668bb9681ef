"""What a reader returns per raw file, and the ingest run report. Pure data.

Counting rules (every run checks both balance equations):
- ``files_in = files_ok + files_quarantined``
- ``rows_in = rows_out + rows_rejected``; a *row* is one input record: a CSV line, one
  element of a websocket message's ``data``, one generated event for synthetic data.
  A file quarantined as a whole contributes its readable rows to ``rows_in`` and
  ``rows_rejected``. ``events_out`` counts canonical rows written (a quote row gives
  two book deltas, so it is reported separately).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, model_validator


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
    rejected_rows: list[dict[str, Any]] = field(default_factory=list)  # sample, with reasons
    book_kind: str | None = None  # which book stream the file carries (BOOK_KIND_RANK)

    @property
    def ok(self) -> bool:
        return self.file_reason is None

    @property
    def rows_out(self) -> int:
        return self.rows_in - self.rows_rejected

    def reject(self, reason: str, row: Any = None, keep: int = 1000) -> None:
        """Count one rejected input row (keeping up to `keep` samples for quarantine)."""
        self.rows_rejected += 1
        self.row_reasons[reason] += 1
        if len(self.rejected_rows) < keep:
            self.rejected_rows.append(
                {
                    "reason": reason,
                    "row": row
                    if isinstance(row, str | int | float | dict | list | None)
                    else str(row),
                }
            )

    def quarantine_if_nothing_valid(self, symbol: str) -> bool:
        """Quarantine a readable file whose every row for `symbol` was rejected."""
        if self.ok and self.rows_in == self.rows_rejected:
            top = "; ".join(f"{r} x{n}" for r, n in self.row_reasons.most_common(3))
            self.quarantine_file(f"no valid rows for symbol {symbol}: {top}")
        return not self.ok

    def quarantine_file(self, reason: str) -> None:
        """Reject the whole file: every row read so far becomes rejected."""
        self.file_reason = reason
        self.rows_rejected = self.rows_in


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


def set_aside_poorer_books(reads: list[FileRead]) -> None:
    """Quarantine every file whose book stream is poorer than the run's richest one."""
    kinds = [fr.book_kind for fr in reads if fr.ok and fr.book_kind and fr.book.height]
    if len(set(kinds)) < 2:
        return
    best = min(kinds, key=BOOK_KIND_RANK.index)
    for fr in reads:
        if fr.ok and fr.book_kind and fr.book.height and fr.book_kind != best:
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

    @model_validator(mode="after")
    def _balances(self) -> IngestReport:
        if self.files_in != self.files_ok + self.files_quarantined:
            raise ValueError(
                f"files_in {self.files_in} != files_ok {self.files_ok} + files_quarantined {self.files_quarantined}"
            )
        if self.rows_in != self.rows_out + self.rows_rejected:
            raise ValueError(
                f"rows_in {self.rows_in} != rows_out {self.rows_out} + rows_rejected {self.rows_rejected}"
            )
        return self

    @property
    def balanced(self) -> bool:
        return True  # guaranteed by the validator
