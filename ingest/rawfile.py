"""Reading raw input bytes safely (adapter): sha256, gzip detection, clear errors.

Raw files are only ever opened for reading.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

from core.hashing import sha256_bytes

GZIP_MAGIC = b"\x1f\x8b"


class RawFileError(ValueError):
    """A raw file that cannot be read as a whole (the reason goes to quarantine).

    ``sha256`` is the digest of the stored bytes when they could be read."""

    def __init__(self, message: str, sha256: str | None = None) -> None:
        super().__init__(message)
        self.sha256 = sha256


def read_raw(path: str | Path) -> tuple[bytes, str]:
    """(decompressed bytes, sha256 of the file's bytes as stored).

    Raises RawFileError for an unreadable file, an empty file, or a truncated/corrupt
    gzip stream.
    """
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise RawFileError(f"unreadable file: {exc.strerror or exc}") from exc
    digest = sha256_bytes(data)
    if not data:
        raise RawFileError("empty file", digest)
    if data[:2] == GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (EOFError, OSError, zlib.error) as exc:
            raise RawFileError(f"truncated or corrupt gzip: {exc}", digest) from exc
        if not data:
            raise RawFileError("empty file (after gzip)", digest)
    elif p.suffix == ".gz":
        raise RawFileError("file named .gz is not gzip data", digest)
    return data, digest
