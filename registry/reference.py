"""The champion as a reference policy: its verified bundle re-run by the same walk-forward
backtest as every candidate, on the same slices, under the candidate's env (fees, fill
model), reading its actions as it was trained to give them (its own `action_mode`). Adapter: reads a bundle folder, writes the backtest results. Not imported by the
live loop (it pulls in the training backtest)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from registry.bundle import STATS_DIR, BundleMismatchError
from registry.champion import ChampionLoadError, load_bundle, load_champion
from registry.promotion import MODEL_KEY_TAG, TRAIN_END_TAG
from training.backtest import BatchPolicy
from training.candidates import ReferencePlan, backtest_folds, save_results


def backtest_champion(plan: ReferencePlan) -> str:
    """Run the bundle in `plan.bundle_dir` (verified on load; its own frozen stats, as it
    would run live) on every fold's validation and test slices and the stress slices;
    save the results in `plan.out_dir` and return it. Raises BundleError on a tampered
    bundle, ValueError when the plan names no bundle."""
    if plan.bundle_dir is None:
        raise ValueError("a champion plan needs bundle_dir")
    loaded = load_bundle(plan.bundle_dir)
    stats = str(Path(plan.bundle_dir) / STATS_DIR)

    def policy_for_fold(k: int) -> BatchPolicy:
        del k  # one registered model for every fold
        return loaded.policy.predict_batch

    mode = loaded.env_config.get("action_mode", "toggle")
    results = backtest_folds(
        policy_for_fold,
        plan.folds,
        plan.stress_paths,
        plan.stress_ids,
        plan.env.model_copy(update={"action_mode": mode}),
        plan.evaluation,
        stats_for_fold=lambda k: stats,
    )
    save_results(Path(plan.out_dir), results)
    return plan.out_dir


@dataclass(frozen=True)
class ChampionRef:
    """The current champion, verified and cached locally, as a reference policy."""

    version: str
    label: str  # "<model> v<version>"
    bundle_dir: str
    bundle_sha256: str
    model_key: str  # "" when the version predates the tag
    train_end_ns: int | None  # last training bar of its slices; None when unknown


def resolve_champion(
    model_name: str, alias: str, tracking_uri: str, spec_hash: str
) -> tuple[ChampionRef | None, str | None]:
    """The model under `alias`, if any, and a note when there is none to compare with.
    A champion of another FeatureSpec cannot be re-run on these slices: (None, note).
    Raises BundleError on a tampered bundle (never silently skipped)."""
    try:
        loaded = load_champion(model_name, alias, tracking_uri, expected_spec_hash=spec_hash)
    except ChampionLoadError:
        return None, None
    except BundleMismatchError as exc:
        return None, f"the champion cannot be re-run on these slices: {exc}"
    tags = loaded.metadata.tags
    end = tags.get(TRAIN_END_TAG)
    return (
        ChampionRef(
            version=loaded.version,
            label=f"{model_name} v{loaded.version}",
            bundle_dir=loaded.metadata.bundle_dir,
            bundle_sha256=loaded.metadata.bundle_sha256,
            model_key=tags.get(MODEL_KEY_TAG, ""),
            train_end_ns=int(end) if end else None,
        ),
        None,
    )
