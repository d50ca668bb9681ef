"""#21: the default experiment config is named once (flows.common.DEFAULT_CONFIG) and every
command's --config defaults to it; importing it keeps `chappie --help` light."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from flows.cli import build_parser
from flows.common import DEFAULT_CONFIG

REPO = Path(__file__).resolve().parents[1]


def test_default_config_is_assigned_in_one_module_and_exists() -> None:
    assigned = [
        p.relative_to(REPO).as_posix()
        for p in sorted((REPO / "flows").glob("*.py"))
        if re.search(r"^DEFAULT_CONFIG\s*=", p.read_text(), flags=re.M)
    ]
    assert assigned == ["flows/common.py"]
    assert (REPO / DEFAULT_CONFIG).is_file()


def test_every_config_option_defaults_to_it() -> None:
    parser = build_parser()
    for argv in (["nightly"], ["features"], ["train"], ["evaluate"], ["promote"], ["rollback"]):
        assert parser.parse_args(argv).config == DEFAULT_CONFIG, argv


def test_the_parser_imports_no_pydantic_or_config_models() -> None:
    code = (
        "import sys\nfrom flows.cli import build_parser\nbuild_parser()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('pydantic', 'core', 'prefect', 'mlflow', 'rich', 'polars')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
