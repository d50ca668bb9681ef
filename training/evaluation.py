"""Judging a sweep: per-candidate gates, the baseline panel, the champion, seed stability,
PBO and DSR over the trial ledger, the decision of each candidate and the sweep's best
and challenger. Pure: takes backtest results, returns a `SweepVerdict`
(`training.evaluation_record`), the judged part of evaluation.json (shape in
DEVELOPERS.md).

Walk-forward: a candidate (trial, seed, timesteps) has one model per fold, each judged on
its own fold's test slice; the gates see those test slices only. Stress slices are
evaluated with the last-fold model and reported separately, never gated.

Returns. Sharpe, DSR, PBO and the paired baseline test use each policy's equity returns
over non-overlapping periods of `EvaluationConfig.return_period_s`, per test slice,
concatenated in fold order: every policy is measured on the same periods, so the T x N
matrix of CSCV is well formed and the baseline test is paired. The lag-1 autocorrelation
of those returns is measured and reported beside the statistics that assume it is small.

References. Every candidate is judged beside the baseline panel (`training.baselines`)
and, when one exists, the current champion, all run by the same backtest on the same
slices under the candidate's own env config (fees, fill model, latency, stake).

Execution. Each candidate's record states how its fills were simulated (`execution_of`:
fill model, latency, the fee rates in force over its test slices, funding), and carries
its touch bound when the backtest made one: the same policies on the same test slices
under `touch_bound_env` (fill model touch, no latency): the most fills the fill models
allow, reported and never gated (more fills are not always more pnl: a maker fee, fills
the price then runs through).

The trial ledger. `LedgerTrial`s are every candidate evaluated before on the same
FeatureSpec and test slices (`registry.ledger` reads them from MLflow); with this sweep's
candidates (deduplicated by model key: a re-run of the same model is one trial) they give
the DSR its number of trials and Sharpe variance, and PBO its columns.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from core.config.env import EnvConfig
from core.config.training import EvaluationConfig, TrialConfig
from core.hashing import fingerprint
from training.backtest import SliceResult
from training.evaluation_record import (
    BaselineEntry,
    BaselineSpread,
    CandidateEvaluation,
    ChampionRecord,
    Execution,
    ExecutionBound,
    FeeRates,
    FeeScenario,
    Gate,
    JsonObject,
    Overfitting,
    SeedTotals,
    SliceFigures,
    SliceLink,
    SweepVerdict,
    TestTotals,
)
from training.gates import (
    GateResult,
    beats_baselines,
    beats_champion,
    candidate_gates,
    decide,
    passes_slice_gates,
    pbo_under_cap,
)
from training.metrics import SliceMetrics, aggregate_totals
from training.overfitting import cscv, deflated_sharpe_ratio, largest_even_splits, sharpe_per_period
from training.significance import lag1_autocorrelation

CHAMPION = "champion"


def env_key(trial: TrialConfig) -> str:
    """Identity of the env a policy is judged in (fees, fill model, stake...): references
    are run once per distinct env key. Pure."""
    return fingerprint(trial.env.model_dump(mode="json"))[:16]


def trial_config_key(trial: TrialConfig, timesteps: int) -> str:
    """Identity of a trial config for PBO: everything but the seed. Pure."""
    return fingerprint({"trial": trial.model_dump(mode="json"), "timesteps": timesteps})[:16]


def data_key(test_sha256: Sequence[str], return_period_s: float) -> str:
    """Identity of the data a trial was judged on: its test slices (fold order) and the
    return period; ledger trials are comparable only under the same key. Pure."""
    return fingerprint({"test": list(test_sha256), "period_s": return_period_s})[:16]


def touch_bound_env(env: EnvConfig) -> EnvConfig:
    """`env` with the optimistic execution of the touch bound: fill model touch (an order
    at the best price fills as soon as the price trades there) and no order latency;
    everything else (fees, funding, stake) unchanged. Pure."""
    return env.model_copy(
        update={"fill_model": "touch", "entry_latency_ms": 0.0, "cancel_latency_ms": 0.0}
    )


def fee_rates_in_force(env: EnvConfig, results: Sequence[SliceResult]) -> list[FeeRates]:
    """The maker / taker rates `env.fees` charged at the bars of `results`, one entry per
    change in time order (one entry when the fee was the same throughout). Pure."""
    parts = [r.ts_ns for r in results if r.ts_ns.size]
    if not parts:
        return []
    ts = np.sort(np.concatenate(parts))
    maker, taker = env.fees.resolve(ts)
    changed = np.flatnonzero((np.diff(maker) != 0) | (np.diff(taker) != 0)) + 1
    return [
        FeeRates(maker=float(maker[i]), taker=float(taker[i]), from_ns=int(ts[i]))
        for i in np.concatenate(([0], changed))
    ]


def execution_of(env: EnvConfig, test: Sequence[SliceResult]) -> Execution:
    """How `test` (one policy's test slices) was backtested under `env`: fill model,
    latency, fee and funding (`Execution`), with the fee rates in force over the slices and
    the mean funding rate they settled at. Pure."""
    times = [(m.funding_rate_mean, m.funding_times) for r in test if (m := r.metrics)]
    settled = [(rate, n) for rate, n in times if rate is not None and n > 0 and env.funding]
    n_settled = sum(n for _, n in settled)
    return Execution(
        fill_model=env.fill_model,
        power_prob_n=env.power_prob_n if env.fill_model == "power_prob" else None,
        entry_latency_ms=env.entry_latency_ms,
        cancel_latency_ms=env.cancel_latency_ms,
        fees=env.fees.describe(),
        fee_rates=fee_rates_in_force(env, test),
        funding=env.funding,
        funding_rates_path=env.funding_rates_path if env.funding else None,
        funding_rate=env.funding_rate if env.funding else None,
        funding_rate_mean=(sum(rate * n for rate, n in settled) / n_settled if n_settled else None),
    )


def touch_bound_of(c: CandidateBacktest) -> ExecutionBound | None:
    """The candidate's touch bound (totals over its bound's test slices), or None when its
    backtest made none."""
    if c.touch_bound is None:
        return None
    env = touch_bound_env(c.trial.env)
    metrics = [r.metrics for r in c.touch_bound if r.metrics is not None]
    return ExecutionBound(
        fill_model=env.fill_model,
        entry_latency_ms=env.entry_latency_ms,
        cancel_latency_ms=env.cancel_latency_ms,
        test_totals=TestTotals.model_validate(aggregate_totals(metrics)),
    )


def _concat_returns(results: Sequence[SliceResult], period_s: float) -> np.ndarray:
    parts = [r.returns(period_s) for r in results]
    return np.concatenate(parts) if parts else np.zeros(0)


@dataclass(eq=False)
class CandidateBacktest:
    """Everything evaluated for one candidate."""

    candidate_id: str
    trial: TrialConfig
    seed: int
    timesteps: int
    test: list[SliceResult]  # one per fold, the fold's own model, fold order
    stress: list[SliceResult] = field(default_factory=list)  # last-fold model
    validation: list[SliceResult] = field(default_factory=list)  # each fold's own model
    model_zip: str = ""
    stats_dir: str = ""
    run_id: str | None = None
    train_slices: list[SliceLink] = field(default_factory=list)
    test_slices: list[SliceLink] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    model_key: str = ""  # identity of the fold models' bytes (a re-run of them is one trial)
    config_key: str = ""  # identity of the trial config without the seed (default: computed)
    train_end_ns: int | None = None  # last bar of the last fold's training slice (None: unset)
    # the test slices again under `touch_bound_env(trial.env)`, fold order (None: not run)
    touch_bound: list[SliceResult] | None = None

    def __post_init__(self) -> None:
        if not self.config_key:
            self.config_key = trial_config_key(self.trial, self.timesteps)

    def test_metrics(self) -> list[SliceMetrics]:
        return [r.metrics for r in self.test if r.metrics is not None]

    def returns(self, period_s: float) -> np.ndarray:
        return _concat_returns(self.test, period_s)

    @property
    def env_key(self) -> str:
        return env_key(self.trial)


@dataclass(eq=False)
class ReferenceBacktest:
    """A reference policy (a baseline, or the champion) on the same slices as the
    candidates of one env key."""

    name: str
    seed: int
    env_key: str
    test: list[SliceResult]
    stress: list[SliceResult] = field(default_factory=list)
    validation: list[SliceResult] = field(default_factory=list)
    model_key: str = ""  # the champion's (empty for baselines)
    label: str = ""  # e.g. "chappie-xbtusd v3" for the champion
    train_end_ns: int | None = None  # the champion's last training bar; None: unknown


@dataclass(frozen=True)
class LedgerTrial:
    """One earlier trial on the same spec and data: its identity and its non-overlapping
    test returns."""

    model_key: str
    config_key: str
    returns: tuple[float, ...]


# ------------------------------------------------------------------ the baseline panel


def _mean_slices(groups: Sequence[Sequence[SliceMetrics]]) -> list[SliceFigures]:
    """Slice metrics averaged over the runs of one baseline (random: over seeds), slice by
    slice; count fields stay counts (rounded means)."""
    if not groups:
        return []
    out = []
    for per_seed in zip(*groups, strict=False):
        first = per_seed[0].as_dict()
        row: dict[str, object] = dict(first)
        for k, v in first.items():
            if isinstance(v, float) or (isinstance(v, int) and not isinstance(v, bool)):
                if k in ("fold",):
                    continue
                vals = [float(m.as_dict()[k] or 0.0) for m in per_seed]
                row[k] = float(np.mean(vals)) if isinstance(v, float) else round(np.mean(vals))
        out.append(SliceFigures.model_validate(row))
    return out


def fee_sensitivity(
    slices: Sequence[SliceFigures], makers: Sequence[float], taker: float
) -> list[FeeScenario] | None:
    """pnl_plus_fees (fraction of initial equity, summed over `slices`) re-scored from the
    same fills at each maker fee, taker fills at `taker`: pnl - maker_volume * m -
    taker_volume * t per slice. None when the slices carry no fill volumes. Pure."""
    if not slices or any("maker_volume" not in s.model_fields_set for s in slices):
        return None
    out = []
    for m in makers:
        total = sum(
            float(s.pnl) - float(s.maker_volume) * m - float(s.taker_volume) * taker for s in slices
        )
        out.append(FeeScenario(maker_fee=float(m), taker_fee=float(taker), pnl_plus_fees=total))
    return out


@dataclass(frozen=True)
class PanelEntry:
    """One reference policy's aggregate on the test slices (random: mean over seeds)."""

    name: str
    seeds: tuple[int, ...]
    slices: list[SliceFigures]
    validation_slices: list[SliceFigures]
    stress_slices: list[SliceFigures]
    returns: np.ndarray
    per_seed: list[SeedTotals]

    def totals(self) -> dict[str, float]:
        return {
            "pnl_plus_fees": float(sum(s.pnl_plus_fees for s in self.slices)),
            "pnl_without_fees": float(sum(s.pnl for s in self.slices)),
            "fees": float(sum(s.fees for s in self.slices)),
            "trades": float(sum(s.trades for s in self.slices)),
            "max_drawdown": float(max((s.max_drawdown for s in self.slices), default=0.0)),
        }

    def record(self, cfg: EvaluationConfig) -> BaselineEntry:
        """The entry in evaluation.json `baselines` (seeds, per-seed totals and their
        spread only for a policy run with several seeds)."""
        several: dict[str, object] = {}
        if len(self.seeds) > 1:
            pnls = np.array([s.pnl_plus_fees for s in self.per_seed])
            several = {
                "seeds": list(self.seeds),
                "per_seed": self.per_seed,
                "spread": BaselineSpread(
                    pnl_plus_fees_std=float(pnls.std(ddof=1)),
                    pnl_plus_fees_min=float(pnls.min()),
                    pnl_plus_fees_max=float(pnls.max()),
                ),
            }
        return BaselineEntry.model_validate(
            {
                **self.totals(),
                "slices": self.slices,
                "validation_slices": self.validation_slices,
                "stress_slices": self.stress_slices,
                "fee_sensitivity": fee_sensitivity(
                    self.slices, cfg.fee_sensitivity, cfg.fee_sensitivity_taker
                ),
                **several,
            }
        )


def baseline_panel(refs: Sequence[ReferenceBacktest], period_s: float) -> dict[str, PanelEntry]:
    """Group reference backtests by name (not the champion) into panel entries; the
    random baseline's returns are the per-period mean over its seeds. Pure."""
    by_name: dict[str, list[ReferenceBacktest]] = defaultdict(list)
    for r in refs:
        if r.name != CHAMPION:
            by_name[r.name].append(r)
    panel = {}
    for name, runs in by_name.items():
        runs = sorted(runs, key=lambda r: r.seed)
        series = [_concat_returns(r.test, period_s) for r in runs]
        t = min(s.size for s in series)
        per_seed = []
        for r in runs:
            tot = aggregate_totals([x.metrics for x in r.test if x.metrics is not None])
            per_seed.append(SeedTotals.model_validate({"seed": r.seed, **tot}))

        def metrics(kind: str, runs: list[ReferenceBacktest] = runs) -> list[SliceFigures]:
            return _mean_slices(
                [[x.metrics for x in getattr(r, kind) if x.metrics is not None] for r in runs]
            )

        panel[name] = PanelEntry(
            name=name,
            seeds=tuple(r.seed for r in runs),
            slices=metrics("test"),
            validation_slices=metrics("validation"),
            stress_slices=metrics("stress"),
            returns=np.mean(np.stack([s[:t] for s in series]), axis=0) if t else np.zeros(0),
            per_seed=per_seed,
        )
    return panel


def best_baseline(panel: Mapping[str, PanelEntry]) -> PanelEntry | None:
    """The entry with the highest total test pnl_plus_fees (first on ties)."""
    if not panel:
        return None
    return max(panel.values(), key=lambda e: e.totals()["pnl_plus_fees"])


# ------------------------------------------------------------------ trials and PBO


def _trial_columns(
    cands: Sequence[CandidateBacktest],
    series: Sequence[np.ndarray],
    ledger: Sequence[LedgerTrial],
    extra_failed: int,
) -> tuple[list[LedgerTrial], int]:
    """This sweep's candidates and the ledger's earlier trials, one per model key (this
    sweep's version wins), and the number of trials for the DSR (plus trainings that
    failed, which were tried too)."""
    trials: dict[str, LedgerTrial] = {t.model_key: t for t in ledger if t.model_key}
    for c, r in zip(cands, series, strict=True):
        key = c.model_key or f"sweep:{c.candidate_id}"
        trials[key] = LedgerTrial(key, c.config_key, tuple(float(x) for x in r))
    out = list(trials.values())
    return out, len(out) + max(extra_failed, 0)


def overfitting_statistics(
    cands: Sequence[CandidateBacktest],
    ledger: Sequence[LedgerTrial],
    cfg: EvaluationConfig,
    n_failed: int,
    series: Sequence[np.ndarray] | None = None,
) -> tuple[Overfitting, GateResult, list[float | None], list[str]]:
    """PBO over every comparable trial, the DSR of each candidate deflated by the ledger,
    and the autocorrelation of the returns they use. `series`: each candidate's returns
    over `cfg.return_period_s` when the caller has them already."""
    period = cfg.return_period_s
    if series is None:
        series = [c.returns(period) for c in cands]
    notes: list[str] = []
    trials, n_trials = _trial_columns(cands, series, ledger, n_failed)
    t = min((r.size for r in series), default=0)
    same = [tr for tr in trials if len(tr.returns) >= t > 0]
    if len(same) < len(trials):
        notes.append(
            f"{len(trials) - len(same)} ledger trial(s) have fewer than {t} return periods: "
            "counted for the DSR, left out of PBO"
        )
    m = np.column_stack([np.asarray(tr.returns[:t]) for tr in same]) if same else np.zeros((0, 0))
    n_configs = len({tr.config_key for tr in same})
    srs = np.array(
        [sharpe_per_period(np.asarray(tr.returns))[0] for tr in trials if len(tr.returns) >= 2]
    )
    srs = srs[np.isfinite(srs)]
    var = float(np.var(srs, ddof=1)) if srs.size > 1 else 0.0
    splits = largest_even_splits(t, cfg.pbo_splits) if t else None
    pbo = cscv(m, splits).pbo if (m.shape[1] >= 2 and splits is not None) else None
    dsrs: list[float | None] = []
    acfs = []
    for full in series:
        r = full[:t]
        acf = lag1_autocorrelation(r)
        if acf is not None:
            acfs.append(acf)
        ok = r.size >= 2 and np.isfinite(sharpe_per_period(r)[0]) and float(np.std(r)) > 0
        dsrs.append(deflated_sharpe_ratio(r, n_trials, var) if ok else None)
    if t < 2:
        notes.append(f"only {t} test return periods: PBO and DSR not computed")
    best_j = (
        int(np.argmax([sharpe_per_period(r[:t])[0] if t >= 2 else -np.inf for r in series]))
        if cands
        else None
    )
    gate = pbo_under_cap(pbo, n_configs, cfg.gates)
    over = Overfitting(
        pbo=pbo,
        dsr=dsrs[best_j] if best_j is not None else None,
        best_candidate=cands[best_j].candidate_id if best_j is not None else None,
        n_trials=n_trials,
        n_trials_sweep=len(cands) + max(n_failed, 0),
        n_trials_ledger=n_trials,
        n_configs=n_configs,
        n_pbo_columns=int(m.shape[1]),
        n_periods=t,
        n_splits=splits if pbo is not None else None,
        return_period_s=period,
        trials_sharpe_variance=var,
        lag1_autocorrelation_median=float(np.median(acfs)) if acfs else None,
        **({"pbo_note": gate.note} if gate.note else {}),
    )
    return over, gate, dsrs, notes


# ------------------------------------------------------------------ references


def _champion_gate(
    c: CandidateBacktest, champ: ReferenceBacktest | None
) -> tuple[GateResult | None, str | None]:
    """beats_champion on the test slices that start after the champion's training data
    (its out-of-sample slices), or a note saying why there is no such gate."""
    if champ is None:
        return None, None
    if champ.model_key and champ.model_key == c.model_key:
        return None, f"{c.candidate_id} is the current champion ({champ.label}): same model"
    ids = [
        r.slice.slice_id
        for r in champ.test
        if champ.train_end_ns is None or (r.ts_ns.size and int(r.ts_ns[0]) > champ.train_end_ns)
    ]
    if not ids:
        return None, (
            f"no test slice lies after the training data of the champion ({champ.label}): "
            "beats_champion not judged"
        )

    def total(results: Sequence[SliceResult]) -> float:
        return float(
            sum(r.metrics.pnl_plus_fees for r in results if r.metrics and r.slice.slice_id in ids)
        )

    gate = beats_champion(total(c.test), total(champ.test), champ.label or CHAMPION)
    scope = (
        "all test slices (the champion's training span is unknown)"
        if champ.train_end_ns is None
        else f"test slices after the champion's training data: {ids}"
    )
    return gate, f"beats_champion judged on {scope}"


def evaluate_sweep(
    cands: Sequence[CandidateBacktest],
    cfg: EvaluationConfig,
    n_trials: int | None = None,
    *,
    references: Sequence[ReferenceBacktest] = (),
    ledger: Sequence[LedgerTrial] = (),
) -> SweepVerdict:
    """Gates, references, overfitting statistics and decisions for every candidate.

    `n_trials` (default: the number of candidates) counts this sweep's trials, including
    candidates whose training failed. `references`: baselines (and the champion, name
    "champion") per env key; a candidate whose env key has no baseline panel cannot pass
    `beats_baselines` (value None: retest). `ledger`: earlier trials on the same data.

    Returns the verdict: candidates (each with `train_end_ns` when the backtest carries
    one), best, challenger, overfitting, baselines, champion, notes; the caller makes the
    `Evaluation` with the sweep's ids and fingerprints."""
    g = cfg.gates
    period = cfg.return_period_s
    notes: list[str] = []
    groups: dict[tuple[str, int], list[bool]] = defaultdict(list)
    for c in cands:
        groups[(c.trial.name, c.timesteps)].append(passes_slice_gates(c.test_metrics(), g))
    n_failed = (n_trials or len(cands)) - len(cands)
    series = [c.returns(period) for c in cands]  # once: each call samples the equity clock
    over, pbo_gate, dsrs, over_notes = overfitting_statistics(cands, ledger, cfg, n_failed, series)
    notes += over_notes

    refs_by_env: dict[str, list[ReferenceBacktest]] = defaultdict(list)
    for r in references:
        refs_by_env[r.env_key].append(r)
    panels = {k: baseline_panel(v, period) for k, v in refs_by_env.items()}
    champions = {
        k: next((r for r in v if r.name == CHAMPION), None) for k, v in refs_by_env.items()
    }

    out_cands = []
    for j, (c, returns) in enumerate(zip(cands, series, strict=True)):
        test_m = c.test_metrics()
        totals = aggregate_totals(test_m)
        cand_notes = list(c.notes) + stress_notes(c.stress, g.min_slice_return)
        panel = panels.get(c.env_key, {})
        best = best_baseline(panel)
        extra = [
            beats_baselines(
                returns,
                None if best is None else best.returns,
                "" if best is None else best.name,
                float(totals["pnl"]),
                g,
            )
        ]
        champ_gate, champ_note = _champion_gate(c, champions.get(c.env_key))
        if champ_gate is not None:
            extra.append(champ_gate)
        if champ_note:
            cand_notes.append(champ_note)
        gates = candidate_gates(
            test_m, groups[(c.trial.name, c.timesteps)], pbo_gate, dsrs[j], g, extra
        )
        dec = decide(gates, total_trades=int(totals["trades"]), n_slices=len(test_m), g=g)
        slices = _figures(test_m)
        out_cands.append(
            CandidateEvaluation(
                candidate_id=c.candidate_id,
                trial=c.trial.name,
                seed=c.seed,
                timesteps=c.timesteps,
                decision=dec.decision,
                reasons=list(dec.reasons),
                gates={k: Gate.model_validate(v.as_dict()) for k, v in gates.items()},
                test_totals=TestTotals.model_validate(totals),
                fee_sensitivity=fee_sensitivity(
                    slices, cfg.fee_sensitivity, cfg.fee_sensitivity_taker
                ),
                best_baseline=best.name if best is not None else None,
                slices=slices,
                stress_slices=_figures(r.metrics for r in c.stress),
                validation_slices=_figures(r.metrics for r in c.validation),
                dsr=dsrs[j],
                model_key=c.model_key,
                config_key=c.config_key,
                env_key=c.env_key,
                model_zip=c.model_zip,
                stats_dir=c.stats_dir,
                run_id=c.run_id,
                env_config=c.trial.env.model_dump(mode="json"),
                reward_config=c.trial.env.reward.model_dump(mode="json"),
                ppo_config=c.trial.ppo.model_dump(mode="json"),
                train_slices=c.train_slices,
                test_slices=c.test_slices,
                notes=cand_notes,
                **({"train_end_ns": c.train_end_ns} if c.train_end_ns is not None else {}),
                execution=execution_of(c.trial.env, c.test),
                **({"touch_bound": bound} if (bound := touch_bound_of(c)) is not None else {}),
            )
        )
    first_env = cands[0].env_key if cands else next(iter(panels), None)
    baselines = {name: e.record(cfg) for name, e in panels.get(first_env or "", {}).items()}
    champ = champions.get(first_env or "")
    champion = None
    if champ is not None:
        champ_m = [r.metrics for r in champ.test if r.metrics is not None]
        champion = ChampionRecord(
            label=champ.label,
            model_key=champ.model_key,
            train_end_ns=champ.train_end_ns,
            test_totals=TestTotals.model_validate(aggregate_totals(champ_m)),
            slices=_figures(champ_m),
        )
    if len(panels) > 1:
        notes.append(
            f"{len(panels)} env configs among the trials: each candidate is judged against the "
            "baselines of its own env; `baselines` shows the first trial's"
        )
    return SweepVerdict(
        candidates=out_cands,
        best=pick_best(out_cands, promoted=True),
        challenger=pick_best(out_cands, promoted=False),
        overfitting=over,
        baselines=baselines,
        champion=champion,
        notes=notes,
    )


def _figures(metrics: Iterable[SliceMetrics | None]) -> list[SliceFigures]:
    """The evaluation.json rows of slice metrics (None: a slice without metrics, left out)."""
    return [SliceFigures.model_validate(m.as_dict()) for m in metrics if m is not None]


def stress_notes(stress: Sequence[SliceResult], min_return: float) -> list[str]:
    """One line per stress slice: a regime unlike training, expected to fail. A pass is
    flagged for inspection rather than counted: stress slices are never gated."""
    out = []
    for r in stress:
        m = r.metrics
        if m is None:
            continue
        verdict = (
            "passed although it is a regime unlike training: inspect before trusting it"
            if m.pnl_plus_fees > min_return
            else "failed, as expected for a regime unlike training"
        )
        out.append(
            f"stress slice {m.slice_id} (last-fold model, not gated): pnl_plus_fees {m.pnl_plus_fees:.6g}, "
            f"max_drawdown {m.max_drawdown:.4g}; {verdict}"
        )
    return out


def pick_best(cands: Sequence[CandidateEvaluation], promoted: bool) -> str | None:
    """Highest test pnl_plus_fees among candidates that were promoted (promoted=True) or
    that were not (promoted=False); None when there is none. Ties: first in order.
    Candidates without test totals (training failed) count as 0."""
    pool = [c for c in cands if (c.decision == "promote") == promoted]
    if not pool:
        return None
    return max(
        pool, key=lambda c: c.test_totals.pnl_plus_fees if c.test_totals else 0.0
    ).candidate_id


def failed_candidate(
    candidate_id: str, trial: JsonObject, seed: int, timesteps: int, errors: Sequence[str]
) -> CandidateEvaluation:
    """The evaluation entry of a candidate whose training failed on some fold: decision
    retest, zero totals, no slices or model files. `trial`: the trial config as the sweep
    recorded it (JSON, kept as is); `errors`: one line per failed fold."""
    env = trial["env"]
    if not isinstance(env, dict):
        raise ValueError(f"candidate {candidate_id}: the recorded trial has no env config")
    return CandidateEvaluation.model_validate(
        {
            "candidate_id": candidate_id,
            "trial": trial["name"],
            "seed": seed,
            "timesteps": timesteps,
            "decision": "retest",
            "reasons": [f"training failed after retries: {e}" for e in errors],
            "gates": {},
            "test_totals": TestTotals(
                pnl=0.0, fees=0.0, pnl_plus_fees=0.0, trades=0, max_drawdown=0.0
            ),
            "slices": [],
            "stress_slices": [],
            "validation_slices": [],
            "dsr": None,
            "model_zip": None,
            "stats_dir": None,
            "run_id": None,
            "env_config": env,
            "reward_config": env["reward"],
            "ppo_config": trial["ppo"],
            "train_slices": [],
            "test_slices": [],
            "notes": [],
        }
    )
