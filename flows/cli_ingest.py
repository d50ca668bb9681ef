"""`chappie` subcommands of the ingest area (registered by flows/cli.py).

Import only argparse at module level; handlers import their packages when they run.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this area's subcommands to the `chappie` parser."""


def register_audit(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this area's `chappie audit` subcommands."""
