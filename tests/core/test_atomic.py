from __future__ import annotations

import json
import os

import pytest

from core.atomic import (
    write_content_named,
    write_files_atomic,
    write_json_atomic,
    write_with_atomic,
)
from core.hashing import sha256_file


def test_write_json_atomic_publishes_complete_file(tmp_path):
    p = write_json_atomic(tmp_path / "a" / "m.json", {"b": 1, "a": 2})
    assert json.loads(p.read_text()) == {"a": 2, "b": 1}
    assert [f.name for f in p.parent.iterdir()] == ["m.json"]


def test_write_with_atomic_on_error_leaves_target_untouched(tmp_path):
    target = tmp_path / "x.bin"
    target.write_bytes(b"old")

    def boom(tmp):
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_with_atomic(target, boom)
    assert target.read_bytes() == b"old"
    assert sorted(f.name for f in tmp_path.iterdir()) == ["x.bin"]


def test_same_bytes_give_same_sha256(tmp_path):
    a = write_with_atomic(tmp_path / "a", lambda t: t.write_bytes(b"abc"))
    b = write_with_atomic(tmp_path / "b", lambda t: t.write_bytes(b"abc"))
    assert sha256_file(a) == sha256_file(b)


def test_write_files_atomic_publishes_every_file_or_none(tmp_path):
    old = tmp_path / "a" / "one.json"
    old.parent.mkdir()
    old.write_bytes(b"old")
    write_files_atomic([(old, b"new"), (tmp_path / "b" / "two.bin", b"2" * 70_000)])
    assert old.read_bytes() == b"new" and (tmp_path / "b" / "two.bin").read_bytes() == b"2" * 70_000
    with pytest.raises(TypeError):  # the second file cannot be written: nothing is renamed
        write_files_atomic([(old, b"newer"), (tmp_path / "b" / "three", None)])  # type: ignore[list-item]
    assert old.read_bytes() == b"new" and not (tmp_path / "b" / "three").exists()
    leftovers = [f.name for f in tmp_path.rglob("*") if f.name.endswith(".tmp")]
    assert leftovers == []
    write_files_atomic([])  # nothing to do


def test_write_content_named_names_by_sha_and_keeps_an_identical_file(tmp_path):
    def name_of(sha):
        return f"x-{sha[:8]}.bin"

    name, sha = write_content_named(tmp_path, name_of, lambda t: t.write_bytes(b"abc"))
    assert (tmp_path / name).read_bytes() == b"abc" and name == name_of(sha)
    assert sha == sha256_file(tmp_path / name)
    os.utime(tmp_path / name, (1, 1))
    again = write_content_named(tmp_path, name_of, lambda t: t.write_bytes(b"abc"))
    assert again == (name, sha) and (tmp_path / name).stat().st_mtime == 1  # not rewritten
    other, _ = write_content_named(tmp_path, name_of, lambda t: t.write_bytes(b"abd"))
    assert other != name and sorted(p.name for p in tmp_path.iterdir()) == sorted([name, other])


def test_write_content_named_on_error_leaves_no_file(tmp_path):
    def boom(tmp):
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_content_named(tmp_path, str, boom)
    assert list(tmp_path.iterdir()) == []
