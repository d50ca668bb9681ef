"""gzip inflate of raw files: ISA-L (`isal`, the dependency) and the zlib fallback give
the same bytes, blocks, digests and reasons (multi-member files, truncated, corrupt)."""

from __future__ import annotations

import gzip
import hashlib
import zlib
from pathlib import Path

import pytest

from ingest import rawfile
from ingest.rawfile import RawFileError, RawStream, iter_raw_blocks, read_raw

TEXT = b"exchange,symbol,n\n" + b"".join(b"bitmex,XBTUSD,%d\n" % i for i in range(20_000))


@pytest.fixture(params=["isal", "zlib"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "zlib":  # what a platform without an isal wheel runs
        monkeypatch.setattr(rawfile, "_zlib", zlib)
        monkeypatch.setattr(rawfile, "_gzip", gzip)
    else:
        pytest.importorskip("isal")
        assert rawfile._zlib.__name__ == "isal.isal_zlib"
    return str(request.param)


def _blocks(path: Path, size: int) -> tuple[bytes, str | None]:
    stream = RawStream(str(path))
    parts = list(iter_raw_blocks(path, stream, size))
    return parts[0][0] + b"".join(b for _, b in parts), stream.sha256


def test_multi_member_gzip_reads_whole_in_both_backends(backend: str, tmp_path: Path) -> None:
    half = len(TEXT) // 2
    cut = TEXT.rfind(b"\n", 0, half) + 1
    p = tmp_path / "two.csv.gz"
    p.write_bytes(gzip.compress(TEXT[:cut]) + gzip.compress(TEXT[cut:], compresslevel=1))
    data, digest = read_raw(p)
    assert data == TEXT and digest == hashlib.sha256(p.read_bytes()).hexdigest()
    text, sha = _blocks(p, 1 << 12)
    assert text == TEXT and sha == digest


@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_damaged_gzip_is_refused_with_the_same_reason(
    backend: str, damage: str, tmp_path: Path
) -> None:
    raw = gzip.compress(TEXT)
    bad = raw[:-40] if damage == "truncated" else raw[:10] + b"\xff" * 64 + raw[74:]
    p = tmp_path / "bad.csv.gz"
    p.write_bytes(bad)
    with pytest.raises(RawFileError, match="truncated or corrupt gzip"):
        read_raw(p)
    with pytest.raises(RawFileError, match="truncated or corrupt gzip") as exc:
        _blocks(p, 1 << 12)
    assert exc.value.sha256 == hashlib.sha256(bad).hexdigest()
