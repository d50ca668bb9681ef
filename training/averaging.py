"""Averaged policies: several PPO members of one trial averaged into one policy
(`TrialConfig.ensemble`), and the mirror average, which treats a market and its mirror
image alike (`TrialConfig.mirror`).

The mirror image of a market has buyers and sellers swapped and its log price negated
(`core.schema.mirror_of` says how each feature reads there; `STATE_MIRROR` and
`ACTION_MIRROR` do the same for the management values and the actions). In normalised
units the mirror is an affine map of the observation, M(s) = A s + c. For members
l_1..l_K (logits) and v_1..v_K (values), the averaged policy is

    logits(s) = mean over k of l_k(s)              (and of P l_k(M(s)) with the mirror)
    value(s)  = mean over k of v_k(s)              (and of v_k(M(s)))

where P swaps the buy-side and sell-side actions. It is one MLP of the same kind, as many
times as wide as there are terms (each member beside a copy whose first layer reads
M(s)), so the backtest, the registry's pickle-free export and the live loop run it as
they run any policy. M is an involution, so the mirror average is exactly equivariant:
logits(M(s)) = P logits(s).

What they buy, measured (bench/RESULTS_decisions.md, "The mirror average"): a policy
trained on one 12 h slice picks up directional habits from that slice's path, which the
features do not explain and which do not carry to the next day; averaged with its
mirror image, only what the features say about direction survives. Members trained from
other seeds err in different ways; their average errs less.

Pure numpy for the map; `average_policies` needs torch and SB3 (the training process).
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
    import torch.nn as nn  # slow: torch; only the training process averages policies

    return [m for m in seq if isinstance(m, nn.Linear)]


def average_policies(
    models: Sequence[Any], mirror: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
) -> Any:
    """Replace the policy of `models[0]` (SB3 PPO, MlpPolicy on a flat Box, Discrete
    actions, separate actor and critic MLPs of one shape) by the average of every model's
    logits and values, and with `mirror` = (A, c, P) of theirs read at the mirror image
    too (module docstring); in place, and returned. `model.save` then writes one network
    as many times as wide as there are terms and `PPO.load` rebuilds it. Raises
    ValueError for policies of another or differing shapes, or a map of the wrong size."""
    import torch  # slow: torch; only the training process averages policies

    if not models:
        raise ValueError("no policy to average")
    first = models[0]
    kwargs = dict(first.policy_kwargs)
    arch = kwargs.get("net_arch")
    if not isinstance(arch, list | tuple) or not arch:
        raise ValueError(f"averaging needs net_arch as a list of widths, got {arch!r}")
    if any(m.policy_kwargs.get("net_arch") != arch for m in models):
        raise ValueError("the policies to average differ in shape")
    n_obs = int(np.prod(first.observation_space.shape))
    n_act = int(first.action_space.n)
    views = [(torch.eye(n_obs, dtype=torch.float64), torch.zeros(n_obs, dtype=torch.float64),
              torch.arange(n_act))]  # fmt: skip
    if mirror is not None:
        a, c, perm = mirror
        if a.shape != (n_obs, n_obs) or c.shape != (n_obs,):
            raise ValueError(f"mirror map of shape {a.shape} for an observation of {n_obs}")
        if sorted(np.asarray(perm).tolist()) != list(range(n_act)):
            raise ValueError(f"action permutation {np.asarray(perm).tolist()} for {n_act} actions")
        views.append((torch.as_tensor(a, dtype=torch.float64),
                      torch.as_tensor(c, dtype=torch.float64), torch.as_tensor(perm)))  # fmt: skip
    terms = [(m.policy, *view) for m in models for view in views]
    n = len(terms)
    kwargs["net_arch"] = [n * int(w) for w in arch]
    new = first.policy_class(
        first.observation_space, first.action_space, first.lr_schedule, **kwargs
    )
    with torch.no_grad():
        for net in ("policy_net", "value_net"):
            dst = _linears(getattr(new.mlp_extractor, net))
            for i, layer in enumerate(dst):
                ws, bs = [], []
                for pol, view_a, view_c, _ in terms:
                    src = _linears(getattr(pol.mlp_extractor, net))[i]
                    w, b = src.weight.detach().double(), src.bias.detach().double()
                    ws.append(w @ view_a if i == 0 else w)  # the first layer reads A s + c
                    bs.append(b + w @ view_c if i == 0 else b)
                w_all = torch.cat(ws, dim=0) if i == 0 else torch.block_diag(*ws)
                layer.weight.copy_(w_all.to(layer.weight.dtype))
                layer.bias.copy_(torch.cat(bs).to(layer.bias.dtype))
        # logits: the term's logits of the action that is this one in its view, averaged
        heads = [(pol.action_net.weight.detach()[p], pol.action_net.bias.detach()[p])
                 for pol, _, _, p in terms]  # fmt: skip
        new.action_net.weight.copy_(torch.cat([w for w, _ in heads], dim=1) / n)
        new.action_net.bias.copy_(torch.stack([b for _, b in heads]).mean(dim=0))
        values = [(pol.value_net.weight.detach(), pol.value_net.bias.detach()) for pol, *_ in terms]
        new.value_net.weight.copy_(torch.cat([w for w, _ in values], dim=1) / n)
        new.value_net.bias.copy_(torch.stack([b for _, b in values]).mean(dim=0))
    new.set_training_mode(False)
    first.policy = new.to(first.policy.device)
    first.policy_kwargs = kwargs
    return first
