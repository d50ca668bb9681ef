from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class FrozenModel(BaseModel):
    """Base of every research config: immutable, unknown keys are an error."""

    model_config = ConfigDict(frozen=True, extra="forbid")
