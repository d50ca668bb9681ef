"""Chappie registry package (see DESIGN.md): MLflow tracking, the pickle-free model
bundle, gates-driven promotion and champion loading.

Kept free of heavy imports: `registry.load_champion` and friends are resolved lazily so
that `import registry` costs nothing (the live loop and the CLI import it early).
"""

from __future__ import annotations

from typing import Any

__all__ = ["LoadedModel", "load_bundle", "load_champion", "resolve_alias_version"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        # slow: registry.champion pulls numpy and pydantic (~0.3 s); `import registry` is free
        from registry import champion

        return getattr(champion, name)
    raise AttributeError(f"module 'registry' has no attribute {name!r}")
