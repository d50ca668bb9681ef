"""Prefect flows `promote-model` and `rollback-model`: wiring only.

`promote_flow` reads evaluation.json (written by `evaluate-sweep`), registers the chosen
candidate's pickle-free bundle as an MLflow model version and moves `champion` (promote
decision only) or `challenger` (`registry.promotion`). The registration is idempotent per
(models, verdict), so the one retry (network I/O to the tracking server) is safe; a
PromotionError is never retried.
Before registering, register runs (and any run) left RUNNING by a killed process are
marked FAILED (`registry.tracking.fail_orphaned_runs`).
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from core.config.registry import RegistryConfig
from registry import promotion, tracking


def _worth_retrying(tsk: Any, run: Any, state: Any) -> bool:
    """Retry network trouble, never a PromotionError (an inconsistent evaluation.json,
    nothing to roll back): it fails the same way again."""
    del tsk, run
    try:
        state.result()
    except promotion.PromotionError:
        return False
    except Exception:  # noqa: BLE001 - anything else may be the network: retry once
        return True
    return False


def _registry_task(name: str) -> Any:
    """A registry task: one retry for the network, none for a PromotionError."""
    return task(name=name, retries=1, retry_delay_seconds=2, retry_condition_fn=_worth_retrying)


promote_task = _registry_task("register-and-promote")(promotion.promote)
rollback_task = _registry_task("rollback-champion")(promotion.rollback)


def _markdown(result: promotion.PromotionResult) -> str:
    lines = [
        f"# Promotion: {result.action} ({'dry run' if result.dry_run else 'applied'})",
        "",
        f"- model: `{result.model_name}` version `{result.version}`",
        f"- candidate: `{result.candidate_id}`, decision **{result.decision}**",
        f"- aliases: `{result.aliases}`",
        "",
        "## Why",
        *[f"- {r}" for r in result.reasons],
    ]
    return "\n".join(lines)


@flow(name="promote-model")
def promote_flow(
    evaluation_path: str,
    cfg: RegistryConfig,
    tracking_uri: str,
    dry_run: bool = False,
    feature_spec: dict[str, Any] | None = None,
) -> promotion.PromotionResult:
    """Register the evaluation's best (or challenger) candidate and move its alias.

    Returns the PromotionResult (`registry.promotion.promote`); `dry_run` changes nothing. `feature_spec` (FeatureSpec JSON) is needed only when the
    experiment's spec is not the default one with the env window.
    """
    if not dry_run:
        tracking.configure(tracking_uri)
        orphans = tracking.fail_orphaned_runs()
        if orphans:
            get_run_logger().warning(
                "marked %d runs of killed processes FAILED: %s", len(orphans), orphans
            )
    result = promote_task(
        evaluation_path, cfg, tracking_uri, dry_run=dry_run, feature_spec=feature_spec
    )
    get_run_logger().info(
        "promotion %s: %s v%s aliases=%s",
        result.action,
        result.candidate_id,
        result.version,
        result.aliases,
    )
    create_markdown_artifact(
        key="promotion", markdown=_markdown(result), description="registry promotion"
    )
    return result


@flow(name="rollback-model")
def rollback_flow(
    cfg: RegistryConfig, tracking_uri: str, dry_run: bool = False, reason: str = "manual rollback"
) -> promotion.RollbackResult:
    """Point `champion` back at `previous-champion` (registry.promotion.rollback)."""
    result = rollback_task(cfg, tracking_uri, dry_run=dry_run, reason=reason)
    get_run_logger().info("rollback %s -> %s", result.from_version, result.to_version)
    return result
