"""Integrity of published slices and stats: frozen stats carry checksums that loaders
and `chappie audit slices` verify; manifest part paths are confined to the segment
store; a crashed segment writer's temp files are removed on the next write."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from core.atomic import json_bytes
from features import store
from features.stats import FrozenStats, StatsError, verify_stats_dir
from features.store import (
    SliceReadError,
    audit_store,
    read_slice,
    slice_digest,
    verify_slice,
    write_segment,
)

NAMES = ("a", "b")


def _publish(data: Path, parts_file: str | None = None) -> tuple[Path, Path]:
    """A hand-made published slice (one segment) and its stats under `data`."""
    folder = data / "slices" / "abcdef012345"
    frame = pl.DataFrame({"ts": [1, 2, 3], "a": [1.0, 2.0, 4.0], "b": [0.5, 0.5, 0.5]})
    sha, rows = write_segment(folder, frame)
    stats = FrozenStats.fit(
        frame.select(NAMES).to_numpy(), NAMES, "h" * 64, 1e-8, [{"slice_id": "s", "sha256": sha}]
    )
    stats_dir = stats.save(data / "stats" / stats.stats_id)
    manifest = {
        "slice_id": "fold00-train",
        "parts": [{"file": parts_file or f"segments/{sha}.arrow", "sha256": sha, "rows": rows}],
        "sha256": slice_digest([(sha, rows)]),
        "rows": rows,
        "stats_id": stats.stats_id,
    }
    path = folder / "fold00-train.manifest.json"
    path.write_bytes(json_bytes(manifest))
    return path, stats_dir


def _flip_byte(p: Path, at: int = -3) -> None:
    b = bytearray(p.read_bytes())
    b[at] ^= 0x01
    p.write_bytes(bytes(b))


def test_stats_checksums_are_recorded_and_load_refuses_a_flipped_byte(
    tmp_path: Path,
) -> None:
    _, d = _publish(tmp_path)
    sums = json.loads((d / "checksums.json").read_text())
    assert set(sums) == {"mean.npy", "sigma.npy", "stats.json"}
    assert verify_stats_dir(d) == []
    FrozenStats.load(d)
    _flip_byte(d / "mean.npy")  # a float's low bit: still a valid .npy
    assert np.load(d / "mean.npy", allow_pickle=False).shape == (2,)
    with pytest.raises(StatsError, match=r"mean\.npy does not match its sha256"):
        FrozenStats.load(d)
    assert "does not match" in verify_stats_dir(d)[0]
    _flip_byte(d / "mean.npy")  # back
    meta = json.loads((d / "stats.json").read_text())
    meta["sigma_floor"] = 1e-3  # an edited stats.json
    (d / "stats.json").write_text(json.dumps(meta))
    with pytest.raises(StatsError, match=r"stats\.json does not match"):
        FrozenStats.load(d)


def test_stats_written_before_checksums_still_load_but_the_audit_says_so(tmp_path: Path) -> None:
    _, d = _publish(tmp_path)
    (d / "checksums.json").unlink()
    assert FrozenStats.load(d).feature_names == NAMES
    assert "no checksums.json" in verify_stats_dir(d)[0]


def test_audit_slices_flags_a_flipped_byte_in_frozen_stats(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from flows.cli import main

    manifest, d = _publish(tmp_path)
    assert audit_store(manifest.parent).ok
    assert main(["audit", "slices", "--data-dir", str(tmp_path)]) == 0
    _flip_byte(d / "sigma.npy")
    rep = audit_store(manifest.parent)
    assert not rep.ok and "sigma.npy does not match" in rep.stats[d.name][0]
    assert main(["audit", "slices", "--data-dir", str(tmp_path)]) == 1
    assert "sigma.npy does not match" in capsys.readouterr().out


@pytest.mark.parametrize(
    "bad",
    [
        "../../outside/x.arrow",
        "../../../outside/x.arrow",
        "/etc/passwd",
        "segments/../../../outside/" + "0" * 64 + ".arrow",
        "segments/" + "0" * 63 + ".arrow",
        "segments/sub/" + "0" * 64 + ".arrow",
    ],
)
def test_part_paths_outside_the_segment_store_are_refused_and_audited(
    tmp_path: Path, bad: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.arrow").write_bytes(b"not read")
    manifest, _ = _publish(tmp_path / "data", parts_file=bad)
    with pytest.raises(SliceReadError, match="segment store"):
        read_slice(manifest)
    with pytest.raises(SliceReadError, match="segment store"):
        verify_slice(manifest)
    rep = audit_store(manifest.parent)
    assert not rep.ok and "segment store" in rep.slices["fold00-train"][0]


def test_a_symlinked_segment_pointing_out_of_the_store_is_refused(tmp_path: Path) -> None:
    manifest, _ = _publish(tmp_path)
    part = json.loads(manifest.read_text())["parts"][0]["file"]
    seg = manifest.parent / part
    target = tmp_path / "elsewhere.arrow"
    target.write_bytes(seg.read_bytes())
    seg.unlink()
    seg.symlink_to(target)
    with pytest.raises(SliceReadError, match="outside the segment store"):
        read_slice(manifest)


def test_stale_segment_temp_files_are_removed_on_the_next_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seg_dir = tmp_path / "segments"
    seg_dir.mkdir()
    old, fresh = seg_dir / ".segment.dead.tmp", seg_dir / ".segment.live.tmp"
    old.write_bytes(b"x")
    fresh.write_bytes(b"y")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert audit_store(tmp_path).leftovers == [
        "segments/.segment.dead.tmp",
        "segments/.segment.live.tmp",
    ]
    monkeypatch.setattr(store, "_swept", set())
    write_segment(tmp_path, pl.DataFrame({"x": [1]}))
    assert not old.exists() and fresh.exists()  # a live writer's file is kept


def test_slices_audited_apart_from_their_stats_list_the_stats_as_absent(tmp_path: Path) -> None:
    manifest, d = _publish(tmp_path)
    rep = audit_store(manifest.parent, stats_root=tmp_path / "elsewhere")
    assert rep.ok and rep.stats_absent == [d.name]
