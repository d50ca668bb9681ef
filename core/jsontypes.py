"""JSON as a type, for values that really are free-form JSON: a message from the
exchange, a config snapshot or a document read from disk and passed on untouched.

Contracts between stages are models (pydantic, frozen) or frozen dataclasses, not these.
"""

from __future__ import annotations

from pydantic import JsonValue

JsonObject = dict[str, JsonValue]  # a JSON object: str keys, JSON values all the way down

__all__ = ["JsonObject", "JsonValue"]
