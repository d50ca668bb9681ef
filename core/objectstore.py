"""An S3-compatible object store (MinIO, AWS S3, moto) beside the local data folder.
Adapter: one I/O concern, objects in and out, every byte checked against its sha256.

- `publish(local, url, storage)` uploads a file and records its sha256 in the object's
  metadata (`x-amz-meta-sha256`); an object that already holds the same sha256 is left
  alone, so publishing again costs one HEAD request per file. A PUT replaces an object
  whole (readers see the old bytes or the new, never half), and callers publish the
  files a manifest names before the manifest.
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
`$XDG_CACHE_HOME/chappie/store` (`~/.cache/chappie/store`).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.config.storage import StorageConfig
from core.hashing import sha256_file

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
    from the environment)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=storage.endpoint_url,
        region_name=storage.region,
        config=Config(
            retries={"max_attempts": 5, "mode": "standard"}, s3={"addressing_style": "path"}
        ),
    )


def _error(action: str, url: str, exc: Exception) -> ObjectStoreError:
    return ObjectStoreError(f"cannot {action} {url}: {type(exc).__name__}: {exc}")


def stored_sha256(url: str, storage: StorageConfig, s3: Any = None) -> str | None:
    """The sha256 an object's metadata records, None when there is no such object (or it
    records none). Raises ObjectStoreError on any other failure (no bucket, no access)."""
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
    meta = head.get("Metadata") or {}
    return meta.get(SHA256_META)


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
        import shutil

        shutil.copyfile(source, tmp)
    os.replace(tmp, target)
    return target
