"""infra/compose.yaml cannot be started here (no Docker daemon or compose plugin), so it
is validated for what breaks a stack at `up` time: references between services, volumes
and mounted files that exist, every command-line flag known to the pinned tool versions,
database URLs that match the databases the init script creates, the S3 settings MLflow
needs (the same ones tests/infra/test_postgres.py exercises against moto), the worker's
pool matching infra/prefect.yaml, and the Dask settings parsing in ExperimentConfig."""

from __future__ import annotations

import re
import shlex
import subprocess
from functools import cache

import pytest
import yaml

from tests.conftest import REPO
from tests.infra.servers import _bin

INFRA = REPO / "infra"
TOP_KEYS = {"name", "services", "volumes", "networks", "configs", "secrets"}
SERVICE_KEYS = {
    "image", "build", "command", "entrypoint", "environment", "volumes", "ports", "depends_on",
    "healthcheck", "restart", "working_dir", "profiles", "deploy",
}  # fmt: skip
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}


def interpolate(text: str) -> str:
    """Compose variable substitution with the defaults: ${VAR:-default}, $$ -> $."""
    return re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: m.group(2), text).replace("$$", "$")


@cache
def compose() -> dict:
    raw = (INFRA / "compose.yaml").read_text()
    return yaml.safe_load(interpolate(raw))


def services() -> dict[str, dict]:
    return compose()["services"]


def test_compose_structure_and_references() -> None:
    doc = compose()
    assert {k for k in doc if not k.startswith("x-")} <= TOP_KEYS
    svc = services()
    assert {"postgres", "minio", "prefect-server", "worker", "mlflow", "dask-scheduler"} <= set(svc)
    declared = set(doc.get("volumes") or {})
    images = {s.get("image") for s in svc.values() if "build" in s}
    for name, s in svc.items():
        assert set(s) <= SERVICE_KEYS, (name, set(s) - SERVICE_KEYS)
        assert "image" in s or "build" in s, name
        # a locally built image is built by some service before others use it
        if s.get("image", "").startswith("chappie"):
            assert s["image"] in images, name
        deps = s.get("depends_on") or {}
        for dep, spec in deps.items() if isinstance(deps, dict) else ((d, {}) for d in deps):
            assert dep in svc, f"{name} depends on unknown service {dep}"
            assert spec.get("condition", "service_started") in CONDITIONS
            if spec.get("condition") == "service_healthy":
                assert "healthcheck" in svc[dep], (
                    f"{name} waits for {dep}'s health, which has no check"
                )
        for vol in s.get("volumes") or []:
            source = vol.split(":")[0]
            if source.startswith((".", "/")):
                assert (INFRA / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in declared, f"{name} uses undeclared volume {source}"
        for port in s.get("ports") or []:
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond localhost"
        if "build" in s:
            context = (INFRA / s["build"]["context"]).resolve()
            assert (context / s["build"]["dockerfile"]).is_file()


def test_dockerfile_copies_existing_paths_and_pins_torch() -> None:
    text = (INFRA / "Dockerfile").read_text()
    for src in re.findall(r"^COPY\s+(.+?)\s+\S+$", text, flags=re.M):
        for item in src.split():
            assert (REPO / item).exists(), f"Dockerfile copies missing {item}"
    copied = set(re.findall(r"^COPY\s+(\w+)\s+\w+$", text, flags=re.M))
    include = re.search(r"include = \[([^\]]*)\]", (REPO / "pyproject.toml").read_text())
    assert include, "pyproject.toml lists no packages"
    packages = {p.strip().strip('"').rstrip("*") for p in include.group(1).split(",")}
    assert packages <= copied, f"the image lacks packages {sorted(packages - copied)}"
    assert "torch==2.13.0" in text
    pinned = re.search(r'"torch==([\d.]+)"', (REPO / "pyproject.toml").read_text())
    assert pinned and f"torch=={pinned.group(1)}" in text


def _command(s: dict) -> list[str]:
    cmd = s.get("command") or ""
    return shlex.split(cmd) if isinstance(cmd, str) else list(cmd)


@cache
def _help(*prog: str) -> str:
    r = subprocess.run(
        [_bin(prog[0]), *prog[1:], "--help"], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.mark.parametrize(
    ("service", "prog"),
    [
        ("prefect-server", ("prefect", "server", "start")),
        ("mlflow", ("mlflow", "server")),
        ("dask-scheduler", ("dask", "scheduler")),
        ("dask-worker", ("dask", "worker")),
        ("worker", ("prefect", "worker", "start")),
    ],
)
def test_every_flag_exists_in_the_pinned_tools(service: str, prog: tuple[str, ...]) -> None:
    argv = _command(services()[service])
    assert tuple(argv[: len(prog)]) == prog
    flags = [a.split("=")[0] for a in argv if a.startswith("--")]
    assert flags
    text = _help(*prog)
    for flag in flags:
        assert re.search(rf"{re.escape(flag)}\b", text), f"{' '.join(prog)} has no {flag}"


def test_databases_and_artifact_store_are_wired_consistently() -> None:
    svc = services()
    created = set(
        re.findall(r"CREATE DATABASE (\w+)", (INFRA / "postgres" / "init.sql").read_text())
    )
    pg = svc["postgres"]["environment"]
    prefect_url = svc["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    m = re.fullmatch(r"postgresql\+asyncpg://(\w+):(\S+)@postgres:5432/(\w+)", prefect_url)
    assert m and m.group(1) == pg["POSTGRES_USER"] and m.group(2) == pg["POSTGRES_PASSWORD"]
    assert m.group(3) in created
    argv = _command(svc["mlflow"])
    backend = argv[argv.index("--backend-store-uri") + 1]
    m = re.fullmatch(r"postgresql://(\w+):(\S+)@postgres:5432/(\w+)", backend)
    assert m and m.group(3) in created and m.group(3) != re.search(r"/(\w+)$", prefect_url).group(1)
    artifacts = argv[argv.index("--artifacts-destination") + 1]
    bucket = re.fullmatch(r"s3://([\w-]+)/.*", artifacts).group(1)
    assert f"local/{bucket}" in svc["minio-init"]["entrypoint"]
    env = svc["mlflow"]["environment"]
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert env["AWS_ACCESS_KEY_ID"] == svc["minio"]["environment"]["MINIO_ROOT_USER"]
    assert env["AWS_SECRET_ACCESS_KEY"] == svc["minio"]["environment"]["MINIO_ROOT_PASSWORD"]
    assert "mlflow:5000" in argv[argv.index("--allowed-hosts") + 1].split(",")


def test_worker_pool_and_clients_point_at_the_services() -> None:
    svc = services()
    pool = yaml.safe_load((INFRA / "prefect.yaml").read_text())["deployments"][0]["work_pool"][
        "name"
    ]
    argv = _command(svc["worker"])
    assert argv[argv.index("--pool") + 1] == pool
    assert f"work-pool create {pool} --type process" in svc["deploy"]["command"]
    assert "--prefect-file infra/prefect.yaml" in svc["deploy"]["command"]
    for name in ("worker", "deploy", "dask-worker"):
        env = svc[name]["environment"]
        assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api"
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        assert env["OMP_NUM_THREADS"] == "1"
    dask_worker = _command(svc["dask-worker"])
    assert dask_worker[2] == "tcp://dask-scheduler:8786"
    assert dask_worker[dask_worker.index("--nthreads") + 1] == "1"


def test_documented_dask_setting_parses() -> None:
    from core.config.experiment import ExperimentConfig

    header = (INFRA / "compose.yaml").read_text()
    snippet = re.search(r"sweep: \{executor: dask, dask_address: ([^}]+)\}", header)
    assert snippet
    cfg = ExperimentConfig.model_validate(
        {"sweep": {"executor": "dask", "dask_address": snippet.group(1).strip()}}
    )
    assert cfg.sweep.dask_address == "tcp://dask-scheduler:8786"
