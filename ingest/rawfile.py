"""Reading raw input bytes safely (adapter): sha256, gzip detection, clear errors.

Raw files are only ever opened for reading.
"""

from __future__ import annotations

import gzip
import hashlib
import re
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


def read_symbol_lines(path: str | Path, symbol: str, chunk: int = 1 << 25) -> tuple[bytes, str]:
    """(header line + only the lines whose 2nd field is `symbol`, sha256 of the file).

    Streams the (optionally gzip) file in chunks so a multi-GB dump of every symbol
    never sits in memory whole; the kept lines are a small fraction of it. Raises
    RawFileError like `read_raw`.
    """
    p = Path(path)
    pattern = re.compile(rb"^[^,\n]*," + re.escape(symbol.encode()) + rb",[^\n]*$", re.M)
    h = hashlib.sha256()
    kept: list[bytes] = []
    header: bytes | None = None
    tail = b""
    total = 0
    try:
        fh = open(p, "rb")  # noqa: SIM115
    except OSError as exc:
        raise RawFileError(f"unreadable file: {exc.strerror or exc}") from exc
    with fh:
        first = fh.read(chunk)
        is_gz = first[:2] == GZIP_MAGIC
        if not is_gz and p.suffix == ".gz" and first:
            h.update(first)
            raise RawFileError("file named .gz is not gzip data", h.hexdigest())
        dec = zlib.decompressobj(wbits=31) if is_gz else None
        block = first
        while block:
            h.update(block)
            try:
                text = dec.decompress(block) if dec is not None else block
                while dec is not None and dec.eof and dec.unused_data:  # concatenated members
                    rest = dec.unused_data
                    dec = zlib.decompressobj(wbits=31)
                    text += dec.decompress(rest)
            except zlib.error as exc:
                raise RawFileError(f"truncated or corrupt gzip: {exc}", None) from exc
            total += len(text)
            buf = tail + text
            cut = buf.rfind(b"\n")
            if cut < 0:
                tail = buf
            else:
                lines, tail = buf[: cut + 1], buf[cut + 1 :]
                if header is None:
                    nl = lines.find(b"\n")
                    header, lines = lines[: nl + 1], lines[nl + 1 :]
                kept += pattern.findall(lines)
            block = fh.read(chunk)
    digest = h.hexdigest()
    if dec is not None and not dec.eof:
        raise RawFileError(
            "truncated or corrupt gzip: compressed file ended before the end-of-stream marker",
            digest,
        )
    if total == 0:
        raise RawFileError("empty file", digest)
    if tail:
        if header is None:
            header, tail = tail + b"\n", b""
        else:
            kept += pattern.findall(tail)
    body = b"\n".join(kept)
    return (header or b"") + body + (b"\n" if kept else b""), digest
