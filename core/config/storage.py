"""Where the data lives beyond the local folder: an S3-compatible object store.

`storage:` at the top of the experiment config (`ExperimentConfig.storage`, absent by
default). When it is set, the sweep publishes the train slices and frozen stats it uses
to `url` (the local data folder's layout under the prefix: `slices/<spec12>/...`,
`stats/<stats_id>/...`) and its workers, on this machine or others, fetch them from
there, each byte checked against its sha256 (core.objectstore). Credentials are never in
the config: boto3 reads them from the environment (AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, or a profile).
"""

from __future__ import annotations

import re

from pydantic import field_validator

from core.config.base import FrozenModel

# S3 bucket names: 3-63 lower-case letters, digits, dots and hyphens
_S3_URL = re.compile(r"s3://([a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])(/[^\s]*)?")


class StorageConfig(FrozenModel):
    """An object store holding the data folder's layout under `url`.

    url: `s3://<bucket>[/<prefix>]`.
    endpoint_url: the S3 API of a non-AWS store (MinIO: `http://127.0.0.1:9000`); None:
      boto3's own resolution (AWS_ENDPOINT_URL, or AWS itself).
    region: the store's region (MinIO accepts any; None: boto3's default).
    """

    url: str
    endpoint_url: str | None = None
    region: str | None = None

    @field_validator("url")
    @classmethod
    def _s3_url(cls, v: str) -> str:
        if not _S3_URL.fullmatch(v):
            raise ValueError(
                f"storage.url {v!r} is not s3://<bucket>[/<prefix>] (bucket: 3-63 lower-case "
                "letters, digits, dots or hyphens)"
            )
        return v.rstrip("/")

    @field_validator("endpoint_url")
    @classmethod
    def _http_endpoint(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"https?://[^\s/]+/?", v):
            raise ValueError(f"storage.endpoint_url {v!r} is not http(s)://host[:port]")
        return v
