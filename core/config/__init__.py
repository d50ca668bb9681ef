"""Research configs: frozen pydantic models, extra="forbid", one module per package,
composed into `ExperimentConfig` (core.config.experiment) and stored as YAML in conf/.

Each package owns its module here (ingest.py, features.py, env.py, training.py,
registry.py, live.py); they import nothing heavier than pydantic so that the CLI can
parse a config without importing torch, mlflow or GX.
"""

from core.config.base import FrozenModel

__all__ = ["FrozenModel"]
