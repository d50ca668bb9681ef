"""The evaluation of a sweep as one typed value: what `training.evaluation.evaluate_sweep`
returns (`SweepVerdict`), what `flows/evaluate.py` completes with the sweep's ids, ledger
and drift (`Evaluation`), and what evaluation.json is (its dump, `Evaluation.dumps`).
Readers (promotion, status, audit) parse it back with `Evaluation.read`.

The JSON on disk is the contract (keys and values unchanged since before these models):
a key is written when it was set, by the code that made the value or by the file it was
read from (`exclude_unset`), so optional keys (a gate's `note`, the panel's `seeds`, a
candidate's `report`, an older file's missing funding figures) round-trip exactly:
`Evaluation.parse(e.dumps()).dumps() == e.dumps()`. Numbers keep their JSON kind: fields
that hold either an int or a float in the files are typed `float | int`.

Pure: pydantic models and their serialisers; `read`/`write` are the only file access.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, JsonValue

from core.atomic import json_bytes, write_bytes_atomic
from core.jsontypes import JsonObject  # a config snapshot (`model_dump(mode="json")`), kept as JSON

DecisionKind = Literal["promote", "reject", "retest"]  # what the gates decide for a candidate


class Record(BaseModel):
    """Base of the evaluation records: immutable, unknown keys are an error, dumped with
    the keys that were set (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def to_json(self) -> dict[str, JsonValue]:
        """The JSON-able dict of this record (the keys that were set)."""
        return self.model_dump(mode="json", exclude_unset=True)


class Gate(Record):
    """One gate's outcome (`training.gates.GateResult.as_dict`)."""

    passed: bool
    value: float | int | None = None  # None: could not be computed
    threshold: float | int | None = None
    definition: str = ""
    note: str | None = None
    detail: JsonObject | None = None  # the test's own figures


class SliceFigures(Record):
    """One model on one slice (`training.metrics.SliceMetrics`; a panel entry's slices are
    means over seeds, counts rounded)."""

    slice_id: str
    kind: str = ""
    fold: int | None = None
    steps: int = 0
    trades: int = 0
    wins: int = 0
    losses: int = 0
    pnl: float = 0.0
    fees: float = 0.0
    pnl_plus_fees: float = 0.0
    max_drawdown: float = 0.0
    sharpe: float = 0.0
    maker_volume: float = 0.0
    taker_volume: float = 0.0
    maker_fee: float | None = None
    taker_fee: float | None = None
    funding: float = 0.0
    funding_times: int = 0
    funding_rate_mean: float | None = None
    funding_rates_missing: int = 0


class TestTotals(Record):
    """Totals over the test slices (`training.metrics.aggregate_totals`)."""

    __test__ = False  # not a pytest class

    pnl: float
    fees: float
    pnl_plus_fees: float
    trades: int
    max_drawdown: float


class SeedTotals(TestTotals):
    """One seed's totals of a reference policy run with several seeds (random)."""

    seed: int


class FeeScenario(Record):
    """pnl_plus_fees re-scored from the same fills at another fee."""

    maker_fee: float
    taker_fee: float
    pnl_plus_fees: float


class FeeRates(Record):
    """The maker and taker rates (fractions of notional, < 0 a rebate) in force from
    `from_ns`, the first test bar they were charged at."""

    maker: float
    taker: float
    from_ns: int


class Execution(Record):
    """How a candidate's fills were simulated on its test slices (`training.evaluation.
    execution_of`): the env's fill model and order latency, the fee (`FeeConfig.describe`
    and the rates in force over the test slices) and funding. Every report states it
    beside the figures it qualifies. The latencies are None in a record of an env that had
    none (before #17)."""

    fill_model: str
    power_prob_n: float | None = None  # power_prob only
    entry_latency_ms: float | None = None
    cancel_latency_ms: float | None = None
    fees: str  # FeeConfig.describe()
    fee_rates: list[FeeRates] = []  # in force over the test slices, time order
    funding: bool = False
    funding_rates_path: str | None = None  # the funding table; None: the constant below
    funding_rate: float | None = None  # constant rate per interval (a table's fallback)
    funding_rate_mean: float | None = None  # mean rate settled on the test slices

    def describe(self) -> str:
        """One line for reports: fill model, latency, fee and funding."""
        fill = self.fill_model
        if self.power_prob_n is not None:
            fill += f" (n {self.power_prob_n:g})"
        if self.entry_latency_ms is None or self.cancel_latency_ms is None:
            latency = "latency not modelled"
        else:
            latency = (
                f"entry latency {self.entry_latency_ms:g} ms, "
                f"cancel latency {self.cancel_latency_ms:g} ms"
            )
        rates = ", then ".join(
            f"maker {r.maker:+.4%} / taker {r.taker:+.4%}" for r in self.fee_rates
        )
        fee = f"fees {self.fees}" + (f": {rates} over the test slices" if rates else "")
        if not self.funding:
            funding = "funding off"
        else:
            src = (
                f"table {self.funding_rates_path} (constant {self.funding_rate:+.4%} where it "
                "lacks a time)"
                if self.funding_rates_path
                else f"constant {self.funding_rate:+.4%} per interval"
            )
            mean = (
                f", mean rate settled {self.funding_rate_mean:+.4%}"
                if self.funding_rate_mean is not None
                else ""
            )
            funding = f"funding on: {src}{mean}"
        return f"fill model {fill}, {latency}; {fee}; {funding}"


class ExecutionBound(Record):
    """The candidate re-scored on the same test slices by the same backtest under an
    optimistic execution (fill model touch, no latency; `training.candidates.
    touch_bound_env`): the most fills the fill models allow its policy, reported beside
    the judged figures and never read by a gate. Optimistic on fills, not necessarily on
    pnl (with a maker fee or fills the price runs through, more fills can lose more)."""

    fill_model: str
    entry_latency_ms: float
    cancel_latency_ms: float
    test_totals: TestTotals

    def describe(self) -> str:
        """One line for reports: the bound's totals and what it assumed."""
        t = self.test_totals
        return (
            f"touch bound: pnl+fees {t.pnl_plus_fees:+.4f}, pnl w/o fees {t.pnl:+.4f}, fees "
            f"{t.fees:+.4f}, trades {t.trades}, max dd {t.max_drawdown:.4f} (fill model "
            f"{self.fill_model}, entry / cancel latency {self.entry_latency_ms:g} / "
            f"{self.cancel_latency_ms:g} ms: optimistic, not gated)"
        )


class SliceLink(Record):
    """A slice a candidate was trained or tested on."""

    slice_id: str
    sha256: str


class CandidateEvaluation(Record):
    """One candidate (trial, seed, timesteps): its gates, decision, test totals, slices,
    model files and configs."""

    candidate_id: str
    trial: str = ""
    seed: int = 0
    timesteps: int = 0
    decision: DecisionKind
    reasons: list[str] = []
    gates: dict[str, Gate] = {}
    test_totals: TestTotals | None = None
    fee_sensitivity: list[FeeScenario] | None = None
    best_baseline: str | None = None
    slices: list[SliceFigures] = []
    stress_slices: list[SliceFigures] = []
    validation_slices: list[SliceFigures] = []
    dsr: float | None = None
    model_key: str | None = None  # identity of the fold models' bytes
    config_key: str | None = None
    env_key: str | None = None
    model_zip: str | None = None
    stats_dir: str | None = None
    run_id: str | None = None
    env_config: JsonObject | None = None
    reward_config: JsonObject | None = None
    ppo_config: JsonObject | None = None
    feature_spec: JsonObject | None = None
    train_slices: list[SliceLink] = []
    test_slices: list[SliceLink] = []
    notes: list[str] = []
    train_end_ns: int | None = None  # last bar of the last fold's training slice
    report: dict[str, str] | None = None  # report file name -> path
    execution: Execution | None = None  # how the test slices' fills were simulated
    touch_bound: ExecutionBound | None = None  # re-scored under touch, no latency; not gated

    def failed_gates(self) -> list[str]:
        return [name for name, g in self.gates.items() if not g.passed]


class BaselineSpread(Record):
    pnl_plus_fees_std: float
    pnl_plus_fees_min: float
    pnl_plus_fees_max: float


class BaselineEntry(Record):
    """One reference policy of the panel on the test slices (random: mean over seeds)."""

    pnl_plus_fees: float
    pnl_without_fees: float
    fees: float
    trades: float
    max_drawdown: float
    slices: list[SliceFigures] = []
    validation_slices: list[SliceFigures] = []
    stress_slices: list[SliceFigures] = []
    fee_sensitivity: list[FeeScenario] | None = None
    seeds: list[int] | None = None
    per_seed: list[SeedTotals] | None = None
    spread: BaselineSpread | None = None

    def as_totals(self) -> TestTotals:
        """The entry's totals under the candidates' `test_totals` keys."""
        return TestTotals(
            pnl=self.pnl_without_fees,
            fees=self.fees,
            pnl_plus_fees=self.pnl_plus_fees,
            trades=int(self.trades),
            max_drawdown=self.max_drawdown,
        )


class ChampionRecord(Record):
    """The current champion run beside the candidates on the same slices."""

    label: str
    model_key: str
    train_end_ns: int | None
    test_totals: TestTotals
    slices: list[SliceFigures]


class Overfitting(Record):
    """PBO over every comparable trial, the DSR of the best candidate, trial counts."""

    pbo: float | None = None
    dsr: float | None = None
    best_candidate: str | None = None
    n_trials: int | None = None
    n_trials_sweep: int | None = None
    n_trials_ledger: int | None = None
    n_configs: int | None = None
    n_pbo_columns: int | None = None
    n_periods: int | None = None
    n_splits: int | None = None
    return_period_s: float | int | None = None
    trials_sharpe_variance: float | None = None
    lag1_autocorrelation_median: float | None = None
    pbo_note: str | None = None


class LedgerEntry(Record):
    """One earlier trial on the same spec and data."""

    model_key: str
    config_key: str
    returns: list[float]


class DriftSummary(Record):
    """The headline of a slice's drift report (its manifest keeps the per-feature table)."""

    clip: float | int | None = None
    max_beyond_clip_share: float | None = None
    max_beyond_clip_feature: str | None = None
    max_mean_shift: float | None = None
    max_mean_shift_feature: str | None = None
    flagged: list[str] | None = None


class SweepVerdict(Record):
    """What `evaluate_sweep` decides: every judged candidate, the best (promoted) and the
    challenger (best not promoted), overfitting, the baseline panel and the champion."""

    candidates: list[CandidateEvaluation]
    best: str | None
    challenger: str | None
    overfitting: Overfitting
    baselines: dict[str, BaselineEntry]
    champion: ChampionRecord | None
    notes: list[str]


class Evaluation(Record):
    """evaluation.json: the sweep's verdict with its ids, the candidates whose training
    failed (decision retest), the trial ledger, drift and the configs it was judged under.
    Promotion needs `sweep_run_id`, `candidates`, `best` and `challenger`; the rest is
    optional when reading (hand-written or older files)."""

    sweep_run_id: str
    experiment: str | None = None
    config_fingerprint: str | None = None
    spec_hash: str | None = None
    data_key: str | None = None
    candidates: list[CandidateEvaluation]
    best: str | None
    challenger: str | None
    overfitting: Overfitting | None = None
    baselines: dict[str, BaselineEntry] | None = None
    champion: ChampionRecord | None = None
    ledger: list[LedgerEntry] = []
    notes: list[str] = []
    drift: dict[str, DriftSummary] = {}
    stress_slices: list[str] = []
    evaluation_config: JsonObject | None = None
    env_configs: dict[str, JsonObject] = {}
    feature_spec: JsonObject | None = None

    def candidate(self, candidate_id: str) -> CandidateEvaluation | None:
        return next((c for c in self.candidates if c.candidate_id == candidate_id), None)

    def dumps(self) -> bytes:
        """evaluation.json's bytes: indented, key-sorted JSON (`core.atomic.json_bytes`)."""
        return json_bytes(self.to_json())

    def write(self, path: str | Path) -> Path:
        """Publish evaluation.json atomically at `path`."""
        return write_bytes_atomic(path, self.dumps())

    @classmethod
    def parse(cls, text: str | bytes) -> Self:
        """Parse evaluation.json's text. Raises pydantic.ValidationError."""
        return cls.model_validate_json(text)

    @classmethod
    def read(cls, path: str | Path) -> Self:
        """Read and parse evaluation.json. Raises OSError, pydantic.ValidationError."""
        return cls.parse(Path(path).read_bytes())
