from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, model_serializer


class FrozenModel(BaseModel):
    """Base of every research config: immutable, unknown keys are an error."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def omit_when(**values: Any) -> Any:
    """A model serializer that leaves out each named field while it holds the given value
    (`_omit = omit_when(n_envs=1)` in a class body). For a field added to a model that is
    hashed or stored: a config or task that does not use it serialises exactly as before
    the field existed, so its fingerprint, run name, task.json and cache keys stay valid."""

    def without_defaults(self: BaseModel, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if isinstance(data, dict):
            for key, value in values.items():
                if key in data and getattr(self, key) == value:
                    del data[key]
        return data

    return model_serializer(mode="wrap")(without_defaults)
