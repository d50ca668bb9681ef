"""Benchmark: decision accuracy of the whole pipeline on markets whose truth is known (#16).

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.bench_decisions [--seeds 7 8 9]
        [--configs conf/planted-fair-value.yaml conf/planted-edge.yaml conf/no-edge.yaml]
        [--out bench/RESULTS_decisions.md]

For every config and market seed (`ingest.synthetic.seed`), the real nightly runs as a user
runs it: `chappie nightly --config <the config with that seed>` in a subprocess, in a fresh
data folder with its own PREFECT_HOME, one nightly at a time. The right decision is known by
construction: a market with a planted edge (`ingest.synthetic.edge.strength > 0`) should end
with a `champion` alias, a market without one (strength 0) with none. Reports per run the
decision, the alias, the best candidate's gates, the wall time of the nightly (ingest,
features, training, evaluation, registry), and the share of correct decisions. Writes
`bench/RESULTS_decisions.md`; the section "What was tried" below the generated table is
kept when the file is rewritten.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).with_name("RESULTS_decisions.md")
CONFIGS = ("conf/planted-fair-value.yaml", "conf/planted-edge.yaml", "conf/no-edge.yaml")
SEEDS = (7, 8, 9)
KEEP_MARKER = "## What was tried"  # the hand-written part of RESULTS_decisions.md
BUDGET_S = 600.0  # #16: one nightly within 10 minutes on 2 cores


def config_with_seed(config: Path, seed: int, out: Path) -> Path:
    """A copy of `config` whose synthetic market uses `seed` (everything else unchanged)."""
    doc = yaml.safe_load(config.read_text())
    doc["ingest"]["synthetic"]["seed"] = seed
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    return out


def expected_promotion(config: Path) -> bool:
    """True when the config's market has a planted edge (the right answer is promote)."""
    doc = yaml.safe_load(config.read_text())
    edge = doc["ingest"]["synthetic"].get("edge") or {}
    return float(edge.get("strength", 0.0)) > 0.0


def _env(folder: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS="1",
        CHAPPIE_DATA_DIR=str(folder / "data"),
        PREFECT_HOME=str(folder / "prefect"),
        PREFECT_LOGGING_LEVEL="WARNING",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
    )
    env.pop("MLFLOW_TRACKING_URI", None)  # the data folder's own sqlite registry
    return env


def _children_cpu_s() -> float:
    """User + system CPU of every finished child process and its descendants so far."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run_nightly(config: Path, seed: int, scratch: Path) -> dict[str, Any]:
    """One nightly on a fresh folder; its decision, champion alias, best gates and wall time."""
    folder = Path(tempfile.mkdtemp(prefix=f"{config.stem}-s{seed}-", dir=scratch))
    cfg = config_with_seed(config, seed, folder / "experiment.yaml")
    env = _env(folder)
    chappie = str(ROOT / ".venv" / "bin" / "chappie")
    t0 = time.perf_counter()
    cpu0 = _children_cpu_s()
    proc = subprocess.run(
        [chappie, "nightly", "--config", str(cfg)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t0
    cpu = _children_cpu_s() - cpu0
    (folder / "nightly.log").write_text(proc.stdout + proc.stderr)
    status = subprocess.run(
        [chappie, "status", "--json", "--config", str(cfg)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    st = json.loads(status.stdout) if status.returncode == 0 else {}
    aliases = (st.get("models") or {}).get("aliases") or {}
    row: dict[str, Any] = {
        "config": str(config),
        "seed": seed,
        "expected": "promote" if expected_promotion(config) else "no champion",
        "rc": proc.returncode,
        "wall_s": wall,
        "cpu_s": cpu,
        "champion": aliases.get("champion"),
        "folder": str(folder),
    }
    reports = sorted((folder / "data" / "reports").glob("*/evaluation.json"))
    if reports:
        ev = json.loads(reports[-1].read_text())
        best = ev.get("best") or ev.get("challenger")
        cand = next((c for c in ev["candidates"] if c.get("candidate_id") == best), None)
        if cand is None and ev["candidates"]:
            cand = ev["candidates"][0]
        if cand is not None:
            row["best"] = cand.get("candidate_id")
            row["decision"] = cand["decision"]
            row["failed"] = [k for k, g in cand["gates"].items() if not g["passed"]]
            row["pnl_plus_fees"] = cand["test_totals"].get("pnl_plus_fees")
            row["beats_baselines_p"] = cand["gates"].get("beats_baselines", {}).get("value")
            row["dsr"] = cand["gates"].get("dsr_above_min", {}).get("value")
        row["pbo"] = ev.get("overfitting", {}).get("pbo")
    promoted = row["champion"] is not None
    row["correct"] = proc.returncode == 0 and promoted == expected_promotion(config)
    return row


def _fmt(v: Any, spec: str = ".3g") -> str:
    return "n/a" if v is None else format(v, spec)


def markdown(rows: list[dict[str, Any]], command: str) -> str:
    n_ok = sum(r["correct"] for r in rows)
    walls = [r["wall_s"] for r in rows]
    cpus = [r.get("cpu_s", float("nan")) for r in rows]
    lines = [
        "## decisions: the nightly on markets whose truth is known (#16)",
        "",
        f"machine `{platform.node()}` ({platform.machine()}, {os.cpu_count()} cores, shared), "
        f"Python {platform.python_version()}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"load average {os.getloadavg()[0]:.1f}; `OMP_NUM_THREADS=1`, one nightly at a time, "
        "each in a fresh data folder.",
        "",
        f"**Correct decisions: {n_ok} / {len(rows)}** "
        f"({100.0 * n_ok / max(len(rows), 1):.0f} %). Wall time per nightly (ingest, "
        f"features, training, evaluation, registry): median {sorted(walls)[len(walls) // 2]:.0f} s, "
        f"max {max(walls):.0f} s; CPU per nightly (every process it started) median "
        f"{sorted(cpus)[len(cpus) // 2]:.0f} s, max {max(cpus):.0f} s, i.e. at most "
        f"{max(cpus) / 2:.0f} s on 2 cores (budget {BUDGET_S:.0f} s on 2 cores).",
        "",
        "The edge is planted: the market is generated so that the named feature predicts the "
        "next moves (`ingest.synthetic.edge`); with strength 0 nothing predicts anything. "
        "Right answer: a `champion` with the planted edge, none without.",
        "",
        "| config | market seed | expected | champion | correct | best candidate | decision "
        "| test pnl+fees | beats_baselines p | DSR | PBO | failed gates | wall s | CPU s |",
        "|---|---:|---|---|---|---|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| `{r['config']}` | {r['seed']} | {r['expected']} | "
            f"{'v' + str(r['champion']) if r['champion'] else 'none'} | "
            f"{'yes' if r['correct'] else '**no**'} | {r.get('best', 'n/a')} | "
            f"{r.get('decision', 'n/a')} | {_fmt(r.get('pnl_plus_fees'), '+.4f')} | "
            f"{_fmt(r.get('beats_baselines_p'))} | {_fmt(r.get('dsr'))} | {_fmt(r.get('pbo'))} | "
            f"{', '.join(r.get('failed', [])) or '-'} | {r['wall_s']:.0f} | "
            f"{r.get('cpu_s', float('nan')):.0f} |"
        )
    lines += ["", f"Command: `{command}`", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS))
    ap.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--scratch", default=None, help="parent of the fresh data folders")
    args = ap.parse_args(argv)
    scratch = Path(args.scratch or tempfile.mkdtemp(prefix="bench-decisions-"))
    scratch.mkdir(parents=True, exist_ok=True)
    rows = []
    for config in args.configs:
        for seed in args.seeds:
            row = run_nightly(ROOT / config, seed, scratch)
            row["config"] = config
            rows.append(row)
            print(json.dumps(row), flush=True)
    command = "OMP_NUM_THREADS=1 .venv/bin/python -m bench.bench_decisions " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    out = Path(args.out)
    kept = ""
    if out.exists() and KEEP_MARKER in out.read_text():
        kept = out.read_text()[out.read_text().index(KEEP_MARKER) :]
    out.write_text(markdown(rows, command.strip()) + ("\n" + kept if kept else ""))
    print(out.read_text())
    return 0 if all(r["correct"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
