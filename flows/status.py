"""`chappie status`: what Chappie has and what it decided, in one screen.

Four sections, each read from its published contract and never written to:
- data inventory: published event days per symbol (`events/<symbol>/<day>/manifest.json`),
  with unpublished day folders (no manifest: an interrupted ingest) listed apart;
- latest slices: the newest `slices/<spec12>/folds.json` and its slice manifests;
- champion and challenger: MLflow registry aliases, the version tags (decision, gates,
  test totals) and, when a version lacks gate tags, the gates from its evaluation.json;
- the last nightly: `reports/last_nightly.json` written by the nightly flow.

A missing section is reported as such ("no data yet"), never an error: status must work
on a fresh machine. It never creates an MLflow database.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from core.config.registry import RegistryConfig
from core.paths import DataLayout
from flows.common import load_experiment, resolve_runtime
from training.evaluation_record import CandidateEvaluation, Evaluation

DAY_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object at `path`, None when absent; {"error": ...} when unreadable."""
    if not path.is_file():
        return None
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return {"error": f"unreadable {path}: {exc}"}
    return obj if isinstance(obj, dict) else {"error": f"{path} is not a JSON object"}


# --------------------------------------------------------------------------- data


def data_inventory(layout: DataLayout) -> dict[str, Any]:
    """Per symbol: published days (manifest present), their row counts, and day folders
    without a manifest (`unpublished`). {} when there is no events folder."""
    root = layout.root / "events"
    out: dict[str, Any] = {}
    if not root.is_dir():
        return out
    for sym_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        days, unpublished = [], []
        book_rows = trade_rows = 0
        for day_dir in sorted(p for p in sym_dir.iterdir() if p.is_dir() and DAY_RE.match(p.name)):
            manifest = _read_json(day_dir / "manifest.json")
            if manifest is None or "error" in manifest:
                unpublished.append(day_dir.name)
                continue
            days.append(day_dir.name)
            rows = manifest.get("rows") or {}
            book_rows += int(rows.get("book", 0) or 0)
            trade_rows += int(rows.get("trades", 0) or 0)
        out[sym_dir.name] = {
            "days": days,
            "n_days": len(days),
            "first": days[0] if days else None,
            "last": days[-1] if days else None,
            "book_rows": book_rows,
            "trade_rows": trade_rows,
            "unpublished": unpublished,
        }
    return out


# --------------------------------------------------------------------------- slices


def latest_slices(layout: DataLayout) -> dict[str, Any] | None:
    """The most recently written folds.json with one line per slice (kind, fold, rows,
    validation), or None when no slices were built."""
    indexes = sorted(layout.slices_root.glob("*/folds.json"), key=lambda p: p.stat().st_mtime)
    if not indexes:
        return None
    path = indexes[-1]
    folds = _read_json(path) or {}
    if "error" in folds:
        return {"path": str(path), **folds}
    ids: list[str] = []
    for f in folds.get("folds", []):
        ids += [f[k] for k in ("train", "validation", "test") if f.get(k)]
    ids += list(folds.get("stress", []))
    slices = []
    for slice_id in ids:
        m = _read_json(path.parent / f"{slice_id}.manifest.json")
        if m is None or "error" in m:
            slices.append({"slice_id": slice_id, "missing_manifest": True})
            continue
        validation = m.get("validation") or {}
        slices.append(
            {
                "slice_id": slice_id,
                "kind": m.get("kind"),
                "fold": m.get("fold"),
                "rows": m.get("rows"),
                "t_start_ns": m.get("t_start_ns"),
                "t_end_ns": m.get("t_end_ns"),
                "valid": validation.get("success"),
                "stats_id": m.get("stats_id"),
            }
        )
    return {
        "path": str(path),
        "spec_hash": folds.get("spec_hash"),
        "n_folds": len(folds.get("folds", [])),
        "n_stress": len(folds.get("stress", [])),
        "stats_ids": sorted(
            {f.get("stats_id") for f in folds.get("folds", []) if f.get("stats_id")}
        ),
        "slices": slices,
    }


# --------------------------------------------------------------------------- registry


def gates_from_tags(tags: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Gate results from version tags `gate.<name>` ("true"/"false") and
    `gate.<name>.value|threshold|definition` (registry.store.gate_tags). Pure."""
    gates: dict[str, dict[str, Any]] = {}
    for key, value in tags.items():
        if not key.startswith("gate."):
            continue
        rest = key.removeprefix("gate.")
        name, _, field = rest.rpartition(".")
        if field in ("value", "threshold", "definition") and name:
            gates.setdefault(name, {})[field] = _number(value) if field != "definition" else value
        else:
            gates.setdefault(rest, {})["passed"] = value.strip().lower() == "true"
    return gates


def _number(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text


def _evaluation_candidate(
    layout: DataLayout, tags: dict[str, str], run_id: str | None
) -> CandidateEvaluation | None:
    """The evaluation.json candidate of a version: by its sweep_run_id and candidate_id
    tags, else by scanning reports for a candidate with the version's run id. Files that
    are missing, unreadable or not an evaluation are skipped."""
    paths: list[Path] = []
    if tags.get("sweep_run_id"):
        paths.append(layout.reports(tags["sweep_run_id"]) / "evaluation.json")
    paths += sorted((layout.root / "reports").glob("*/evaluation.json"))
    for path in paths:
        try:
            ev = Evaluation.read(path)
        except (OSError, ValueError):  # pydantic's ValidationError is a ValueError
            continue
        for cand in ev.candidates:
            if (tags.get("candidate_id") and cand.candidate_id == tags["candidate_id"]) or (
                run_id and cand.run_id == run_id
            ):
                return cand
    return None


def _tracking_available(tracking_uri: str) -> str | None:
    """None when the tracking store can be opened without creating it, else why not."""
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri.removeprefix("sqlite:///").split("?", 1)[0])
        if not db.is_file():
            return f"no MLflow database at {db} (nothing trained yet)"
    elif tracking_uri.startswith(("http://", "https://")):
        # MLflow's client retries an unreachable server for minutes; ask once, briefly.
        import httpx  # slow: httpx (~0.2 s); only an http(s) tracking URI is checked

        try:
            httpx.get(f"{tracking_uri.rstrip('/')}/health", timeout=3.0).raise_for_status()
        except httpx.HTTPError as exc:
            return f"no MLflow server answers at {tracking_uri} ({exc})"
    return None


def registry_status(layout: DataLayout, tracking_uri: str, cfg: RegistryConfig) -> dict[str, Any]:
    """Champion and challenger of `cfg.model_name`: version, run, decision, gates and
    test totals. `{"available": False, "reason"}` when the store or model is missing."""
    reason = _tracking_available(tracking_uri)
    out: dict[str, Any] = {"model_name": cfg.model_name, "tracking_uri": tracking_uri}
    if reason:
        return {**out, "available": False, "reason": reason}
    # slow: mlflow (~3 s); status answers without it when no store exists yet
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        model = client.get_registered_model(cfg.model_name)
    except MlflowException as exc:
        if "RESOURCE_DOES_NOT_EXIST" in str(exc.error_code) or "not found" in str(exc).lower():
            return {
                **out,
                "available": False,
                "reason": f"no registered model {cfg.model_name!r} yet",
            }
        return {**out, "available": False, "reason": f"MLflow error: {exc}"}
    except Exception as exc:  # a server that does not answer
        return {
            **out,
            "available": False,
            "reason": f"cannot reach MLflow at {tracking_uri}: {exc}",
        }
    aliases = {str(k): str(v) for k, v in (model.aliases or {}).items()}
    out.update(available=True, aliases=aliases)
    for role, alias in (
        ("champion", cfg.champion_alias),
        ("challenger", cfg.challenger_alias),
        ("previous", cfg.previous_alias),
    ):
        version = aliases.get(alias)
        if version is None:
            out[role] = None
            continue
        mv = client.get_model_version(cfg.model_name, version)
        tags = {str(k): str(v) for k, v in (mv.tags or {}).items()}
        gates = gates_from_tags(tags)
        totals = {
            k.removeprefix("test."): _number(v) for k, v in tags.items() if k.startswith("test.")
        }
        source = "version tags"
        if not gates:
            cand = _evaluation_candidate(layout, tags, mv.run_id)
            if cand:
                gates = {name: g.to_json() for name, g in cand.gates.items()}
                totals = totals or (cand.test_totals.to_json() if cand.test_totals else {})
                tags.setdefault("decision", str(cand.decision))
                tags.setdefault("candidate_id", cand.candidate_id)
                source = "evaluation.json"
        out[role] = {
            "alias": alias,
            "version": version,
            "run_id": mv.run_id,
            "created": mv.creation_timestamp,
            "candidate_id": tags.get("candidate_id"),
            "decision": tags.get("decision"),
            "gates": gates,
            "gates_source": source if gates else None,
            "test_totals": totals,
        }
    return out


# --------------------------------------------------------------------------- nightly


def last_nightly(layout: DataLayout) -> dict[str, Any] | None:
    """The last nightly outcome (started, finished, status, failed_step, error,
    decisions per candidate, promotion), or None when no nightly ran here."""
    outcome = _read_json(layout.root / "reports" / "last_nightly.json")
    if outcome is None or "error" in outcome and "status" not in outcome:
        return outcome
    decisions = outcome.get("decisions")
    if decisions is None:
        candidates = (outcome.get("evaluation") or {}).get("candidates", [])
        decisions = [
            {"candidate_id": c.get("candidate_id"), "decision": c.get("decision")}
            for c in candidates
        ]
    promotion = outcome.get("promotion") or {}
    return {
        "started": outcome.get("started"),
        "finished": outcome.get("finished"),
        "status": outcome.get("status"),
        "failed_step": outcome.get("failed_step"),
        "error": outcome.get("error"),
        "decisions": decisions,
        "promotion": {k: promotion.get(k) for k in ("decision", "model_name", "version", "aliases")}
        if promotion
        else None,
    }


# --------------------------------------------------------------------------- assembly


def collect_status(
    data_dir: str | None = None,
    tracking_uri: str | None = None,
    registry: RegistryConfig | None = None,
) -> dict[str, Any]:
    """Everything `chappie status` shows, as a JSON-able dict with keys `data_dir`,
    `data`, `slices`, `models`, `last_nightly`."""
    rt = resolve_runtime(data_dir, tracking_uri)
    layout = rt.layout
    return {
        "data_dir": rt.data_dir,
        "data": data_inventory(layout),
        "slices": latest_slices(layout),
        "models": registry_status(layout, rt.tracking_uri, registry or RegistryConfig()),
        "last_nightly": last_nightly(layout),
    }


def _fmt_gates(gates: dict[str, Any]) -> str:
    parts = []
    for name, g in gates.items():
        mark = "pass" if g.get("passed") else "FAIL"
        value = g.get("value")
        parts.append(f"{name}={mark}" + (f" ({value:g})" if isinstance(value, int | float) else ""))
    return ", ".join(parts) or "no gate results"


def render_status(status: dict[str, Any]) -> str:
    """The human-readable status screen. Pure."""
    lines = [f"Chappie status  (data folder: {status['data_dir']})", "", "Data"]
    data = status["data"]
    if not data:
        lines.append("  no event data yet (run `chappie ingest` or `chappie nightly`)")
    for sym, inv in data.items():
        span = f"{inv['first']} .. {inv['last']}" if inv["n_days"] else "none"
        lines.append(
            f"  {sym}: {inv['n_days']} day(s) {span}; {inv['book_rows']:,} book deltas, "
            f"{inv['trade_rows']:,} trades"
        )
        if inv["unpublished"]:
            lines.append(f"    unpublished (no manifest): {', '.join(inv['unpublished'])}")

    lines += ["", "Slices"]
    sl = status["slices"]
    if not sl:
        lines.append("  no slices yet (run `chappie features`)")
    elif "error" in sl:
        lines.append(f"  {sl['error']}")
    else:
        lines.append(
            f"  spec {str(sl['spec_hash'])[:12]}: {sl['n_folds']} fold(s), {sl['n_stress']} stress; {sl['path']}"
        )
        for s in sl["slices"]:
            if s.get("missing_manifest"):
                lines.append(f"    {s['slice_id']}: MANIFEST MISSING")
                continue
            valid = {True: "valid", False: "INVALID", None: "unvalidated"}[s["valid"]]
            lines.append(f"    {s['slice_id']:<20} {s['kind']:<10} rows={s['rows']} {valid}")

    lines += ["", "Models"]
    models = status["models"]
    if not models.get("available"):
        lines.append(f"  {models['reason']}")
    else:
        lines.append(f"  {models['model_name']} (aliases: {models['aliases'] or 'none'})")
        for role in ("champion", "challenger"):
            m = models.get(role)
            if not m:
                lines.append(f"  {role}: none")
                continue
            totals = m["test_totals"]
            pnl = totals.get("pnl_plus_fees")
            lines.append(
                f"  {role}: version {m['version']} {m['candidate_id'] or ''} decision={m['decision']}"
                + (f" test pnl+fees={pnl:g}" if isinstance(pnl, int | float) else "")
                + f" run={m['run_id']}"
            )
            lines.append(f"    gates: {_fmt_gates(m['gates'])}")

    lines += ["", "Last nightly"]
    nightly = status["last_nightly"]
    if not nightly:
        lines.append("  no nightly run yet (`chappie nightly`, or `chappie serve` for 02:00 UTC)")
    elif "error" in nightly and "status" not in nightly:
        lines.append(f"  {nightly['error']}")
    else:
        lines.append(
            f"  {nightly['status']}: started {nightly['started']}, finished {nightly['finished']}"
        )
        if nightly.get("failed_step"):
            lines.append(f"  FAILED at step {nightly['failed_step']!r}: {nightly.get('error')}")
        for d in nightly.get("decisions") or []:
            lines.append(f"    {d.get('candidate_id')}: {d.get('decision')}")
        if nightly.get("promotion"):
            p = nightly["promotion"]
            lines.append(f"  promotion: {p['decision']} {p['model_name']} v{p['version']}")
    return "\n".join(lines)


def run_status_cli(as_json: bool = False, config_path: str | None = None) -> int:
    """`chappie status [--json]`: exit 0; the registry names come from `config_path`
    when given (else the defaults of RegistryConfig)."""
    registry = None
    if config_path:
        registry = load_experiment(config_path).registry
    status = collect_status(registry=registry)
    if as_json:
        print(json.dumps(status, indent=2, sort_keys=True, default=str))
    else:
        print(render_status(status))
    sys.stdout.flush()
    return 0
