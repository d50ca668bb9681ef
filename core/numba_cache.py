"""`njit` for Chappie's kernels: numba's, with a cache that cannot serve stale code.

numba's on-disk cache (`cache=True`) is checked against the source file that DEFINES a
kernel, not against the kernels it calls in other files: after `envs/broker.py` changes,
a cached `envs/step.py` kernel keeps running the old broker (measured; numba documents
the limitation). A user who upgrades Chappie would then backtest and trade with code
that is no longer on disk, silently.

So the kernels cache under one folder per version of ALL the kernel sources together:
`<cache root>/<sha256 of every module that imports this njit>`, set in
`numba.core.config.CACHE_DIR` before the first kernel is decorated (numba reads it when a
cached function is created). Any change to any kernel module moves every kernel to a
fresh folder, so nothing compiled from other sources is ever loaded. Older folders are
removed after a week. `NUMBA_CACHE_DIR` set by the user wins (they manage it).

The cache root is `$CHAPPIE_NUMBA_CACHE`, else `$XDG_CACHE_HOME/chappie/numba`, else
`~/.cache/chappie/numba`; where it cannot be created, a folder under the system temp dir.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path

import numba
import numba.core.config

njit = numba.njit  # the decorator itself is numba's; what this module adds is the cache folder

__all__ = ["njit", "kernel_sources", "cache_dir"]

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "book", "ingest", "features", "envs", "training", "live")
MARKER = "from core.numba_cache import njit"  # how a kernel module takes this njit
KEEP_OLD_S = 7 * 86400.0


def kernel_sources() -> list[Path]:
    """Every module of the packages that takes its `njit` from here (sorted)."""
    found = []
    for pkg in PACKAGES:
        for p in sorted((ROOT / pkg).rglob("*.py")):
            with contextlib.suppress(OSError, UnicodeDecodeError):
                if MARKER in p.read_text():
                    found.append(p)
    return found


def sources_digest(paths: list[Path]) -> str:
    """sha256 over the relative paths and bytes of `paths` (first 16 hex)."""
    h = hashlib.sha256()
    for p in paths:
        h.update(str(p.relative_to(ROOT)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _root() -> Path:
    env = os.environ.get("CHAPPIE_NUMBA_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "chappie" / "numba"


def _prune(root: Path, keep: str) -> None:
    now = time.time()
    with contextlib.suppress(OSError):
        for d in root.iterdir():
            if d.name != keep and d.is_dir() and now - d.stat().st_mtime > KEEP_OLD_S:
                shutil.rmtree(d, ignore_errors=True)


def cache_dir() -> Path | None:
    """The folder numba caches in (None: the user's NUMBA_CACHE_DIR rules)."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return None
    digest = sources_digest(kernel_sources())
    for root in (_root(), Path(tempfile.gettempdir()) / f"chappie-numba-{os.getuid()}"):
        folder = root / digest
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(folder, os.W_OK):
            _prune(root, digest)
            return folder
    return None


_DIR = cache_dir()
if _DIR is not None:
    numba.core.config.CACHE_DIR = str(_DIR)  # type: ignore[attr-defined]  # set at runtime by numba
