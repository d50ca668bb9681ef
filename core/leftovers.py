"""Leftovers of crashed runs: temp files of `core.atomic` that were never renamed.

`core.atomic` writes `.<name>.<random>.tmp` beside its target and renames it; a run
killed between the two leaves the temp file behind. The stage that writes a folder
removes them when it starts again, but only those that cannot be in use: older than a
safety margin (a live writer's temp file is minutes old at most: it is written, fsynced
and renamed in one call), or any age while the caller holds the folder's lock that every
writer of it takes. Adapter (files only); never follows symlinks out of the folder.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

#: a temp file untouched this long belongs to no live writer (seconds)
STALE_AFTER_S = 3600.0
TEMP_GLOB = ".*.tmp"


def remove_stale_temps(
    folder: str | Path,
    min_age_s: float = STALE_AFTER_S,
    recursive: bool = False,
    pattern: str = TEMP_GLOB,
) -> list[Path]:
    """Delete the temp files matching `pattern` in `folder` (and below with `recursive`)
    last modified at least `min_age_s` seconds ago (0: every one: only while holding the
    folder's lock). Returns the paths removed; a missing folder removes nothing. Never
    raises for a file that vanished meanwhile (another cleaner)."""
    root = Path(folder)
    if not root.is_dir():
        return []
    now = time.time()
    found = root.rglob(pattern) if recursive else root.glob(pattern)
    removed = []
    for p in sorted(found):
        with contextlib.suppress(FileNotFoundError):
            st = p.lstat()
            if not p.is_file() or p.is_symlink() or now - st.st_mtime < min_age_s:
                continue
            p.unlink()
            removed.append(p)
    return removed
