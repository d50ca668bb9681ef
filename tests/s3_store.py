"""An S3 API server on 127.0.0.1 for the object-store tests: moto's server mode
(tests.infra.servers.moto_s3), credentials and the fetch cache set in this process's
environment (Dask workers started inside inherit them). Skips the tests cleanly, with
the reason, where the server cannot start (moto_server missing, no free port)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.config.storage import StorageConfig
from tests.infra.servers import moto_s3

BUCKET = "chappie-data"


@contextlib.contextmanager
def s3_store(tmp: Path, prefix: str = "lab") -> Iterator[StorageConfig]:
    """A StorageConfig for `s3://chappie-data/<prefix>` on a fresh moto server."""
    stack = contextlib.ExitStack()
    try:
        env = stack.enter_context(moto_s3(tmp, BUCKET))
    except (OSError, RuntimeError, TimeoutError) as exc:
        stack.close()
        pytest.skip(f"no S3 API server could start on 127.0.0.1: {str(exc)[:200]}")
    with stack, pytest.MonkeyPatch.context() as mp:
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
            mp.setenv(key, env[key])
        for key in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
            mp.delenv(key, raising=False)
        mp.setenv("CHAPPIE_STORE_CACHE", str(tmp / "store-cache"))
        yield StorageConfig(
            url=f"s3://{BUCKET}/{prefix}",
            endpoint_url=env["MLFLOW_S3_ENDPOINT_URL"],
            region="us-east-1",
        )
