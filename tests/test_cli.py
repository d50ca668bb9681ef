"""The `chappie` command: help is instant because nothing heavy is imported for it."""

from __future__ import annotations

import json
import subprocess
import sys

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
