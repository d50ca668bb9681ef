"""Gates-driven promotion and rollback of registry aliases.

Rules (DESIGN.md "Registry aliases"):
- `champion` moves only here, and only for a candidate whose decision is `promote`
  (evaluation.json `best`); the champion it replaces gets `previous-champion`.
- When no candidate passed, the best non-passing candidate (`challenger`) is registered
  and gets the `challenger` alias; `champion` does not move.
- `rollback` points `champion` back at `previous-champion` (and `previous-champion` at
  the champion before that, recorded on each version as `replaced_version`).
- Every registered version carries tags: spec_hash, stats_id, decision, every gate, the
  candidate and sweep ids, config fingerprint, code version, bundle sha256; every alias
  move adds who (user@host), when (UTC ISO) and why.
- A candidate is registered once per (models, verdict): re-running the nightly on
  unchanged data, config and code finds the version it registered before, registers
  nothing and moves no alias, and the result says so (`unchanged`).

`plan_promotion` is pure; `promote` / `rollback` are the orchestration on top of the
MLflow store adapter (`registry.store`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import json
import socket
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from core.config.features import FeatureSpec
from core.config.registry import RegistryConfig
from core.hashing import fingerprint
from core.jsontypes import JsonObject
from training.evaluation_record import CandidateEvaluation, Evaluation

Action = Literal["promote", "challenger", "none"]
MODEL_KEY_TAG = "model_key"  # version tag: the candidate's fold models' identity
TRAIN_END_TAG = "train_end_ns"  # version tag: last bar of its training slices


class PromotionError(RuntimeError):
    """evaluation.json is inconsistent, or an alias operation is impossible."""


class _Outcome(BaseModel):
    """Base of what promotion and rollback return: immutable, unknown keys are an error,
    dumped as JSON with the keys that were set (`chappie promote --json`-style output, the
    nightly's outcome record): an optional key (`registered`, `unchanged`) appears only
    when the step that knows it set it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def to_json(self) -> JsonObject:
        """The JSON-able dict of this value (the keys that were set)."""
        return self.model_dump(mode="json", exclude_unset=True)


class PromotionPlan(_Outcome):
    """What a promotion will do (pure result of `plan_promotion`)."""

    action: Action
    candidate_id: str | None
    decision: str
    alias: str | None
    alias_from: str | None  # version the alias points at now (None: unset)
    demote_to_previous: str | None  # champion version that becomes previous-champion
    reasons: tuple[str, ...]


class PromotionResult(_Outcome):
    """What `promote` did (or, with `dry_run`, would do): the plan, the model version it
    registered or found (None: none yet, or nothing to register) and the aliases after.

    `registered` is set once a candidate was registered or found (True: a new version);
    `unchanged` is set (True) when the same models with the same verdict already held the
    alias: nothing was registered and no alias moved."""

    decision: str
    action: Action
    model_name: str
    candidate_id: str | None
    version: str | None
    aliases: dict[str, str]  # alias -> version
    reasons: tuple[str, ...]
    dry_run: bool
    plan: PromotionPlan
    registered: bool | None = None
    unchanged: bool = False


class RollbackResult(_Outcome):
    """What `rollback` did (or would do: `rollback_plan`, `dry_run`): `champion` moves from
    `from_version` (None: unset) back to `to_version`; `aliases` after the move."""

    model_name: str
    from_version: str | None
    to_version: str
    aliases: dict[str, str]  # alias -> version
    dry_run: bool
    reasons: tuple[str, ...]


@contextlib.contextmanager
def registry_lock(tracking_uri: str) -> Iterator[None]:
    """Serialise promotions and rollbacks on one SQLite store (a lock file beside the
    database), so two concurrent runs cannot interleave alias moves. Other stores: no-op
    (a server serialises single alias writes; run one promotion at a time there)."""
    # slow: mlflow (~3 s); rollback plans from SQLite without it (registry.sqlite_aliases)
    from registry.tracking import file_lock, sqlite_path

    db = sqlite_path(tracking_uri)
    if db is None:
        yield
        return
    with file_lock(db.with_name(db.name + ".promote.lock")):
        yield


def who() -> str:
    """user@host of the process making a change."""
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in some containers
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def utc_now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def read_evaluation(path: str | Path) -> Evaluation:
    """Read evaluation.json through its parser (`Evaluation.read`: promotion needs
    `sweep_run_id`, `candidates`, `best`, `challenger`). Raises PromotionError."""
    path = Path(path)
    if not path.is_file():
        raise PromotionError(f"evaluation file not found: {path}")
    try:
        return Evaluation.read(path)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'document'}: {e['msg']}"
            for e in exc.errors()[:5]
        )
        raise PromotionError(f"{path} is not a valid evaluation: {problems}") from exc


def find_candidate(evaluation: Evaluation, candidate_id: str) -> CandidateEvaluation:
    cand = evaluation.candidate(candidate_id)
    if cand is None:
        raise PromotionError(
            f"candidate {candidate_id!r} named in evaluation.json is not among its candidates"
        )
    return cand


def _recorded(record: BaseModel, name: str) -> Any:
    """A field's value when the record set it (written or read), else None: a tag is
    written only for what the evaluation recorded."""
    return getattr(record, name) if name in record.model_fields_set else None


def plan_promotion(
    evaluation: Evaluation, cfg: RegistryConfig, current: Mapping[str, str]
) -> PromotionPlan:
    """Decide what promotion does, from evaluation.json and the current aliases. Pure.

    - `best` set: it must have decision "promote" -> champion moves to it; the current
      champion (if any) becomes previous-champion.
    - else `challenger` set: it must not have decision "promote" -> challenger moves.
    - else nothing changes.
    Raises PromotionError when `best` did not pass or a named candidate is missing.
    """
    best, challenger = evaluation.best, evaluation.challenger
    if best:
        cand = find_candidate(evaluation, best)
        if cand.decision != "promote":
            raise PromotionError(
                f"evaluation.json names {best!r} as best, but its decision is "
                f"{cand.decision!r}; only a promote decision moves {cfg.champion_alias!r}"
            )
        old = current.get(cfg.champion_alias)
        reasons = (f"{best}: decision promote", *[str(r) for r in cand.reasons])
        return PromotionPlan(
            action="promote",
            candidate_id=best,
            decision="promote",
            alias=cfg.champion_alias,
            alias_from=old,
            demote_to_previous=old,
            reasons=reasons,
        )
    if challenger:
        cand = find_candidate(evaluation, challenger)
        if cand.decision == "promote":
            raise PromotionError(f"challenger {challenger!r} has decision promote but is not best")
        reasons = (
            f"no candidate passed the gates; {challenger} is the best that did not "
            f"(decision {cand.decision}); {cfg.champion_alias!r} unchanged",
            *[str(r) for r in cand.reasons],
        )
        return PromotionPlan(
            action="challenger",
            candidate_id=challenger,
            decision=str(cand.decision),
            alias=cfg.challenger_alias,
            alias_from=current.get(cfg.challenger_alias),
            demote_to_previous=None,
            reasons=reasons,
        )
    return PromotionPlan(
        action="none",
        candidate_id=None,
        decision="none",
        alias=None,
        alias_from=None,
        demote_to_previous=None,
        reasons=("no candidates to register; aliases unchanged",),
    )


def version_tags_for(evaluation: Evaluation, cand: CandidateEvaluation) -> JsonObject:
    """Tags of a newly registered version, as JSON values (registry.store writes each as
    a string; gates flattened by registry.store.gate_tags). Pure."""
    # slow: mlflow (~3 s); rollback plans from SQLite without it (registry.sqlite_aliases)
    from registry.store import gate_tags

    totals = cand.test_totals.to_json() if cand.test_totals is not None else {}
    over = evaluation.overfitting.to_json() if evaluation.overfitting is not None else {}
    tags: JsonObject = {
        "candidate_id": cand.candidate_id,
        "candidate_key": candidate_key(evaluation, cand),
        "sweep_run_id": evaluation.sweep_run_id,
        "training_run_id": cand.run_id or "",
        "decision": cand.decision,
        "reasons": list(cand.reasons),
        "config_fingerprint": evaluation.config_fingerprint,
        "trial": _recorded(cand, "trial"),
        MODEL_KEY_TAG: cand.model_key or None,
        TRAIN_END_TAG: cand.train_end_ns,
        "seed": _recorded(cand, "seed"),
        "timesteps": _recorded(cand, "timesteps"),
        **{f"test.{k}": v for k, v in totals.items()},
        **{f"overfitting.{k}": v for k, v in over.items()},
        **gate_tags(_gates_json(cand)),
    }
    return {k: v for k, v in tags.items() if v is not None}


def _gates_json(cand: CandidateEvaluation) -> dict[str, JsonObject]:
    return {name: g.to_json() for name, g in cand.gates.items()}


def candidate_key(evaluation: Evaluation, cand: CandidateEvaluation) -> str:
    """Identity of a registration: the candidate's models (`model_key`, their bytes;
    older evaluations without one: sweep and candidate id) and a hash of its decision and
    gate results. The same models with the same verdict reuse their version, whichever
    sweep evaluated them; a re-evaluation that changed the verdict registers a new version
    (whose bundle carries the new gates). Pure."""
    verdict = fingerprint({"decision": cand.decision, "gates": _gates_json(cand)})
    who_ = cand.model_key or f"{evaluation.sweep_run_id}/{cand.candidate_id}"
    return f"{who_}/{verdict[:12]}"


# --------------------------------------------------------------------------- orchestration


def _register_candidate(
    evaluation: Evaluation, cand: CandidateEvaluation, cfg: RegistryConfig, feature_spec: Any = None
) -> tuple[str, bool]:
    """Build, log and register the candidate's bundle, or find the version that already
    holds the same models with the same verdict. Returns (version, newly registered)."""
    # slow: mlflow (~3 s), numpy (~0.25 s); rollback plans from SQLite without them
    from features.stats import FrozenStats
    from registry import store, tracking
    from registry.bundle import build_bundle, verify_bundle

    key = candidate_key(evaluation, cand)
    existing = store.find_version_by_tag(cfg.model_name, "candidate_key", key)
    if existing is not None:
        return existing, False
    model_zip, stats_dir = cand.model_zip, cand.stats_dir
    for field_name, value in (("model_zip", model_zip), ("stats_dir", stats_dir)):
        if not value or not Path(value).exists():
            raise PromotionError(f"candidate {cand.candidate_id}: {field_name} {value!r} not found")
    assert model_zip is not None and stats_dir is not None  # checked above
    stats = FrozenStats.load(stats_dir)
    spec = _feature_spec(evaluation, cand, stats.spec_hash, feature_spec)
    if evaluation.spec_hash and stats.spec_hash != evaluation.spec_hash:
        raise PromotionError(
            f"stats {stats.stats_id} have spec hash {stats.spec_hash}, evaluation.json says {evaluation.spec_hash}"
        )
    experiment = str(evaluation.experiment or cfg.experiment)
    parent = evaluation.sweep_run_id
    # Not nested under the sweep (its children are the training tasks); linked by tag.
    tags = {
        "chappie.step": "register",
        "candidate_id": cand.candidate_id,
        "sweep_run_id": parent,
        "training_run_id": str(cand.run_id or ""),
    }
    train_slices = [s.model_dump() for s in cand.train_slices]
    test_slices = [s.model_dump() for s in cand.test_slices]
    run_id = tracking.start_parent_run(experiment, f"register-{cand.candidate_id}", {}, tags)
    try:
        with tempfile.TemporaryDirectory(prefix="chappie-bundle-") as tmp:
            bundle = build_bundle(
                Path(tmp) / "bundle",
                model_zip=model_zip,
                stats_dir=stats_dir,
                feature_spec=spec,
                env_config=cand.env_config or {"window": spec.window},
                reward_config=cand.reward_config,
                ppo_config=cand.ppo_config,
                config_fingerprint=evaluation.config_fingerprint or "",
                candidate=cand.to_json(),
                train_slices=train_slices,
                test_slices=test_slices,
                decision=cand.decision,
                reasons=cand.reasons,
                gates=_gates_json(cand),
                lineage={
                    "sweep_run_id": evaluation.sweep_run_id,
                    "training_run_id": cand.run_id,
                    "overfitting": (
                        evaluation.overfitting.to_json()
                        if evaluation.overfitting is not None
                        else None
                    ),
                },
            )
            info = verify_bundle(bundle)
            tracking.log_slice_datasets(run_id, train_slices, "train")
            tracking.log_slice_datasets(run_id, test_slices, "test")
            model_info = store.log_bundle_model(bundle, run_id, model_zip)
            tags_v = version_tags_for(evaluation, cand)
            tags_v |= {
                "spec_hash": info.spec_hash,
                "stats_id": info.stats_id,
                "bundle_sha256": info.sha256,
                "code_version": json.loads((bundle / "lineage.json").read_text())["code_version"],
                "registered_by": who(),
                "registered_at": utc_now_iso(),
            }
            # the version's source run is the run that trained the model (the bundle itself
            # is logged in the register run, which leaves the training run's times alone)
            source_run = str(cand.run_id or run_id)
            version = store.register_version(
                model_info.model_uri, cfg.model_name, source_run, tags_v
            )
        tracking.set_tags(run_id, {"registered_version": version, "model_name": cfg.model_name})
    except BaseException:
        tracking.end_run(run_id, "FAILED")
        raise
    tracking.end_run(run_id, "FINISHED")
    return version, True


def _feature_spec(
    evaluation: Evaluation, cand: CandidateEvaluation, spec_hash: str, given: Any = None
) -> Any:
    """The FeatureSpec the candidate was trained on: `given` (the experiment config's), else
    `feature_spec` in the candidate or evaluation.json, else the default spec with the env
    window. It must hash to the stats' spec hash. Raises PromotionError."""
    raw = given if given is not None else cand.feature_spec or evaluation.feature_spec
    if raw is not None:
        spec = raw if isinstance(raw, FeatureSpec) else FeatureSpec.model_validate(raw)
    else:
        window = (cand.env_config or {}).get("window", FeatureSpec().window)
        spec = FeatureSpec(window=int(window) if isinstance(window, (int, float, str)) else window)
    if spec.spec_hash != spec_hash:
        raise PromotionError(
            f"cannot reconstruct the FeatureSpec of candidate {cand.candidate_id}: "
            f"spec hash {spec.spec_hash} != stats spec hash {spec_hash}; add 'feature_spec' to evaluation.json"
        )
    return spec


def promote(
    evaluation_path: str | Path,
    cfg: RegistryConfig,
    tracking_uri: str,
    dry_run: bool = False,
    feature_spec: Any = None,
) -> PromotionResult:
    """Register the candidate chosen by evaluation.json and move its alias.

    `feature_spec`: the experiment's FeatureSpec (or its dict); optional when
    evaluation.json carries `feature_spec` or the spec is the default with the env window.

    Returns the PromotionResult. With `dry_run` nothing is written (no run, no version, no
    alias); `version` is the existing version of that candidate or None.
    Raises PromotionError on an inconsistent evaluation.json or missing model files.
    """
    # slow: mlflow (~3 s); rollback plans from SQLite without it (registry.sqlite_aliases)
    from registry import tracking

    evaluation = read_evaluation(evaluation_path)
    tracking.configure(tracking_uri)
    with registry_lock(tracking_uri):
        return _promote(evaluation, cfg, dry_run, feature_spec)


def _promote(
    evaluation: Evaluation, cfg: RegistryConfig, dry_run: bool, feature_spec: Any
) -> PromotionResult:
    # slow: mlflow (~3 s); rollback plans from SQLite without it (registry.sqlite_aliases)
    from registry import store

    current = store.aliases(cfg.model_name)
    plan = plan_promotion(evaluation, cfg, current)
    result = PromotionResult(
        decision=plan.decision,
        action=plan.action,
        model_name=cfg.model_name,
        candidate_id=plan.candidate_id,
        version=None,
        aliases=dict(current),
        reasons=plan.reasons,
        dry_run=dry_run,
        plan=plan,
    )
    if plan.action == "none" or plan.candidate_id is None:
        return result
    cand = find_candidate(evaluation, plan.candidate_id)
    if dry_run:
        found = store.find_version_by_tag(
            cfg.model_name, "candidate_key", candidate_key(evaluation, cand)
        )
        return result.model_copy(update={"version": found})
    version, new = _register_candidate(evaluation, cand, cfg, feature_spec)
    if not new and current.get(str(plan.alias)) == version:
        why = (
            f"{plan.candidate_id}: the same models with the same verdict are already "
            f"version {version} under alias {plan.alias!r}: nothing registered, no alias moved"
        )
        return result.model_copy(
            update={
                "version": version,
                "registered": new,
                "unchanged": True,
                "reasons": (why, *plan.reasons),
            }
        )
    stamp = {"by": who(), "at": utc_now_iso(), "why": "; ".join(plan.reasons)}
    if plan.action == "promote":
        old = plan.alias_from
        if old != version:
            if old is not None:
                store.set_alias(cfg.model_name, cfg.previous_alias, old)
            store.set_alias(cfg.model_name, cfg.champion_alias, version)
            store.set_version_tags(
                cfg.model_name,
                version,
                {
                    "promoted_by": stamp["by"],
                    "promoted_at": stamp["at"],
                    "promotion_reason": stamp["why"],
                    "replaced_version": old or "",
                },
            )
    else:
        store.set_alias(cfg.model_name, cfg.challenger_alias, version)
        store.set_version_tags(
            cfg.model_name,
            version,
            {
                "challenger_by": stamp["by"],
                "challenger_at": stamp["at"],
                "challenger_reason": stamp["why"],
            },
        )
    return result.model_copy(
        update={"version": version, "registered": new, "aliases": store.aliases(cfg.model_name)}
    )


def rollback(
    cfg: RegistryConfig, tracking_uri: str, dry_run: bool = False, reason: str = "manual rollback"
) -> RollbackResult:
    """Point `champion` back at `previous-champion`.

    Afterwards `previous-champion` points at the version the restored champion had
    replaced (its `replaced_version` tag), or is removed when there is none. The rolled-
    back version is tagged `rolled_back_by/at/reason`. Returns the RollbackResult. Raises
    PromotionError when there is no previous champion.
    """
    # slow: mlflow (~3 s); rollback plans from SQLite without it (registry.sqlite_aliases)
    from registry import tracking

    tracking.configure(tracking_uri)
    with registry_lock(tracking_uri):
        return _rollback(cfg, dry_run, reason)


def rollback_plan(
    cfg: RegistryConfig, current: Mapping[str, str], reason: str = "manual rollback"
) -> RollbackResult:
    """What a rollback would do given the model's aliases now (alias -> version): the
    dry-run result of `rollback`. Pure. Raises PromotionError when there is no previous
    champion to roll back to."""
    current = dict(current)
    prev = current.get(cfg.previous_alias)
    champ = current.get(cfg.champion_alias)
    if prev is None:
        raise PromotionError(
            f"model {cfg.model_name!r} has no {cfg.previous_alias!r} alias: nothing to roll back to "
            f"(a rollback needs a promotion that replaced a champion; aliases now: {current})"
        )
    return RollbackResult(
        model_name=cfg.model_name,
        from_version=champ,
        to_version=prev,
        aliases=current,
        dry_run=True,
        reasons=(reason,),
    )


def _rollback(cfg: RegistryConfig, dry_run: bool, reason: str) -> RollbackResult:
    # slow: mlflow (~3 s); rollback plans from SQLite without it (registry.sqlite_aliases)
    from registry import store

    current = store.aliases(cfg.model_name)
    plan = rollback_plan(cfg, current, reason)
    champ, prev = plan.from_version, plan.to_version
    if dry_run:
        return plan
    before = store.version_tags(cfg.model_name, prev).get("replaced_version") or None
    store.set_alias(cfg.model_name, cfg.champion_alias, prev)
    if before and before not in (prev, champ):
        store.set_alias(cfg.model_name, cfg.previous_alias, before)
    else:
        store.delete_alias(cfg.model_name, cfg.previous_alias)
    by, at = who(), utc_now_iso()
    if champ is not None:
        store.set_version_tags(
            cfg.model_name,
            champ,
            {"rolled_back_by": by, "rolled_back_at": at, "rolled_back_reason": reason},
        )
    store.set_version_tags(
        cfg.model_name, prev, {"restored_by": by, "restored_at": at, "restored_reason": reason}
    )
    return plan.model_copy(update={"dry_run": False, "aliases": store.aliases(cfg.model_name)})
