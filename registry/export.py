"""Export an SB3 PPO zip (our own training output) to the pickle-free policy files.

Runs in the training/registry process only: loading the zip goes through SB3 (which
unpickles parts of it — acceptable for a file we produced; the live loop never does this).
The result, `policy.json` + `policy.npz` (+ `policy.onnx`), loads with numpy alone.

Supported: `ActorCriticPolicy` (PPO "MlpPolicy") with a FlattenExtractor on a 1-D Box
observation, a Discrete action space, and a policy MLP of Linear layers with one
activation (Tanh or ReLU). Anything else raises UnsupportedPolicyError naming the part.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from core.atomic import write_bytes_atomic
from registry.policy import POLICY_ONNX, NumpyPolicy, PolicyArchitecture, to_onnx_bytes


class UnsupportedPolicyError(ValueError):
    """The SB3 policy has a part the numpy policy cannot reproduce exactly."""


def _activation_name(module: Any) -> str:
    # slow: torch (~2 s); registry.bundle imports this module, the live loop never exports
    import torch.nn as nn

    if isinstance(module, nn.Tanh):
        return "tanh"
    if isinstance(module, nn.ReLU):
        return "relu"
    raise UnsupportedPolicyError(f"unsupported activation {type(module).__name__}")


def numpy_policy_from_sb3(policy: Any) -> NumpyPolicy:
    """Copy the actor of an SB3 ActorCriticPolicy into a NumpyPolicy (exact float32 weights).

    Raises UnsupportedPolicyError for a non-Box/1-D observation, a non-Discrete action
    space, a feature extractor other than FlattenExtractor, or a non-Linear/activation
    layer in the policy net.
    """
    # slow: torch, SB3 (~3 s); registry.bundle imports this module, the live loop never exports
    import torch.nn as nn
    from gymnasium import spaces
    from stable_baselines3.common.torch_layers import FlattenExtractor

    obs_space, act_space = policy.observation_space, policy.action_space
    if not isinstance(obs_space, spaces.Box) or len(obs_space.shape) != 1:
        raise UnsupportedPolicyError(f"observation space must be a 1-D Box, got {obs_space}")
    if not isinstance(act_space, spaces.Discrete):
        raise UnsupportedPolicyError(f"action space must be Discrete, got {act_space}")
    if int(getattr(act_space, "start", 0)) != 0:
        raise UnsupportedPolicyError(f"Discrete action space must start at 0, got {act_space}")
    extractor = policy.pi_features_extractor
    if not isinstance(extractor, FlattenExtractor):
        raise UnsupportedPolicyError(
            f"features extractor must be FlattenExtractor, got {type(extractor).__name__}"
        )

    linears: list[nn.Linear] = []
    activations: set[str] = set()
    for layer in policy.mlp_extractor.policy_net:
        if isinstance(layer, nn.Linear):
            linears.append(layer)
        else:
            activations.add(_activation_name(layer))
    action_net = policy.action_net
    if not isinstance(action_net, nn.Linear):
        raise UnsupportedPolicyError(f"action_net must be Linear, got {type(action_net).__name__}")
    if len(activations) > 1:
        raise UnsupportedPolicyError(f"mixed activations {sorted(activations)}")
    activation = activations.pop() if activations else "tanh"
    if linears and len(policy.mlp_extractor.policy_net) != 2 * len(linears):
        raise UnsupportedPolicyError("policy net is not alternating Linear/activation layers")
    layers = [*linears, action_net]
    arrays: dict[str, np.ndarray] = {}
    for i, lin in enumerate(layers):
        arrays[f"w{i}"] = lin.weight.detach().cpu().numpy().astype(np.float32).copy()
        arrays[f"b{i}"] = lin.bias.detach().cpu().numpy().astype(np.float32).copy()
    arch = PolicyArchitecture(
        obs_dim=int(obs_space.shape[0]),
        hidden=tuple(int(lin.out_features) for lin in linears),
        n_actions=int(act_space.n),
        activation=activation,
    )
    return NumpyPolicy(arch, arrays)


def load_sb3_ppo(zip_path: str | Path) -> Any:
    """Load our own SB3 PPO zip on CPU (one torch thread). Raises FileNotFoundError."""
    zip_path = Path(zip_path)
    if not zip_path.exists():
        raise FileNotFoundError(f"SB3 model not found: {zip_path}")
    # slow: pydantic-settings (~0.3 s); registry.bundle imports this module, the live loop too
    from core.settings import ensure_single_thread_math

    ensure_single_thread_math()
    # slow: torch, SB3 (~3 s), imported after the thread settings above as they must be
    import torch
    from stable_baselines3 import PPO

    torch.set_num_threads(1)
    return PPO.load(str(zip_path), device="cpu")


def export_sb3_zip(zip_path: str | Path, out_dir: str | Path, onnx: bool = True) -> list[Path]:
    """Export the SB3 PPO zip to `out_dir`: policy.json, policy.npz and (if `onnx`)
    policy.onnx. Returns the written paths."""
    model = load_sb3_ppo(zip_path)
    policy = numpy_policy_from_sb3(model.policy)
    out_dir = Path(out_dir)
    written = policy.save(out_dir)
    if onnx:
        written.append(write_bytes_atomic(out_dir / POLICY_ONNX, to_onnx_bytes(policy)))
    return written
