"""The fast paths of slice building: segments hashed while written and named by their
sha256, zero-copy stats, no rewrite of identical small files, the staged-segment guard
(size and mtime, else a full re-hash), and the integer price band behind
`depth_within_bps` (equal to its float definition)."""

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
from features.bars import write_bars
from features.publish import publish_slices, stage_slices
from features.slices import SliceBuildError, SliceValidation
from features.stats import FrozenStats, StatsError
from features.store import read_slice, write_arrow_atomic, write_segment
from tests.features.strategies import make_bars
from tests.features.test_slices import CFG, SPEC


@pytest.fixture(scope="module")
def frame() -> pl.DataFrame:
    bars = make_bars(1500, 3, SPEC, p_missing_level=0.05, p_trade=0.4)
    return compute.compute_features(bars.lazy(), SPEC).collect()


def test_segments_are_deterministic_and_named_by_the_sha256_of_their_bytes(frame, tmp_path):
    rebuilt = pl.DataFrame(frame.to_dicts(), schema=frame.schema)
    padded = pl.concat([frame.head(7), frame, frame.tail(5)]).slice(7, frame.height)
    pieces = pl.concat([frame.head(100), frame.slice(100, 333), frame.slice(433)], rechunk=False)
    assert pieces.n_chunks() > 1
    a, n = write_segment(tmp_path / "a", frame)
    b, _ = write_segment(tmp_path / "b", rebuilt)  # a frame built row by row
    c, _ = write_segment(tmp_path / "c", padded)  # a zero-copy row range of a bigger frame
    d, _ = write_segment(tmp_path / "d", pieces)  # the same rows in three chunks
    assert a == b == c == d and n == frame.height
    path = tmp_path / "a" / "segments" / f"{a}.arrow"
    assert sha256_file(path) == a
    assert [p.name for p in (tmp_path / "a" / "segments").iterdir()] == [path.name]  # no temp
    back = read_slice(path)
    assert back.schema == frame.schema and back.equals(frame)  # same dtypes and values
    p2, digest, size = write_arrow_atomic(tmp_path / "x.arrow", frame)
    assert digest == a == sha256_file(p2) and size == p2.stat().st_size
    assert hashlib.sha256(p2.read_bytes()).hexdigest() == a


def test_segment_bytes_do_not_depend_on_block_preallocation(frame, tmp_path, monkeypatch):
    """Segments reserve their blocks first (fallocate) and are trimmed to the bytes
    written; where fallocate is missing they are written plainly: the same file."""
    from features import store

    a, _ = write_segment(tmp_path / "a", frame)
    monkeypatch.setattr(store, "_FALLOCATE", None)
    b, _ = write_segment(tmp_path / "b", frame)
    pa_, pb = (tmp_path / d / "segments" / f"{a}.arrow" for d in "ab")
    assert a == b and pa_.read_bytes() == pb.read_bytes() and sha256_file(pa_) == a
    fd = os.open(tmp_path / "c", os.O_CREAT | os.O_WRONLY)
    try:  # where it reserves, the file grows to the reserved size (then is trimmed)
        assert not store._preallocate(fd, 12_345) or os.fstat(fd).st_size == 12_345
    finally:
        os.close(fd)


def _o_direct(fd: int) -> bool:
    import fcntl

    return bool(fcntl.fcntl(fd, fcntl.F_GETFL) & getattr(os, "O_DIRECT", 0))


def _direct_here(folder: Path) -> bool:
    """Whether the file system under `folder` takes direct I/O (ext4 does; some do not,
    and the writer then goes through the page cache)."""
    from features import store

    fd = os.open(folder / "probe", os.O_CREAT | os.O_WRONLY)
    try:
        return store._set_direct(fd, True)
    finally:
        os.close(fd)


def _writes_by_mode(monkeypatch, refuse_after: int | None = None) -> dict[str, int]:
    """Count os.write calls made with and without O_DIRECT; with `refuse_after`, direct
    writes after that many are refused with EINVAL (a file system wanting a coarser
    alignment)."""
    import errno

    real, counts = os.write, {"direct": 0, "buffered": 0}

    def write(fd, data):
        if _o_direct(fd):
            counts["direct"] += 1
            if refuse_after is not None and counts["direct"] > refuse_after:
                raise OSError(errno.EINVAL, "Invalid argument")
        else:
            counts["buffered"] += 1
        return real(fd, data)

    monkeypatch.setattr(os, "write", write)
    return counts


def test_segments_are_written_with_direct_io_and_the_same_bytes_without_it(
    frame, tmp_path, monkeypatch
):
    """Segments bypass the page cache where the file system allows (O_DIRECT, the last
    chunk padded then trimmed); where it does not, or where it refuses a write part way
    through, they go through the page cache: the same file in every case."""
    from features import store

    if not _direct_here(tmp_path):
        pytest.skip("this file system has no direct I/O")
    big = pl.concat([frame] * 8)  # ~3 MiB: whole direct chunks, then a partial one
    with monkeypatch.context() as m:
        m.setattr(store, "_set_direct", lambda fd, on: False)
        counts = _writes_by_mode(m)
        ref, _ = write_segment(tmp_path / "buffered", big)
    assert counts["direct"] == 0 and counts["buffered"] > 0
    with monkeypatch.context() as m:
        counts = _writes_by_mode(m)
        a, _ = write_segment(tmp_path / "direct", big)
    size = (tmp_path / "direct" / "segments" / f"{a}.arrow").stat().st_size
    assert counts["direct"] == -(-size // store.DIRECT_CHUNK) and counts["buffered"] == 0
    with monkeypatch.context() as m:
        counts = _writes_by_mode(m, refuse_after=1)
        b, _ = write_segment(tmp_path / "refused", big)
    assert counts["direct"] == 2 and counts["buffered"] > 0  # one written, one refused
    files = [tmp_path / d / "segments" / f"{ref}.arrow" for d in ("buffered", "direct", "refused")]
    assert a == b == ref and all(sha256_file(f) == ref for f in files)
    assert files[0].read_bytes() == files[1].read_bytes() == files[2].read_bytes()


@pytest.mark.parametrize(
    "length", [0, 1, 4095, 4096, 4097, 8191, 8192, 8193, 3 * 8192 + 123, 5 * 4096]
)
def test_direct_writer_gives_exactly_the_bytes_it_is_handed(tmp_path, monkeypatch, length):
    """The direct writer's own edges, with an 8 KiB chunk: empty, under one granule,
    exact granules and chunks, one byte over; pieces of any size."""
    from features import store

    if not _direct_here(tmp_path):
        pytest.skip("this file system has no direct I/O")
    monkeypatch.setattr(store, "DIRECT_CHUNK", 8192)
    data = np.random.default_rng(length).integers(0, 256, length, dtype=np.uint8).tobytes()
    cuts = sorted(np.random.default_rng(length + 1).integers(0, length + 1, 6).tolist())
    fd = os.open(tmp_path / "f", os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        assert store._set_direct(fd, True)
        sink = store._DirectFile(fd)
        for lo, hi in zip([0, *cuts], [*cuts, length], strict=True):
            sink.write(data[lo:hi])
        sink.finish()
    finally:
        os.close(fd)
    assert sink.size == length and sink.sha.hexdigest() == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "f").read_bytes() == data


@pytest.mark.parametrize("block_rows", [7, 60, 61, 62, 500, 4000])  # look-back: 61
def test_features_in_blocks_equal_one_pass_over_the_history_bit_for_bit(block_rows):
    """slice_rows computes the history a block at a time, each block with the
    look-back before it: every column (warm-up flags included) equals one pass over
    the whole history, to the bit, for blocks shorter than, equal to and longer than
    the look-back; with desynced-book stretches and a late first trade."""
    from features.slicing import features_in_blocks, slice_rows

    bars = make_bars(1200, 11, SPEC, p_not_ok=0.01, p_trade=0.3, first_trade_bar=90)
    whole = compute.compute_features(bars.lazy(), SPEC).collect()
    blocks = features_in_blocks(bars, SPEC, block_rows)
    assert blocks.height == whole.height and blocks.columns == whole.columns
    for c in whole.columns:  # NaN in the same places, every other value the same bits
        a, b = whole[c].to_numpy(), blocks[c].to_numpy()
        assert a.tobytes() == b.tobytes(), c
    assert slice_rows(bars, SPEC, block_rows).equals(slice_rows(bars, SPEC))
    with pytest.raises(ValueError, match="block_rows"):
        features_in_blocks(bars, SPEC, 0)
    assert features_in_blocks(bars.clear(), SPEC).height == 0


def test_fit_columns_is_bit_identical_to_fit_on_the_polars_matrix(frame):
    x = frame.filter(~pl.col(S.WARMUP)).select(SPEC.names)
    train = [{"slice_id": "fold00-train", "sha256": "0" * 64}]
    a = FrozenStats.fit(x.to_numpy(), SPEC.names, "h" * 64, 1e-8, train)
    b = FrozenStats.fit_columns(
        [x[n].to_numpy() for n in SPEC.names], SPEC.names, "h" * 64, 1e-8, train
    )
    assert a.mean.tobytes() == b.mean.tobytes() and a.sigma.tobytes() == b.sigma.tobytes()
    assert a.meta() == b.meta()
    with pytest.raises(StatsError, match="non-finite"):
        FrozenStats.fit_columns([np.array([1.0, np.inf])], ["a"], "h", 1e-8, train)
    with pytest.raises(StatsError, match="zero rows"):
        FrozenStats.fit_columns([np.zeros(0)], ["a"], "h", 1e-8, train)
    with pytest.raises(StatsError, match="length"):
        FrozenStats.fit_columns([np.zeros(2), np.zeros(3)], ["a", "b"], "h", 1e-8, train)


def test_stats_of_a_window_over_chunk_edges_equal_those_of_one_contiguous_frame(frame):
    """stage_slices fits a window that spans chunks of the feature frame through one
    reused scratch buffer: the stats are the contiguous frame's, to the bit, and each
    column is its own (the buffer is refilled, not shared)."""
    from features.publish import _float_columns

    x = frame.filter(~pl.col(S.WARMUP)).select(SPEC.names)
    pieces = pl.concat([x.slice(0, 1), x.slice(1, 300), x.slice(301)], rechunk=False)
    assert pieces.n_chunks() == 3
    train = [{"slice_id": "fold00-train", "sha256": "0" * 64}]
    a = FrozenStats.fit(x.to_numpy(), SPEC.names, "h" * 64, 1e-8, train)
    b = FrozenStats.fit_columns(
        _float_columns(pieces, SPEC.names), SPEC.names, "h" * 64, 1e-8, train
    )
    assert a.mean.tobytes() == b.mean.tobytes() and a.sigma.tobytes() == b.sigma.tobytes()
    cols = [c.copy() for c in _float_columns(pieces, SPEC.names)]
    assert all(
        np.array_equal(c, x[n].to_numpy(), equal_nan=True)
        for c, n in zip(cols, SPEC.names, strict=True)
    )
    with pytest.raises(StatsError, match="one 1-D column per feature"):
        FrozenStats.fit_columns(iter([np.zeros(3)]), ["a", "b"], "h", 1e-8, train)
    with pytest.raises(StatsError, match="zero rows"):
        FrozenStats.fit_columns([], [], "h", 1e-8, train)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(-1e12, 1e12, allow_nan=False), min_size=1, max_size=700),
    st.floats(-1e6, 1e6),
)
def test_fit_columns_equals_numpy_mean_and_std_bit_for_bit(values, shift):
    """`fit_columns` computes mean and sigma in fewer passes than numpy; the values must
    be numpy's own, to the bit (any length: pairwise sums work in blocks)."""
    c = np.asarray(values) + shift
    s = FrozenStats.fit_columns([c], ["a"], "h", 0.0, [])
    assert s.mean.tobytes() == np.float64(c.mean()).tobytes()
    assert s.sigma.tobytes() == np.float64(c.std()).tobytes()


def test_publish_if_changed_leaves_identical_files_alone(tmp_path):
    from core.atomic import publish_if_changed

    p = tmp_path / "m.json"
    assert publish_if_changed([(p, b"one")])
    os.utime(p, ns=(1, 1))
    assert not publish_if_changed([(p, b"one")]) and p.stat().st_mtime_ns == 1
    assert publish_if_changed([(p, b"two")]) and p.read_bytes() == b"two"


@pytest.fixture
def staged(tmp_path):
    bars = make_bars(3600, 5, SPEC, p_missing_level=0.05, p_trade=0.4)
    bars_path = tmp_path / "bars.arrow"
    write_bars(bars_path, bars)
    return stage_slices(str(bars_path), CFG, str(tmp_path / "staging"))


def _ok(plan):
    return {s.slice_id: SliceValidation(success=True, suite="test") for s in plan.slices}


def test_publish_refuses_a_staged_segment_rewritten_after_staging(staged, tmp_path):
    from core.paths import DataLayout

    path = staged.segment_path(staged.slices[1].parts[0])
    data = path.read_bytes()
    with open(path, "r+b") as fh:  # same size, one byte flipped, in place
        fh.seek(len(data) // 2)
        fh.write(bytes([data[len(data) // 2] ^ 0xFF]))
    with pytest.raises(SliceBuildError, match=f"{path.name} changed after staging"):
        publish_slices(staged, _ok(staged), DataLayout(tmp_path / "d"), {}, SPEC.lookback_ns)
    assert not (tmp_path / "d").exists()


def test_publish_copies_segments_when_staging_is_on_another_file_system(
    staged, tmp_path, monkeypatch
):
    from core.paths import DataLayout

    def cross_device(src, dst):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", cross_device)
    publish_slices(staged, _ok(staged), DataLayout(tmp_path / "d"), {}, SPEC.lookback_ns)
    for part in {p.sha256: p for s in staged.slices for p in s.parts}.values():
        target = next((tmp_path / "d" / "slices").rglob(Path(part.file).name))
        assert sha256_file(target) == part.sha256
        assert target.stat().st_ino != staged.segment_path(part).stat().st_ino  # a copy
    assert not [f for f in (tmp_path / "d").rglob("*") if f.name.endswith(".tmp")]


def test_a_cached_plan_from_an_earlier_version_is_restaged(staged):
    from pydantic import ValidationError

    from features.slices import SlicePlan
    from flows.features import _staged_files_exist
    from flows.results import decode_object

    record = {"__class__": f"{SlicePlan.__module__}.SlicePlan"}
    plan = staged.model_dump(mode="json")
    assert decode_object(record | {"data": plan}) == staged and _staged_files_exist(staged)
    del plan["stats"]  # plans before stats were carried in the plan
    with pytest.raises(ValidationError):  # Prefect's cache lookup: a miss, staged again
        decode_object(record | {"data": plan})
    os.unlink(staged.segment_path(staged.slices[0].parts[0]))
    assert not _staged_files_exist(staged)


def test_publish_accepts_a_staged_segment_rewritten_with_the_same_bytes(staged, tmp_path):
    from core.paths import DataLayout

    path = staged.segment_path(staged.slices[0].parts[0])
    data = path.read_bytes()
    os.unlink(path)
    path.write_bytes(data)  # new inode and mtime, same bytes: re-hashed, accepted
    index = publish_slices(staged, _ok(staged), DataLayout(tmp_path / "d"), {}, SPEC.lookback_ns)
    assert index.folds[0].train == "fold00-train"


# ---------------------------------------------------------------- depth price band
def _depth_float(px: list[int], sz: list[int], s2: int, x: float) -> float:
    """The definition, evaluated literally in floats."""
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


def test_republish_keeps_segments_already_in_the_store(staged, tmp_path):
    from core.paths import DataLayout

    layout = DataLayout(tmp_path / "d")
    publish_slices(staged, _ok(staged), layout, {}, SPEC.lookback_ns)
    part = staged.slices[0].parts[0]
    published = tmp_path / "d" / "slices"
    before = {p.name: p.stat().st_mtime_ns for p in published.rglob("*")}
    path = staged.segment_path(part)
    os.unlink(path)  # (published segments are hard links of the staged ones)
    path.write_bytes(b"not the validated segment")  # staged copy now useless
    publish_slices(staged, _ok(staged), layout, {}, SPEC.lookback_ns)  # nothing taken from it
    assert {p.name: p.stat().st_mtime_ns for p in published.rglob("*")} == before
    target = next(published.rglob(Path(part.file).name))
    assert sha256_file(target) == part.sha256
    with pytest.raises(SliceBuildError, match="changed after staging"):  # a fresh store needs it
        publish_slices(staged, _ok(staged), DataLayout(tmp_path / "e"), {}, SPEC.lookback_ns)
