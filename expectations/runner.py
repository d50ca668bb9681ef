"""The one place that calls Great Expectations (1.x). Adapter.

GX is imported inside functions only (it takes seconds to import); polars frames are
converted to pandas here, at this one boundary. `validate_slice` raises
`SliceValidationError` naming every failed expectation; `run_suite` returns the result.
Data Docs HTML is written under the given folder when asked, made to render offline (no
CDN: a small inline stylesheet, a static index) and replaced, not added to, when a slice
is validated again (`publish_offline_docs`).
"""

from __future__ import annotations

import logging
import re
import shutil
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from core import schema as S
from core.atomic import write_bytes_atomic, write_json_atomic
from core.config.features import ExpectationsConfig, FeaturesConfig, FeatureSpec
from core.hashing import sha256_bytes
from expectations.suites import (
    Suite,
    book_suite,
    book_view,
    drift_report,
    feature_suite,
    feature_view,
)
from features.bars import read_bars_window
from features.slices import SlicePlan, SliceValidation
from features.store import read_slice

if TYPE_CHECKING:  # imported inside functions at run time (GX takes seconds to import)
    from great_expectations import ExpectationSuite


class SliceValidationError(RuntimeError):
    """A slice failed its expectation suites; `failed` lists the expectations."""

    def __init__(self, slice_id: str, failed: list[str], result: SliceValidation | None = None):
        self.slice_id = slice_id
        self.failed = failed
        self.result = result
        super().__init__(
            f"slice {slice_id} failed {len(failed)} expectation(s): {'; '.join(failed)}"
        )


_CONTEXT: Any = None


def _context() -> Any:
    """One ephemeral GX context per process, its progress bars off through its own
    setting (not TQDM_DISABLE, which would silence every other bar of the process, the
    training one included) and its INFO chatter (temporary folders) below the default
    log level."""
    global _CONTEXT
    if _CONTEXT is None:
        logging.getLogger("great_expectations").setLevel(logging.WARNING)
        # slow: great_expectations (~3 s), imported only when a slice is validated
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        # GX gives some of its loggers their own INFO level on import (the temporary-folder
        # lines): raise every one of them to WARNING (a user's warnings still show)
        for name, lg in list(logging.Logger.manager.loggerDict.items()):
            if name.startswith("great_expectations") and isinstance(lg, logging.Logger):
                lg.setLevel(max(lg.level, logging.WARNING))
        ctx = gx.get_context(mode="ephemeral")
        ctx.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        _CONTEXT = ctx
    return _CONTEXT


_SUITES: dict[str, ExpectationSuite] = {}


def _suite_key(suite: Suite) -> str:
    """Suite name plus a content hash: one name never means two different suites."""
    return f"{suite.name}-{sha256_bytes(repr(suite).encode())[:8]}"


def _gx_suite(suite: Suite) -> ExpectationSuite:
    """GX suite for `suite`, built once per process per content (building one
    expectation at a time is quadratic in GX)."""
    # slow: great_expectations (~3 s), imported only when a slice is validated
    import great_expectations as gx

    key = _suite_key(suite)
    if key not in _SUITES:
        exps = [getattr(gx.expectations, e.type)(**e.kwargs) for e in suite.expectations]
        _SUITES[key] = gx.ExpectationSuite(name=key, expectations=exps)
    return _SUITES[key]


def _get_or_add(store: Any, name: str, make: Any) -> Any:
    try:
        return store.get(name)
    except Exception:  # noqa: BLE001 - GX raises its own lookup errors
        return store.add(make())


def _batch_definition(ctx: Any, asset: str) -> Any:
    ds_name = "chappie-pandas"
    try:
        ds = ctx.data_sources.get(ds_name)
    except Exception:  # noqa: BLE001
        ds = ctx.data_sources.add_pandas(ds_name)
    try:
        data_asset = ds.get_asset(asset)
    except Exception:  # noqa: BLE001
        data_asset = ds.add_dataframe_asset(asset)
    try:
        return data_asset.get_batch_definition("whole")
    except Exception:  # noqa: BLE001
        return data_asset.add_batch_definition_whole_dataframe("whole")


def _docs_site(ctx: Any, folder: Path) -> str:
    """Register a local Data Docs site writing HTML into `folder` (once)."""
    name = f"chappie-{sha256_bytes(str(folder.resolve()).encode())[:8]}"
    if name not in ctx.get_site_names():
        folder.mkdir(parents=True, exist_ok=True)
        ctx.add_data_docs_site(
            site_name=name,
            site_config={
                "class_name": "SiteBuilder",
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(folder.resolve()),
                },
            },
        )
    return name


def _run_with_docs(
    ctx: Any, bd: Any, pdf: Any, suite: Suite, asset: str, folder: Path, run_name: str
) -> Any:
    """Validate through a Checkpoint whose action renders Data Docs HTML into `folder`."""
    # slow: great_expectations (~3 s), imported only when a slice is validated
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier

    site = _docs_site(ctx, folder)
    gx_suite = _get_or_add(ctx.suites, _suite_key(suite), lambda: _gx_suite(suite))
    vd_name = f"{_suite_key(suite)}:{asset}"
    vd = _get_or_add(
        ctx.validation_definitions,
        vd_name,
        lambda: gx.ValidationDefinition(name=vd_name, data=bd, suite=gx_suite),
    )
    cp_name = f"{vd_name}:{site}"
    cp = _get_or_add(
        ctx.checkpoints,
        cp_name,
        lambda: gx.Checkpoint(
            name=cp_name,
            validation_definitions=[vd],
            actions=[gx.checkpoint.UpdateDataDocsAction(name="data-docs", site_names=[site])],
            result_format="BASIC",
        ),
    )
    result = cp.run(batch_parameters={"dataframe": pdf}, run_id=RunIdentifier(run_name=run_name))
    res = next(iter(result.run_results.values()))
    publish_offline_docs(folder, _suite_key(suite), run_name, res)
    return res


# ---------------------------------------------------------------- Data Docs, offline
#: A small stylesheet standing in for the Bootstrap / bootstrap-table / font-awesome CSS
#: that GX's pages load from CDNs: enough for its grid, cards, tables and status colours.
OFFLINE_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
margin:0;color:#212529;background:#fff;font-size:15px;line-height:1.45}
a{color:#0b5cad}h1,h2,h3,h4,h5{margin:.6em 0 .4em;font-weight:600}
.container,.container-fluid{padding:12px 24px}.row{display:flex;flex-wrap:wrap;gap:0 16px}
[class*="col-"]{flex:1 1 0;min-width:0}.col-12{flex-basis:100%}
.col-lg-2,.col-md-2{flex:0 0 16%}
.navbar{display:flex;align-items:center;padding:8px 24px;border-bottom:1px solid #dee2e6}
.breadcrumb{display:flex;gap:8px;list-style:none;margin:0;padding:0}
.breadcrumb-item+.breadcrumb-item:before{content:"/ ";color:#6c757d}
.card{border:1px solid #dee2e6;border-radius:4px;margin-bottom:12px}
.card-header{background:#f5f6f7;padding:6px 10px;border-bottom:1px solid #dee2e6}
.card-body{padding:10px}.list-group{padding-left:0;list-style:none}
table{border-collapse:collapse;margin:6px 0;font-size:14px}
th,td{border:1px solid #dee2e6;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f5f6f7}.table{width:100%}
.text-success,.ge-success-icon{color:#1e7e34}.text-danger,.ge-failed-icon{color:#bd2130}
.text-muted{color:#6c757d}.badge{padding:1px 6px;border-radius:8px;background:#e9ecef}
.modal,.ge-walkthrough-modal,.d-none,.collapse:not(.show),.tooltip,.popover{display:none}
.fas.fa-check-circle:before{content:"\\2714"}.fas.fa-times:before{content:"\\2716"}
.fas.fa-exclamation-triangle:before{content:"!"}
"""
_OFFLINE_MARK = "<!-- chappie: offline -->"
_DOCS_JSON = "chappie-docs.json"


class DocsEntry(BaseModel):
    """One slice's last validation in the Data Docs index (`chappie-docs.json`, by
    `<suite>/<slice>`): its page relative to the docs folder and the run's time."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    suite: str
    slice: str
    success: bool
    evaluated: int | None
    successful: int | None
    run_time: str
    page: str


_DOCS_INDEX = TypeAdapter(dict[str, DocsEntry])


def offline_html(html: str) -> str:
    """GX Data Docs HTML that renders without a network: every stylesheet, script and image
    loaded from an http(s) URL is dropped (Bootstrap, jQuery, bootstrap-table, vega,
    font-awesome, the GX logo), CSS `url(http...)` becomes `none`, links out point
    nowhere, and `OFFLINE_CSS` is inlined in the head. Idempotent. Pure."""
    if _OFFLINE_MARK in html:
        return html
    remote = r"""["']https?://[^"']*["']"""
    html = re.sub(
        rf"<script\b[^>]*\bsrc\s*=\s*{remote}[^>]*>\s*</script>", "", html, flags=re.I | re.S
    )
    html = re.sub(
        rf"<(link|img)\b[^>]*\b(href|src)\s*=\s*{remote}[^>]*>", "", html, flags=re.I | re.S
    )
    html = re.sub(r"""url\(\s*["']?https?://[^)]*\)""", "none", html, flags=re.I)
    html = re.sub(rf"\bhref\s*=\s*{remote}", 'href="#"', html, flags=re.I)
    style = f"{_OFFLINE_MARK}\n<style>{OFFLINE_CSS}</style>\n"
    head_end = html.lower().find("</head>")
    return html[:head_end] + style + html[head_end:] if head_end >= 0 else style + html


def publish_offline_docs(folder: Path, suite_key: str, run_name: str, res: Any) -> None:
    """After a checkpoint wrote its Data Docs into `folder`: keep only this run's pages of
    (suite, `run_name`) - the earlier timestamped runs of the same slice and the pages of
    earlier versions of the suite are removed, so a rerun replaces the set instead of
    adding one - make every page render offline (`offline_html`), and replace GX's
    index (a table bootstrap-table fills from a CDN) with a static one."""
    folder = Path(folder)
    validations = folder / "validations"
    name = suite_key.rsplit("-", 1)[0]
    for suite_dir in validations.glob(f"{name}-*"):
        if suite_dir.name.rsplit("-", 1)[0] != name:
            continue  # another suite whose name merely starts like this one's
        runs = suite_dir / run_name
        if suite_dir.name != suite_key:  # an earlier version of this suite
            shutil.rmtree(runs, ignore_errors=True)
        elif runs.is_dir():
            for old in sorted(p for p in runs.iterdir() if p.is_dir())[:-1]:  # timestamps
                shutil.rmtree(old, ignore_errors=True)
        if suite_dir.is_dir() and not any(suite_dir.iterdir()):
            suite_dir.rmdir()
    for page in (folder / "expectations").glob(f"{name}-*.html"):
        if page.stem != suite_key and not (validations / page.stem).exists():
            page.unlink()
    index_path = folder / _DOCS_JSON
    try:
        entries = _DOCS_INDEX.validate_json(index_path.read_bytes())
    except (OSError, ValidationError):  # none yet, or not ours: rebuilt from this run
        entries = {}
    pages = sorted((validations / suite_key / run_name).glob("*/*.html"))
    if pages:
        stats = dict(res.statistics)
        entries[f"{suite_key}/{run_name}"] = DocsEntry(
            suite=suite_key,
            slice=run_name,
            success=bool(res.success),
            evaluated=stats.get("evaluated_expectations"),
            successful=stats.get("successful_expectations"),
            run_time=pages[-1].parent.name,
            page=str(pages[-1].relative_to(folder)),
        )
    entries = {k: e for k, e in entries.items() if (folder / e.page).is_file()}
    write_json_atomic(index_path, _DOCS_INDEX.dump_python(entries, mode="json"))
    for page in folder.glob("**/*.html"):
        text = page.read_text(encoding="utf-8")
        fixed = offline_html(text)
        if fixed != text:
            write_bytes_atomic(page, fixed.encode("utf-8"))
    write_bytes_atomic(folder / "index.html", _index_html(entries).encode("utf-8"))


def _index_html(entries: dict[str, DocsEntry]) -> str:
    """A static index of the validation pages in `entries` (no scripts, no CDN)."""
    rows = []
    for e in sorted(entries.values(), key=lambda e: (e.slice, e.suite)):
        mark = "✔ passed" if e.success else "✖ failed"
        cls = "text-success" if e.success else "text-danger"
        rows.append(
            f'<tr><td class="{cls}">{mark}</td><td><a href="{escape(e.page)}">'
            f"{escape(e.slice)}</a></td><td>{escape(e.suite)}</td>"
            f"<td>{e.successful}/{e.evaluated}</td><td>{escape(e.run_time)}</td></tr>"
        )
    suites = sorted({e.suite for e in entries.values()})
    suite_links = "".join(
        f'<li><a href="expectations/{escape(s)}.html">{escape(s)}</a></li>' for s in suites
    )
    body = "".join(rows) or '<tr><td colspan="5">no validations yet</td></tr>'
    return offline_html(
        '<!DOCTYPE html><html><head><meta charset="UTF-8">'
        "<title>Chappie slice validations (Great Expectations Data Docs)</title></head>"
        '<body><div class="container"><h2>Slice validations</h2>'
        '<p class="text-muted">The last validation of every slice (Great Expectations '
        "Data Docs, readable offline; a rerun replaces a slice's pages).</p>"
        '<table class="table"><tr><th>status</th><th>slice</th><th>suite</th>'
        f"<th>expectations met</th><th>run (UTC)</th></tr>{body}</table>"
        f"<h3>Expectation suites</h3><ul>{suite_links}</ul></div></body></html>"
    )


def _describe(res: Any) -> str:
    cfg = res.expectation_config
    kw = cfg.kwargs
    cols = kw.get("column") or ",".join(str(kw[k]) for k in ("column_A", "column_B") if k in kw)
    detail = res.result or {}
    n = detail.get("unexpected_count")
    pct = detail.get("unexpected_percent")
    extra = ""
    if n is not None:
        extra = f": {n} unexpected"
        if pct is not None:
            extra += f" ({pct:.3g}%)"
    name = "".join(part.title() for part in str(cfg.type).split("_"))
    return f"{name}({cols}){extra}"


def run_suite(
    frame: pl.DataFrame,
    suite: Suite,
    asset: str = "frame",
    data_docs_dir: str | Path | None = None,
    run_name: str | None = None,
) -> SliceValidation:
    """Validate a polars frame against `suite`; never raises on failed expectations.

    With `data_docs_dir` the run goes through a GX Checkpoint that renders Data Docs
    HTML there (index.html, one page per run named `run_name`)."""
    ctx = _context()
    pdf = frame.to_pandas()
    bd = _batch_definition(ctx, asset)
    docs: str | None = None
    if data_docs_dir is not None:
        folder = Path(data_docs_dir)
        res = _run_with_docs(ctx, bd, pdf, suite, asset, folder, run_name or asset)
        docs = str(folder / "index.html")
    else:
        batch = bd.get_batch(batch_parameters={"dataframe": pdf})
        res = batch.validate(_gx_suite(suite), result_format="BASIC")
    failed = [_describe(r) for r in res.results if not r.success]
    stats = {k: v for k, v in dict(res.statistics).items() if v is not None}
    return SliceValidation(
        success=bool(res.success), suite=suite.name, failed=failed, statistics=stats, data_docs=docs
    )


def validate_frames(
    slice_frame: pl.DataFrame,
    bars: pl.DataFrame | None,
    spec: FeatureSpec,
    cfg: ExpectationsConfig,
    mean: np.ndarray | None = None,
    sigma: np.ndarray | None = None,
    data_docs_dir: str | Path | None = None,
    run_name: str = "slice",
) -> SliceValidation:
    """Run the book suite on `bars` (the slice's bars, when given) and the feature suite
    on `slice_frame`; merge both into one result, with the drift against `mean`/`sigma`
    when given (measured, never a failure). Never raises on failures."""
    results: list[SliceValidation] = []
    if bars is not None:
        view = book_view(bars, spec.depth)
        results.append(run_suite(view, book_suite(), "book", data_docs_dir, run_name))
    fsuite = feature_suite(spec, cfg)
    fview = feature_view(slice_frame, spec)
    results.append(run_suite(fview, fsuite, "features", data_docs_dir, run_name))
    stats = {
        key: sum(r.statistics.get(key, 0) for r in results)
        for key in (
            "evaluated_expectations",
            "successful_expectations",
            "unsuccessful_expectations",
        )
    }
    stats["rows"] = slice_frame.height
    return SliceValidation(
        success=all(r.success for r in results),
        suite="+".join(r.suite for r in results),
        failed=[f for r in results for f in r.failed],
        statistics=stats,
        data_docs=results[-1].data_docs,
        drift=(
            drift_report(slice_frame, spec, mean, sigma, cfg)
            if mean is not None and sigma is not None
            else None
        ),
    )


def validate_slice(
    slice_frame: pl.DataFrame | str | Path,
    spec: FeatureSpec,
    cfg: ExpectationsConfig | None = None,
    *,
    bars: pl.DataFrame | None = None,
    mean: np.ndarray | None = None,
    sigma: np.ndarray | None = None,
    slice_id: str = "slice",
    data_docs_dir: str | Path | None = None,
) -> SliceValidation:
    """Validate a slice (frame, slice manifest or file path) and its bars; raise
    SliceValidationError listing the failed expectations, else return the result."""
    frame = slice_frame if isinstance(slice_frame, pl.DataFrame) else read_slice(slice_frame)
    result = validate_frames(
        frame, bars, spec, cfg or ExpectationsConfig(), mean, sigma, data_docs_dir, slice_id
    )
    if not result.success:
        raise SliceValidationError(slice_id, result.failed, result)
    return result


def validate_staged_slice(
    plan: SlicePlan, slice_id: str, cfg: FeaturesConfig, data_docs_dir: str | None = None
) -> SliceValidation:
    """Run the book suite on the slice's bars and the feature suite on the staged
    slice, and measure its drift against its frozen stats (stress slices too: out of
    distribution by design, which the drift report shows; drift never refuses). Returns
    the manifest's `validation`; raises SliceValidationError listing the failed
    integrity expectations. The `validate-slice` task of the features flow."""
    item = plan.staged(slice_id)
    frame = plan.frame(slice_id)
    # the bars of the rows that entered the slice (warm-up bars, e.g. a desynced book,
    # were dropped and are not the slice's)
    bars = (
        read_bars_window(plan.bars_path, item.start_ns, item.end_ns)
        .lazy()
        .join(frame.lazy().select(S.TS), on=S.TS, how="semi")
        .collect()
    )
    st = plan.frozen_stats(item.stats_id)
    res = validate_slice(
        frame,
        cfg.spec,
        cfg.expectations,
        bars=bars,
        mean=st.mean,
        sigma=st.sigma,
        slice_id=slice_id,
        data_docs_dir=data_docs_dir,
    )
    return res
