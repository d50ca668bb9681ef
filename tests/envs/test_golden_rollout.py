"""A recorded rollout, pinned bit for bit: observations, rewards, done flags and every
`info` value (with its Python type) for fixed seeds, configs and action draws.

The golden file `golden_rollouts.json` was recorded from the env before its step was
optimised; any change to the accounting, fills, rewards, observation or info shows up
here as the first step that differs. The slice is dated 2021-07-22, so the default dated
fee (core.fees) charges BitMEX's maker -0.025 % / taker 0.075 % of then. Re-recorded once
when the info gained maker/taker volume and fees: every value recorded before was checked
bit-identical first. Re-recorded for #17's lot rounding: with the lot off every step
record of every scenario was first checked identical to the recording before it (kept
as `digests_no_lot`). Re-recorded when the reward breakdown left the default info
(`reward_terms_in_info`, #17): every step record of every scenario, with and without
the lot, was first checked equal to the one before with its `reward_terms` key removed,
and identical with reward_terms_in_info=True; `digests_reward_terms` (the terms in the
info) are the `digests` recorded before, `digests_no_lot` stay recorded with the terms.
Re-record only for an intended behaviour change:

    .venv/bin/python -m tests.envs.test_golden_rollout --record
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core.instrument import InstrumentSpec
from envs.management import ManagementEnv
from envs.rewards import TERM_NAMES
from tests.envs.conftest import NAMES, SPEC, SliceFiles, random_market, write_slice, write_stats

GOLDEN = Path(__file__).with_name("golden_rollouts.json")
BAR_NS = 120_000_000_000  # 2-minute bars: 400 bars span 13 h (hour penalties, funding)
# BitMEX's XBTUSDT: a contract is 1e-6 XBT, orders in lots of 1000 (#17 rounds to them)
LINEAR = InstrumentSpec(
    symbol="XBTUSDT", is_inverse=False, settle_currency="USDt", multiplier=1e-6, lot_size=1000
)

# name -> env config, reset options, action probabilities (default 50 % hold)
SCENARIOS: dict[str, dict[str, Any]] = {
    "train_default": {"cfg": {"mean_steps_per_episode": 120}, "options": None},
    "short_hour_limits": {
        "cfg": {
            "mean_steps_per_episode": 100,
            "reward": {"close_position_hours": 0.1, "open_position_hours": 0.2},
        },
        "options": None,
    },
    "eval_full_flatten": {"cfg": {"window": 4}, "options": {"full": True, "start": 150}},
    "touch_funding_skip_random_init": {
        "cfg": {
            "window": 8,
            "fill_model": "touch",
            "funding": True,
            "funding_rate": 0.0003,
            # recorded when funding was settled at 00/08/16 UTC; XBTUSD's own 04/12/20 UTC
            # anchor (the default since #17) is tested in tests/envs/test_funding.py
            "instrument": InstrumentSpec(funding_offset_hours=0.0),
            "step_skip": 3,
            "random_initial_position": True,
            "std_steps_per_episode": 20.0,
            "mean_steps_per_episode": 60,
            "stake_fraction": 0.25,
        },
        "options": None,
    },
    "linear_no_roll": {
        "cfg": {
            "window": 3,
            "roll_orders": False,
            "instrument": LINEAR,
            "fees": {"maker": 0.0002, "taker": 0.0005},
            "initial_equity_xbt": 10_000.0,
            "mean_steps_per_episode": 200,
            "random_start": False,
        },
        "options": None,
    },
    "mostly_hold": {
        "cfg": {"mean_steps_per_episode": 150},
        "options": None,
        "p": [0.94, 0.03, 0.03],
    },
}
STEPS = 300


def _files(root: Path) -> SliceFiles:
    m = random_market(400, seed=5)
    path = write_slice(root / "slices" / "fold00-train.parquet", **m, bar_ns=BAR_NS)
    stats = write_stats(
        root / "stats" / "s0",
        NAMES,
        m["features"].mean(axis=0),
        m["features"].std(axis=0),
        SPEC.spec_hash,
    )
    return SliceFiles(path, stats)


def _canon(value: Any) -> Any:
    """JSON-able, type-tagged form of an info value (floats exact via repr)."""
    if isinstance(value, dict):
        return {k: _canon(value[k]) for k in sorted(value)}
    if isinstance(value, list | tuple):
        return [_canon(v) for v in value]
    return [type(value).__name__, repr(value)]


def _step_record(obs: np.ndarray, reward: Any, term: Any, trunc: Any, info: dict) -> str:
    body = json.dumps(
        {
            "obs": [str(obs.dtype), list(obs.shape), hashlib.sha256(obs.tobytes()).hexdigest()],
            "reward": _canon(reward),
            "done": _canon([term, trunc]),
            "info": _canon(info),
        },
        sort_keys=True,
    )
    return body


def record_rollout(
    files: SliceFiles, name: str, lot: bool = True, terms: bool = False
) -> list[str]:
    """Per step (reset records included), the canonical JSON of what the env returned.
    lot=False: orders not rounded to the instrument's lot (the broker's lot 0; no config
    can ask for it), the rules before #17 added the rounding. terms: the env built with
    reward_terms_in_info (the info as it was before the breakdown became opt-in)."""
    spec = SCENARIOS[name]
    env = ManagementEnv(files.slice_path, files.stats_dir, spec["cfg"], reward_terms_in_info=terms)
    if not lot:
        env._broker["terms"]["lot"] = 0.0
    rng = np.random.default_rng(17)
    actions = rng.choice(3, size=STEPS, p=spec.get("p", [0.5, 0.25, 0.25]))
    obs, info = env.reset(seed=11, options=spec["options"])
    out = [_step_record(obs, None, None, None, info)]
    for a in actions:
        obs, r, term, trunc, info = env.step(a)
        out.append(_step_record(obs, r, term, trunc, info))
        if term or trunc:
            obs, info = env.reset(options=spec["options"])
            out.append(_step_record(obs, None, None, None, info))
    return out


def _digest(record: str) -> str:
    return hashlib.sha256(record.encode()).hexdigest()[:16]


def _terms_fired(recs: list[str]) -> dict[str, int]:
    """How many steps had each reward term non-zero."""
    fired: dict[str, int] = {}
    for r in recs:
        for k, v in json.loads(r)["info"]["reward_terms"].items():
            fired[k] = fired.get(k, 0) + (float(v[1]) != 0.0)
    return fired


def record_all() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        files = _files(Path(tmp))
        golden: dict[str, Any] = {}
        for name in SCENARIOS:
            recs = record_rollout(files, name)
            with_terms = record_rollout(files, name, terms=True)
            no_lot = record_rollout(files, name, lot=False, terms=True)
            golden[name] = {
                "digests": [_digest(r) for r in recs],
                "digests_reward_terms": [_digest(r) for r in with_terms],
                "digests_no_lot": [_digest(r) for r in no_lot],
                "last": json.loads(recs[-1]),
                "n_trades": sum(len(json.loads(r)["info"]["trades"]) for r in recs),
                "terms_fired": _terms_fired(with_terms),
            }
    return golden


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_rollout_matches_recording(tmp_path: Path, name: str) -> None:
    golden = json.loads(GOLDEN.read_text())[name]
    recs = record_rollout(_files(tmp_path), name)
    got = [_digest(r) for r in recs]
    for k, (g, want) in enumerate(zip(got, golden["digests"], strict=False)):
        assert g == want, f"{name}: step record {k} differs from the recording: {recs[k]}"
    assert len(got) == len(golden["digests"])
    assert json.loads(recs[-1]) == golden["last"]


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_with_reward_terms_in_info_every_record_is_the_one_before(
    tmp_path: Path, name: str
) -> None:
    """reward_terms_in_info=True gives the info as it was when the reward breakdown was in
    every info: each step record is the one recorded then, reward_terms included; and
    every record of the default env is that record without its reward_terms."""
    golden = json.loads(GOLDEN.read_text())[name]
    files = _files(tmp_path)
    with_terms = record_rollout(files, name, terms=True)
    assert [_digest(r) for r in with_terms] == golden["digests_reward_terms"]
    default = record_rollout(files, name)
    assert len(default) == len(with_terms)
    for k, (off, on) in enumerate(zip(default, with_terms, strict=True)):
        full = json.loads(on)
        assert set(full["info"].pop("reward_terms")) == {*TERM_NAMES, "total"}
        assert json.loads(off) == full, f"{name}: step record {k}"


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_without_lot_rounding_the_rules_are_those_before_17(tmp_path: Path, name: str) -> None:
    """touch / trade_through with zero latency are the broker's rules before #17 but for
    the lot rounding: with it off, every step record is the one recorded before #17 (the
    digests of golden_rollouts.json as it was then, checked identical when #17 re-recorded
    it; linear_no_roll's instrument changed then to XBTUSDT's real contract, its
    recording was made with the lot off). Recorded with the reward terms in the info,
    as they were then."""
    golden = json.loads(GOLDEN.read_text())[name]["digests_no_lot"]
    got = [_digest(r) for r in record_rollout(_files(tmp_path), name, lot=False, terms=True)]
    assert got == golden


def test_recording_exercises_fills_and_penalties() -> None:
    """The pinned rollouts are not trivial: trades close and every penalty term fires."""
    golden = json.loads(GOLDEN.read_text())
    assert all(g["n_trades"] > 0 for g in golden.values())
    for term in (
        "unrealized",
        "realized",
        "fees",
        "funding",
        "open_penalty",
        "close_penalty",
        "terminal_penalty",
    ):
        assert sum(g["terms_fired"][term] for g in golden.values()) > 0, term


if __name__ == "__main__":
    if "--record" in sys.argv:
        GOLDEN.write_text(json.dumps(record_all(), indent=0) + "\n")
        print(f"wrote {GOLDEN}")
