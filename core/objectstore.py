"""An S3-compatible object store (MinIO, AWS S3, moto) beside the local data folder.
Adapter: one I/O concern, objects in and out, every byte checked against its sha256.

- `publish(local, url, storage)` uploads a file and records its sha256 in the object's
  metadata (`x-amz-meta-sha256`); an object that already holds the same sha256 is left
  alone, so publishing again costs one HEAD request per file. A PUT replaces an object
  whole (readers see the old bytes or the new, never half), and callers publish the
  files a manifest names before the manifest.
- `fetch_root(url, storage)`: the same for an object a reader has no earlier sha256 for
  (an event partition's manifest, a bars index or day record, a sampler state): checked
  against the sha256 the object's own metadata records (damage in the store or on the
  way is caught; what it names is then checked against it).
- `pull(files, folder_url, folder, storage)` / `push(folder, folder_url, files, storage)`:
  a folder of files named by a manifest, in and out (each file against its sha256; the
  manifest pushed last: a partial upload is never seen as done).
- `view_root(storage)`: where a store's objects are laid out like the local data folder
  (hard links into the cache), so readers of local paths read them unchanged.
- `fetch_verified(url, sha256, storage)` returns a local file holding exactly those
  bytes: from the content-addressed cache (`<cache>/sha256/<ab>/<sha256>`, re-hashed on
  every read) or downloaded into a temp file beside it, hashed while it streams and
  renamed into place only when the hash matches. A mismatch raises ObjectStoreError
  naming the object and both hashes; the bytes are deleted, never used.

The expected sha256 always comes from the reader's side (a manifest it already checked,
a task planned from the local store), never from the object's own metadata.

boto3 is imported inside the functions (importing this module costs nothing);
credentials come from boto3's usual chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY,
a profile), never from the config. The cache folder is CHAPPIE_STORE_CACHE, default
`$XDG_CACHE_HOME/chappie/store` (`~/.cache/chappie/store`); `trim_cache` bounds its
content-addressed part (CHAPPIE_STORE_CACHE_BYTES, default 20 GiB, least recently used
first).
"""

from __future__ import annotations

import email.utils
import functools
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.config.storage import StorageConfig
from core.hashing import fingerprint, sha256_file

SHA256_META = "sha256"  # object metadata key (sent as x-amz-meta-sha256)
_CHUNK = 1 << 20


class ObjectStoreError(RuntimeError):
    """An object that cannot be published or fetched, or whose bytes are not the ones
    asked for (the message names the object and, for a mismatch, both sha256s)."""


@dataclass(frozen=True)
class S3Url:
    """`s3://<bucket>/<key>`."""

    bucket: str
    key: str

    @classmethod
    def parse(cls, url: str) -> S3Url:
        if not url.startswith("s3://"):
            raise ObjectStoreError(f"{url!r} is not an s3:// URL")
        bucket, _, key = url[len("s3://") :].partition("/")
        if not bucket:
            raise ObjectStoreError(f"{url!r} names no bucket")
        return cls(bucket, key.strip("/"))

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}" if self.key else f"s3://{self.bucket}"


def is_store_url(location: str | os.PathLike[str]) -> bool:
    """True when `location` is an object-store URL rather than a local path."""
    return str(location).startswith("s3://")


def join(url: str, *parts: str) -> str:
    """`url` with `parts` appended as '/'-separated key segments."""
    out = url.rstrip("/")
    for p in parts:
        out += "/" + p.strip("/")
    return out


def default_cache_dir() -> Path:
    """CHAPPIE_STORE_CACHE, else `$XDG_CACHE_HOME/chappie/store` (`~/.cache/...`). Read at
    call time (in the process that fetches: a Dask worker has its own)."""
    env = os.environ.get("CHAPPIE_STORE_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "chappie" / "store"


def client(storage: StorageConfig) -> Any:
    """A boto3 S3 client for `storage` (endpoint and region from the config, credentials
    from the environment), one per process, store and credentials (boto3 clients are
    thread-safe; making one costs tens of milliseconds)."""
    creds = tuple(os.environ.get(k) for k in _CREDENTIAL_VARS)
    return _client(os.getpid(), storage.endpoint_url, storage.region, creds)


#: what boto3 reads from the environment to choose credentials (part of the client key)
_CREDENTIAL_VARS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_DEFAULT_REGION",
)


@functools.lru_cache(maxsize=8)
def _client(
    pid: int, endpoint_url: str | None, region: str | None, creds: tuple[str | None, ...]
) -> Any:
    # slow: boto3 (~0.15 s), only an s3:// store needs it
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=region,
        config=Config(
            retries={"max_attempts": 5, "mode": "standard"}, s3={"addressing_style": "path"}
        ),
    )


def _error(action: str, url: str, exc: Exception) -> ObjectStoreError:
    return ObjectStoreError(f"cannot {action} {url}: {type(exc).__name__}: {exc}")


def _head(url: str, storage: StorageConfig, s3: Any = None) -> dict[str, str] | None:
    """An object's metadata, None when there is no such object. Raises ObjectStoreError
    on any other failure (no bucket, no access, endpoint down)."""
    # slow: botocore, loaded only when an s3:// store is used
    from botocore.exceptions import ClientError

    loc = S3Url.parse(url)
    s3 = s3 or client(storage)
    try:
        head = s3.head_object(Bucket=loc.bucket, Key=loc.key)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchKey", "NotFound"):
            return None
        raise _error("read", url, exc) from exc
    except Exception as exc:  # endpoint down, bad credentials: one clear line
        raise _error("read", url, exc) from exc
    return dict(head.get("Metadata") or {})


def stored_sha256(url: str, storage: StorageConfig, s3: Any = None) -> str | None:
    """The sha256 an object's metadata records, None when there is no such object (or it
    records none). Raises ObjectStoreError on any other failure (no bucket, no access)."""
    meta = _head(url, storage, s3)
    return None if meta is None else meta.get(SHA256_META)


def publish(
    local: str | Path,
    url: str,
    storage: StorageConfig,
    sha256: str | None = None,
    s3: Any = None,
) -> tuple[str, bool]:
    """Upload the file `local` to `url` unless the object there already records the same
    sha256. `sha256`, when given, is what the file must hash to (a segment's name, a
    checksum file's entry): a local file that does not is refused (ObjectStoreError),
    never published. Returns (sha256, uploaded)."""
    p = Path(local)
    got = sha256_file(p)
    if sha256 is not None and got != sha256:
        raise ObjectStoreError(
            f"refusing to publish {p}: its sha256 is {got}, expected {sha256} (damaged locally)"
        )
    s3 = s3 or client(storage)
    if stored_sha256(url, storage, s3) == got:
        return got, False
    loc = S3Url.parse(url)
    try:
        s3.upload_file(str(p), loc.bucket, loc.key, ExtraArgs={"Metadata": {SHA256_META: got}})
    except Exception as exc:
        raise _error("publish to", url, exc) from exc
    return got, True


def publish_all(
    files: Iterable[tuple[str | Path, str, str | None]], storage: StorageConfig
) -> dict[str, str]:
    """`publish` each (local path, url, expected sha256 or None) in the order given (put
    the manifest last). Returns {url: sha256}."""
    s3 = client(storage)
    return {url: publish(local, url, storage, sha, s3)[0] for local, url, sha in files}


def _hash_file(path: Path) -> str | None:
    try:
        return sha256_file(path)
    except FileNotFoundError:
        return None


def cache_path(sha256: str, cache_dir: str | Path | None = None) -> Path:
    """Where the content-addressed cache keeps the bytes of `sha256`."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return root / "sha256" / sha256[:2] / sha256


def fetch_verified(
    url: str,
    sha256: str,
    storage: StorageConfig,
    cache_dir: str | Path | None = None,
    s3: Any = None,
) -> Path:
    """A local file holding exactly the bytes of sha256 `sha256`, fetched from `url` when
    the cache does not hold them (see the module docstring). Raises ObjectStoreError on a
    mismatch or when the object cannot be read."""
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ObjectStoreError(f"{url}: expected sha256 {sha256!r} is not 64 hex digits")
    target = cache_path(sha256, cache_dir)
    if target.exists():
        if _hash_file(target) == sha256:
            os.utime(target)  # recently used: `trim_cache` keeps it
            return target
        target.unlink(missing_ok=True)  # a damaged cache entry: fetch it again
    target.parent.mkdir(parents=True, exist_ok=True)
    loc = S3Url.parse(url)
    s3 = s3 or client(storage)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{sha256[:16]}.", suffix=".tmp", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha256()
        try:
            body = s3.get_object(Bucket=loc.bucket, Key=loc.key)["Body"]
            with os.fdopen(fd, "wb") as out:
                while chunk := body.read(_CHUNK):
                    h.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
        except Exception as exc:
            raise _error("fetch", url, exc) from exc
        got = h.hexdigest()
        if got != sha256:
            raise ObjectStoreError(
                f"{url}: sha256 {got}, expected {sha256} (damaged or replaced in the store); "
                "not used"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def fetch_bytes_verified(
    url: str, sha256: str, storage: StorageConfig, cache_dir: str | Path | None = None
) -> bytes:
    """`fetch_verified`, read back (small files: manifests, checksums)."""
    return fetch_verified(url, sha256, storage, cache_dir).read_bytes()


def link_into(source: Path, target: Path) -> Path:
    """Make `target` the same file as `source` (a hard link; a copy where links are not
    possible), replacing whatever `target` was, atomically. Returns `target`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and os.path.samefile(source, target):
        return target
    tmp = target.with_name(f".{target.name}.{os.getpid()}.link.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, target)
    return target


def fetch_root(
    url: str, storage: StorageConfig, cache_dir: str | Path | None = None
) -> Path | None:
    """A local file holding the object at `url`, checked against the sha256 its own
    metadata records; None when there is no such object. For the roots of a chain of
    trust (a manifest, an index) that a reader has no earlier sha256 for: damaged bytes
    are caught, and what the root names is checked against it. Raises ObjectStoreError
    for an object without a recorded sha256 or whose bytes do not match it."""
    s3 = client(storage)
    meta = _head(url, storage, s3)
    if meta is None:
        return None
    sha = meta.get(SHA256_META)
    if sha is None:
        raise ObjectStoreError(f"{url}: the object records no sha256 (not published by chappie)")
    return fetch_verified(url, sha, storage, cache_dir, s3)


# ---------------------------------------------------------------- conditional writes
# For small coordination objects (a lease, `core.locks.hold_store_lock`): S3's conditional
# PUT (`If-None-Match: *`: create only; `If-Match: <etag>`: replace only what was read)
# makes "take it unless someone has" one atomic request on the server, whichever machine
# asks. AWS S3, MinIO and moto's server implement both.

#: what the server answers when a condition does not hold (412), or when another
#: conditional write of the same key is in flight (409, AWS)
_CONDITION_FAILED = ("PreconditionFailed", "412", "ConditionalRequestConflict", "409")


@dataclass(frozen=True)
class StoredObject:
    """A small object read whole: its bytes, its ETag (the token a conditional write
    names) and its age by the server's own clock (its `Date` header minus the object's
    `Last-Modified`; the reader's clock is used only when the server sends no date)."""

    body: bytes
    etag: str
    age_s: float


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def put_conditional(
    url: str, body: bytes, storage: StorageConfig, etag: str | None = None
) -> str | None:
    """Write `body` to `url` only if no object is there (`etag` None: `If-None-Match: *`)
    or only if the object there still has ETag `etag` (`If-Match`). Returns the new
    object's ETag, None when the condition did not hold (someone else wrote first).
    Raises ObjectStoreError on any other failure."""
    loc = S3Url.parse(url)
    cond = {"IfNoneMatch": "*"} if etag is None else {"IfMatch": etag}
    try:
        out = client(storage).put_object(Bucket=loc.bucket, Key=loc.key, Body=body, **cond)
    except Exception as exc:
        if _code(exc) in _CONDITION_FAILED or (etag is not None and _code(exc) == "NoSuchKey"):
            return None
        raise _error("write", url, exc) from exc
    return str(out["ETag"])


def read_object(url: str, storage: StorageConfig) -> StoredObject | None:
    """The object at `url` read whole (`StoredObject`), None when there is none. Raises
    ObjectStoreError on any other failure."""
    loc = S3Url.parse(url)
    try:
        got = client(storage).get_object(Bucket=loc.bucket, Key=loc.key)
        body = got["Body"].read()
    except Exception as exc:
        if _code(exc) in ("NoSuchKey", "404", "NotFound"):
            return None
        raise _error("read", url, exc) from exc
    date = got.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    now = email.utils.parsedate_to_datetime(date).timestamp() if date else time.time()
    return StoredObject(body, str(got["ETag"]), max(0.0, now - got["LastModified"].timestamp()))


def delete_if_match(url: str, etag: str, storage: StorageConfig) -> bool:
    """Delete the object at `url` only if its ETag is still `etag` (`If-Match`): True when
    deleted, False when another writer replaced or removed it. A server without
    conditional deletes gets a read, a comparison and a plain delete (a narrow race,
    acceptable for releasing a lease). Raises ObjectStoreError on any other failure."""
    loc = S3Url.parse(url)
    s3 = client(storage)
    try:
        s3.delete_object(Bucket=loc.bucket, Key=loc.key, IfMatch=etag)
        return True
    except Exception as exc:
        code = _code(exc)
        if code in _CONDITION_FAILED or code in ("NoSuchKey", "404"):
            return False
        if code not in ("NotImplemented", "501", "InvalidArgument"):
            raise _error("delete", url, exc) from exc
    now = read_object(url, storage)
    if now is None or now.etag != etag:
        return False
    try:
        s3.delete_object(Bucket=loc.bucket, Key=loc.key)
    except Exception as exc:
        raise _error("delete", url, exc) from exc
    return True


def list_names(url: str, storage: StorageConfig) -> list[str]:
    """The names one level below the prefix `url` (objects and sub-prefixes), sorted."""
    loc = S3Url.parse(url)
    prefix = f"{loc.key}/" if loc.key else ""
    names: set[str] = set()
    try:
        pages = client(storage).get_paginator("list_objects_v2")
        for page in pages.paginate(Bucket=loc.bucket, Prefix=prefix, Delimiter="/"):
            names.update(
                c["Prefix"][len(prefix) :].rstrip("/") for c in page.get("CommonPrefixes", [])
            )
            names.update(o["Key"][len(prefix) :] for o in page.get("Contents", []))
    except Exception as exc:
        raise _error("list", url, exc) from exc
    return sorted(n for n in names if n)


def pull(
    files: Mapping[str, str],
    folder_url: str,
    folder: Path,
    storage: StorageConfig,
    cache_dir: str | Path | None = None,
) -> None:
    """Lay the objects `<folder_url>/<name>` of `files` (name -> sha256) out in `folder`,
    each fetched and checked against its sha256 (`fetch_verified`) and linked in. A
    `cache_dir` the caller removes after use keeps big files out of the shared cache."""
    s3 = client(storage)
    for name, sha in files.items():
        if _hash_file(folder / name) == sha:  # already laid out (an earlier pull)
            continue
        link_into(
            fetch_verified(join(folder_url, name), sha, storage, cache_dir, s3), folder / name
        )


def push(
    folder: Path,
    folder_url: str,
    files: Mapping[str, str | None],
    storage: StorageConfig,
    last: str | None = None,
) -> dict[str, str]:
    """Publish `folder/<name>` to `<folder_url>/<name>` for `files` (name -> the sha256
    the file must hash to, or None), then `last` (the manifest naming them: a reader never
    finds it before its files). Returns {name: sha256}."""
    names = [*files, *([last] if last else [])]
    shas = publish_all(((folder / n, join(folder_url, n), files.get(n)) for n in names), storage)
    return {n: shas[join(folder_url, n)] for n in names}


def view_root(storage: StorageConfig, cache_dir: str | Path | None = None) -> Path:
    """The folder where the objects of `storage` are laid out like the local data folder
    (`events/...`, `bars/...`: hard links into the cache), one per store URL and
    endpoint."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return root / "view" / fingerprint([storage.url, storage.endpoint_url])[:16]


def cache_bytes_limit() -> int:
    """CHAPPIE_STORE_CACHE_BYTES, default 20 GiB: the bound `trim_cache` keeps."""
    return int(os.environ.get("CHAPPIE_STORE_CACHE_BYTES") or 20 << 30)


def trim_cache(max_bytes: int | None = None, cache_dir: str | Path | None = None) -> list[Path]:
    """Delete the least recently used files of the content-addressed cache until it
    holds at most `max_bytes` (`cache_bytes_limit()`). A file a view links to keeps its
    bytes there (the view is the working set of one run). Returns the files removed."""
    limit = cache_bytes_limit() if max_bytes is None else max_bytes
    root = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / "sha256"
    entries = []
    for p in root.glob("*/*"):
        try:
            st = p.stat()
        except FileNotFoundError:
            continue
        entries.append((st.st_mtime, st.st_size, p))
    total = sum(size for _, size, _ in entries)
    removed = []
    for _, size, p in sorted(entries):
        if total <= limit:
            break
        p.unlink(missing_ok=True)
        total -= size
        removed.append(p)
    return removed
