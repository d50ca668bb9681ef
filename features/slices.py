"""What a slice is, as the features stage hands it on: its contracts. Pure models and
their readers.

- `SliceManifest` mirrors `slices/<spec12>/<slice_id>.manifest.json`: a slice *is* its
  manifest, the ordered segments it is made of (`SlicePart`; see `features.store`).
- `FoldIndex` (of `FoldEntry`) mirrors `folds.json`, written last.
- `StagedSlice` and `SlicePlan`: what staging made, passed as JSON between the features
  flow's tasks until it is validated and published.
- `load_fold_index`, `load_manifest`, `manifest_path`: where a published slice is and
  reading it back.

Made by `features.bars` (bars, day by day), `features.slicing` (pure: slice rows,
windows) and `features.publish` (stage, publish); `flows/features.py` runs them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import polars as pl
from pydantic import BaseModel, ConfigDict

from core.jsontypes import JsonObject
from core.paths import DataLayout
from features.stats import FrozenStats, StatsRecord
from features.store import MANIFEST_SUFFIX, SlicePart, as_frame, manifest_for, read_parts

FOLDS_FILE = "folds.json"


class SliceBuildError(ValueError):
    """Bars or windows that cannot make valid slices (gaps, empty slices, no data)."""


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FoldEntry(_Model):
    fold: int
    train: str
    validation: str | None = None
    test: str
    stats_id: str


class FoldIndex(_Model):
    """Mirror of `slices/<spec12>/folds.json`."""

    spec_hash: str
    folds: list[FoldEntry]
    stress: list[str] = []
    stress_stats_id: str | None = None


class DriftFeature(_Model):
    """One feature's drift against the frozen stats: the share of rows normalised beyond
    the clip, and the mean and standard deviation of its normalised values (None: no
    finite value)."""

    beyond_clip_share: float
    z_mean: float | None
    z_std: float | None


class DriftReport(_Model):
    """A slice's drift against its frozen stats (`expectations.suites.drift_report`):
    measured, never a refusal. `flagged`: the features with more rows beyond the clip
    than the expectations allow."""

    clip: float
    max_beyond_clip_share: float
    max_beyond_clip_feature: str
    max_mean_shift: float | None
    max_mean_shift_feature: str
    flagged: list[str]
    features: dict[str, DriftFeature]


class SliceValidation(_Model):
    """A slice's validation, as its manifest keeps it (`validation`): the integrity
    result of its expectation suites (`failed` names each failed expectation;
    `statistics` the expectation counts and rows), where its Data Docs are, and its
    drift. `to_json` leaves out `data_docs` and `drift` when there are none."""

    success: bool
    suite: str
    failed: list[str] = []
    statistics: dict[str, int | float] = {}
    data_docs: str | None = None
    drift: DriftReport | None = None

    def to_json(self) -> JsonObject:
        absent = {k for k in ("data_docs", "drift") if not getattr(self, k)}
        return self.model_dump(mode="json", exclude=absent)


class SliceManifest(_Model):
    """Mirror of `<slice_id>.manifest.json`: the slice itself. `t_start_ns`/`t_end_ns`
    are the first and last row `ts` (inclusive); `parts` are its segments in row order;
    `sha256` is `features.store.slice_digest` of the parts; `path` is the manifest's
    own absolute path (what the env, backtests and `read_slice` take); `instrument` the
    `InstrumentSpec.contract()` its events were ingested under (absent in manifests of
    events that recorded none). `to_json` is the file's content."""

    slice_id: str
    kind: Literal["train", "validation", "test", "stress"]
    fold: int | None
    spec_hash: str
    t_start_ns: int
    t_end_ns: int
    rows: int
    sha256: str
    path: str
    format: str
    parts: list[SlicePart]
    event_partitions: dict[str, str]
    validation: SliceValidation
    stats_id: str | None
    instrument: JsonObject | None = None

    def to_json(self) -> JsonObject:
        out = self.model_dump(mode="json", exclude={"validation", "instrument"})
        out["validation"] = self.validation.to_json()
        if self.instrument is not None:
            out["instrument"] = self.instrument
        return out


class StagedSlice(_Model):
    """A slice computed into the staging folder, not yet validated or published."""

    slice_id: str
    kind: Literal["train", "validation", "test", "stress"]
    fold: int | None
    start_ns: int  # window [start_ns, end_ns)
    end_ns: int
    parts: list[SlicePart]
    sha256: str  # slice_digest(parts)
    rows: int
    t_start_ns: int
    t_end_ns: int
    stats_id: str


class SlicePlan(_Model):
    """Everything `stage_slices` made; JSON-able (passed between flow tasks).
    `segments` records each staged segment's (size, mtime_ns) to tell, without
    re-reading it, that it is unchanged when published. `stats` holds each fold's
    frozen stats (`FrozenStats.to_record`, by stats_id): they are saved only when
    published."""

    spec_hash: str
    staging_dir: str
    bars_path: str
    origin_ns: int
    slices: list[StagedSlice]
    segments: dict[str, tuple[int, int]]
    folds: list[FoldEntry]
    stress: list[str]
    stress_stats_id: str
    stats: dict[str, StatsRecord]

    def staged(self, slice_id: str) -> StagedSlice:
        for s in self.slices:
            if s.slice_id == slice_id:
                return s
        raise KeyError(slice_id)

    def frozen_stats(self, stats_id: str) -> FrozenStats:
        return FrozenStats.from_record(self.stats[stats_id])

    def segment_path(self, part: SlicePart) -> Path:
        return Path(self.staging_dir) / part.file

    def frame(self, slice_id: str) -> pl.DataFrame:
        """A staged slice's rows (its staged segments, memory-mapped)."""
        return as_frame(read_parts([self.segment_path(p) for p in self.staged(slice_id).parts]))


def load_fold_index(layout: DataLayout, spec_hash: str) -> FoldIndex:
    """Read `slices/<spec12>/folds.json`; raises FileNotFoundError / ValueError when it
    is missing or belongs to another spec."""
    path = layout.slices(spec_hash) / FOLDS_FILE
    index = FoldIndex.model_validate_json(path.read_text())
    if index.spec_hash != spec_hash:
        raise ValueError(f"{path} is for spec {index.spec_hash}, not {spec_hash}")
    return index


def load_manifest(path: str | Path) -> SliceManifest:
    """Read a slice manifest (`<slice_id>.manifest.json`, or `<slice_id>` beside it)."""
    return SliceManifest.model_validate_json(manifest_for(path).read_text())


def manifest_path(layout: DataLayout, spec_hash: str, slice_id: str) -> Path:
    """Where a published slice lives: its manifest."""
    return layout.slices(spec_hash) / f"{slice_id}{MANIFEST_SUFFIX}"
