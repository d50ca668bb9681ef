"""The `chappie` command: help is instant because nothing heavy is imported for it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HEAVY = ("torch", "mlflow", "great_expectations", "stable_baselines3", "prefect", "polars")

PROBE = """
import json, sys
from flows import cli
try:
    cli.main({argv!r})
except SystemExit as e:
    code = e.code
else:
    code = 0
print(json.dumps({{"code": code, "heavy": [m for m in {heavy!r} if m in sys.modules]}}))
"""


def _probe(argv: list[str]) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(argv=argv, heavy=HEAVY)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_chappie_help_imports_no_heavy_package():
    result = _probe(["--help"])
    assert result == {"code": 0, "heavy": []}


def test_every_subcommand_help_imports_no_heavy_package():
    from flows.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name in sub.choices:
        result = _probe([name, "--help"])
        assert result == {"code": 0, "heavy": []}, name


def test_unknown_command_exits_with_usage_error():
    assert _probe(["no-such-command"])["code"] == 2


def test_prefect_home_follows_the_commands_data_dir_and_audits_create_no_folder(
    tmp_path, monkeypatch
):
    """Prefect's own database goes with the data: the command's --data-dir, else
    CHAPPIE_DATA_DIR (a PREFECT_HOME the user set wins); `chappie audit` never starts
    Prefect and leaves no folder behind where users audit their data."""
    import argparse

    from flows import cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PREFECT_HOME", raising=False)
    monkeypatch.delenv("PREFECT_RESULTS_DEFAULT_SERIALIZER", raising=False)  # set by it
    monkeypatch.setenv("CHAPPIE_DATA_DIR", str(tmp_path / "env-data"))
    cli._prepare_environment(argparse.Namespace(command="features", data_dir=str(tmp_path / "x")))
    assert os.environ["PREFECT_HOME"] == str((tmp_path / "x" / "prefect").resolve())
    assert (tmp_path / "x" / "prefect").is_dir() and not (tmp_path / "env-data").exists()

    monkeypatch.delenv("PREFECT_HOME")
    cli._prepare_environment(argparse.Namespace(command="train"))
    assert os.environ["PREFECT_HOME"] == str((tmp_path / "env-data" / "prefect").resolve())

    monkeypatch.delenv("PREFECT_HOME")
    monkeypatch.delenv("CHAPPIE_DATA_DIR")
    cli._prepare_environment(argparse.Namespace(command="audit", audit_command="parity"))
    assert not (tmp_path / "data").exists()

    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "mine"))
    cli._prepare_environment(argparse.Namespace(command="nightly"))
    assert os.environ["PREFECT_HOME"] == str(tmp_path / "mine")


def test_library_chatter_is_off_by_default_and_on_with_verbose() -> None:
    """#20: Prefect's and MLflow's INFO lines only with --verbose; the environment wins."""
    code = (
        "import os, sys\n"
        "from flows.cli import build_parser, _prepare_environment\n"
        "args = build_parser().parse_args(sys.argv[1:])\n"
        "_prepare_environment(args)\n"
        "print(os.environ['PREFECT_LOGGING_LEVEL'], os.environ['MLFLOW_LOGGING_LEVEL'])\n"
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PREFECT_LOGGING_LEVEL", "MLFLOW_LOGGING_LEVEL")
    }

    def levels(*argv: str, **extra: str) -> str:
        out = subprocess.run(
            [sys.executable, "-c", code, *argv, "audit", "slices"],
            env={**env, **extra},
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parents[1],
        )
        return out.stdout.strip()

    assert levels() == "WARNING WARNING"
    assert levels("--verbose") == "INFO INFO"
    assert levels(PREFECT_LOGGING_LEVEL="DEBUG") == "DEBUG WARNING"
