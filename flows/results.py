"""Persisted Prefect task results that cannot run code when read back.

Prefect persists cached task results as files (default `<PREFECT_HOME>/storage`, in the
data folder) and, on a cache hit, decodes a file with the serializer *named in that
file*: a replaced result file saying "pickle" (or a JSON serializer whose decoder or
`jsonlib` is any importable name) ran code on the next run. So every persisted task of
`flows/` uses `PERSISTED` (`task(..., **PERSISTED)`):

- `RESULT_SERIALIZER`: JSON, with `decode_object` as the only object hook. It rebuilds
  paths, a few stdlib value types and pydantic models of this project's packages; any
  other class name is refused (never imported).
- `RESULT_STORAGE`: local files under Prefect's result folder (PREFECT_LOCAL_STORAGE_PATH,
  resolved when used, so it follows PREFECT_HOME), written atomically. Before Prefect
  sees a file, `check_record` parses it with the plain `json` module and hands it on only
  when its serializer is exactly `RESULT_SERIALIZER`. Prefect treats a refused file as
  a cache miss: the task runs again and its result replaces the file.

Tasks therefore return JSON data: dicts, lists, str, numbers, paths and our pydantic
models round-trip; anything else fails when persisted.
"""

from __future__ import annotations

import datetime
import decimal
import importlib
import json
import pathlib
import uuid
from pathlib import Path
from typing import Any

from prefect.filesystems import LocalFileSystem
from prefect.serializers import JSONSerializer
from prefect.settings import get_current_settings
from pydantic import BaseModel, TypeAdapter

from core.atomic import write_bytes_atomic

#: packages whose pydantic models a result may hold (imported by name on read: our code)
OWN_PACKAGES = frozenset(
    ("core", "envs", "expectations", "features", "flows", "ingest", "live", "registry", "training")
)
_VALUE_TYPES: dict[str, Any] = {
    f"{t.__module__}.{t.__qualname__}": t
    for t in (
        pathlib.Path,
        pathlib.PosixPath,
        pathlib.PurePath,
        pathlib.PurePosixPath,
        datetime.datetime,
        datetime.date,
        datetime.timedelta,
        uuid.UUID,
        decimal.Decimal,
        set,
        frozenset,
        bytes,
    )
}


class UntrustedResult(ValueError):
    """A persisted result that this project did not write (or that names a class it does
    not know): refused before anything in it is decoded."""


def _model_class(name: str) -> type[BaseModel]:
    module, _, attr = name.rpartition(".")
    if module.split(".")[0] not in OWN_PACKAGES:
        raise UntrustedResult(f"persisted result names class {name!r}, not one of chappie's")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise UntrustedResult(f"persisted result names unknown class {name!r}") from exc
    if not (isinstance(cls, type) and issubclass(cls, BaseModel)):
        raise UntrustedResult(f"persisted result names {name!r}, not a pydantic model")
    return cls


def decode_object(obj: dict[str, Any]) -> Any:
    """`json` object hook of RESULT_SERIALIZER: the inverse of Prefect's JSON object
    encoder for values and models of our packages. Raises UntrustedResult for any other
    class; an exception is rebuilt as a RuntimeError carrying its type name and text."""
    if "__exc_type__" in obj:
        return RuntimeError(f"{obj['__exc_type__']}: {obj.get('message')}")
    name = obj.get("__class__")
    if not isinstance(name, str) or "data" not in obj:
        return obj
    cls = _VALUE_TYPES.get(name) or _model_class(name)
    return TypeAdapter(cls).validate_python(obj["data"])


RESULT_SERIALIZER: JSONSerializer[Any] = JSONSerializer(
    jsonlib="json",
    object_encoder="prefect.serializers.prefect_json_object_encoder",
    object_decoder=f"{__name__}.decode_object",
)
_SERIALIZER_JSON = RESULT_SERIALIZER.model_dump(mode="json")


def check_record(content: bytes) -> bytes:
    """`content` unchanged when it is a result record RESULT_SERIALIZER wrote (JSON,
    serializer exactly ours, result a JSON string). Raises UntrustedResult otherwise;
    nothing is imported or decoded beyond plain JSON."""
    try:
        record = json.loads(content)
    except ValueError as exc:
        raise UntrustedResult("persisted result is not JSON") from exc
    meta = record.get("metadata") if isinstance(record, dict) else None
    if not isinstance(meta, dict) or set(record) != {"metadata", "result"}:
        raise UntrustedResult("persisted result is not a result record")
    if meta.get("serializer") != _SERIALIZER_JSON:
        raise UntrustedResult(f"persisted result has serializer {meta.get('serializer')!r}")
    if not isinstance(record["result"], str):
        raise UntrustedResult("persisted result holds no JSON text")
    return content


class JsonResultStorage(LocalFileSystem):
    """Prefect result storage: files under `basepath` (default Prefect's local result
    folder, resolved at each use), written atomically, read back only through
    `check_record`."""

    _block_type_name = "Chappie JSON Result Storage"

    def _resolve_path(self, path: str) -> Path:
        if self.basepath:
            return super()._resolve_path(path)
        base = get_current_settings().results.local_storage_path
        return LocalFileSystem(basepath=str(base))._resolve_path(path)

    # Prefect calls `read_path(key, _sync=True)` from sync code and `aread_path` from
    # async code; both are plain file reads here.
    def read_path(self, path: str, _sync: bool | None = None) -> bytes:  # type: ignore[override]
        p = self._resolve_path(path)
        if not p.is_file():
            raise ValueError(f"Path {p} does not exist.")
        return check_record(p.read_bytes())

    async def aread_path(self, path: str) -> bytes:
        return self.read_path(path)

    def write_path(self, path: str, content: bytes, _sync: bool | None = None) -> str:  # type: ignore[override]
        p = self._resolve_path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        return str(write_bytes_atomic(p, content))

    async def awrite_path(self, path: str, content: bytes) -> str:
        return self.write_path(path, content)


STORAGE_BLOCK_NAME = "results"
#: Prefect takes only server-side storage blocks; tasks name this one, which
#: `ensure_result_storage` saves on the current server before a flow's tasks run
RESULT_STORAGE = f"{JsonResultStorage.get_block_type_slug()}/{STORAGE_BLOCK_NAME}"

#: keyword arguments of every persisted task: `task(name=..., cache_policy=..., **PERSISTED)`
PERSISTED: dict[str, Any] = {
    "persist_result": True,
    "result_serializer": RESULT_SERIALIZER,
    "result_storage": RESULT_STORAGE,
}

_saved_on: set[str] = set()  # API URLs this process saved the block on


def ensure_result_storage() -> None:
    """Save RESULT_STORAGE on the current Prefect server unless it is there (once per
    process and server). Call at the start of every flow that runs a PERSISTED task."""
    url = str(get_current_settings().api.url or "ephemeral")
    if url in _saved_on:
        return
    try:
        JsonResultStorage.load(STORAGE_BLOCK_NAME, _sync=True)  # type: ignore[call-arg]
    except ValueError:  # not saved on this server yet
        JsonResultStorage().save(STORAGE_BLOCK_NAME, overwrite=True, _sync=True)  # type: ignore[call-arg]
    _saved_on.add(url)
