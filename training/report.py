"""Backtest report of one candidate: equity and drawdown PNGs, trades CSV, the report
(model, the execution it was judged under, env, reward spec, train slices, test slices,
gates, decision, the touch bound, notes) as markdown and JSON, and a self-contained HTML
tear sheet (equity and drawdown against the best
baseline, monthly returns, per-slice figures, the trade list; images inline as base64
PNG, no script, no CDN). Adapter: writes files atomically, renders with matplotlib's Agg
backend (no display)."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from core.atomic import write_bytes_atomic, write_json_atomic, write_with_atomic
from training.backtest import SliceResult, trade_fields, trade_rows, write_trades_csv
from training.evaluation_record import Execution, ExecutionBound
from training.metrics import drawdown_curve

EQUITY_PNG = "equity.png"
DRAWDOWN_PNG = "drawdown.png"
TRADES_CSV = "trades.csv"
REPORT_MD = "report.md"
REPORT_JSON = "report.json"
TEARSHEET_HTML = "tearsheet.html"
TEARSHEET_MAX_TRADES = 2000  # rows in the HTML trade list (all of them are in trades.csv)


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
    # slow: matplotlib (~0.3 s with pyplot), only when a figure is drawn
    import matplotlib

    matplotlib.use("Agg", force=True)
    # slow: pyplot (~0.2 s), imported once the Agg backend is chosen
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


def execution_lines(report: Mapping[str, Any]) -> list[str]:
    """What a report says about how its figures were simulated: "Judged under: ..." (the
    candidate's `execution`) and "touch bound: ..." (its `touch_bound`, or that there is
    none); nothing for a report without an execution (written before #17). Pure."""
    if not report.get("execution"):
        return []
    judged = Execution.model_validate(report["execution"]).describe()
    bound = report.get("touch_bound")
    return [
        f"Judged under: {judged}.",
        ExecutionBound.model_validate(bound).describe()
        if bound
        else "touch bound: not computed (a backtest saved before it existed)",
    ]


def render_markdown(report: Mapping[str, Any]) -> str:
    """The report as markdown (pure)."""
    lines = [f"# Backtest report: {report['candidate_id']}", ""]
    lines += [f"**Decision: {report['decision']}**", ""]
    lines += [f"- {r}" for r in report.get("reasons", [])] + [""]
    execution = execution_lines(report)
    if execution:
        lines += ["## Execution", "", *(f"- {x}" for x in execution), ""]
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


# ---------------------------------------------------------------- tear sheet
def chained_equity(results: Sequence[SliceResult]) -> tuple[np.ndarray, np.ndarray]:
    """The test slices of `results` in time order, chained into one curve: (bar close
    int64 ns, equity as a multiple of the starting equity, 1.0 at the first point); each
    slice continues from the previous slice's end (they are consecutive walk-forward
    windows, each starting from a fresh account). Stress slices are left out. Pure."""
    tests = sorted(
        (r for r in results if r.slice.kind == "test" and r.equity.size),
        key=lambda r: int(r.ts_ns[0]),
    )
    ts: list[np.ndarray] = []
    eq: list[np.ndarray] = []
    level = 1.0
    for r in tests:
        growth = r.equity / r.equity[0]
        ts.append(np.asarray(r.ts_ns, dtype=np.int64))
        eq.append(level * growth)
        level *= float(growth[-1])
    if not ts:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    return np.concatenate(ts), np.concatenate(eq)


def monthly_returns(ts_ns: np.ndarray, equity: np.ndarray) -> list[tuple[str, float]]:
    """(YYYY-MM in UTC, return over that month) of a chained equity curve: its last value in
    the month over its last value before the month (the first point for the first month),
    minus 1. Pure."""
    if ts_ns.size == 0:
        return []
    months = ts_ns.astype("datetime64[ns]").astype("datetime64[M]")
    out = []
    start = float(equity[0])
    for m in np.unique(months):
        end = float(equity[months == m][-1])
        out.append((str(m), end / start - 1.0))
        start = end
    return out


def _tearsheet_png(
    results: Sequence[SliceResult], reference: Sequence[SliceResult], reference_name: str
) -> bytes:
    """Two panels over the chained test slices: return and drawdown of the model and of
    the best baseline on the same slices."""
    # slow: matplotlib (~0.3 s with pyplot), only when a figure is drawn
    import matplotlib

    matplotlib.use("Agg", force=True)
    # slow: pyplot (~0.2 s), imported once the Agg backend is chosen
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6), dpi=100, sharex=True)
    for rs, label, style in ((results, "this model", "-"), (reference, reference_name, ":")):
        ts, eq = chained_equity(rs)
        if not ts.size:
            continue
        hours = (ts - ts[0]) / 3.6e12
        ax1.plot(hours, eq - 1.0, style, lw=1.2, label=label or "best baseline")
        ax2.plot(hours, -drawdown_curve(eq), style, lw=1.2, label=label or "best baseline")
    ax1.set_ylabel("return (fraction of start)")
    ax2.set_ylabel("drawdown (fraction of peak)")
    ax2.set_xlabel("hours of test data (test slices chained in time order)")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


_TEARSHEET_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
margin:24px;color:#212529;font-size:14px}h1{font-size:22px}h2{font-size:17px;margin-top:28px}
table{border-collapse:collapse;margin:6px 0}th,td{border:1px solid #dee2e6;padding:3px 8px;
text-align:right}th{background:#f5f6f7}td.l,th.l{text-align:left}.neg{color:#bd2130}
.pos{color:#1e7e34}.muted{color:#6c757d}img{max-width:100%}
"""


def _cell(v: Any, cls: str = "") -> str:
    if isinstance(v, float):
        sign = " neg" if v < 0 else (" pos" if v > 0 else "")
        return f'<td class="{cls}{sign}">{v:.6g}</td>'
    return f'<td class="{cls or "l"}">{escape("n/a" if v is None else str(v))}</td>'


def render_tearsheet(
    report: Mapping[str, Any],
    results: Sequence[SliceResult],
    reference: Sequence[SliceResult] = (),
    reference_name: str = "",
    tick_size: float = 0.5,
    settle: str = "XBT",
) -> str:
    """The candidate's tear sheet as one self-contained HTML page: decision and gates,
    equity and drawdown of the chained test slices against the best baseline (an inline
    base64 PNG), monthly returns of both, the per-slice figures and every trade (up to
    TEARSHEET_MAX_TRADES rows; all of them are in trades.csv), priced in each slice's own
    tick (`trade_rows`; `tick_size` for results that record none)."""
    cid = str(report["candidate_id"])
    base = reference_name or "best baseline"
    png = base64.b64encode(_tearsheet_png(results, reference, base)).decode("ascii")
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>Tear sheet: {escape(cid)}</title><style>{_TEARSHEET_CSS}</style></head><body>",
        f"<h1>Tear sheet: {escape(cid)}</h1>",
        f"<p><b>Decision: {escape(str(report.get('decision')))}</b></p><ul>",
        *(f"<li>{escape(str(r))}</li>" for r in report.get("reasons", [])),
        "</ul>",
        *(f"<p class='muted'>{escape(x)}</p>" for x in execution_lines(report)),
        "<table><tr><th class='l'>gate</th><th class='l'>passed</th><th>value</th>"
        "<th>threshold</th></tr>",
    ]
    for name, g in (report.get("gates") or {}).items():
        passed = "yes" if g.get("passed") else ("?" if g.get("value") is None else "no")
        parts.append(
            f"<tr>{_cell(name)}{_cell(passed)}{_cell(g.get('value'))}{_cell(g.get('threshold'))}</tr>"
        )
    parts += [
        "</table>",
        "<h2 id='equity'>Equity and drawdown against the best baseline</h2>",
        f"<p class='muted'>Test slices chained in time order (each slice starts from a fresh "
        f"account; its growth continues the previous slice's). Solid: this model; dotted: "
        f"{escape(base)} on the same slices through the same backtest and fees.</p>",
        f"<img alt='equity and drawdown' src='data:image/png;base64,{png}'/>",
        "<h2 id='monthly'>Monthly returns (UTC calendar months, chained test slices)</h2>",
        f"<table><tr><th class='l'>month</th><th>this model</th><th>{escape(base)}</th></tr>",
    ]
    mine = monthly_returns(*chained_equity(results))
    theirs = dict(monthly_returns(*chained_equity(reference)))
    for month, ret in mine:
        parts.append(f"<tr>{_cell(month)}{_cell(ret)}{_cell(theirs.get(month))}</tr>")
    period = (report.get("overfitting") or {}).get("return_period_s")
    sharpe = f"sharpe (annualised, {period:g} s returns)" if period else "sharpe (annualised)"
    cols = ("slice_id", "kind", "fold", "trades", "pnl", "fees", "pnl_plus_fees", "max_drawdown")
    heads = (
        *cols[:4],
        "pnl (fraction)",
        "fees (cash flow, <0 paid)",
        "pnl_plus_fees",
        "max_drawdown (of peak)",
        sharpe,
    )
    parts += [
        "</table><h2 id='slices'>Slices</h2><table><tr>",
        *(f"<th class='l'>{escape(h)}</th>" for h in heads),
        "</tr>",
    ]
    for row in [*report.get("slices", []), *report.get("stress_slices", [])]:
        parts.append("<tr>" + "".join(_cell(row.get(c)) for c in (*cols, "sharpe")) + "</tr>")
    trades = trade_rows(results, tick_size, settle)
    fields = trade_fields(settle)[:11]  # the ns and tick columns are in trades.csv
    shown = trades[:TEARSHEET_MAX_TRADES]
    more = f" (the first {len(shown)}; all in trades.csv)" if len(trades) > len(shown) else ""
    parts += [
        "</table>",
        f"<h2 id='trades'>Trades: {len(trades)}{more}</h2>",
        "<p class='muted'>Fees are a cash flow: &lt; 0 paid, &gt; 0 rebate received; "
        f"pnl_plus_fees = pnl + fees, in {escape(settle)}.</p><table><tr>",
        *(f"<th class='l'>{escape(f)}</th>" for f in fields),
        "</tr>",
    ]
    for t in shown:
        parts.append("<tr>" + "".join(_cell(t[f]) for f in fields) + "</tr>")
    parts.append("</table></body></html>")
    return "\n".join(parts)


def write_report(
    out_dir: str | Path,
    report: Mapping[str, Any],
    results: Sequence[SliceResult],
    reference: Sequence[SliceResult] = (),
    reference_name: str = "",
) -> dict[str, str]:
    """Write equity.png, drawdown.png, trades.csv, report.md, report.json and
    tearsheet.html into `out_dir`; returns {name: absolute path}. `report` must be JSON-able; `reference` is
    drawn beside the model on the plots (`plot_curves`)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    title = str(report["candidate_id"])
    if reference_name:
        title += f" (dotted: {reference_name}, the best baseline)"
    written = {p.name: p for p in plot_curves(results, out, title, reference, reference_name)}
    # the env's contract: the tick of results that record none of their own (each slice
    # records the tick of the contract it was priced in, `SliceResult.tick_size`)
    inst = (report.get("env_config") or {}).get("instrument") or {}
    written[TRADES_CSV] = write_trades_csv(
        out / TRADES_CSV,
        results,
        float(inst.get("tick_size", 0.5)),
        str(inst.get("settle_currency", "XBT")),
    )
    written[REPORT_JSON] = write_json_atomic(out / REPORT_JSON, dict(report))
    written[REPORT_MD] = write_bytes_atomic(out / REPORT_MD, render_markdown(report).encode())
    sheet = render_tearsheet(
        report,
        results,
        reference,
        reference_name,
        float(inst.get("tick_size", 0.5)),
        str(inst.get("settle_currency", "XBT")),
    )
    written[TEARSHEET_HTML] = write_bytes_atomic(out / TEARSHEET_HTML, sheet.encode("utf-8"))
    return {k: str(Path(v).resolve()) for k, v in written.items()}
