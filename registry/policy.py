"""Pickle-free policy: plain weight arrays (`policy.npz`) + a JSON architecture
(`policy.json`), evaluated with numpy. What the live loop runs.

The architecture is SB3's `ActorCriticPolicy` actor path for a flat Box observation and a
Discrete action space: FlattenExtractor (identity on a 1-D Box; SB3 applies no
preprocessing to Box observations) -> `mlp_extractor.policy_net` (Linear + activation per
hidden layer) -> `action_net` (Linear, the action logits). The deterministic action is
SB3's `Categorical.mode`: argmax of the normalised probabilities, first index on a tie.
Computation is float32, as in SB3.

Loading never unpickles: `np.load(..., allow_pickle=False)` and `json.loads` only.
This module imports numpy and the standard library only (the live loop imports it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from core.atomic import write_json_atomic, write_with_atomic

if TYPE_CHECKING:  # a type only: at run time this module needs numpy and the stdlib
    from core.jsontypes import JsonObject, JsonValue

POLICY_JSON = "policy.json"
POLICY_NPZ = "policy.npz"
POLICY_ONNX = "policy.onnx"
FORMAT = "chappie-mlp-policy"
FORMAT_VERSION = 1
ACTIVATIONS = ("tanh", "relu")


class PolicyFormatError(ValueError):
    """policy.json / policy.npz are missing, inconsistent or of an unknown format."""


@dataclass(frozen=True)
class PolicyArchitecture:
    """The actor MLP: obs_dim -> hidden... -> n_actions, one activation for hidden layers."""

    obs_dim: int
    hidden: tuple[int, ...]
    n_actions: int
    activation: str

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise PolicyFormatError(
                f"activation must be one of {ACTIVATIONS}, got {self.activation!r}"
            )
        if self.obs_dim < 1 or self.n_actions < 1 or any(h < 1 for h in self.hidden):
            raise PolicyFormatError(f"layer sizes must be >= 1: {self}")

    @property
    def layer_shapes(self) -> list[tuple[int, int]]:
        """(out, in) of every Linear layer, hidden first, then the action logits."""
        sizes = [self.obs_dim, *self.hidden, self.n_actions]
        return [(sizes[i + 1], sizes[i]) for i in range(len(sizes) - 1)]

    def to_json(self) -> JsonObject:
        """policy.json's content."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "obs_dim": self.obs_dim,
            "hidden": list(self.hidden),
            "n_actions": self.n_actions,
            "activation": self.activation,
            "dtype": "float32",
            "layers": [
                {"weight": f"w{i}", "bias": f"b{i}", "out": o, "in": n}
                for i, (o, n) in enumerate(self.layer_shapes)
            ],
            "deterministic_action": "argmax of softmax(logits), first index on ties",
        }

    @classmethod
    def from_json(cls, data: JsonObject) -> PolicyArchitecture:
        """Parse policy.json's content. Raises PolicyFormatError naming what is wrong."""
        if data.get("format") != FORMAT or data.get("format_version") != FORMAT_VERSION:
            raise PolicyFormatError(
                f"unknown policy format {data.get('format')!r} v{data.get('format_version')!r}; "
                f"expected {FORMAT!r} v{FORMAT_VERSION}"
            )
        hidden = _field(data, "hidden")
        if not isinstance(hidden, list):
            raise PolicyFormatError(f"policy.json: hidden must be a list, got {hidden!r}")
        return cls(
            obs_dim=_int(_field(data, "obs_dim"), "obs_dim"),
            hidden=tuple(_int(h, "hidden") for h in hidden),
            n_actions=_int(_field(data, "n_actions"), "n_actions"),
            activation=str(_field(data, "activation")),
        )


def _field(data: JsonObject, key: str) -> JsonValue:
    try:
        return data[key]
    except KeyError:
        raise PolicyFormatError(f"policy.json lacks {key!r}") from None


def _int(value: JsonValue, what: str) -> int:
    """A layer size: what int() takes (PolicyFormatError, a ValueError, otherwise)."""
    if not isinstance(value, int | float | str):
        raise PolicyFormatError(f"policy.json: {what} must be an integer, got {value!r}")
    try:
        return int(value)
    except ValueError:
        raise PolicyFormatError(f"policy.json: {what} must be an integer, got {value!r}") from None


def _validate_arrays(arch: PolicyArchitecture, arrays: dict[str, np.ndarray]) -> None:
    expected: dict[str, tuple[int, ...]] = {f"w{i}": s for i, s in enumerate(arch.layer_shapes)}
    expected |= {f"b{i}": (s[0],) for i, s in enumerate(arch.layer_shapes)}
    if set(arrays) != set(expected):
        raise PolicyFormatError(f"policy arrays {sorted(arrays)} != expected {sorted(expected)}")
    for key, shape in expected.items():
        a = arrays[key]
        if a.shape != shape:
            raise PolicyFormatError(f"policy array {key} has shape {a.shape}, expected {shape}")
        if a.dtype.kind != "f":
            raise PolicyFormatError(f"policy array {key} has dtype {a.dtype}, expected float")
        if not np.isfinite(a).all():
            raise PolicyFormatError(f"policy array {key} holds a non-finite value")


class NumpyPolicy:
    """Deterministic actor of an SB3 PPO MlpPolicy, in numpy. Pure after construction."""

    def __init__(self, arch: PolicyArchitecture, arrays: dict[str, np.ndarray]) -> None:
        _validate_arrays(arch, arrays)
        self.arch = arch
        n = len(arch.layer_shapes)
        # Pre-transposed, contiguous float32: one GEMV per layer per decision.
        self._wt = [np.ascontiguousarray(arrays[f"w{i}"].astype(np.float32).T) for i in range(n)]
        self._b = [arrays[f"b{i}"].astype(np.float32) for i in range(n)]
        self._act = np.tanh if arch.activation == "tanh" else _relu

    @property
    def obs_dim(self) -> int:
        return self.arch.obs_dim

    @property
    def n_actions(self) -> int:
        return self.arch.n_actions

    def arrays(self) -> dict[str, np.ndarray]:
        """The weights in policy.npz layout (w_i as (out, in), b_i as (out,))."""
        out: dict[str, np.ndarray] = {}
        for i, (wt, b) in enumerate(zip(self._wt, self._b, strict=True)):
            out[f"w{i}"] = wt.T.copy()
            out[f"b{i}"] = b.copy()
        return out

    def logits(self, obs: np.ndarray) -> np.ndarray:
        """Action logits, float32, for obs of shape (obs_dim,) or (N, obs_dim).

        Raises ValueError on a wrong shape or a non-finite observation.
        """
        x = np.asarray(obs, dtype=np.float32)
        if x.shape[-1:] != (self.arch.obs_dim,) or x.ndim not in (1, 2):
            raise ValueError(f"observation shape {x.shape}, expected (..., {self.arch.obs_dim})")
        if not np.isfinite(x).all():
            raise ValueError("observation holds a non-finite value")
        last = len(self._wt) - 1
        for i, (wt, b) in enumerate(zip(self._wt, self._b, strict=True)):
            x = x @ wt + b
            if i < last:
                x = self._act(x)
        return x

    def probabilities(self, obs: np.ndarray) -> np.ndarray:
        """softmax(logits) as torch's Categorical computes it (logits - logsumexp)."""
        z = self.logits(obs)
        m = z.max(axis=-1, keepdims=True)
        norm = z - (m + np.log(np.exp(z - m).sum(axis=-1, keepdims=True)))
        return np.exp(norm)

    def predict(self, obs: np.ndarray) -> int:
        """The deterministic action for one observation (obs_dim,)."""
        x = np.asarray(obs)
        if x.ndim != 1:
            raise ValueError(f"predict takes one observation (obs_dim,), got shape {x.shape}")
        return int(np.argmax(self.probabilities(x)))

    def predict_batch(self, obs: np.ndarray) -> np.ndarray:
        """Deterministic actions (N,) int64 for observations (N, obs_dim)."""
        x = np.asarray(obs)
        if x.ndim != 2:
            raise ValueError(f"predict_batch takes (N, obs_dim), got shape {x.shape}")
        return np.argmax(self.probabilities(x), axis=-1).astype(np.int64)

    # ------------------------------------------------------------------ files

    def save(self, folder: str | Path) -> list[Path]:
        """Write policy.json and policy.npz into `folder`; return the two paths."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        arrays = self.arrays()

        def _write(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)  # type: ignore[arg-type]  # numpy stub: allow_pickle kw

        npz = write_with_atomic(folder / POLICY_NPZ, _write)
        js = write_json_atomic(folder / POLICY_JSON, self.arch.to_json())
        return [js, npz]

    @classmethod
    def load(cls, folder: str | Path) -> NumpyPolicy:
        """Load policy.json + policy.npz from `folder` without unpickling anything.

        Raises FileNotFoundError when a file is missing, PolicyFormatError when the
        format, the array names, shapes or dtypes do not match the architecture.
        """
        folder = Path(folder)
        arch = PolicyArchitecture.from_json(json.loads((folder / POLICY_JSON).read_text()))
        with np.load(folder / POLICY_NPZ, allow_pickle=False) as data:
            arrays = {k: np.array(data[k]) for k in data.files}
        return cls(arch, arrays)


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0, dtype=np.float32)


def to_onnx_bytes(policy: NumpyPolicy, opset: int = 17) -> bytes:
    """The same actor as an ONNX graph: `obs` float32 (N, obs_dim) -> `logits` (N, A) and
    `action` int64 (N,) = ArgMax(logits). Built from the arrays with onnx.helper (no torch,
    no pickle); onnxruntime runs it."""
    # slow: onnx (~0.5 s); the live loop loads policies with numpy alone
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    arrays = policy.arrays()
    nodes = []
    inits = []
    x = "obs"
    last = len(policy.arch.layer_shapes) - 1
    for i in range(last + 1):
        inits.append(numpy_helper.from_array(arrays[f"w{i}"].astype(np.float32), f"w{i}"))
        inits.append(numpy_helper.from_array(arrays[f"b{i}"].astype(np.float32), f"b{i}"))
        y = "logits" if i == last else f"h{i}"
        pre = y if i == last else f"z{i}"
        nodes.append(helper.make_node("Gemm", [x, f"w{i}", f"b{i}"], [pre], transB=1))
        if i < last:
            op = "Tanh" if policy.arch.activation == "tanh" else "Relu"
            nodes.append(helper.make_node(op, [pre], [y]))
        x = y
    nodes.append(helper.make_node("ArgMax", ["logits"], ["action"], axis=1, keepdims=0))
    graph = helper.make_graph(
        nodes,
        "chappie_policy",
        [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["N", policy.obs_dim])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", policy.n_actions]),
            helper.make_tensor_value_info("action", TensorProto.INT64, ["N"]),
        ],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()
