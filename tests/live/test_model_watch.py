"""The champion swap: only verified models, only between decisions, else keep or observe."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from core.config.features import FeatureSpec
from core.config.live import LiveConfig
from features.stats import FrozenStats
from live.loop import LiveRun, ScaledClock, run_live
from live.model_watch import LoadedChampion, poll_model, same_stats
from live.predictor import Predictor
from live.recording import load_recording
from sim.replay_server import ReplayServerThread
from tests.live.support import SMALL_SPEC, ClipStats, CyclePolicy, after_lines


class VersionedSource:
    """A registry stand-in: `alias` names the current version; `broken` versions fail to load."""

    def __init__(
        self, alias: str | None, specs: dict[str, FeatureSpec], broken: set[str] | None = None
    ) -> None:
        self.alias = alias
        self.specs = specs
        self.broken = broken or set()
        self.unreachable = False
        self.loads: list[str] = []

    def resolve(self) -> str | None:
        if self.unreachable:
            raise ConnectionError("tracking server unreachable")
        return self.alias

    def load(self, version: str) -> LoadedChampion:
        self.loads.append(version)
        if version in self.broken:
            raise ValueError(f"bundle of {version}: sha256 mismatch")
        action = int(version[-1]) % 3
        return LoadedChampion(
            Predictor(CyclePolicy([action]), version), self.specs[version], ClipStats()
        )


def test_poll_model_rules() -> None:
    other = FeatureSpec(windows_s=(3, 5), return_horizons_s=(1, 2), window=4)
    src = VersionedSource("v1", {"v1": SMALL_SPEC, "v2": SMALL_SPEC, "v3": other}, broken={"v2"})
    assert poll_model(src, None).action == "swap"
    assert poll_model(src, "v1").reason == "unchanged"
    src.alias = "v2"
    out = poll_model(src, "v1")
    assert out.action == "keep" and "sha256 mismatch" in out.reason and "keeping v1" in out.reason
    src.alias = "v3"
    assert poll_model(src, "v1").action == "swap"
    assert poll_model(src, "v1", expected_spec_hash=SMALL_SPEC.spec_hash).action == "keep"
    src.unreachable = True
    assert poll_model(src, "v1").action == "keep"
    src.unreachable, src.alias = False, None
    assert poll_model(src, "v1").action == "observe"
    assert poll_model(src, None).action == "keep"


def test_loop_swaps_champion_between_decisions_and_refuses_a_broken_one(
    ws_capture: Path, tmp_path: Path
) -> None:
    msgs = load_recording(ws_capture)
    src = VersionedSource(
        "v1", {"v1": SMALL_SPEC, "v2": SMALL_SPEC, "v5": SMALL_SPEC}, broken={"v2"}
    )
    first = src.load("v1")
    out = tmp_path / "d.jsonl"

    def move(alias: str) -> None:
        src.alias = alias

    with ReplayServerThread(msgs, speed=10) as srv:
        after_lines(out, 2, lambda: move("v2"))
        after_lines(out, 6, lambda: move("v5"))
        cfg = LiveConfig(
            feed="replay", ws_url=srv.url, alias_poll_s=0.1, risk={"stale_after_s": 600}
        )
        summary = run_live(
            LiveRun(cfg, spec=SMALL_SPEC, duration_s=60, decisions_out=out, max_skew_s=None),
            first,
            clock=ScaledClock(msgs[0][0], 10),
            model_source=src,
            source_done=srv.finished,
            out=None,
        )
    recs = [json.loads(s) for s in out.read_text().splitlines()]
    versions = [r["model_version"] for r in recs]
    assert versions[0] == "v1" and versions[-1] == "v5"
    assert "v2" not in versions  # never swapped in: it failed verification
    assert versions == sorted(versions, key=lambda v: int(v[1:]))  # one swap, no flapping back
    assert all(
        r["action"] == int(r["model_version"][-1]) % 3 for r in recs
    )  # each decision by its own model
    assert any("v2 refused" in e for e in summary.model_events)
    assert any("swapped in v5" in e for e in summary.model_events)
    assert summary.model_version == "v5"


def test_swaps_keep_the_market_flowing(ws_capture: Path) -> None:
    """Dropping to observe-only keeps the book and features going; a new FeatureSpec asks
    for fresh partials (its new book starts empty) instead of stalling."""
    from live.loop import LiveSession

    msgs = load_recording(ws_capture)
    first = VersionedSource("v1", {"v1": SMALL_SPEC}).load("v1")
    s = LiveSession(SMALL_SPEC, first.stats, first.predictor, max_skew_s=None, stale_after_s=1e9)
    s.keep_history = True
    half = len(msgs) // 2
    for ts, m in msgs[:half]:
        s.on_message(ts, m)
    n_before = len(s.decisions)
    assert n_before > 0 and s.decisions[-1].model_version == "v1"
    s.swap_model(None, "alias removed")
    for ts, m in msgs[half:]:
        s.on_message(ts, m)
    after = s.decisions[n_before:]
    assert after and all(d.action is None and d.model_version is None for d in after)
    assert not s.pending_resubscribe
    other = FeatureSpec(windows_s=(3, 5), return_horizons_s=(1, 2), window=4)
    s.swap_model(VersionedSource("v7", {"v7": other}).load("v7"), "swapped in v7")
    assert s.spec == other and s.pending_resubscribe


class RegistryLike:
    """Resolves to registry version ids ("1") while its models carry labels ("name@v1"), as
    `RegistrySource` does; counts loads."""

    def __init__(self, version: str, stats: object) -> None:
        self.alias: str | None = version
        self.stats = stats
        self.loads = 0

    def resolve(self) -> str | None:
        return self.alias

    def load(self, version: str) -> LoadedChampion:
        self.loads += 1
        return LoadedChampion(
            Predictor(CyclePolicy([0]), f"chappie-xbtusd@v{version}"),
            SMALL_SPEC,
            self.stats,  # type: ignore[arg-type]
            version=version,
        )


def _fitted_stats(seed: int) -> FrozenStats:
    x = np.random.default_rng(seed).normal(size=(50, len(SMALL_SPEC.names)))
    return FrozenStats.fit(x, SMALL_SPEC.names, SMALL_SPEC.spec_hash, SMALL_SPEC.sigma_floor, [])


def test_poll_compares_registry_versions_not_labels() -> None:
    """The alias names "1"; the model in use is labelled "chappie-xbtusd@v1". Polling with
    the champion's version keeps it (no reload); only a moved alias loads."""
    src = RegistryLike("1", _fitted_stats(0))
    first = poll_model(src, None)
    assert first.action == "swap" and first.version == "1" and first.champion is not None
    assert first.champion.predictor.version == "chappie-xbtusd@v1"
    for _ in range(5):
        assert poll_model(src, first.version).reason == "unchanged"
    assert src.loads == 1
    src.alias = "2"
    moved = poll_model(src, first.version)
    assert moved.action == "swap" and moved.version == "2" and src.loads == 2


def test_same_stats_is_by_id_and_values() -> None:
    a, b = _fitted_stats(0), _fitted_stats(0)
    assert a is not b and same_stats(a, b)
    assert not same_stats(a, _fitted_stats(1))
    assert not same_stats(a, None) and not same_stats(ClipStats(), ClipStats())


def _bars_to_first_decision_after_swap(stats_after: FrozenStats, ws_capture: Path) -> int:
    from live.loop import LiveSession

    msgs = load_recording(ws_capture)
    src = RegistryLike("1", _fitted_stats(0))
    champ = src.load("1")
    s = LiveSession(SMALL_SPEC, champ.stats, champ.predictor, max_skew_s=None, stale_after_s=1e9)
    s.keep_history = True
    half = len(msgs) // 2
    for ts, m in msgs[:half]:
        s.on_message(ts, m)
    assert s.decisions and s.decisions[-1].model_version == "chappie-xbtusd@v1"
    src.stats, src.alias = stats_after, "2"
    out = poll_model(src, "1")
    assert out.action == "swap" and out.champion is not None
    bars = s.bars
    s.swap_model(out.champion, out.reason)
    for ts, m in msgs[half:]:
        s.on_message(ts, m)
        if s.decisions[-1].model_version == "chappie-xbtusd@v2":
            return s.bars - bars
    raise AssertionError("the new model never decided")


def test_new_version_with_same_spec_and_stats_keeps_the_window(ws_capture: Path) -> None:
    """Same FeatureSpec, same frozen stats: the new version decides on the very next bar.
    New stats: the window refills first (SMALL_SPEC.window bars)."""
    assert _bars_to_first_decision_after_swap(_fitted_stats(0), ws_capture) == 1
    assert _bars_to_first_decision_after_swap(_fitted_stats(5), ws_capture) >= SMALL_SPEC.window
