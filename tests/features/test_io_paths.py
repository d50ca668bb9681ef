"""The fast paths of slice building: one in-memory parquet encoding hashed once,
zero-copy stats, no rewrite of identical small files, the staged-file guard (a full
re-hash), and the integer price band behind `depth_within_bps` (equal to its float
definition)."""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core import schema as S
from core.config.features import FeatureSpec
from core.hashing import sha256_file
from features import compute
from features.slices import (
    PARQUET_OPTIONS,
    SliceBuildError,
    encode_parquet,
    parquet_bytes,
    publish_slices,
    stage_slices,
    write_parquet_atomic,
)
from features.stats import FrozenStats, StatsError, write_if_changed
from tests.features.strategies import make_bars
from tests.features.test_slices import CFG, SPEC


@pytest.fixture(scope="module")
def frame() -> pl.DataFrame:
    bars = make_bars(1500, 3, SPEC, p_missing_level=0.05, p_trade=0.4)
    return compute.compute_features(bars.lazy(), SPEC).collect()


def test_parquet_encoding_is_deterministic_and_hashed_bytes_are_the_file(frame, tmp_path):
    a = parquet_bytes(frame)
    b = parquet_bytes(pl.DataFrame(frame.to_dicts(), schema=frame.schema))  # rebuilt frame
    assert a == b and bytes(encode_parquet(frame)) == a
    path, digest = write_parquet_atomic(tmp_path / "x.parquet", frame)
    assert digest == sha256_file(path) == hashlib.sha256(a).hexdigest()
    back = pl.read_parquet(path)
    assert back.schema == frame.schema and back.equals(frame)  # same dtypes and values
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    col = meta.row_group(0).column(0)
    assert col.compression == PARQUET_OPTIONS["compression"].upper() + "_RAW" or (
        col.compression == PARQUET_OPTIONS["compression"].upper()
    )
    assert not col.is_stats_set and not col.has_dictionary_page


def test_fit_columns_is_bit_identical_to_fit_on_the_polars_matrix(frame):
    x = frame.filter(~pl.col(S.WARMUP)).select(SPEC.names)
    train = [{"slice_id": "fold00-train", "sha256": "0" * 64}]
    a = FrozenStats.fit(x.to_numpy(), SPEC.names, "h" * 64, 1e-8, train)
    b = FrozenStats.fit_columns(
        [x[n].to_numpy() for n in SPEC.names], SPEC.names, "h" * 64, 1e-8, train
    )
    assert a.mean.tobytes() == b.mean.tobytes() and a.sigma.tobytes() == b.sigma.tobytes()
    assert a.to_json() == b.to_json()
    with pytest.raises(StatsError, match="non-finite"):
        FrozenStats.fit_columns([np.array([1.0, np.inf])], ["a"], "h", 1e-8, train)
    with pytest.raises(StatsError, match="zero rows"):
        FrozenStats.fit_columns([np.zeros(0)], ["a"], "h", 1e-8, train)
    with pytest.raises(StatsError, match="length"):
        FrozenStats.fit_columns([np.zeros(2), np.zeros(3)], ["a", "b"], "h", 1e-8, train)


def test_write_if_changed_leaves_identical_files_alone(tmp_path):
    p = tmp_path / "m.json"
    assert write_if_changed(p, b"one")
    os.utime(p, ns=(1, 1))
    assert not write_if_changed(p, b"one") and p.stat().st_mtime_ns == 1
    assert write_if_changed(p, b"two") and p.read_bytes() == b"two"


@pytest.fixture
def staged(tmp_path):
    bars = make_bars(3600, 5, SPEC, p_missing_level=0.05, p_trade=0.4)
    bars_path = tmp_path / "bars.parquet"
    bars_path.write_bytes(parquet_bytes(bars))
    return stage_slices(str(bars_path), CFG, str(tmp_path / "staging"))


def _ok(plan):
    return {s.slice_id: {"success": True, "failed": [], "statistics": {}} for s in plan.slices}


def test_publish_refuses_a_staged_file_rewritten_after_staging(staged, tmp_path):
    from core.paths import DataLayout

    item = staged.slices[1]
    data = Path(item.path).read_bytes()
    with open(item.path, "r+b") as fh:  # same size, one byte flipped, in place
        fh.seek(len(data) // 2)
        fh.write(bytes([data[len(data) // 2] ^ 0xFF]))
    with pytest.raises(SliceBuildError, match=f"{item.slice_id} changed after staging"):
        publish_slices(staged, _ok(staged), DataLayout(tmp_path / "d"), {}, SPEC.lookback_ns)
    assert not (tmp_path / "d").exists()


def test_publish_accepts_a_staged_file_rewritten_with_the_same_bytes(staged, tmp_path):
    from core.paths import DataLayout

    item = staged.slices[0]
    data = Path(item.path).read_bytes()
    os.unlink(item.path)
    Path(item.path).write_bytes(data)  # new inode, same bytes
    index = publish_slices(staged, _ok(staged), DataLayout(tmp_path / "d"), {}, SPEC.lookback_ns)
    assert index.folds[0].train == "fold00-train"


# ---------------------------------------------------------------- depth price band
def _depth_float(px: list[int], sz: list[int], s2: int, x: float) -> float:
    """The definition, as the streaming twin evaluates it."""
    lim = float(s2) * x
    return float(
        sum(
            q
            for p, q in zip(px, sz, strict=True)
            if p > 0 and float(abs(p * 2 - s2) * 10000) <= lim
        )
    )


@settings(max_examples=200, deadline=None)
@given(
    s2=st.integers(0, 2 * 10**9),
    x=st.floats(0.01, 5000.0, allow_nan=False),
    offsets=st.lists(st.integers(-3, 3), min_size=10, max_size=10),
    data=st.data(),
)
def test_depth_integer_band_equals_the_float_definition(s2, x, offsets, data):
    spec = FeatureSpec(depth_bps=(x,))
    # prices at the edges of the band (+- a few ticks) and anywhere
    k = math.floor(float(s2) * x) // 10000
    edges = [(s2 - k) // 2, (s2 + k) // 2, (s2 - k + 1) // 2, (s2 + k + 1) // 2]
    px = [max(0, edges[i % 4] + offsets[i]) for i in range(5)]
    px += data.draw(st.lists(st.integers(0, 2 * 10**9), min_size=5, max_size=5))
    sz = data.draw(st.lists(st.integers(0, 10**6), min_size=10, max_size=10))
    frame = pl.DataFrame(
        {compute._S2: [s2], **{S.bid_px(i): [px[i]] for i in range(10)}}
        | {S.bid_sz(i): [sz[i]] for i in range(10)},
        schema={
            c: pl.Int64
            for c in [
                compute._S2,
                *(S.bid_px(i) for i in range(10)),
                *(S.bid_sz(i) for i in range(10)),
            ]
        },
    )
    got = frame.select(compute.depth_within_bps(x, "bid", spec)).item()
    assert got == _depth_float(px, sz, s2, x)


def test_republish_keeps_files_that_already_hold_the_staged_sha256(staged, tmp_path):
    from core.paths import DataLayout

    layout = DataLayout(tmp_path / "d")
    publish_slices(staged, _ok(staged), layout, {}, SPEC.lookback_ns)
    item = staged.slices[0]
    published = tmp_path / "d" / "slices"
    before = {p.name: p.stat().st_mtime_ns for p in published.rglob("*")}
    os.unlink(item.path)  # (published files are hard links of the staged ones)
    Path(item.path).write_bytes(b"not the validated slice")  # staged copy now useless
    publish_slices(staged, _ok(staged), layout, {}, SPEC.lookback_ns)  # nothing taken from it
    assert {p.name: p.stat().st_mtime_ns for p in published.rglob("*")} == before
    target = next(published.rglob(f"{item.slice_id}.parquet"))
    assert sha256_file(target) == item.sha256
    with pytest.raises(SliceBuildError, match="changed after staging"):  # a fresh target needs it
        publish_slices(staged, _ok(staged), DataLayout(tmp_path / "e"), {}, SPEC.lookback_ns)
