"""`chappie status` on a temporary data folder: real event partitions (ingest's publisher),
slice manifests and folds.json in the contract format, a real SQLite MLflow registry with
champion and challenger, and the nightly outcome file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from core.atomic import write_json_atomic
from core.config.registry import RegistryConfig
from core.instrument import InstrumentSpec
from core.paths import DataLayout
from core.schema import BOOK_COLUMNS, EVENT_DTYPES, TRADE_COLUMNS
from flows.status import collect_status, gates_from_tags, render_status
from tests.conftest import REPO
from tests.infra.servers import base_env
from tests.infra.sweep_fixture import MODEL_NAME, gates_for, log_sweep

SPEC = "c" * 64


def _frame(columns: tuple[str, ...], rows: list[tuple]) -> pl.DataFrame:
    return pl.DataFrame(
        rows,
        schema={
            c: getattr(pl, EVENT_DTYPES[c].capitalize())
            if EVENT_DTYPES[c] != "bool"
            else pl.Boolean
            for c in columns
        },
        orient="row",
    )


def make_data(root: Path) -> DataLayout:
    from ingest.events import publish_partition

    layout = DataLayout(root)
    for i, day in enumerate(("2021-07-21", "2021-07-22")):
        t0 = 1_626_825_600_000_000_000 + i * 86_400_000_000_000
        book = _frame(
            BOOK_COLUMNS,
            [
                (t0, t0, 1, 100, 5, True),
                (t0, t0, -1, 101, 7, True),
                (t0 + 10, t0 + 12, 1, 100, 0, False),
            ][: 2 + i],
        )
        trades = _frame(TRADE_COLUMNS, [(t0 + 5, t0 + 6, 1, 101, 2)])
        publish_partition(
            layout,
            "XBTUSD",
            day,
            book,
            trades,
            InstrumentSpec(),
            "synthetic",
            [{"path": "synthetic", "sha256": "0" * 64}],
        )
    (layout.events_day("XBTUSD", "2021-07-23")).mkdir()  # an interrupted ingest: no manifest

    folder = layout.slices(SPEC)
    ids = {
        "fold00-train": ("train", 0, True),
        "fold00-test": ("test", 0, True),
        "stress00": ("stress", None, False),
    }
    for slice_id, (kind, fold, ok) in ids.items():
        write_json_atomic(
            folder / f"{slice_id}.manifest.json",
            {
                "slice_id": slice_id,
                "kind": kind,
                "fold": fold,
                "spec_hash": SPEC,
                "t_start_ns": 0,
                "t_end_ns": 10,
                "rows": 11,
                "sha256": "d" * 64,
                "path": str(folder / f"{slice_id}.parquet"),
                "event_partitions": {},
                "validation": {"success": ok, "suite": "slice", "failed": [], "statistics": {}},
                "stats_id": "s1",
            },
        )
    write_json_atomic(
        folder / "folds.json",
        {
            "spec_hash": SPEC,
            "folds": [
                {
                    "fold": 0,
                    "train": "fold00-train",
                    "validation": None,
                    "test": "fold00-test",
                    "stats_id": "s1",
                }
            ],
            "stress": ["stress00"],
            "stress_stats_id": "s1",
        },
    )
    return layout


def test_gates_from_tags_reads_registry_gate_tags() -> None:
    from registry.store import gate_tags

    gates = gates_from_tags({**gate_tags(gates_for(False)), "decision": "reject", "test.pnl": "1"})
    assert gates == {
        "pass_majority_slices": {"passed": False, "value": 0.25, "threshold": 0.5},
        "drawdown_cap": {"passed": True, "value": 0.01, "threshold": 0.05},
    }
    assert gates_from_tags({"gate.x.y": "true"}) == {"x.y": {"passed": True}}


def test_status_with_an_unreachable_tracking_server_says_so(tmp_path: Path) -> None:
    models = collect_status(str(tmp_path), tracking_uri="http://127.0.0.1:9")["models"]
    assert models["available"] is False
    assert "no MLflow server answers at http://127.0.0.1:9" in models["reason"]


def test_status_on_an_empty_folder_creates_nothing(tmp_path: Path) -> None:
    status = collect_status(str(tmp_path))
    assert status["data"] == {} and status["slices"] is None and status["last_nightly"] is None
    assert status["models"]["available"] is False
    assert "no MLflow database" in status["models"]["reason"]
    assert list(tmp_path.iterdir()) == []
    text = render_status(status)
    assert "no event data yet" in text and "no nightly run yet" in text


@pytest.fixture(scope="module")
def populated(tmp_path_factory: pytest.TempPathFactory) -> DataLayout:
    root = tmp_path_factory.mktemp("data")
    layout = make_data(root)
    logged = log_sweep(f"sqlite:///{layout.mlflow_db}", root, gate_tags=True)
    write_json_atomic(
        root / "reports" / "last_nightly.json",
        {
            "started": "2026-11-21T02:00:00Z",
            "finished": "2026-11-21T02:09:00Z",
            "status": "failed",
            "failed_step": "evaluate",
            "error": "ValueError: boom",
            "evaluation": {
                "candidates": [{"candidate_id": "base-s1-t1024", "decision": "promote"}]
            },
        },
    )
    (root / "logged.json").write_text(json.dumps(logged))
    return layout


def test_status_reports_inventory_slices_models_and_nightly(populated: DataLayout) -> None:
    logged = json.loads((populated.root / "logged.json").read_text())
    s = collect_status(str(populated.root), registry=RegistryConfig(model_name=MODEL_NAME))
    inv = s["data"]["XBTUSD"]
    assert inv["days"] == ["2021-07-21", "2021-07-22"]
    assert (inv["book_rows"], inv["trade_rows"], inv["unpublished"]) == (5, 2, ["2021-07-23"])
    sl = s["slices"]
    assert (sl["spec_hash"], sl["n_folds"], sl["n_stress"]) == (SPEC, 1, 1)
    assert [(x["slice_id"], x["valid"]) for x in sl["slices"]] == [
        ("fold00-train", True),
        ("fold00-test", True),
        ("stress00", False),
    ]
    m = s["models"]
    assert m["available"] and m["aliases"] == logged["versions"]
    champ, chall = m["champion"], m["challenger"]
    assert (champ["candidate_id"], champ["decision"], champ["gates_source"]) == (
        "base-s1-t1024",
        "promote",
        "version tags",
    )
    assert champ["gates"]["pass_majority_slices"] == {
        "passed": True,
        "value": 0.75,
        "threshold": 0.5,
    }
    assert champ["test_totals"] == {"pnl_plus_fees": logged["pnl"]["base-s1-t1024"]}
    assert champ["run_id"] == logged["children"]["base-s1-t1024"]
    assert (
        chall["decision"] == "reject" and chall["gates"]["pass_majority_slices"]["passed"] is False
    )
    n = s["last_nightly"]
    assert (n["status"], n["failed_step"]) == ("failed", "evaluate")
    assert n["decisions"] == [{"candidate_id": "base-s1-t1024", "decision": "promote"}]

    text = render_status(s)
    for needle in (
        "XBTUSD: 2 day(s) 2021-07-21 .. 2021-07-22",
        "unpublished (no manifest): 2021-07-23",
        "stress00",
        "INVALID",
        "champion: version 1 base-s1-t1024 decision=promote",
        "pass_majority_slices=FAIL (0.25)",
        "FAILED at step 'evaluate'",
    ):
        assert needle in text, needle


TOTALS = {"pnl": 0.6, "fees": -0.1, "pnl_plus_fees": 0.5, "trades": 3, "max_drawdown": 0.01}


def test_gates_fall_back_to_evaluation_json(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path)
    logged = log_sweep(f"sqlite:///{layout.mlflow_db}", tmp_path, gate_tags=False)
    cand = {
        "candidate_id": "base-s1-t1024",
        "decision": "promote",
        "run_id": "x",
        "gates": gates_for(True),
        "test_totals": TOTALS,
    }
    write_json_atomic(
        layout.reports(logged["parent"]) / "evaluation.json",
        {"sweep_run_id": logged["parent"], "candidates": [cand], "best": None, "challenger": None},
    )
    champ = collect_status(str(tmp_path), registry=RegistryConfig(model_name=MODEL_NAME))["models"][
        "champion"
    ]
    assert champ["gates_source"] == "evaluation.json"
    assert champ["gates"] == gates_for(True)
    assert champ["test_totals"] == TOTALS


def test_cli_status_json(populated: DataLayout, tmp_path: Path) -> None:
    env = base_env(tmp_path)
    env["CHAPPIE_DATA_DIR"] = str(populated.root)
    env.pop("MLFLOW_TRACKING_URI", None)
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(f"registry:\n  model_name: {MODEL_NAME}\n")
    r = subprocess.run(
        [sys.executable, "-m", "flows.cli", "status", "--json", "--config", str(cfg)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["models"]["champion"]["version"] == "1"
    assert out["data"]["XBTUSD"]["n_days"] == 2
