"""Features day by day (#19): bars sampled one event day at a time with the sampler's
state carried over, and slices staged part by part with each feature's look-back
carried over, give bit for bit what one pass over the whole history gives; a new day
samples that day only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from bench.tardis_days import write_days
from book import sampler as sampler_mod
from book.sampler import ResumableSampler, sample_bars
from core import schema as S
from core.clock import NS_PER_DAY, parse_day
from core.config.features import FeaturesConfig, WalkForwardConfig
from core.config.ingest import IngestConfig
from core.paths import DataLayout
from features import bars as bars_mod
from features.bars import bar_day_keys, build_bars, iter_bars, read_bars, write_bars
from features.publish import stage_slices
from ingest.events import read_events
from tests.features.strategies import make_bars
from tests.features.test_slices import CFG, SPEC
from tests.ingest_runs import run_ingest


def _index(folder: Path, bars: pl.DataFrame, sizes: list[int]) -> Path:
    """A bars index over `bars` cut into parts of `sizes` rows (cycled)."""
    folder.mkdir(parents=True, exist_ok=True)
    parts, start, k = [], 0, 0
    while start < bars.height:
        part = bars.slice(start, sizes[k % len(sizes)])
        name = f"part-{k:04d}.arrow"
        write_bars(folder / name, part)
        ts = part[S.TS]
        parts.append({"file": name, "rows": part.height, "ts_first": ts[0], "ts_last": ts[-1]})
        start += part.height
        k += 1
    path = folder / "bars-test.json"
    path.write_text(json.dumps({"parts": parts}))
    return path


@pytest.mark.parametrize(
    "sizes",
    [[7], [61], [62], [7, 61, 62, 500], [1000]],  # the longest look-back is 61 bars
    ids=["shorter", "equal", "longer", "mixed", "long"],
)
def test_staging_part_by_part_equals_one_pass(tmp_path: Path, sizes: list[int]) -> None:
    assert SPEC.lookback_bars == 61
    bars = make_bars(3600, 5, SPEC, p_not_ok=0.002, p_trade=0.4, first_trade_bar=30)
    single = tmp_path / "bars.arrow"
    write_bars(single, bars)
    one = stage_slices(str(single), CFG, str(tmp_path / "one"))
    index = _index(tmp_path / "parts", bars, sizes)
    assert read_bars(index).equals(bars)
    many = stage_slices(str(index), CFG, str(tmp_path / "many"))
    assert [s.model_dump() for s in many.slices] == [s.model_dump() for s in one.slices]
    assert many.stats == one.stats and many.folds == one.folds
    assert sorted(many.segments) == sorted(one.segments)
    for s in one.slices:  # the staged rows themselves
        assert many.frame(s.slice_id).equals(one.frame(s.slice_id))
    assert not (tmp_path / "many" / ".ready").exists()


def test_resumable_sampler_equals_one_pass_across_days_and_a_gap() -> None:
    bars_spec = SPEC
    t0 = parse_day("2024-01-01")
    rng = np.random.default_rng(3)

    def day(k: int, hours: float) -> tuple[int, pl.DataFrame, pl.DataFrame]:
        start = t0 + k * NS_PER_DAY
        n = 4000
        ts = np.sort(start + rng.integers(0, int(hours * 3600e9), n))
        side = np.where(np.arange(n) % 2 == 0, 1, -1).astype(np.int8)
        px = np.where(side > 0, 1000 - rng.integers(1, 20, n), 1000 + rng.integers(0, 20, n))
        snap = np.zeros(n, dtype=bool)
        snap[:2] = k == 0
        px[:2] = (999, 1000)
        book = pl.DataFrame(
            {
                S.TS_EVENT: ts,
                S.TS_RECV: ts,
                S.SIDE: side,
                S.PRICE_TICKS: px.astype(np.int64),
                S.SIZE: rng.integers(1, 50, n),
                S.IS_SNAPSHOT: snap,
            }
        )
        tts = np.sort(start + rng.integers(0, int(hours * 3600e9), 300))
        trades = pl.DataFrame(
            {
                S.TS_EVENT: tts,
                S.TS_RECV: tts,
                S.SIDE: np.where(rng.random(300) < 0.5, 1, -1).astype(np.int8),
                S.PRICE_TICKS: np.full(300, 1000, dtype=np.int64),
                S.SIZE: rng.integers(1, 9, 300),
            }
        )
        return start, book, trades

    days = [day(0, 2.0), day(2, 1.0), day(3, 23.999)]  # day 1 has no events
    one = sample_bars(
        pl.concat([b for _, b, _ in days]), pl.concat([t for _, _, t in days]), bars_spec
    )
    s = ResumableSampler(bars_spec)
    parts = []
    for start, b, t in days:
        s = ResumableSampler.from_state(bars_spec, s.state())  # as across processes
        parts.append(s.feed(b, t, start + NS_PER_DAY - 1))
    last = max(int(days[-1][1][S.TS_RECV][-1]), int(days[-1][2][S.TS_RECV][-1]))
    close = -(-last // bars_spec.interval_ns) * bars_spec.interval_ns
    parts[-1] = parts[-1].filter(pl.col(S.TS) <= close)
    parts.append(s.finish(last))
    assert pl.concat(parts).equals(one) and one.height > 2 * 86_400
    with pytest.raises(ValueError, match="older"):
        s.feed(days[0][1], days[0][2], 0)


def test_build_bars_day_by_day_and_a_new_day_samples_that_day_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefect_harness: None
) -> None:
    raw = tmp_path / "raw"
    files = write_days(raw, 3, "2021-07-20", seed=2, book_rows=15_000, trades=600)
    cfg = FeaturesConfig(
        walk_forward=WalkForwardConfig(train_hours=12, test_hours=3, step_hours=3, n_folds=3)
    )
    data = DataLayout(tmp_path / "data")
    run_ingest(IngestConfig(source="tardis", paths=tuple(map(str, files[:4]))), data.root)
    first = build_bars(cfg, str(data.root), "XBTUSD")
    fed: list[int] = []  # the trades of each day fed
    feed = ResumableSampler.feed_stream

    def counting(self, pieces, trades, close_until):  # type: ignore[no-untyped-def]
        fed.append(trades.height)
        return feed(self, pieces, trades, close_until)

    monkeypatch.setattr(sampler_mod.ResumableSampler, "feed_stream", counting)
    run_ingest(IngestConfig(source="tardis", paths=tuple(map(str, files[4:]))), data.root)
    day_dir = Path(first.bars_path).parent / "days"
    before = {p.name: p.stat().st_mtime_ns for p in day_dir.iterdir()}
    second = build_bars(cfg, str(data.root), "XBTUSD")
    assert len(fed) == 1  # the new day only
    assert {p.name: p.stat().st_mtime_ns for p in day_dir.iterdir() if p.name in before} == before
    book, trades = read_events(data, "XBTUSD")
    assert read_bars(second.bars_path).equals(sample_bars(book, trades, cfg.spec))
    assert read_bars(first.bars_path).height < read_bars(second.bars_path).height
    assert len(list(iter_bars(second.bars_path))) >= 3
    # a fresh store gives the same index bytes
    fresh = DataLayout(tmp_path / "fresh")
    run_ingest(IngestConfig(source="tardis", paths=tuple(map(str, files))), fresh.root)
    monkeypatch.setattr(sampler_mod.ResumableSampler, "feed", feed)
    again = build_bars(cfg, str(fresh.root), "XBTUSD")
    assert read_bars(again.bars_path).equals(read_bars(second.bars_path))


def test_bar_day_keys_follow_the_sampler_code(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bars sampled by other book or sampler code (e.g. before #17's execution columns)
    are never reused: the code is part of every day key."""
    parts = {"2024-01-01": "a" * 64, "2024-01-02": "b" * 64}
    keys = bar_day_keys(SPEC.spec_hash, parts)
    assert bars_mod.bars_code_version() == bars_mod.bars_code_version()
    monkeypatch.setattr(bars_mod, "bars_code_version", lambda: "another-sampler")
    other = bar_day_keys(SPEC.spec_hash, parts)
    assert all(other[d] != keys[d] for d in parts)
