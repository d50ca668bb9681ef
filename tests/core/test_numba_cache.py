"""Compiled kernels are cached per version of every kernel source, never served stale."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import core.numba_cache as nc

KERNEL_MODULES = {
    "book/order_book.py",
    "book/sampler.py",
    "envs/broker.py",
    "envs/kernels.py",
    "envs/queue.py",
    "envs/step.py",
    "features/market_audit.py",
    "ingest/levels.py",
    "ingest/synthetic.py",
}


def test_every_kernel_module_takes_this_njit() -> None:
    found = {p.relative_to(nc.ROOT).as_posix() for p in nc.kernel_sources()}
    assert found >= KERNEL_MODULES
    # no kernel module bypasses it (numba's own njit would cache beside the source)
    for pkg in nc.PACKAGES:
        for p in (nc.ROOT / pkg).rglob("*.py"):
            if p.name == "numba_cache.py":
                continue
            assert "from numba import njit" not in p.read_text(), p


def test_the_cache_folder_moves_when_any_kernel_source_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, text in {"a/k1.py": "x = 1", "b/k2.py": "y = 2", "b/other.py": "z = 3"}.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(f"{nc.MARKER}\n{text}\n" if "k" in name else text)
    monkeypatch.setattr(nc, "ROOT", tmp_path)
    monkeypatch.setattr(nc, "PACKAGES", ("a", "b"))
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("CHAPPIE_NUMBA_CACHE", str(tmp_path / "cache"))
    assert [p.name for p in nc.kernel_sources()] == ["k1.py", "k2.py"]
    first = nc.cache_dir()
    assert first is not None and first.parent == tmp_path / "cache" and first.is_dir()
    (tmp_path / "b/other.py").write_text("z = 4")  # not a kernel module: same folder
    assert nc.cache_dir() == first
    (tmp_path / "b/k2.py").write_text(f"{nc.MARKER}\ny = 3\n")  # a kernel changed
    assert nc.cache_dir() not in (None, first)
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "mine"))
    assert nc.cache_dir() is None  # the user's own setting wins


def test_a_process_caches_its_kernels_in_the_versioned_folder(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["CHAPPIE_NUMBA_CACHE"] = str(tmp_path)
    code = "import envs.kernels as k; print(k.notional(2.0, 4.0, False, 1.0))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=nc.ROOT, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "8.0"
    (folder,) = tmp_path.iterdir()
    assert folder.name == nc.sources_digest(nc.kernel_sources())
    assert list(folder.rglob("*.nbi")), "no kernel cached in the versioned folder"
