"""infra/compose.yaml's object store for the data (`storage:`): the documented setting
parses, names the bucket minio-init creates and the MinIO endpoint, and the processes
that train (worker, dask-worker) carry MinIO's credentials."""

from __future__ import annotations

import re

from core.config.experiment import ExperimentConfig
from tests.infra.test_compose import INFRA, services


def test_documented_storage_setting_points_at_minio_with_its_bucket() -> None:
    header = (INFRA / "compose.yaml").read_text()
    snippet = re.search(r"storage: \{url: (\S+), endpoint_url: ([^}]+)\}", header)
    assert snippet
    cfg = ExperimentConfig.model_validate(
        {"storage": {"url": snippet.group(1), "endpoint_url": snippet.group(2).strip()}}
    )
    assert cfg.storage is not None
    bucket = cfg.storage.url.removeprefix("s3://").split("/")[0]
    svc = services()
    assert f"mc mb --ignore-existing local/{bucket}" in svc["minio-init"]["entrypoint"]
    assert cfg.storage.endpoint_url == "http://minio:9000"
    assert "minio" in svc and "9000:9000" in " ".join(svc["minio"]["ports"])
    for name in ("worker", "dask-worker"):
        env = svc[name]["environment"]
        assert env["AWS_ACCESS_KEY_ID"] == svc["minio"]["environment"]["MINIO_ROOT_USER"]
        assert env["AWS_SECRET_ACCESS_KEY"] == svc["minio"]["environment"]["MINIO_ROOT_PASSWORD"]
