"""Great Expectations Data Docs that render offline and are replaced on a rerun (#20):
no page loads anything from an http(s) URL (GX's own pages load Bootstrap, jQuery and
bootstrap-table from CDNs, and its index table is filled by them), the index is a
static table, and validating a slice again replaces its pages instead of adding a
timestamped set."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl
import pytest

from core import schema as S
from core.config.features import ExpectationsConfig, FeatureSpec
from expectations.runner import SliceValidationError, offline_html, validate_slice
from features.compute import compute_features
from tests.features.strategies import make_bars

SPEC = FeatureSpec()
CFG = ExpectationsConfig()
# a resource the browser would fetch: script/link/img src|href, CSS url(), any http(s) href
REMOTE = re.compile(r"""(?:src|href)\s*=\s*["']https?://|url\(\s*["']?https?://""", re.I)


@pytest.fixture(scope="module")
def frames() -> tuple[pl.DataFrame, pl.DataFrame]:
    bars = make_bars(300, 9, SPEC, p_missing_level=0.1, p_trade=0.5)
    feats = compute_features(bars.lazy(), SPEC).collect().filter(~pl.col(S.WARMUP)).drop(S.WARMUP)
    return bars, feats


def _runs(docs: Path, slice_id: str) -> list[Path]:
    """Every timestamped run folder of `slice_id`, whatever the suite."""
    return sorted(p for p in (docs / "validations").glob(f"*/{slice_id}/*") if p.is_dir())


def test_docs_built_twice_render_offline_and_hold_one_set(
    frames: tuple[pl.DataFrame, pl.DataFrame], tmp_path: Path
) -> None:
    bars, feats = frames
    docs = tmp_path / "gx"
    for _ in range(2):
        validate_slice(feats, SPEC, CFG, bars=bars, slice_id="fold00-test", data_docs_dir=docs)
    with pytest.raises(SliceValidationError):  # a failing slice is documented too
        bad = feats.with_columns(pl.lit(2.0).alias("imbalance_l1"))
        validate_slice(bad, SPEC, CFG, bars=bars, slice_id="fold01-test", data_docs_dir=docs)
    validate_slice(feats, SPEC, CFG, bars=bars, slice_id="fold00-test", data_docs_dir=docs)

    pages = sorted(docs.rglob("*.html"))
    assert len(pages) >= 5  # index, 2 suites, book + features pages of 2 slices
    for page in pages:
        text = page.read_text(encoding="utf-8")
        assert not REMOTE.search(text), (page, REMOTE.search(text))
        assert "<style>" in text  # the local stylesheet instead of the CDN's
    assert len(_runs(docs, "fold00-test")) == 2  # book + features: one set, not three
    assert len(_runs(docs, "fold01-test")) == 2
    index = (docs / "index.html").read_text(encoding="utf-8")
    assert "<script" not in index  # a static table, not one a CDN script fills
    links = re.findall(r'href="(validations/[^"]+)"', index)
    assert len(links) == 4 and all((docs / link).is_file() for link in links)
    assert index.count("✖ failed") == 1 and index.count("✔ passed") == 3


def test_offline_html_drops_remote_resources_and_keeps_the_page() -> None:
    page = (
        "<html><head><link rel='stylesheet' href='https://cdn.example/b.css'/>\n"
        '<script src="https://code.jquery.com/jquery.js"></script>'
        "<style>.a{background:url('https://x.example/logo.png') 0 0}</style></head>"
        '<body><img\n class="x" src="https://x.example/logo.png"/>'
        '<a href="https://example.org/news">news</a><table><tr><td>ok</td></tr></table>'
        '<img src="../static/images/favicon.ico"></body></html>'
    )
    out = offline_html(page)
    assert not REMOTE.search(out)
    assert "<td>ok</td>" in out and ">news</a>" in out and "../static/images/favicon.ico" in out
    assert out.index("<style>") < out.index("</head>")
    assert offline_html(out) == out  # idempotent
