"""Atomic publishing: temp file in the same folder, fsync, rename.

A reader never sees a half-written file; two writers of the same path cannot
interleave bytes (the last rename wins, and both wrote complete files).
Manifests are written last, by the caller, with `write_json_atomic`.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `target`; on success fsync it and rename it over `target`.

    On an exception the temp file is removed and `target` is untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes_atomic(target: str | Path, data: bytes) -> Path:
    """Publish `data` at `target` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def write_json_atomic(target: str | Path, obj: Any) -> Path:
    """Publish `obj` as indented, key-sorted JSON at `target` atomically."""
    text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n"
    return write_bytes_atomic(target, text.encode())


def write_with_atomic(target: str | Path, writer: Callable[[Path], object]) -> Path:
    """Publish whatever `writer(tmp_path)` writes, atomically at `target`."""
    with atomic_path(target) as tmp:
        writer(tmp)
    return Path(target)
