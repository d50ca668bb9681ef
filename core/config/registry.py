"""Registry config (owned by registry/)."""

from __future__ import annotations

from core.config.base import FrozenModel


class RegistryConfig(FrozenModel):
    model_name: str = "chappie-xbtusd"
    champion_alias: str = "champion"
    challenger_alias: str = "challenger"
    previous_alias: str = "previous-champion"
    experiment: str = "chappie"
    load_timeout_s: float = 30.0
