"""The dependency rules of DESIGN.md, enforced: import-linter contracts in .importlinter
(layers, only flows imports prefect, only registry and flows import mlflow, the live loop
never imports prefect, great_expectations or stable_baselines3)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run(
        [str(lint), "--config", str(REPO / ".importlinter")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


# ---------------------------------------------------------------- function-level imports
# An import inside a function hides a dependency from the module's head (and from
# import-linter's reading of the graph); it is kept only where it buys something, and says
# what on its own line or the line above: `# slow: prefect (~2 s); ...`, `# optional:
# hftbacktest, bench only`, `# cycle: registry.champion imports this module`. One reason
# above a run of consecutive imports covers the run.
REASON = re.compile(r"#\s*(slow|optional|cycle):\s*\S")
#: packages whose function-level imports all carry a reason (add one once it is cleaned)
CLEANED = (
    "book",
    "core",
    "envs",
    "expectations",
    "features",
    "flows",
    "ingest",
    "live",
    "registry",
    "sim",
    "training",
)
#: files of a cleaned package that another change is still cleaning (remove when done)
PENDING: frozenset[str] = frozenset()


def unexplained_imports(source: str) -> list[int]:
    """Line numbers of the function-level imports in `source` that carry no reason (on
    their line or the line above, or on an import just before them in the same body)."""
    lines = source.splitlines()

    def has_reason(node: ast.stmt) -> bool:
        own = "\n".join(lines[node.lineno - 1 : node.end_lineno])  # all lines of the import
        above = lines[node.lineno - 2].strip() if node.lineno > 1 else ""
        return bool(REASON.search(own)) or (above.startswith("#") and bool(REASON.search(above)))

    bad: list[int] = []

    def visit(body: list[ast.stmt], in_function: bool) -> None:
        covered = False  # an explained import is followed by more imports
        for node in body:
            is_import = isinstance(node, ast.Import | ast.ImportFrom)
            if is_import and in_function:
                covered = covered or has_reason(node)
                if not covered:
                    bad.append(node.lineno)
            else:
                covered = False
            inner = in_function or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            for field in ("body", "orelse", "finalbody"):
                sub = getattr(node, field, None)
                if isinstance(sub, list) and sub and isinstance(sub[0], ast.stmt):
                    visit(sub, inner)
            for handler in getattr(node, "handlers", []):
                visit(handler.body, inner)
            for case in getattr(node, "cases", []):
                visit(case.body, inner)

    visit(ast.parse(source).body, False)
    return bad


def test_unexplained_imports_finds_a_bare_function_level_import() -> None:
    src = (
        "import os\n"
        "def f():\n"
        "    import json\n"  # bare: found
        "    # slow: polars (~0.3 s)\n"
        "    import polars\n"
        "    import numpy\n"  # same run as the explained one
        "    x = 1\n"
        "    import yaml  # optional: the yaml extra\n"
        "    if x:\n"
        "        import csv\n"  # bare, nested in a block: found
        "    class C:\n"
        "        def g(self):\n"
        "            from a import b  # cycle: a imports this module\n"
        "            from c import d\n"
        "    try:\n"
        "        import toml\n"  # bare, in a try: found
        "    except ImportError:\n"
        "        pass\n"
        "    # why not\n"
        "    import zlib\n"  # a comment that is no reason: found
    )
    assert unexplained_imports(src) == [3, 10, 16, 20]


def test_function_level_imports_say_why() -> None:
    """#21: every function-level import in a cleaned package is genuinely slow, optional
    or breaks a cycle, and says which."""
    found = []
    for package in CLEANED:
        for path in sorted((REPO / package).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            if rel in PENDING:
                continue
            found += [f"{rel}:{n}" for n in unexplained_imports(path.read_text())]
    assert not found, (
        "function-level imports without a `# slow:|optional:|cycle: why` comment (move "
        "cheap ones to the module top): " + ", ".join(found)
    )
