"""The one place that calls Great Expectations (1.x). Adapter.

GX is imported inside functions only (it takes seconds to import); polars frames are
converted to pandas here, at this one boundary. `validate_slice` raises
`SliceValidationError` naming every failed expectation; `run_suite` returns the result.
Data Docs HTML is written under the given folder when asked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from core.config.features import ExpectationsConfig, FeatureSpec
from expectations.suites import (
    Suite,
    book_suite,
    book_view,
    drift_report,
    feature_suite,
    feature_view,
)
from features.store import read_slice


class SliceValidationError(RuntimeError):
    """A slice failed its expectation suites; `failed` lists the expectations."""

    def __init__(self, slice_id: str, failed: list[str], result: ValidationResult | None = None):
        self.slice_id = slice_id
        self.failed = failed
        self.result = result
        super().__init__(
            f"slice {slice_id} failed {len(failed)} expectation(s): {'; '.join(failed)}"
        )


@dataclass
class ValidationResult:
    """Summary kept in the slice manifest (`validation`)."""

    success: bool
    suite: str
    failed: list[str] = field(default_factory=list)
    statistics: dict[str, Any] = field(default_factory=dict)
    data_docs: str | None = None
    drift: dict[str, Any] | None = None  # against the frozen stats: measured, never refused

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "success": self.success,
            "suite": self.suite,
            "failed": list(self.failed),
            "statistics": dict(self.statistics),
        }
        if self.data_docs:
            out["data_docs"] = self.data_docs
        if self.drift is not None:
            out["drift"] = self.drift
        return out


_CONTEXT: Any = None


def _context() -> Any:
    """One ephemeral GX context per process, its progress bars off through its own
    setting (not TQDM_DISABLE, which would silence every other bar of the process, the
    training one included) and its INFO chatter (temporary folders) below the default
    log level."""
    global _CONTEXT
    if _CONTEXT is None:
        import logging

        logging.getLogger("great_expectations").setLevel(logging.WARNING)
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


_SUITES: dict[str, Any] = {}


def _suite_key(suite: Suite) -> str:
    """Suite name plus a content hash: one name never means two different suites."""
    from core.hashing import sha256_bytes

    return f"{suite.name}-{sha256_bytes(repr(suite).encode())[:8]}"


def _gx_suite(suite: Suite) -> Any:
    """GX suite for `suite`, built once per process per content (building one
    expectation at a time is quadratic in GX)."""
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
    from core.hashing import sha256_bytes

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
    return next(iter(result.run_results.values()))


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
) -> ValidationResult:
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
    return ValidationResult(
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
) -> ValidationResult:
    """Run the book suite on `bars` (the slice's bars, when given) and the feature suite
    on `slice_frame`; merge both into one result, with the drift against `mean`/`sigma`
    when given (measured, never a failure). Never raises on failures."""
    results: list[ValidationResult] = []
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
    return ValidationResult(
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
) -> ValidationResult:
    """Validate a slice (frame, slice manifest or file path) and its bars; raise
    SliceValidationError listing the failed expectations, else return the result."""
    frame = slice_frame if isinstance(slice_frame, pl.DataFrame) else read_slice(slice_frame)
    result = validate_frames(
        frame, bars, spec, cfg or ExpectationsConfig(), mean, sigma, data_docs_dir, slice_id
    )
    if not result.success:
        raise SliceValidationError(slice_id, result.failed, result)
    return result
