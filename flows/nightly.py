"""The nightly pipeline as one Prefect flow: ingest → features → train → evaluate → promote.

Control flow only: each step is another area's flow (run here as a subflow). A failing
step fails the run loudly, naming the step; outputs of earlier steps stay intact (every
step publishes atomically and is idempotent, so the next run resumes).
"""

from __future__ import annotations

import getpass
import json
import socket
import time
import traceback
from collections.abc import Callable
from typing import Any

from prefect import flow, get_run_logger

from core.atomic import write_json_atomic
from flows import progress
from flows.common import (
    Runtime,
    data_folder_lock,
    load_experiment,
    post_markdown_artifact,
    resolve_runtime,
)
from flows.ui import served_ui
from training.evaluation_record import Execution

STEPS = ("ingest", "features", "train", "evaluate", "promote")


class NightlyStepFailed(RuntimeError):
    """A named step of the nightly pipeline failed."""

    def __init__(self, step: str, cause: BaseException) -> None:
        super().__init__(f"nightly step '{step}' failed: {type(cause).__name__}: {cause}")
        self.step = step


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _write_outcome(rt: Runtime, outcome: dict[str, Any]) -> None:
    write_json_atomic(rt.layout.root / "reports" / "last_nightly.json", outcome)


def _num(x: Any) -> str:
    return f"{x:.3f}" if isinstance(x, int | float) else "n/a"


def _gate_marks(gates: dict[str, Any]) -> str:
    return ", ".join(
        f"{name} {'✓' if g.get('passed') else ('?' if g.get('value') is None else '✗')}"
        for name, g in gates.items()
    )


def _sens(rows: list[dict[str, Any]] | None) -> str:
    if not rows:
        return "n/a"
    return " / ".join(f"{r['pnl_plus_fees']:+.4f}" for r in rows)


def _execution_lines(candidates: list[dict[str, Any]]) -> list[str]:
    """What the figures were judged under (once per distinct execution) and every
    candidate's touch bound; nothing for an evaluation written before #17."""
    judged = {
        e.describe(): e
        for c in candidates
        if c.get("execution") and (e := Execution.model_validate(c["execution"]))
    }
    if not judged:
        return []
    lines = [f"Judged under (candidates and baselines): {d}." for d in judged]
    lines += [
        "",
        "Touch bound, pnl+fees of the same models on the same test slices under fill model "
        "touch without latency: the most fills the fill models allow (never gated; with a maker "
        "fee or adverse fills, more fills can also mean less pnl):",
        "",
    ]
    for c in candidates:
        b = c.get("touch_bound")
        judged_pnl = f"{c['test_totals'].get('pnl_plus_fees', 0):+.4f}"
        lines.append(
            f"- {c['candidate_id']} touch bound: "
            + (
                f"{b['test_totals']['pnl_plus_fees']:+.4f}, trades {b['test_totals']['trades']} "
                f"(judged {judged_pnl})"
                if b
                else "not computed"
            )
        )
    return [*lines, ""]


def _ui_hint(tracking_uri: str) -> str:
    """Where to look at the runs: the server's own UI, or `chappie ui` over a local store."""
    url = served_ui(tracking_uri)
    return f"the MLflow UI at {url}" if url else "`chappie ui` (MLflow UI on http://127.0.0.1:5000)"


def summary_markdown(outcome: dict[str, Any]) -> str:
    """The nightly summary as markdown (posted as a Prefect artifact and printed)."""
    lines = [f"# Chappie nightly: {outcome['status']}", ""]
    if outcome.get("failed_step"):
        lines += [f"**Failed step:** `{outcome['failed_step']}` — {outcome.get('error', '')}", ""]
    evaluation = outcome.get("evaluation") or {}
    candidates = [c for c in evaluation.get("candidates", []) if c.get("test_totals")]
    baselines = evaluation.get("baselines") or {}
    if candidates:
        lines += [
            "| policy | decision | pnl+fees | pnl w/o fees | fees | trades | max dd "
            "| stress pnl+fees | gates |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for c in candidates:
            t = c["test_totals"]
            stress = ", ".join(
                f"{s.get('pnl_plus_fees', 0):+.4f}" for s in c.get("stress_slices", [])
            )
            lines.append(
                f"| {c['candidate_id']} | **{c['decision']}** "
                f"| {t.get('pnl_plus_fees', 0):+.4f} | {t.get('pnl', 0):+.4f} "
                f"| {t.get('fees', 0):+.4f} | {t.get('trades', 0)} "
                f"| {t.get('max_drawdown', 0):.4f} | {stress or '-'} "
                f"| {_gate_marks(c.get('gates', {}))} |"
            )
        for name, b in baselines.items():
            stress = ", ".join(
                f"{s.get('pnl_plus_fees', 0):+.4f}" for s in b.get("stress_slices", [])
            )
            spread = b.get("spread")
            label = f"baseline: {name}"
            if spread:
                label += f" (mean of {len(b.get('seeds', []))} seeds, sd {spread['pnl_plus_fees_std']:.4f})"
            lines.append(
                f"| {label} | - | {b['pnl_plus_fees']:+.4f} | {b['pnl_without_fees']:+.4f} "
                f"| {b['fees']:+.4f} | {b['trades']:.0f} | {b['max_drawdown']:.4f} "
                f"| {stress or '-'} | - |"
            )
        champ = evaluation.get("champion")
        if champ:
            t = champ["test_totals"]
            lines.append(
                f"| current champion ({champ.get('label')}) | - | {t['pnl_plus_fees']:+.4f} "
                f"| {t['pnl']:+.4f} | {t['fees']:+.4f} | {t['trades']} "
                f"| {t['max_drawdown']:.4f} | - | - |"
            )
        rebate_driven = [
            c["candidate_id"]
            for c in candidates
            if c["test_totals"].get("fees", 0) > abs(c["test_totals"].get("pnl", 0))
        ]
        lines += [
            "",
            "pnl, fees and drawdown are fractions of starting equity over the test slices; "
            "fees > 0 are maker rebates earned, fees < 0 are fees paid. Baselines run on the "
            "same slices through the same backtest at the same fee. Stress slices (a regime "
            "unlike training) are reported, never gated. Gates: ✓ passed, ✗ failed, "
            "? could not be judged (retest).",
        ]
        if rebate_driven:
            lines.append(
                f"Note: most of the test pnl of {', '.join(rebate_driven)} is maker rebates, "
                "not price edge (|pnl w/o fees| < fees). It holds only while the exchange pays "
                "that rebate and fills come as the fill model assumes."
            )
        lines.append("")
        lines += _execution_lines(candidates)
        makers = (evaluation.get("evaluation_config") or {}).get("fee_sensitivity") or []
        if makers:
            head = " / ".join(f"{m * 1e4:+.1f} bp" for m in makers)
            lines.append(
                f"Fee sensitivity, pnl+fees re-scored from the same fills at maker {head}:"
            )
            lines.append("")
            for c in candidates:
                lines.append(f"- {c['candidate_id']}: {_sens(c.get('fee_sensitivity'))}")
            for name, b in baselines.items():
                lines.append(f"- baseline {name}: {_sens(b.get('fee_sensitivity'))}")
            lines.append("")
        ov = evaluation.get("overfitting") or {}
        if ov:
            lines.append(
                f"Overfitting: PBO {_num(ov.get('pbo'))} over {ov.get('n_configs', 0)} distinct "
                f"trial config(s) ({ov.get('pbo_note') or 'computed'}); Deflated Sharpe "
                f"{_num(ov.get('dsr'))} deflated by {ov.get('n_trials_ledger', ov.get('n_trials'))} "
                f"trials in the ledger ({ov.get('n_trials_sweep', '?')} in this sweep); "
                f"returns over {ov.get('return_period_s', 0):g} s periods, lag-1 autocorrelation "
                f"{_num(ov.get('lag1_autocorrelation_median'))}"
            )
            lines.append("")
    drift = evaluation.get("drift") or {}
    if drift:
        lines.append(
            "Drift of the test and stress slices against their frozen stats (measured, never "
            "a refusal): "
            + "; ".join(
                f"{sid} {d['max_beyond_clip_share'] * 100:.2f} % beyond ±{d['clip']:g} σ "
                f"({d['max_beyond_clip_feature']}), mean shift {d['max_mean_shift'] or 0:+.2f} σ "
                f"({d['max_mean_shift_feature']})"
                for sid, d in drift.items()
            )
        )
        lines.append("")
    promotion = outcome.get("promotion") or {}
    if promotion:
        lines += [
            f"Registry: `{promotion.get('model_name')}` version {promotion.get('version')} — "
            f"{promotion.get('decision')}; aliases {promotion.get('aliases')}",
            "",
        ]
        for reason in promotion.get("reasons", []):
            lines.append(f"- {reason}")
        lines.append("")
    if outcome.get("sweep_run_id") and candidates:
        lines += [
            f"Tear sheets (HTML, one per candidate): `{outcome['data_dir']}/reports/"
            f"{outcome['sweep_run_id']}/<candidate>/tearsheet.html`",
            "",
        ]
    lines += [
        f"Data folder: `{outcome['data_dir']}`",
        f"MLflow tracking: `{outcome['tracking_uri']}`",
        "",
        f"Next: {_ui_hint(outcome['tracking_uri'])}, "
        "`chappie live --feed replay --replay synthetic --speed 10 --duration 30` "
        "(observe-only live loop on a local replay; decisions start after its 76 s warm-up).",
    ]
    return "\n".join(lines)


@flow(name="nightly", log_prints=True)
def nightly_flow(
    config_path: str = "conf/default.yaml", data_dir: str | None = None
) -> dict[str, Any]:
    """Run every stage once on the config at `config_path`; returns the outcome dict that is
    also written to `<data>/reports/last_nightly.json`."""
    # slow: the stage flows pull numba, great_expectations, mlflow and torch (~4 s); loaded when the nightly runs
    from flows.evaluate import evaluate_flow
    from flows.features import build_features_flow
    from flows.ingest import ingest_flow
    from flows.promote import promote_flow
    from flows.train import train_flow

    logger = get_run_logger()
    cfg = load_experiment(config_path)
    rt = resolve_runtime(data_dir)
    outcome: dict[str, Any] = {
        "started": _now(),
        "finished": None,
        "status": "running",
        "failed_step": None,
        "config": str(config_path),
        "config_fingerprint": cfg.fingerprint,
        "data_dir": rt.data_dir,
        "tracking_uri": rt.tracking_uri,
        "user": getpass.getuser(),
        "host": socket.gethostname(),
        "steps": {},
    }

    def step(name: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        logger.info("step %s: starting", name)
        try:
            with progress.step(f"nightly {STEPS.index(name) + 1}/{len(STEPS)}: {name}") as row:
                result = fn()
                row.result = "done"
        except BaseException as exc:
            outcome.update(
                status="failed",
                failed_step=name,
                error=f"{type(exc).__name__}: {exc}",
                finished=_now(),
                traceback=traceback.format_exc(limit=20),
            )
            outcome["steps"][name] = {"status": "failed", "seconds": time.perf_counter() - t0}
            _write_outcome(rt, outcome)
            _post_artifact(outcome)
            raise NightlyStepFailed(name, exc) from exc
        outcome["steps"][name] = {"status": "ok", "seconds": round(time.perf_counter() - t0, 2)}
        logger.info("step %s: done in %.1f s", name, time.perf_counter() - t0)
        return result

    with data_folder_lock(rt.data_dir, "nightly"):  # the whole run, not step by step
        # with `storage:` set, events and bars live on the object store (#19)
        outcome["ingest"] = step(
            "ingest",
            lambda: ingest_flow(cfg.ingest, rt.data_dir, storage=cfg.storage).to_json(),
        )
        outcome["folds"] = step(
            "features",
            lambda: build_features_flow(
                cfg.ingest.symbol, cfg.features, rt.data_dir, storage=cfg.storage
            ),
        )
        sweep = step("train", lambda: train_flow(cfg, rt.data_dir, rt.tracking_uri))
        outcome["sweep_run_id"] = sweep.sweep_run_id
        evaluation = step(
            "evaluate",
            lambda: evaluate_flow(cfg, rt.data_dir, rt.tracking_uri, sweep.sweep_run_id),
        )
        outcome["evaluation"] = evaluation.to_json()  # the outcome record holds its JSON
        evaluation_path = str(rt.layout.reports(sweep.sweep_run_id) / "evaluation.json")
        spec_json = cfg.features.spec.model_dump(mode="json")  # the bundle records this spec
        promoted = step(
            "promote",
            lambda: promote_flow(
                evaluation_path, cfg.registry, rt.tracking_uri, feature_spec=spec_json
            ),
        )
        outcome["promotion"] = promoted.to_json()  # the outcome record holds its JSON
    outcome.update(status="completed", finished=_now())
    _write_outcome(rt, outcome)
    _post_artifact(outcome)
    return outcome


def _post_artifact(outcome: dict[str, Any]) -> None:
    post_markdown_artifact("nightly-summary", summary_markdown(outcome), "Chappie nightly")


def run_nightly_cli(config_path: str) -> int:
    """`chappie nightly`: run the flow, print the summary, exit 0 on success."""
    try:
        outcome = nightly_flow(config_path)
    except NightlyStepFailed as exc:
        print(f"\nNIGHTLY FAILED at step '{exc.step}': {exc.__cause__}")
        rt = resolve_runtime()
        print(f"Details: {rt.layout.root / 'reports' / 'last_nightly.json'}")
        return 1
    print()
    print(summary_markdown(outcome))
    return 0


if __name__ == "__main__":  # pragma: no cover
    print(json.dumps(nightly_flow(), indent=2, default=str))
