"""Backtest report of one candidate: equity and drawdown PNGs, trades CSV, and the
report (model, env, reward spec, train slices, test slices, gates, decision, notes) as
markdown and JSON. Adapter: writes files atomically, renders with matplotlib's Agg
backend (no display)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.atomic import write_bytes_atomic, write_json_atomic, write_with_atomic
from training.backtest import SliceResult, write_trades_csv
from training.metrics import drawdown_curve

EQUITY_PNG = "equity.png"
DRAWDOWN_PNG = "drawdown.png"
TRADES_CSV = "trades.csv"
REPORT_MD = "report.md"
REPORT_JSON = "report.json"


def _hours(ts: np.ndarray) -> np.ndarray:
    return (ts - ts[0]) / 3.6e12 if ts.size else ts.astype(np.float64)


def plot_curves(
    results: Sequence[SliceResult],
    out_dir: str | Path,
    title: str,
    reference: Sequence[SliceResult] = (),
    reference_name: str = "",
) -> list[Path]:
    """equity.png (equity / starting equity - 1, per slice) and drawdown.png; each slice of
    `reference` (the best baseline, run on the same slices) is drawn dotted in the colour
    of the model's curve on that slice."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    paths = []
    for name, ylabel, fn in (
        (
            EQUITY_PNG,
            "return (fraction of starting equity)",
            lambda r: r.equity / r.equity[0] - 1.0,
        ),
        (DRAWDOWN_PNG, "drawdown (fraction of peak)", lambda r: -drawdown_curve(r.equity)),
    ):
        fig, ax = plt.subplots(figsize=(9, 4.5), dpi=100)
        ref = {r.slice.slice_id: r for r in reference}
        for r in results:
            style = "--" if r.slice.kind == "stress" else "-"
            (line,) = ax.plot(
                _hours(r.ts_ns), fn(r), style, lw=1.0, label=f"{r.slice.slice_id} ({r.slice.kind})"
            )
            b = ref.get(r.slice.slice_id)
            if b is not None and b.equity.size:
                ax.plot(
                    _hours(b.ts_ns),
                    fn(b),
                    ":",
                    lw=1.0,
                    color=line.get_color(),
                    label=f"{reference_name or 'baseline'} on {r.slice.slice_id}",
                )
        ax.set_xlabel("hours from slice start")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if results:
            ax.legend(fontsize=7, loc="best")
        fig.tight_layout()
        target = out / name

        def _save(tmp: Path, fig: Any = fig) -> None:
            fig.savefig(tmp, format="png")

        write_with_atomic(target, _save)
        plt.close(fig)
        paths.append(target)
    return paths


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return "n/a" if v is None else str(v)


def render_markdown(report: Mapping[str, Any]) -> str:
    """The report as markdown (pure)."""
    lines = [f"# Backtest report: {report['candidate_id']}", ""]
    lines += [f"**Decision: {report['decision']}**", ""]
    lines += [f"- {r}" for r in report.get("reasons", [])] + [""]
    lines += ["## Model", ""]
    for k, v in report.get("model", {}).items():
        lines.append(f"- {k}: `{_fmt(v)}`")
    lines += [
        "",
        "## Gates",
        "",
        "| gate | passed | value | threshold | definition |",
        "|---|---|---|---|---|",
    ]
    for name, g in report.get("gates", {}).items():
        lines.append(
            f"| {name} | {'yes' if g['passed'] else 'no'} | {_fmt(g['value'])} | {_fmt(g['threshold'])} | {g['definition']} |"
        )
    cols = [
        "slice_id",
        "kind",
        "fold",
        "trades",
        "wins",
        "losses",
        "pnl",
        "fees",
        "pnl_plus_fees",
        "max_drawdown",
        "sharpe",
    ]
    period = (report.get("overfitting") or {}).get("return_period_s")
    head = [
        *cols[:6],
        "pnl (fraction)",
        "fees (cash flow, <0 paid)",
        "pnl_plus_fees",
        "max_drawdown (of peak)",
        f"sharpe (annualised, {period:g} s returns)" if period else "sharpe (annualised)",
    ]
    for title, key in (
        ("Test slices", "slices"),
        ("Stress slices (reported separately, not gated)", "stress_slices"),
    ):
        rows = report.get(key, [])
        lines += ["", f"## {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |" for r in rows]
    tot = report.get("test_totals", {})
    lines += ["", "Test totals: " + ", ".join(f"{k} {_fmt(v)}" for k, v in tot.items())]
    baselines = report.get("baselines") or {}
    if baselines:
        lines += [
            "",
            "## Beside the baselines (same slices, same backtest, same fee)",
            "",
            "| policy | pnl+fees | pnl w/o fees | fees | trades | max dd |",
            "|---|---|---|---|---|---|",
            f"| **this model** | {_fmt(tot.get('pnl_plus_fees'))} | {_fmt(tot.get('pnl'))} "
            f"| {_fmt(tot.get('fees'))} | {_fmt(tot.get('trades'))} | {_fmt(tot.get('max_drawdown'))} |",
        ]
        for name, b in baselines.items():
            lines.append(
                f"| {name} | {_fmt(b['pnl_plus_fees'])} | {_fmt(b['pnl_without_fees'])} "
                f"| {_fmt(b['fees'])} | {_fmt(b['trades'])} | {_fmt(b['max_drawdown'])} |"
            )
    sens = report.get("fee_sensitivity")
    if sens:
        lines += ["", "## Fee sensitivity (re-scored from the same fills)", ""]
        lines += [
            f"- maker {s['maker_fee'] * 1e4:+.1f} bp, taker {s['taker_fee'] * 1e4:+.1f} bp: "
            f"pnl+fees {_fmt(s['pnl_plus_fees'])}"
            for s in sens
        ]
    over = report.get("overfitting", {})
    if over:
        per_period = {"best_sharpe", "trials_sharpe_variance"}
        lines += ["", "## Overfitting (whole sweep and trial ledger)", ""] + [
            f"- {k}{' (per period, not annualised)' if k in per_period else ''}: {_fmt(v)}"
            for k, v in over.items()
        ]
    for title, key in (("Train slices", "train_slices"), ("Test slices (hashes)", "test_slices")):
        lines += ["", f"## {title}", ""] + [
            f"- {s['slice_id']}: `{s['sha256']}`" for s in report.get(key, [])
        ]
    for title, key in (
        ("Env", "env_config"),
        ("Reward spec", "reward_config"),
        ("PPO", "ppo_config"),
    ):
        lines += [
            "",
            f"## {title}",
            "",
            "```json",
            json.dumps(report.get(key, {}), indent=2, sort_keys=True),
            "```",
        ]
    notes = report.get("notes", [])
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def write_report(
    out_dir: str | Path,
    report: Mapping[str, Any],
    results: Sequence[SliceResult],
    reference: Sequence[SliceResult] = (),
    reference_name: str = "",
) -> dict[str, str]:
    """Write equity.png, drawdown.png, trades.csv, report.md and report.json into
    `out_dir`; returns {name: absolute path}. `report` must be JSON-able; `reference` is
    drawn beside the model on the plots (`plot_curves`)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    title = str(report["candidate_id"])
    if reference_name:
        title += f" (dotted: {reference_name}, the best baseline)"
    written = {p.name: p for p in plot_curves(results, out, title, reference, reference_name)}
    inst = (report.get("env_config") or {}).get("instrument") or {}
    written[TRADES_CSV] = write_trades_csv(
        out / TRADES_CSV,
        results,
        float(inst.get("tick_size", 0.5)),
        str(inst.get("settle_currency", "XBT")),
    )
    written[REPORT_JSON] = write_json_atomic(out / REPORT_JSON, dict(report))
    written[REPORT_MD] = write_bytes_atomic(out / REPORT_MD, render_markdown(report).encode())
    return {k: str(Path(v).resolve()) for k, v in written.items()}
