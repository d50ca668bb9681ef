"""The mirror-averaged policy: a trained policy made to treat a market and its mirror image
alike (`TrialConfig.mirror`).

The mirror image of a market has buyers and sellers swapped and its log price negated
(`core.schema.mirror_of` says how each feature reads there; `STATE_MIRROR` and
`ACTION_MIRROR` do the same for the management values and the actions). In normalised
units the mirror is an affine map of the observation, M(s) = A s + c. The mirror-averaged
policy's logits are

    logits(s) = (l(s) + P l(M(s))) / 2

where l is the trained policy's and P swaps the buy-side and sell-side actions; its value
is (v(s) + v(M(s))) / 2. It is one MLP of the same kind, twice as wide (the trained
network beside a copy whose first layer reads M(s)), so the backtest, the registry's
pickle-free export and the live loop run it as they run any policy. M is an involution,
so the result is exactly equivariant: logits(M(s)) = P logits(s). What it buys, measured
(bench/RESULTS_decisions.md): a policy trained on one 12 h slice picks up directional
habits from that slice's path (the features do not explain them, so they do not carry
to the next day); averaged with its mirror image, only what the features say about
direction survives.

Pure numpy for the map; `mirror_average` needs torch and SB3 (the training process).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from core.schema import ACTION_MIRROR, MANAGEMENT_STATE, STATE_MIRROR, mirror_of


def mirror_map(
    feature_names: Sequence[str],
    window: int,
    mean: np.ndarray,
    sigma: np.ndarray,
    sigma_floor: float,
) -> tuple[np.ndarray, np.ndarray]:
    """(A, c) with M(s) = A @ s + c: the observation of the market's mirror image, in the
    units the policy reads (features normalised by the frozen `mean`/`sigma`, `window`
    rows oldest first, then the management values), before the env's clip. A feature
    that was constant in training (its sigma, or its twin's, at `sigma_floor`) is left
    as it is: the policy learnt nothing from it, and its mirror would be far off scale.
    Raises ValueError for a feature without a mirror rule."""
    names = list(feature_names)
    n_f = len(names)
    mean = np.asarray(mean, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    block = np.zeros((n_f, n_f))
    offset = np.zeros(n_f)
    for j, name in enumerate(names):
        source, sign = mirror_of(name)
        if source not in names:
            raise ValueError(f"feature {name!r} mirrors to {source!r}, which the spec lacks")
        k = names.index(source)
        if min(sigma[j], sigma[k]) <= sigma_floor:
            block[j, j] = 1.0
            continue
        # z'_j = (sign * x_k - mean_j) / sigma_j with x_k = z_k * sigma_k + mean_k
        block[j, k] = sign * sigma[k] / sigma[j]
        offset[j] = (sign * mean[k] - mean[j]) / sigma[j]
    n_obs = n_f * window + len(MANAGEMENT_STATE)
    a = np.zeros((n_obs, n_obs))
    c = np.zeros(n_obs)
    for r in range(window):
        rows = slice(r * n_f, (r + 1) * n_f)
        a[rows, rows] = block
        c[rows] = offset
    base = n_f * window
    for i, name in enumerate(MANAGEMENT_STATE):
        source, sign = STATE_MIRROR[name]
        a[base + i, base + MANAGEMENT_STATE.index(source)] = sign
    return a, c


def action_permutation(action_mode: str) -> np.ndarray:
    """Index array P: action i here is action P[i] in the mirror image."""
    return np.asarray(ACTION_MIRROR[action_mode], dtype=np.int64)


def _linears(seq: Any) -> list[Any]:
    import torch.nn as nn  # slow: torch; only the training process mirrors a policy

    return [m for m in seq if isinstance(m, nn.Linear)]


def _widen(src: list[Any], dst: list[Any], a: Any, c: Any) -> None:
    """Fill the doubled MLP `dst` with `src` beside its copy reading A s + c."""
    import torch  # slow: torch, as above

    for i, (s, d) in enumerate(zip(src, dst, strict=True)):
        w, b = s.weight.detach().double(), s.bias.detach().double()
        if i == 0:
            w2 = torch.cat([w, w @ a], dim=0)
            b2 = torch.cat([b, b + w @ c])
        else:
            w2 = torch.block_diag(w, w)
            b2 = torch.cat([b, b])
        d.weight.copy_(w2.to(d.weight.dtype))
        d.bias.copy_(b2.to(d.bias.dtype))


def mirror_average(model: Any, a: np.ndarray, c: np.ndarray, perm: np.ndarray) -> None:
    """Replace the policy of SB3 PPO `model` (MlpPolicy on a flat Box, Discrete actions,
    separate actor and critic MLPs) by its mirror average (module docstring), in place:
    `model.save` then writes the twice-as-wide network and `PPO.load` rebuilds it.
    Raises ValueError for a policy of another shape."""
    import torch  # slow: torch, as above

    old = model.policy
    kwargs = dict(model.policy_kwargs)
    arch = kwargs.get("net_arch")
    if not isinstance(arch, list | tuple) or not arch:
        raise ValueError(f"mirror averaging needs net_arch as a list of widths, got {arch!r}")
    n_obs = int(np.prod(model.observation_space.shape))
    if a.shape != (n_obs, n_obs) or c.shape != (n_obs,):
        raise ValueError(f"mirror map of shape {a.shape} for an observation of {n_obs}")
    n_act = int(model.action_space.n)
    if sorted(perm.tolist()) != list(range(n_act)):
        raise ValueError(f"action permutation {perm.tolist()} for {n_act} actions")
    kwargs["net_arch"] = [2 * int(w) for w in arch]
    new = model.policy_class(
        model.observation_space, model.action_space, model.lr_schedule, **kwargs
    )
    new = new.to(old.device)
    at = torch.as_tensor(a, dtype=torch.float64)
    ct = torch.as_tensor(c, dtype=torch.float64)
    with torch.no_grad():
        _widen(
            _linears(old.mlp_extractor.policy_net), _linears(new.mlp_extractor.policy_net), at, ct
        )
        _widen(_linears(old.mlp_extractor.value_net), _linears(new.mlp_extractor.value_net), at, ct)
        wa, ba = old.action_net.weight.detach(), old.action_net.bias.detach()
        p = torch.as_tensor(perm)
        new.action_net.weight.copy_(torch.cat([wa, wa[p]], dim=1) / 2)
        new.action_net.bias.copy_((ba + ba[p]) / 2)
        wv, bv = old.value_net.weight.detach(), old.value_net.bias.detach()
        new.value_net.weight.copy_(torch.cat([wv, wv], dim=1) / 2)
        new.value_net.bias.copy_(bv)
    new.set_training_mode(False)
    model.policy = new
    model.policy_kwargs = kwargs
