"""Reading raw input bytes safely (adapter): sha256, gzip detection, clear errors.

Raw files are only ever opened for reading.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import zlib
from collections import Counter
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.hashing import sha256_bytes

try:  # ISA-L's zlib-compatible inflate: the same streams, ~3x faster (module doc)
    from isal import igzip as _gzip
    from isal import isal_zlib as _zlib
except ImportError:  # pragma: no cover - a platform without an isal wheel
    _gzip = gzip  # type: ignore[assignment,misc]
    _zlib = zlib  # type: ignore[assignment,misc]

GZIP_MAGIC = b"\x1f\x8b"
#: what a corrupt gzip stream raises (zlib's error, or isal's)
GZIP_ERRORS: tuple[type[Exception], ...] = (zlib.error, _zlib.error)  # type: ignore[assignment]
_READ_ERRORS: tuple[type[Exception], ...] = (EOFError, OSError, *GZIP_ERRORS)


def _inflater() -> zlib._Decompress:
    """A decompressor of one gzip member (wbits 31), isal's when it is installed."""
    return _zlib.decompressobj(wbits=31)  # type: ignore[return-value]


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
            data = _gzip.decompress(data)
        except _READ_ERRORS as exc:
            raise RawFileError(f"truncated or corrupt gzip: {exc}", digest) from exc
        if not data:
            raise RawFileError("empty file (after gzip)", digest)
    elif p.suffix == ".gz":
        raise RawFileError("file named .gz is not gzip data", digest)
    return data, digest


@dataclass
class SymbolLines:
    """What `scan_symbol_lines` kept and counted. ``data``: the header line and the lines
    whose 2nd field is the symbol; ``other``: well-formed lines of other symbols;
    ``blank``: blank lines; ``malformed``: the other lines with a wrong field count
    (reason -> lines). Kept lines are counted by whoever parses ``data``."""

    data: bytes
    sha256: str
    other: int = 0
    blank: int = 0
    malformed: Counter[str] = field(default_factory=Counter)

    def count(self, block: bytes, kept: list[bytes], n_fields: int) -> None:
        """Count the lines of `block` (complete lines, each ending in a newline) that
        were not kept: blank, wrong field count, or another symbol's."""
        if not block:
            return
        n = block.count(b"\n")
        blank, wrong = line_shapes(block, n_fields)
        if kept:
            _, kept_wrong = line_shapes(b"\n".join(kept) + b"\n", n_fields)
            wrong.subtract(kept_wrong)
        wrong = +wrong  # drop the zero counts
        self.blank += blank
        self.malformed.update(
            {f"malformed row: {k} fields, expected {n_fields}": v for k, v in wrong.items()}
        )
        self.other += n - len(kept) - blank - sum(wrong.values())


def line_shapes(block: bytes, n_fields: int) -> tuple[int, Counter[int]]:
    """(blank lines, field count -> lines with a count other than `n_fields`, blank ones
    excluded) of `block` (complete lines). numpy over the byte positions of newlines and
    commas: no per-line Python loop over a multi-GB dump (only comma-less lines, rare,
    are looked at one by one to tell white space from garbage)."""
    arr = np.frombuffer(block, dtype=np.uint8)
    ends = np.flatnonzero(arr == 10)
    commas = np.flatnonzero(arr == 44)
    fields = np.diff(np.searchsorted(commas, ends), prepend=0) + 1
    starts = np.concatenate(([0], ends[:-1] + 1))
    blank_mask = np.zeros(len(ends), dtype=bool)
    for i in np.flatnonzero(fields == 1):
        blank_mask[i] = not block[starts[i] : ends[i]].strip()
    bad = (fields != n_fields) & ~blank_mask
    out: Counter[int] = Counter()
    if bad.any():
        vals, cnt = np.unique(fields[bad], return_counts=True)
        out.update({int(v): int(c) for v, c in zip(vals, cnt, strict=True)})
    return int(blank_mask.sum()), out


def read_symbol_lines(path: str | Path, symbol: str, chunk: int = 1 << 25) -> tuple[bytes, str]:
    """(header line + only the lines whose 2nd field is `symbol`, sha256 of the file):
    `scan_symbol_lines` without the counts."""
    s = scan_symbol_lines(path, symbol, chunk)
    return s.data, s.sha256


def scan_symbol_lines(path: str | Path, symbol: str, chunk: int = 1 << 25) -> SymbolLines:
    """The header line and only the lines whose 2nd field is `symbol`, the sha256 of the
    file, and the counts of every other line (`SymbolLines`).

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
    counts = SymbolLines(b"", "")
    n_fields = 0
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
        dec = _inflater() if is_gz else None
        block = first
        while block:
            h.update(block)
            try:
                text = dec.decompress(block) if dec is not None else block
                while dec is not None and dec.eof and dec.unused_data:  # concatenated members
                    rest = dec.unused_data
                    dec = _inflater()
                    text += dec.decompress(rest)
            except GZIP_ERRORS as exc:
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
                    n_fields = header.count(b",") + 1
                found = pattern.findall(lines)
                counts.count(lines, found, n_fields)
                kept += found
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
            found = pattern.findall(tail)
            counts.count(tail + b"\n", found, n_fields)
            kept += found
    body = b"\n".join(kept)
    counts.data = (header or b"") + body + (b"\n" if kept else b"")
    counts.sha256 = digest
    return counts


#: decompressed bytes per block of `iter_raw_blocks` (a block ends at a line end)
BLOCK_BYTES = 1 << 27


@dataclass
class RawStream:
    """What `iter_raw_blocks` learnt about a file once it has been consumed: the sha256
    of the stored bytes (set at the end, also when a RawFileError is raised)."""

    path: str
    sha256: str | None = None


def iter_raw_blocks(
    path: str | Path, stream: RawStream, block_bytes: int = BLOCK_BYTES
) -> Generator[tuple[bytes, bytes], None, None]:
    """Stream a (optionally gzip) raw text file as (header line, block of whole lines):
    the first block carries the header line (its newline included) and every block ends
    at a newline (the last one may end without one). Memory: one block of decompressed
    text and one compressed read buffer, however large the file.

    Same checks and reasons as `read_raw`: RawFileError for an unreadable, empty or
    truncated/corrupt gzip file and a .gz name on plain data. `stream.sha256` is the
    sha256 of the whole stored file when the iteration ends, normally or with a
    RawFileError (the rest of the file is hashed first)."""
    p = Path(path)
    h = hashlib.sha256()
    try:
        fh = open(p, "rb")  # noqa: SIM115
    except OSError as exc:
        raise RawFileError(f"unreadable file: {exc.strerror or exc}") from exc

    def fail(msg: str) -> RawFileError:
        for rest in iter(lambda: fh.read(1 << 24), b""):
            h.update(rest)
        stream.sha256 = h.hexdigest()
        return RawFileError(msg, stream.sha256)

    with fh:
        # small reads: a block is cut at the last line end of the last piece of text, so
        # the cut copies one piece, not the block (which is joined once)
        read = min(block_bytes, 1 << 20)
        first = fh.read(read)
        h.update(first)
        if not first:
            stream.sha256 = h.hexdigest()
            raise RawFileError("empty file", stream.sha256)
        is_gz = first[:2] == GZIP_MAGIC
        if not is_gz and p.suffix == ".gz":
            raise fail("file named .gz is not gzip data")
        dec = _inflater() if is_gz else None
        header: bytes | None = None
        pending: list[bytes] = []  # text after the last block (and the header line)
        size = 0
        total = 0
        raw = first
        while raw:
            if dec is not None:
                try:
                    text = dec.decompress(raw)
                    while dec.eof and dec.unused_data:  # concatenated gzip members
                        rest = dec.unused_data
                        dec = _inflater()
                        text += dec.decompress(rest)
                except GZIP_ERRORS as exc:
                    raise fail(f"truncated or corrupt gzip: {exc}") from exc
            else:
                text = raw
            total += len(text)
            if header is None:  # until the header line has ended (the first read, normally)
                text = b"".join([*pending, text])
                nl = text.find(b"\n")
                if nl >= 0:
                    header, text, pending, size = text[: nl + 1], text[nl + 1 :], [], 0
            pending.append(text)
            size += len(text)
            if header is None:
                pending, size = [text], 0
            elif size >= block_bytes:
                cut = text.rfind(b"\n")
                if cut >= 0:
                    pending[-1] = text[: cut + 1]
                    yield header, b"".join(pending)
                    pending = [text[cut + 1 :]]
                    size = len(pending[0])
            raw = fh.read(read)
            h.update(raw)
        if dec is not None and not dec.eof:
            raise fail(
                "truncated or corrupt gzip: compressed file ended before the end-of-stream marker"
            )
        stream.sha256 = h.hexdigest()
        if total == 0:
            raise RawFileError("empty file (after gzip)", stream.sha256)
        buf = b"".join(pending)
        if header is None:  # no line end at all: the text is the header line
            header, buf = buf, b""
        yield header, buf
