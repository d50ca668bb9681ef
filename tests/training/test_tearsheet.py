"""The HTML tear sheet of a candidate (#20): equity and drawdown against the best
baseline, monthly returns, per-slice figures and the trade list, in one self-contained
page (images inline as base64 PNG, no script, no http(s) resource)."""

from __future__ import annotations

import base64
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from core.config.training import EvaluationConfig
from tests.training.conftest import DataDir
from tests.training.test_backtest import obs_dim, projection_policy, slice_inputs
from training.backtest import SliceInput, SliceResult, backtest
from training.report import TEARSHEET_HTML, chained_equity, monthly_returns, write_report

NS_H = 3_600_000_000_000
JAN31_22H = int(np.datetime64("2024-01-31T22:00", "ns").astype(np.int64))


def _result(slice_id: str, kind: str, t0: int, equity: list[float]) -> SliceResult:
    n = len(equity)
    return SliceResult(
        slice=SliceInput(path="x", slice_id=slice_id, kind=kind),
        ts_ns=np.array([t0 + i * NS_H for i in range(n)], dtype=np.int64),
        equity=np.array(equity, dtype=np.float64),
        position_size=np.zeros(n),
        actions=np.zeros(n - 1, dtype=np.int64),
    )


def test_test_slices_chain_in_time_order_and_months_split_on_utc_calendar() -> None:
    jan = _result("fold00-test", "test", JAN31_22H, [100.0, 105.0, 110.0])  # 22h, 23h, 00h
    feb = _result("fold01-test", "test", JAN31_22H + 3 * NS_H, [50.0, 45.0])  # a fresh account
    stress = _result("stress00", "stress", JAN31_22H, [100.0, 1.0])
    ts, eq = chained_equity([feb, stress, jan])  # any order in; stress left out
    assert ts.tolist() == [JAN31_22H + i * NS_H for i in range(5)]
    np.testing.assert_allclose(eq, [1.0, 1.05, 1.1, 1.1, 0.99])
    months = monthly_returns(ts, eq)
    assert [m for m, _ in months] == ["2024-01", "2024-02"]
    # January ends at 23:00 (1.05); February runs from there to 0.99
    np.testing.assert_allclose([r for _, r in months], [0.05, 0.99 / 1.05 - 1.0])
    assert chained_equity([stress])[0].size == 0 and monthly_returns(*chained_equity([])) == []


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.imgs: list[str] = []
        self.tags: list[str] = []
        self.rows = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append(tag)
        if a.get("id"):
            self.ids.append(str(a["id"]))
        if tag == "img":
            self.imgs.append(str(a.get("src")))
        if tag == "tr":
            self.rows += 1


@pytest.fixture(scope="module")
def written(
    tiny_data: DataDir, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, str], list[SliceResult]]:
    inputs, stats = slice_inputs(tiny_data)
    env = tiny_data.cfg.sweep.trials[0].env
    res = backtest(projection_policy(obs_dim(tiny_data)), inputs, stats, env, EvaluationConfig())
    ref = backtest(projection_policy(obs_dim(tiny_data), 1), inputs, stats, env, EvaluationConfig())
    report = {
        "candidate_id": "base-s0-t1024",
        "decision": "reject",
        "reasons": ["pass_majority_slices failed"],
        "gates": {
            "drawdown_under_cap": {
                "passed": True,
                "value": 0.01,
                "threshold": 0.05,
                "definition": "d",
            }
        },
        "slices": [r.metrics.as_dict() for r in res if r.slice.kind == "test" and r.metrics],
        "stress_slices": [
            r.metrics.as_dict() for r in res if r.slice.kind == "stress" and r.metrics
        ],
        "overfitting": {"return_period_s": 60.0},
    }
    out = tmp_path_factory.mktemp("rep")
    return write_report(out, report, res, ref, "imbalance_rule"), res


def test_tear_sheet_opens_with_every_section_and_is_self_contained(
    written: tuple[dict[str, str], list[SliceResult]],
) -> None:
    paths, res = written
    path = Path(paths[TEARSHEET_HTML])
    assert path.name == "tearsheet.html" and path.parent == Path(paths["report.md"]).parent
    html = path.read_text(encoding="utf-8")
    page = _Page()
    page.feed(html)
    page.close()
    assert page.ids == ["equity", "monthly", "slices", "trades"]
    assert len(page.imgs) == 1 and page.imgs[0].startswith("data:image/png;base64,")
    png = base64.b64decode(page.imgs[0].split(",", 1)[1])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert "script" not in page.tags and "link" not in page.tags
    assert not re.search(r"https?://", html)
    assert "Decision: reject" in html and "imbalance_rule" in html and "2024-01" in html
    assert "sharpe (annualised, 60 s returns)" in html
    n_trades = sum(len(r.trades) for r in res)
    assert n_trades > 0 and f"Trades: {n_trades}<" in html
    # gate + month + slice + trade rows, each with its header row
    n_slices = len([r for r in res if r.metrics])
    assert page.rows == (1 + 1) + (1 + 1) + (1 + n_slices) + (1 + n_trades)
