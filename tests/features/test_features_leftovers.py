"""The features stage removes the temp files a crashed run left, and nothing else."""

from __future__ import annotations

import os
import time
from pathlib import Path

from core.paths import DataLayout
from features.publish import remove_leftovers

SPEC = "ab" * 32


def _touch(p: Path, age_s: float = 0.0) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"x")
    if age_s:
        t = time.time() - age_s
        os.utime(p, (t, t))
    return p


def test_remove_leftovers_clears_temps_of_the_four_folders_and_keeps_published_files(tmp_path):
    layout = DataLayout(tmp_path)
    temps = [
        _touch(layout.slices(SPEC) / "segments" / ".segment.k3j.tmp"),
        _touch(layout.slices(SPEC) / ".fold00-train.manifest.json.x1.tmp"),
        _touch(tmp_path / "bars" / "XBTUSD" / SPEC[:12] / ".bars-1.arrow.q.tmp"),
        _touch(tmp_path / "stats" / "s1" / ".mean.npy.z.tmp"),
        _touch(tmp_path / "staging" / "features" / "k" / ".seg.tmp"),
    ]
    kept = [
        _touch(layout.slices(SPEC) / "fold00-train.manifest.json"),
        _touch(tmp_path / "stats" / "s1" / "mean.npy"),
        _touch(layout.slices("cd" * 32) / ".other-spec.tmp"),  # another spec's folder
        _touch(tmp_path / "events" / "XBTUSD" / ".ingest.tmp"),  # the ingest stage's
    ]
    assert remove_leftovers(layout, SPEC, "XBTUSD") == []  # fresh: could be a live writer's
    removed = remove_leftovers(layout, SPEC, "XBTUSD", min_age_s=0.0)  # under the lock
    assert sorted(removed) == sorted(str(p.relative_to(tmp_path)) for p in temps)
    assert not any(p.exists() for p in temps) and all(p.exists() for p in kept)


def test_remove_leftovers_without_the_lock_takes_only_old_temps(tmp_path):
    layout = DataLayout(tmp_path)
    old = _touch(tmp_path / "stats" / "s" / ".a.tmp", age_s=7200)
    fresh = _touch(tmp_path / "stats" / "s" / ".b.tmp")
    assert remove_leftovers(layout, SPEC, "XBTUSD") == ["stats/s/.a.tmp"]
    assert not old.exists() and fresh.exists()
    assert remove_leftovers(DataLayout(tmp_path / "missing"), SPEC, "XBTUSD") == []
