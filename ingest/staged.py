"""What the ingest stages hand each other: the staged index and a published day.

`ingest.run.stage_source` returns a `StagedIndex` (also ``<stage>/staged.json``, its
dump: the same keys and values as the dict it replaces) that the ingest flow persists
as its cached staging result; `publish_staged_day` takes one of its `StagedDay` and
returns a `PublishedDay`; `build_report` reads both. Pure data: pydantic models, frozen,
unknown keys refused (a staging result persisted by another version does not decode:
the flow stages again).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from core.jsontypes import JsonObject
from ingest.events import RawInput
from ingest.report import QuarantineEntry


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StagedDay(_Record):
    """One staged day: its book and trades Parquet (staged rows, with INPUT and the
    trades' TRADE_ID), the raw inputs INPUT indexes, and the day's book stream."""

    book: str
    trades: str
    inputs: list[RawInput]
    book_kind: str | None


class StagedFile(_Record):
    """One raw file of the run as read: its counts (``rows_in = rows_out +
    rows_rejected + rows_filtered``) and filtered reasons. `is_file` is False for a
    generated day (synthetic)."""

    path: str
    sha256: str | None
    ok: bool
    rows_in: int
    rows_out: int
    rows_rejected: int
    rows_filtered: int
    filtered: dict[str, int]  # reason -> rows
    is_file: bool


class StagedIndex(_Record):
    """A staged run: the staging folder, the staged days, the days already published
    from these inputs (`current`), every file read, what was quarantined and the temp
    files of crashed runs removed first (relative to the data folder)."""

    staging_dir: str
    source: str
    symbol: str
    days: dict[str, StagedDay]
    current: list[str]
    files: list[StagedFile]
    quarantine: list[QuarantineEntry]
    leftovers: list[str]

    def to_json(self) -> JsonObject:
        """``staged.json``'s content."""
        return self.model_dump(mode="json")


class PublishedDay(_Record):
    """What publishing one staged day did (`ingest.events.MergeResult`, summed up): its
    mode ("new", "rebuilt", "merged", "unchanged"), the partition's rows after it, its
    book desyncs (unknown level + crossed + bad size, from the manifest's book check)
    and the trades dropped as already in the day (input sha256 -> rows)."""

    day: str
    written: bool
    mode: str
    path: str
    book_rows: int
    trades_rows: int
    desyncs: int
    duplicate_trades: dict[str, int]
