"""Slice storage: content-addressed Arrow IPC segments, read back as one table. Adapter.

Walk-forward windows overlap (a sliding fold's train window holds the previous folds'
test windows; an expanding one holds every earlier row). Writing each slice as its own
file would write, hash and store the same rows again for every window that holds them
(1.67x the unique rows with the default sliding folds, quadratic with expanding ones).
So the rows are cut once at every window boundary into *segments*, and a slice is the
ordered list of the segments between its boundaries, written down in its manifest (the
design of table formats such as Iceberg and Delta: immutable data files, manifests
that list them).

- A segment is an Arrow IPC file (Feather v2, uncompressed): the column buffers as they
  are in memory, so a reader memory-maps it without copying or decoding (the env loads
  a slice in under a millisecond), and writing one is a single pass that hashes and
  writes the same bytes. Its name is its sha256: `segments/<sha256>.arrow`. The same
  rows give the same bytes (tested), so the same inputs give the same names.
- A slice's sha256 (`slice_digest`) is the sha256 of its part list, one line
  `<segment sha256> <rows>\\n` per segment in order: it changes when any byte of any
  segment changes, and `verify_slice` checks it against the files.
- `read_slice` / `slice_table` read a slice manifest's parts in order as one frame; they
  also read a plain Parquet or Arrow file with the slice columns (users' own data).
- A manifest's part paths are confined to the segment store: each must be
  `segments/<64 hex>.arrow` and resolve inside the folder's `segments/` (no `..`, no
  absolute path, no symlink out); `read_slice`, `verify_slice` refuse any other
  (SliceReadError) and `audit_store` reports it, with the frozen stats the manifests
  name (checksums, `features.stats.verify_stats_dir`) and temp files a crashed writer
  left (`write_segment` removes those older than an hour when it next writes there).

Polars users can also read a slice's segments directly:
`pl.scan_ipc([folder / p.file for p in load_manifest(path).parts])`.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import mmap
import os
import re
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, cast

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, ValidationError

from core.atomic import atomic_path, write_all
from core.hashing import sha256_file
from core.leftovers import remove_stale_temps
from features.stats import verify_stats_dir

SEGMENTS_DIR = "segments"
SEGMENT_SUFFIX = ".arrow"
#: a manifest's `format`: the layout `read_slice` understands
SLICE_FORMAT = "chappie-slice/1 (arrow-ipc segments)"
MANIFEST_SUFFIX = ".manifest.json"
#: longest segment: a very long window is cut into segments of at most this many rows
#: (bounds a segment's file size; boundaries stay deterministic)
SEGMENT_MAX_ROWS = 1 << 20


class SliceReadError(ValueError):
    """A slice (manifest or file) that cannot be read: missing part, bad manifest, a part
    path outside the segment store."""


_PART_FILE = re.compile(rf"{SEGMENTS_DIR}/[0-9a-f]{{64}}{re.escape(SEGMENT_SUFFIX)}")
SEGMENT_TEMP_GLOB = ".segment.*.tmp"
_swept: set[Path] = set()  # segment folders this process already swept of leftovers


class SlicePart(BaseModel):
    """One segment of a slice: `file` relative to the spec's slices folder
    (`segments/<sha256>.arrow`), the sha256 of its bytes and its rows."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    file: str
    sha256: str
    rows: int


class SliceParts(BaseModel):
    """What the segment store reads of a slice manifest: its segments in row order
    and what they must add up to (`sha256`: `slice_digest` of the parts; `rows`), its id
    and its stats id. The manifest's whole contract is `features.slices.SliceManifest`;
    the keys read here are checked, the others are not this reader's (the audit reads
    any manifest it finds)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    parts: list[SlicePart]
    sha256: str | None = None
    rows: int | None = None
    slice_id: str | None = None
    stats_id: str | None = None


def part_path(folder: Path, file: object) -> Path:
    """The absolute path of a manifest part `file` in the slices `folder`. Raises
    SliceReadError unless it is `segments/<sha256>.arrow` inside `folder/segments`."""
    if not isinstance(file, str) or not _PART_FILE.fullmatch(file):
        raise SliceReadError(
            f"part path {str(file)[:120]!r} is not {SEGMENTS_DIR}/<sha256>{SEGMENT_SUFFIX} "
            "(parts are confined to the segment store)"
        )
    path = folder / file
    store = (folder / SEGMENTS_DIR).resolve()
    if path.resolve().parent != store:  # a symlink out of the store
        raise SliceReadError(f"part {file} resolves outside the segment store {store}")
    return path


def segment_file(sha256: str) -> str:
    """A segment's path relative to its spec's slices folder."""
    return f"{SEGMENTS_DIR}/{sha256}{SEGMENT_SUFFIX}"


def slice_digest(parts: Iterable[tuple[str, int]]) -> str:
    """sha256 of the part list: one `<segment sha256> <rows>\\n` line per part, in order."""
    text = "".join(f"{sha} {int(rows)}\n" for sha, rows in parts)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


class _HashingFile:
    """A write-only file object for pyarrow: hashes and writes each buffer it is handed
    (no intermediate copy of the file in memory). `finish()` when pyarrow is done."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self.sha = hashlib.sha256()
        self.size = 0
        self.closed = False

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self.sha.update(view)
        self._put(view)
        self.size += len(view)
        return len(view)

    def _put(self, view: memoryview) -> None:
        write_all(self._fd, view)

    def finish(self) -> None:
        pass

    def flush(self) -> None:
        pass

    def tell(self) -> int:
        return self.size

    def close(self) -> None:
        self.closed = True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False


#: direct I/O granule: file offsets, lengths and buffer addresses are multiples of it
#: (4096 covers 512- and 4096-byte logical blocks; a file system that wants more
#: refuses the write with EINVAL and the segment is finished through the page cache)
DIRECT_ALIGN = 4096
#: the bytes a direct writer collects before one write
DIRECT_CHUNK = 1 << 20
_direct = threading.local()


def _direct_buffer() -> memoryview:
    """This thread's page-aligned staging buffer for direct writes (anonymous mmap,
    allocated once: a fresh one per segment costs a page fault per 4 KiB)."""
    buf = getattr(_direct, "buf", None)
    if buf is None or len(buf) < DIRECT_CHUNK:
        buf = _direct.buf = memoryview(mmap.mmap(-1, DIRECT_CHUNK))
    return cast(memoryview, buf)


def _set_direct(fd: int, on: bool) -> bool:
    """Turn O_DIRECT on or off for `fd`; False where the platform or the file system
    has no direct I/O (nothing changed then)."""
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:
        return False
    import fcntl  # optional: fcntl is POSIX only, as is O_DIRECT

    try:
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, (flags | flag) if on else (flags & ~flag))
    except OSError:
        return False
    return True


class _DirectFile(_HashingFile):
    """`_HashingFile` writing with O_DIRECT: the bytes are collected in an aligned
    buffer and written a chunk at a time straight to the device, not copied into the
    page cache and written back at fsync (measured on this VM: about 12 ms less CPU
    per 62 MB, and less wall time). `finish` pads the last chunk to the granule and
    trims the file to its size. Should a direct write be refused (EINVAL: a
    file system wanting a coarser alignment), O_DIRECT is turned off and the rest goes
    through the page cache: the same bytes either way."""

    def __init__(self, fd: int) -> None:
        super().__init__(fd)
        self._buf = _direct_buffer()
        self._chunk = DIRECT_CHUNK
        self._fill = 0
        self._direct = True

    def _put(self, view: memoryview) -> None:
        pos, n = 0, len(view)
        while pos < n:
            k = min(n - pos, self._chunk - self._fill)
            self._buf[self._fill : self._fill + k] = view[pos : pos + k]
            self._fill += k
            pos += k
            if self._fill == self._chunk:
                self._drain(self._chunk)

    def _drain(self, length: int) -> None:
        """Write the buffer's first `length` bytes (a multiple of the granule while
        direct) and empty it."""
        view = self._buf[:length]
        while view:
            try:
                view = view[os.write(self._fd, view) :]
            except OSError as e:
                if e.errno != errno.EINVAL or not self._direct:
                    raise
                self._direct = False  # refused: the rest through the page cache
                _set_direct(self._fd, False)
        self._fill = 0

    def finish(self) -> None:
        if self._fill and not self._direct:
            self._drain(self._fill)
        elif self._fill:
            padded = -(-self._fill // DIRECT_ALIGN) * DIRECT_ALIGN
            self._buf[self._fill : padded] = bytes(padded - self._fill)
            self._drain(padded)
        os.ftruncate(self._fd, self.size)  # the padding off


def write_arrow(path: str | Path, frame: pl.DataFrame) -> tuple[str, int]:
    """Write `frame` as one Arrow IPC file at `path` (not atomic: callers write to a
    temp path): one record batch, whatever the frame's chunks, so the same rows and
    schema always give the same bytes. Returns (sha256 of the file's bytes, size),
    computed while writing."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        return _write_arrow_fd(fd, frame)
    finally:
        os.close(fd)


def _write_arrow_fd(
    fd: int, frame: pl.DataFrame | pa.Table, *, direct: bool = False
) -> tuple[str, int]:
    """`write_arrow` into the empty file `fd`; `direct`: write with O_DIRECT where the
    file system has it (for files the writer will not read back: segments)."""
    table = frame.to_arrow() if isinstance(frame, pl.DataFrame) else frame
    if any(c.num_chunks > 1 for c in table.columns):
        # one record batch of contiguous buffers: the bytes depend on the rows only,
        # not on how polars happened to chunk them (engine, threads, filters)
        table = table.combine_chunks()
    # reserve the blocks up front (an upper bound: buffers padded, plus the schema,
    # message headers and footer), trimmed after: ext4 then allocates one extent instead
    # of block by block at writeback (measured: about 4 ms less CPU to write and fsync
    # 62 MB on this VM)
    reserved = _preallocate(fd, table.nbytes + 128 * table.num_columns + (64 << 10))
    sink = _DirectFile(fd) if direct and _set_direct(fd, True) else _HashingFile(fd)
    with pa.ipc.new_file(pa.PythonFile(sink, mode="w"), table.schema) as writer:
        writer.write_table(table, max_chunksize=max(1, table.num_rows))
    sink.finish()
    if reserved and not isinstance(sink, _DirectFile):  # the direct writer trims itself
        os.ftruncate(fd, sink.size)
    return sink.sha.hexdigest(), sink.size


def _fallocate() -> Callable[[int, int, int, int], int] | None:
    """Linux fallocate(2) from libc, or None. (Not `os.posix_fallocate`: where the file
    system lacks fallocate, glibc emulates it by writing every block.)"""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.fallocate
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    fn.restype = ctypes.c_int
    return cast(Callable[[int, int, int, int], int], fn)


_FALLOCATE = _fallocate()


def _preallocate(fd: int, size: int) -> bool:
    """Reserve `size` bytes of blocks for the file `fd` (mode 0: the file grows to
    `size`). False where the platform or the file system cannot; nothing changed then."""
    return _FALLOCATE is not None and _FALLOCATE(fd, 0, 0, size) == 0


def write_arrow_atomic(target: str | Path, frame: pl.DataFrame) -> tuple[Path, str, int]:
    """`write_arrow` published atomically at `target`. Returns (path, sha256, size)."""
    with atomic_path(target) as tmp:
        digest, size = write_arrow(tmp, frame)
    return Path(target), digest, size


def write_segment(folder: str | Path, frame: pl.DataFrame | pa.Table) -> tuple[str, int]:
    """Write `frame` (a polars frame, or an Arrow table such as a zero-copy row range of
    one) as a content-addressed segment `folder/segments/<sha256>.arrow`.

    Written to a temp file (one open), hashed while written, with direct I/O where the
    file system has it (later steps read a segment back, its writer does not: copying
    it into the page cache only to write it back at fsync costs CPU), fsynced, then
    renamed to its sha256 name: a reader never sees a partial segment, and a segment
    that already exists holds the same bytes (same name), so replacing it changes
    nothing. The folder is not fsynced here: whoever publishes the name
    (`features.publish`) does, once for all segments. Returns (sha256, rows)."""
    seg_dir = Path(folder) / SEGMENTS_DIR
    seg_dir.mkdir(parents=True, exist_ok=True)
    if seg_dir not in _swept:  # the first write of this run here: a crashed run's leftovers
        remove_stale_temps(seg_dir, pattern=SEGMENT_TEMP_GLOB)
        _swept.add(seg_dir)
    fd, tmp_name = tempfile.mkstemp(prefix=".segment.", suffix=".tmp", dir=seg_dir)
    try:
        try:
            digest, _ = _write_arrow_fd(fd, frame, direct=True)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp_name, seg_dir / f"{digest}{SEGMENT_SUFFIX}")
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return digest, frame.height if isinstance(frame, pl.DataFrame) else frame.num_rows


def read_arrow(path: str | Path) -> pa.Table:
    """An Arrow IPC file, memory-mapped (no copy)."""
    return pa.ipc.open_file(pa.memory_map(str(path))).read_all()


def manifest_for(path: str | Path) -> Path:
    """The manifest of a slice path: the path itself when it is a `.json` manifest, else
    `<slice_id>.manifest.json` beside it (a plain slice file, or a bare slice id)."""
    p = Path(path)
    return p if p.name.endswith(".json") else p.with_name(slice_id_of(p) + MANIFEST_SUFFIX)


def slice_id_of(path: str | Path) -> str:
    """The slice id a slice path names: its file name up to the first dot."""
    return Path(path).name.split(".")[0]


def read_parts(files: Sequence[Path]) -> pa.Table:
    """Segment files in order as one table (one chunk per segment, memory-mapped)."""
    tables = [read_arrow(f) for f in files]
    return pa.concat_tables(tables) if tables else pa.table({})


def as_frame(table: pa.Table) -> pl.DataFrame:
    """An Arrow table as a polars frame without copying (chunks kept)."""
    out = pl.from_arrow(table, rechunk=False)
    assert isinstance(out, pl.DataFrame)
    return out


def slice_parts(manifest_path: str | Path) -> tuple[SliceParts, list[Path]]:
    """(what the store reads of the manifest, absolute part paths in order) of a slice
    manifest. Raises SliceReadError for a file that is not a segment slice manifest, a
    malformed part entry, or a part path outside the segment store."""
    p = Path(manifest_path)
    try:
        raw = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise SliceReadError(f"cannot read slice manifest {p}: {e}") from e
    if not isinstance(raw, dict) or not isinstance(raw.get("parts"), list):
        raise SliceReadError(f"{p} is not a segment slice manifest (no 'parts')")
    try:
        m = SliceParts.model_validate(raw)
    except ValidationError as e:
        raise SliceReadError(f"{p}: malformed manifest: {e}") from e
    try:
        files = [part_path(p.parent, part.file) for part in m.parts]
    except SliceReadError as e:
        raise SliceReadError(f"{p.name}: {e}") from e
    return m, files


def slice_table(path: str | Path, columns: Sequence[str] | None = None) -> pa.Table:
    """The rows of a slice as one Arrow table (chunked per segment, memory-mapped).

    `path`: a slice manifest (`*.manifest.json`), or a Parquet / Arrow IPC file with the
    slice columns. Raises SliceReadError naming a missing part or unknown file type.
    """
    p = Path(path)
    if p.name.endswith(".json"):
        _, files = slice_parts(p)
        missing = [str(f) for f in files if not f.exists()]
        if missing:
            raise SliceReadError(f"slice {p.name}: missing segment(s) {missing}")
        table = read_parts(files)
    elif p.suffix in (".arrow", ".feather", ".ipc"):
        table = read_arrow(p)
    elif p.suffix == ".parquet":
        table = pq.read_table(p)
    else:
        raise SliceReadError(f"{p}: not a slice manifest, Parquet or Arrow file")
    return table.select(list(columns)) if columns is not None else table


def read_slice(path: str | Path, columns: Sequence[str] | None = None) -> pl.DataFrame:
    """`slice_table` as a polars frame (one chunk per segment; zero-copy)."""
    return as_frame(slice_table(path, columns))


def _check_manifest(
    m: SliceParts, files: Sequence[Path], sha_of: Callable[[Path], str | None]
) -> list[str]:
    """Problems of one slice manifest against its segment files; `sha_of(file)` is the
    file's sha256, None when it is missing."""
    problems = []
    for part, f in zip(m.parts, files, strict=True):
        got = sha_of(f)
        if got is None:
            problems.append(f"missing segment {part.file}")
        elif got != part.sha256:
            problems.append(f"segment {part.file}: sha256 {got}, manifest says {part.sha256}")
    digest = slice_digest((p.sha256, p.rows) for p in m.parts)
    if digest != m.sha256:
        problems.append(f"slice digest {digest}, manifest says {m.sha256}")
    if sum(p.rows for p in m.parts) != m.rows:
        problems.append("part rows do not add up to the manifest's rows")
    return problems


def _sha_or_none(f: Path) -> str | None:
    return sha256_file(f) if f.exists() else None


def verify_slice(manifest_path: str | Path) -> list[str]:
    """Re-hash every segment of a slice and its digest; return the problems found
    (empty when every byte is what the manifest says)."""
    m, files = slice_parts(manifest_path)
    return _check_manifest(m, files, _sha_or_none)


class StoreAudit(BaseModel):
    """`audit_store` of one spec's slices folder (`chappie audit slices --json` lists
    their dumps): problems by slice and by stats id, how many segments were hashed, the
    orphan segments, a crashed writer's temp files, the stats ids not found locally."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    folder: str
    slices: dict[str, list[str]]
    stats: dict[str, list[str]]
    segments: int
    orphans: list[str]
    leftovers: list[str]
    stats_absent: list[str]
    ok: bool


def audit_store(folder: str | Path, stats_root: str | Path | None = None) -> StoreAudit:
    """Check every slice manifest in one spec's slices folder against its segments,
    hashing each segment once however many slices share it, and the frozen stats each
    manifest names (`stats_root`, default `<data>/stats` beside `<data>/slices/<spec12>`)
    against their checksums.

    Returns a StoreAudit: `slices` {slice_id: [problems]} (a slice's stats problems
    included, prefixed "stats <id>:"), `stats` {stats_id: [problems]}, `segments`,
    `orphans` (segment files no manifest lists: left by a failed run, safe to delete),
    `leftovers` (temp files of a crashed writer), `stats_absent` (stats ids whose folder
    is not under `stats_root`: not checked, not a failure, so a copied slices folder can
    be audited alone), `ok`. A part path outside the segment store is a problem of
    its slice."""
    root = Path(folder)
    stats_dir = Path(stats_root) if stats_root is not None else root.parent.parent / "stats"
    hashed: dict[Path, str | None] = {}
    slices: dict[str, list[str]] = {}
    stats: dict[str, list[str]] = {}
    absent: set[str] = set()

    def sha_once(f: Path) -> str | None:
        if f not in hashed:
            hashed[f] = _sha_or_none(f)
        return hashed[f]

    for mpath in sorted(root.glob(f"*{MANIFEST_SUFFIX}")):
        try:
            m, files = slice_parts(mpath)
        except SliceReadError as e:
            slices[mpath.name.removesuffix(MANIFEST_SUFFIX)] = [str(e)]
            continue
        problems = _check_manifest(m, files, sha_once)
        sid = m.stats_id
        if sid:
            if sid not in stats:
                bad_id = not re.fullmatch(r"[0-9a-f]{8,64}", sid)
                if bad_id:
                    stats[sid] = ["not a stats id"]
                elif (stats_dir / sid).is_dir():
                    stats[sid] = verify_stats_dir(stats_dir / sid)
                else:  # slices audited apart from their stats (a copied folder)
                    absent.add(sid)
                    stats[sid] = []
            problems += [f"stats {sid}: {p}" for p in stats[sid]]
        slices[m.slice_id if m.slice_id is not None else mpath.name] = problems
    listed = {f.name for f in hashed}
    orphans = sorted(
        p.name for p in (root / SEGMENTS_DIR).glob(f"*{SEGMENT_SUFFIX}") if p.name not in listed
    )
    leftovers = sorted(str(p.relative_to(root)) for p in root.rglob(".*.tmp") if p.is_file())
    return StoreAudit(
        folder=str(root),
        slices=slices,
        stats=stats,
        segments=len(hashed),
        orphans=orphans,
        leftovers=leftovers,
        stats_absent=sorted(absent),
        ok=bool(slices) and not any(slices.values()),
    )
