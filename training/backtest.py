"""Walk-forward backtest: a deterministic policy over the full length of every slice.

Each slice runs in its own ManagementEnv in evaluation mode (`reset(options={"full":
True})`: starts flat at the first full window, never truncates, resting maker orders
rolled to the best price of their side every bar, open lots closed at the touch at the
end so every trade is reported). All slices of a model advance in lockstep and the policy
sees one batch per step: `policy(batch_obs (N, D) float32) -> actions (N,)`. That lets the
registry's pickle-free NumpyPolicy (`predict_batch`, what is deployed) or SB3
(`sb3_batch_policy`) be plugged in unchanged,
and replaces N small forward passes by one.

`lockstep=False` steps one slice at a time to the end, each forward pass a batch of one:
the baseline of the speed benchmark, and a check that lockstep changes nothing.

Accounting (from the env's `info`): `fees` in the env is the fee paid (positive = paid,
negative = rebate); here it is turned into the signed cash flow (negative = paid), and
pnl without fees = equity change + fees paid, so pnl + fees is exactly the equity change.
The fee is the env config's `fees` (core.fees, by the date of each bar); the slice's
maker / taker fill notional and the fees paid on them go into the metrics
(`SliceMetrics.maker_volume`, `taker_volume`, `maker_fee`, `taker_fee`) so a report can
state the fee charged and re-score the same fills at another (`training.metrics.fees_at`).
With the env's `funding` on, the funding paid and the rates of the funding times the
slice crossed (the env's `funding_schedule`: the funding table's or the constant) go
into the metrics too (`SliceMetrics.funding`, `funding_rate_mean`, ...).
Each slice is priced in its own contract (the env's `instrument`: the tick and lot its
manifest records, so one run may hold slices on both sides of XBTUSD's 0.5 -> 0.1 tick
change); `SliceResult.tick_size` carries its tick to the trade rows.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.atomic import write_with_atomic
from core.clock import NS_PER_S
from core.config.env import EnvConfig
from core.config.training import EvaluationConfig
from training.metrics import SliceMetrics, compute_slice_metrics, period_returns

BatchPolicy = Callable[[np.ndarray], np.ndarray]


def trade_fields(settle: str) -> tuple[str, ...]:
    """trades.csv columns; money in the settle currency (`settle`, e.g. XBT) with its unit
    in the name, times in ISO 8601 UTC beside their int64 ns, prices in USD beside ticks."""
    c = settle.lower()
    return (
        "slice_id",
        "side",
        "entry_time_utc",
        "exit_time_utc",
        "entry_price_usd",
        "exit_price_usd",
        "contracts",
        "stake_fraction",
        f"pnl_{c}",
        f"fees_{c}",
        f"pnl_plus_fees_{c}",
        "entry_ts_ns",
        "exit_ts_ns",
        "entry_price_ticks",
        "exit_price_ticks",
    )


@dataclass(frozen=True)
class SliceInput:
    """A slice to evaluate: its manifest (or a plain slice file) and what the report
    calls it."""

    path: str
    slice_id: str
    kind: str = "test"
    fold: int | None = None

    @classmethod
    def from_path(cls, path: str | Path) -> SliceInput:
        """Kind and fold from the slice's manifest (the path itself, or the manifest
        beside a plain slice file) when it exists, else from its id."""
        # slow: features.store pulls polars and pyarrow (~0.4 s); the backtest's users need not
        from features.store import manifest_for, slice_id_of

        p = Path(path)
        manifest = manifest_for(p)
        if manifest.exists():
            # slow: features.slices pulls polars and pyarrow (~0.4 s), as above
            from features.slices import load_manifest

            m = load_manifest(manifest)
            return cls(str(p), m.slice_id, m.kind, m.fold)
        return cls(str(p), slice_id_of(p))


@dataclass
class SliceResult:
    """One slice's curves, trades and metrics. Arrays start with the state at reset."""

    slice: SliceInput
    ts_ns: np.ndarray  # int64 bar close of every point
    equity: np.ndarray  # account equity (settle currency) at every point
    position_size: np.ndarray  # signed exposure / max exposure at every point
    actions: np.ndarray  # action taken at every step (len = points - 1)
    trades: list[dict[str, Any]] = field(default_factory=list)
    fees_paid: float = 0.0  # positive = paid
    metrics: SliceMetrics | None = None
    # USD per tick of the contract the slice was priced in (its manifest's; None: unknown,
    # results saved before it was recorded: the report's default applies)
    tick_size: float | None = None

    def returns(self, period_s: float) -> np.ndarray:
        """Simple equity returns over `period_s` seconds (the grid starts at the first point)."""
        return period_returns(self.ts_ns, self.equity, int(period_s * NS_PER_S))


_FILL_KEYS = ("maker_volume", "taker_volume", "maker_fees", "taker_fees")  # env info keys


class _Recorder:
    """Collects one env's trajectory."""

    def __init__(self, spec: SliceInput, info: dict[str, Any]) -> None:
        self.spec = spec
        self.ts = [int(info["ts"])]
        self.equity = [float(info["equity"])]
        self.pos = [float(info["position_size"])]
        self.actions: list[int] = []
        self.trades: list[dict[str, Any]] = []
        self.fees_start = float(info["fees"])
        self.fees_end = self.fees_start
        # cumulative maker / taker volume and the fees paid on them, at reset and now
        self.fills_start = tuple(float(info[k]) for k in _FILL_KEYS)
        self.fills_end = self.fills_start
        self.funding_start = float(info["funding"])
        self.funding_end = self.funding_start
        self.funding_rates = np.zeros(0)  # rates of the funding times crossed (set at the end)
        self.funding_missing = 0
        self.tick_size: float | None = None  # the slice's contract's (set at the end)

    def add(self, action: int, info: dict[str, Any]) -> None:
        self.ts.append(int(info["ts"]))
        self.equity.append(float(info["equity"]))
        self.pos.append(float(info["position_size"]))
        self.actions.append(action)
        self.fees_end = float(info["fees"])
        self.fills_end = tuple(float(info[k]) for k in _FILL_KEYS)
        self.funding_end = float(info["funding"])
        for t in info["trades"]:
            self.trades.append({"slice_id": self.spec.slice_id, **t})

    def result(self, eval_cfg: EvaluationConfig) -> SliceResult:
        ts = np.asarray(self.ts, dtype=np.int64)
        eq = np.asarray(self.equity, dtype=np.float64)
        fees_paid = self.fees_end - self.fees_start
        change = float(eq[-1] - eq[0])
        mvol, tvol, mfee, tfee = (
            b - a for a, b in zip(self.fills_start, self.fills_end, strict=True)
        )
        metrics = compute_slice_metrics(
            slice_id=self.spec.slice_id,
            kind=self.spec.kind,
            fold=self.spec.fold,
            ts_ns=ts,
            equity=eq,
            pnl_without_fees=change + fees_paid,
            fees=-fees_paid,
            trade_pnls=np.asarray([t["pnl_plus_fees"] for t in self.trades], dtype=np.float64),
            return_period_ns=int(eval_cfg.return_period_s * NS_PER_S),
            periods_per_year=eval_cfg.annualisation,
            maker_volume=mvol,
            taker_volume=tvol,
            maker_fees_paid=mfee,
            taker_fees_paid=tfee,
            funding_paid=self.funding_end - self.funding_start,
            funding_rates=self.funding_rates,
            funding_rates_missing=self.funding_missing,
        )
        return SliceResult(
            slice=self.spec,
            ts_ns=ts,
            equity=eq,
            position_size=np.asarray(self.pos, dtype=np.float64),
            actions=np.asarray(self.actions, dtype=np.int64),
            trades=self.trades,
            fees_paid=fees_paid,
            metrics=metrics,
            tick_size=self.tick_size,
        )


def _as_inputs(slices: Sequence[str | Path | SliceInput]) -> list[SliceInput]:
    return [s if isinstance(s, SliceInput) else SliceInput.from_path(s) for s in slices]


def _actions(policy: BatchPolicy, obs: np.ndarray) -> np.ndarray:
    acts = np.asarray(policy(obs)).reshape(-1)
    if acts.shape[0] != obs.shape[0]:
        raise ValueError(f"policy returned {acts.shape[0]} actions for {obs.shape[0]} observations")
    return acts.astype(np.int64)


def backtest(
    policy: BatchPolicy,
    slice_paths: Sequence[str | Path | SliceInput],
    stats_dir: str | Path,
    env_cfg: EnvConfig | Sequence[EnvConfig],
    eval_cfg: EvaluationConfig | None = None,
    *,
    lockstep: bool = True,
) -> list[SliceResult]:
    """Run `policy` deterministically over every slice in full (see module docstring);
    results in input order. `env_cfg`: one env config for every slice, or one per slice
    (e.g. a slice under two fill models in one lockstep pass: one forward pass serves
    both). Raises the env's SliceDataError on a bad slice or stats, and ValueError when
    the policy returns the wrong number of actions or the env configs do not match the
    slices in number."""
    # slow: envs.management pulls gymnasium and numba (~0.5 s); only a run of the env needs it
    from envs.management import ManagementEnv

    eval_cfg = eval_cfg or EvaluationConfig()
    inputs = _as_inputs(slice_paths)
    cfgs = [env_cfg] * len(inputs) if isinstance(env_cfg, EnvConfig) else list(env_cfg)
    if len(cfgs) != len(inputs):
        raise ValueError(f"{len(cfgs)} env configs for {len(inputs)} slices")
    envs = [ManagementEnv(s.path, stats_dir, c) for s, c in zip(inputs, cfgs, strict=True)]
    try:
        if lockstep:
            recs = _run_lockstep(policy, envs, inputs)
        else:
            recs = [
                _run_lockstep(policy, [env], [s])[0] for env, s in zip(envs, inputs, strict=True)
            ]
    finally:
        for env in envs:
            env.close()
    for env, rec in zip(envs, recs, strict=True):
        crossed = env.funding_schedule.between(rec.ts[0], rec.ts[-1])
        rec.funding_rates = crossed.rate
        rec.funding_missing = (
            int((~crossed.from_history).sum()) if env.config.funding_rates_path else 0
        )
        rec.tick_size = float(env.instrument.tick_size)
    return [r.result(eval_cfg) for r in recs]


def _run_lockstep(
    policy: BatchPolicy, envs: Sequence[Any], inputs: Sequence[SliceInput]
) -> list[_Recorder]:
    obs = []
    recs = []
    for env, spec in zip(envs, inputs, strict=True):
        o, info = env.reset(options={"full": True})
        obs.append(o)
        recs.append(_Recorder(spec, info))
    dim = obs[0].shape[0]
    batch = np.empty((len(envs), dim), dtype=np.float32)
    batch[:] = np.stack(obs)
    active = list(range(len(envs)))
    while active:
        acts = _actions(policy, batch[active] if len(active) < len(envs) else batch)
        still = []
        for a, i in zip(acts, active, strict=True):
            o, _, terminated, truncated, info = envs[i].step(int(a))
            recs[i].add(int(a), info)
            if terminated or truncated:
                continue
            batch[i] = o
            still.append(i)
        active = still
    return recs


def sb3_batch_policy(model: Any) -> BatchPolicy:
    """Deterministic batch policy of an SB3 PPO model with an MLP policy on a flat Box:
    the actor path (`mlp_extractor.policy_net` -> `action_net`) called directly, then
    SB3's Categorical mode (argmax of softmax(logits), first index on ties). Skipping
    SB3's per-call Distribution objects makes a batch forward several times cheaper."""
    # slow: torch (~2.5 s), only for an SB3 policy
    import torch

    pol = model.policy
    pol.set_training_mode(False)
    if (
        pol.share_features_extractor is False
        and pol.pi_features_extractor is not pol.features_extractor
    ):
        extractor = pol.pi_features_extractor
    else:
        extractor = pol.features_extractor
    actor = pol.mlp_extractor.policy_net
    head = pol.action_net

    def act(obs: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            t = torch.from_numpy(np.ascontiguousarray(obs, dtype=np.float32))
            logits = head(actor(extractor(t)))
            return torch.softmax(logits, dim=-1).argmax(dim=-1).numpy()

    return act


def _iso(ts_ns: int) -> str:
    t = dt.datetime.fromtimestamp(ts_ns // 1_000_000_000, tz=dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S") + f".{(ts_ns % 1_000_000_000) // 1_000_000:03d}Z"


def trade_rows(
    results: Sequence[SliceResult], tick_size: float, settle: str
) -> list[dict[str, Any]]:
    """Every closed trade as a trades.csv row (`trade_fields`). Prices in USD are each
    slice's ticks times its own contract's tick (`SliceResult.tick_size`; `tick_size`
    for a result that records none): slices on both sides of a tick change (XBTUSD 0.5
    -> 0.1) report the same USD. Fees are a cash flow, as in every report: negative =
    paid, positive = rebate received, and pnl_plus_fees = pnl + fees (the env's trade
    records count fees paid as positive). Pure."""
    c = settle.lower()
    rows = []
    for r in results:
        tick = tick_size if r.tick_size is None else r.tick_size
        for t in r.trades:
            fees = -float(t["fees"])
            pnl = float(t["pnl"])
            rows.append(
                {
                    "slice_id": r.slice.slice_id,
                    "side": "long" if int(t["side"]) > 0 else "short",
                    "entry_time_utc": _iso(int(t["entry_ts_ns"])),
                    "exit_time_utc": _iso(int(t["exit_ts_ns"])),
                    "entry_price_usd": float(t["entry_price_ticks"]) * tick,
                    "exit_price_usd": float(t["exit_price_ticks"]) * tick,
                    "contracts": t["contracts"],
                    "stake_fraction": t["stake"],
                    f"pnl_{c}": pnl,
                    f"fees_{c}": fees,
                    f"pnl_plus_fees_{c}": pnl + fees,
                    "entry_ts_ns": int(t["entry_ts_ns"]),
                    "exit_ts_ns": int(t["exit_ts_ns"]),
                    "entry_price_ticks": int(t["entry_price_ticks"]),
                    "exit_price_ticks": int(t["exit_price_ticks"]),
                }
            )
    return rows


def write_trades_csv(
    path: str | Path,
    results: Sequence[SliceResult],
    tick_size: float = 0.5,
    settle: str = "XBT",
) -> Path:
    """Every closed trade of every slice as CSV (`trade_rows`; `tick_size` for results
    that record no tick of their own), atomically."""

    def _write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=trade_fields(settle))
            w.writeheader()
            w.writerows(trade_rows(results, tick_size, settle))

    return write_with_atomic(path, _write)
