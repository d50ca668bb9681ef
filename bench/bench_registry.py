"""Policy inference per decision: the bundle's pickle-free NumpyPolicy (what the live loop
runs) side by side with SB3 `PPO.predict(deterministic=True)` and onnxruntime on the same
exported actor. Target: NumpyPolicy median <= 50 µs per decision on one core.

    .venv/bin/python -m bench.bench_registry [--decisions 5000] [--repeats 3]

Default FeatureSpec (22 features, window 16 -> obs 359), MlpPolicy net_arch (64, 64) tanh,
Discrete(3). Observations are drawn like normalised features (clipped N(0, 1.5)) plus the
7 management values; every path sees the same observations, one at a time (a live
decision), with one torch / BLAS / ORT thread, pinned to one CPU. Writes bench/RESULTS_registry.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def _model(obs_dim: int):  # noqa: ANN202 - SB3 type
    import gymnasium as gym
    import torch
    from gymnasium import spaces
    from stable_baselines3 import PPO

    torch.set_num_threads(1)

    class _Env(gym.Env):
        observation_space = spaces.Box(-10.0, 10.0, (obs_dim,), np.float32)
        action_space = spaces.Discrete(3)

        def reset(self, *, seed=None, options=None):  # noqa: ANN001, ANN202
            return np.zeros(obs_dim, np.float32), {}

        def step(self, action):  # noqa: ANN001, ANN202
            return np.zeros(obs_dim, np.float32), 0.0, True, False, {}

    model = PPO(
        "MlpPolicy",
        _Env(),
        seed=0,
        device="cpu",
        policy_kwargs={"net_arch": [64, 64], "activation_fn": torch.nn.Tanh},
    )
    with torch.no_grad():  # decisive logits, so all three actions occur
        for p in model.policy.parameters():
            p.normal_(0, 0.3)
    return model


def _observations(n: int, n_features: int, window: int, rng: np.random.Generator) -> np.ndarray:
    feats = np.clip(rng.normal(0, 1.5, (n, n_features * window)), -10, 10)
    state = np.column_stack(
        [
            rng.integers(0, 2, n),
            rng.integers(0, 2, n),
            rng.uniform(-1, 1, n),
            rng.normal(0, 0.5, n),
            rng.uniform(0, 24, (n, 3)),
        ]
    )
    return np.hstack([feats, state]).astype(np.float32)


def _time_each(fn: Callable[[np.ndarray], object], obs: np.ndarray) -> list[float]:
    for o in obs[:200]:  # warm-up
        fn(o)
    out = []
    clock = time.perf_counter_ns
    for o in obs:
        t0 = clock()
        fn(o)
        out.append((clock() - t0) / 1000.0)
    return out


def _swap_cost(model, spec, n: int = 20) -> dict[str, float]:  # noqa: ANN001
    """Median ms of verify+load of a bundle vs SB3 PPO.load of the zip."""
    from stable_baselines3 import PPO

    from features.stats import FrozenStats
    from registry.bundle import build_bundle
    from registry.champion import load_bundle

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        zip_path = root / "model.zip"
        model.save(zip_path)
        x = np.random.default_rng(1).normal(size=(1000, len(spec.names)))
        stats = FrozenStats.fit(x, spec.names, spec.spec_hash, spec.sigma_floor, [])
        stats_dir = stats.save(root / "stats" / stats.stats_id)
        bundle = build_bundle(
            root / "bundle",
            model_zip=zip_path,
            stats_dir=stats_dir,
            feature_spec=spec,
            env_config={"window": spec.window},
            config_fingerprint="bench",
        )
        verify = []
        sb3 = []
        for _ in range(n):
            t0 = time.perf_counter()
            load_bundle(bundle, expected_spec_hash=spec.spec_hash)
            verify.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            PPO.load(zip_path, device="cpu")
            sb3.append((time.perf_counter() - t0) * 1000)
    return {"verify_load_ms": statistics.median(verify), "sb3_load_ms": statistics.median(sb3)}


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--decisions", type=int, default=5000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"  # before torch / onnxruntime load
    try:
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
        pinned = "pinned to one CPU"
    except (AttributeError, OSError):
        pinned = "not pinned"

    import onnxruntime as ort

    from core.config.features import FeatureSpec
    from registry.export import numpy_policy_from_sb3
    from registry.policy import POLICY_ONNX, to_onnx_bytes

    spec = FeatureSpec()
    n_features, window = len(spec.names), spec.window
    obs_dim = n_features * window + 7
    model = _model(obs_dim)
    policy = numpy_policy_from_sb3(model.policy)
    rng = np.random.default_rng(0)
    obs = _observations(args.decisions, n_features, window, rng)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / POLICY_ONNX
        onnx_path.write_bytes(to_onnx_bytes(policy))
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])

    def sb3(o: np.ndarray) -> int:
        return int(model.predict(o, deterministic=True)[0])

    def onnx(o: np.ndarray) -> int:
        return int(sess.run(["action"], {"obs": o[None, :]})[0][0])

    paths: dict[str, Callable[[np.ndarray], int]] = {
        "chappie NumpyPolicy.predict (bundle, numpy)": policy.predict,
        "onnxruntime on the bundle's policy.onnx": onnx,
        "baseline: SB3 PPO.predict(deterministic=True)": sb3,
    }
    agree = {
        name: int(
            np.sum([fn(o) for o in obs[:1000]] == model.predict(obs[:1000], deterministic=True)[0])
        )
        for name, fn in paths.items()
    }
    best: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        for name, fn in paths.items():
            t = _time_each(fn, obs)
            if name not in best or statistics.median(t) < statistics.median(best[name]):
                best[name] = t

    swap = _swap_cost(model, spec)
    med = {k: statistics.median(v) for k, v in best.items()}
    target = med["chappie NumpyPolicy.predict (bundle, numpy)"]
    rows = "\n".join(
        f"| {name} | {len(t):,} | {statistics.median(t):.1f} µs | {_pct(t, 99):.1f} µs | {agree[name]}/1000 |"
        for name, t in best.items()
    )
    speedup = med["baseline: SB3 PPO.predict(deterministic=True)"] / target
    text = f"""## registry: policy inference per decision

Machine `{platform.node()}` ({platform.machine()}, {os.cpu_count()} cores, shared with other jobs), Python {platform.python_version()}, {time.strftime("%Y-%m-%d %H:%M", time.gmtime())} UTC, {pinned}, one torch/BLAS/ORT thread. Best of {args.repeats} runs (by median).

Default FeatureSpec (22 features x window 16 + 7 management values = obs {obs_dim}), SB3 MlpPolicy (64, 64) tanh, Discrete(3); {args.decisions:,} observations, one per call (a live decision). "agree" = same action as SB3 on the first 1,000.

| path | decisions | median | p99 | agree |
|---|---:|---:|---:|---:|
{rows}

NumpyPolicy is {speedup:.0f}x faster than SB3 `predict`. Target median <= 50 µs per decision: **{"met" if target <= 50 else "NOT met"}** ({target:.1f} µs).

Champion swap (off the decision path): verify every sha256 of a default-size bundle and load it (`registry.load_bundle`): median {swap["verify_load_ms"]:.1f} ms; SB3 `PPO.load` of the same model's zip (unpickles; never in the live loop): median {swap["sb3_load_ms"]:.1f} ms.

Command: `.venv/bin/python -m bench.bench_registry --decisions {args.decisions} --repeats {args.repeats}`
"""
    (HERE / "RESULTS_registry.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
