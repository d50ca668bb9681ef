"""MLflow models-from-code entry point: the bundle's numpy policy as a pyfunc model.

MLflow executes this file (it is not unpickled) when `mlflow.pyfunc.load_model` or
`mlflow models serve` loads a registered Chappie model. The model input is a float32
tensor (N, obs_dim) of encoded observations (`envs.observation.encode_observation`);
the output is the deterministic action per row (int64), read in the bundle's
`action_mode` (env_spec.json; absent means "toggle"; names in `core.schema.ACTION_NAMES`):
"toggle" 0 hold, 1 toggle long, 2 toggle short; "target" the resting orders wanted,
0 none, 1 bid only, 2 ask only, 3 both. Loading verifies every sha256 of the bundle first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel

from registry.bundle import verify_bundle
from registry.policy import NumpyPolicy


class ChappiePolicyModel(PythonModel):
    """pyfunc wrapper around registry.policy.NumpyPolicy (no torch, no SB3, no pickle)."""

    # The model's input contract is the explicit tensor signature logged with it
    # (float32 (-1, obs_dim)), not predict() type hints; this MLflow class flag skips the
    # type-hint wrapper and its warning.
    _skip_type_hint_validation = True

    def load_context(self, context):  # noqa: ANN001, ANN201 - MLflow's signature
        bundle = Path(context.artifacts["bundle"])
        self.bundle_info = verify_bundle(bundle)
        self.policy = NumpyPolicy.load(bundle / "policy")

    def predict(self, context, model_input, params=None):  # noqa: ANN001, ANN201
        x: Any = model_input
        if isinstance(x, dict):  # a named tensor input
            x = next(iter(x.values()))
        if hasattr(x, "to_numpy"):  # a DataFrame from the REST server
            x = x.to_numpy()
        x = np.asarray(x, dtype=np.float32)
        if x.ndim == 1:
            x = x[None, :]
        return self.policy.predict_batch(x)


mlflow.models.set_model(ChappiePolicyModel())
