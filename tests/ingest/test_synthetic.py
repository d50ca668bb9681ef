"""Synthetic market: canonical form, determinism, never crossed, realism targets of #3."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from book.order_book import check_book
from book.sampler import sample_bars
from core import schema
from core.clock import NS_PER_S, parse_day
from core.config.features import FeatureSpec
from core.config.market import RegimeConfig, SyntheticMarketConfig
from ingest.synthetic import generate_market

CFG = SyntheticMarketConfig(
    seed=3,
    days=2,
    day_hours=8.0,
    regimes=(
        RegimeConfig(),
        RegimeConfig(name="stress", volatility_scale=2.5, imbalance_tilt=0.0, trade_rate_scale=1.5),
    ),
)


@pytest.fixture(scope="module")
def market() -> list[tuple[str, pl.DataFrame, pl.DataFrame]]:
    return list(generate_market(CFG))


@pytest.fixture(scope="module")
def bars(market: list[tuple[str, pl.DataFrame, pl.DataFrame]]) -> list[pl.DataFrame]:
    return [sample_bars(b, t, FeatureSpec(interval_ms=1000)) for _, b, t in market]


def test_generate_market_yields_canonical_days_in_order(
    market: list[tuple[str, pl.DataFrame, pl.DataFrame]],
) -> None:
    assert [d for d, _, _ in market] == ["2024-01-01", "2024-01-02"]
    for i, (day, book, trades) in enumerate(market):
        assert book.columns == list(schema.BOOK_COLUMNS) and trades.columns == list(
            schema.TRADE_COLUMNS
        )
        assert book.schema["side"] == pl.Int8 and book.schema["is_snapshot"] == pl.Boolean
        assert book["ts_recv"].is_sorted() and trades["ts_recv"].is_sorted()
        assert (book["ts_recv"] >= book["ts_event"]).all()
        t0 = parse_day(day)
        snap = book.filter(pl.col("is_snapshot"))
        assert (
            snap.height == 2 * CFG.depth_levels and snap["ts_recv"].to_list() == [t0] * snap.height
        )
        assert book.head(snap.height)["is_snapshot"].all()
        assert book["ts_recv"].max() < t0 + int(CFG.day_hours * 3600 * NS_PER_S) + NS_PER_S
        assert (trades["size"] > 0).all() and (trades["size"] % 100 == 0).all()
        assert i < 2


def test_generate_market_is_deterministic_from_seed(
    market: list[tuple[str, pl.DataFrame, pl.DataFrame]],
) -> None:
    cfg = CFG.model_copy(update={"day_hours": 0.5})
    a = list(generate_market(cfg))
    b = list(generate_market(cfg))
    assert all(x[1].equals(y[1]) and x[2].equals(y[2]) for x, y in zip(a, b, strict=True))
    c = list(generate_market(cfg.model_copy(update={"seed": 4})))
    assert not a[0][1].equals(c[0][1])


def test_generate_market_never_crosses_or_desyncs(
    market: list[tuple[str, pl.DataFrame, pl.DataFrame]],
) -> None:
    for _, book, _ in market:
        res = check_book(
            *(book[c].to_numpy() for c in ("ts_recv", "side", "price_ticks", "size", "is_snapshot"))
        )
        assert res.ok, res
        assert res.n_snapshots == 1


def _minute_returns(b: pl.DataFrame) -> np.ndarray:
    mid = (b["bid_px_0"] + b["ask_px_0"]).to_numpy() / 2.0
    return np.diff(np.log(mid[::60]))


def test_synthetic_minute_returns_are_fat_tailed(bars: list[pl.DataFrame]) -> None:
    for b in bars:
        r = _minute_returns(b)
        kurt = np.mean((r - r.mean()) ** 4) / np.var(r) ** 2
        assert kurt > 3.0, kurt


def test_synthetic_absolute_returns_cluster(bars: list[pl.DataFrame]) -> None:
    for b in bars:
        a = np.abs(_minute_returns(b))
        ac = [np.corrcoef(a[:-k], a[k:])[0, 1] for k in range(1, 31)]
        assert np.mean(ac) > 0.02, np.mean(ac)


def test_synthetic_spread_is_one_tick_most_of_the_time(bars: list[pl.DataFrame]) -> None:
    for b in bars:
        spread = (b["ask_px_0"] - b["bid_px_0"]).to_numpy()
        assert (spread >= 1).all()
        assert (spread == 1).mean() > 0.8


def test_synthetic_up_move_probability_rises_with_l1_imbalance(bars: list[pl.DataFrame]) -> None:
    for b in bars:
        mid = (b["bid_px_0"] + b["ask_px_0"]).to_numpy() / 2.0
        qb, qa = b["bid_sz_0"].to_numpy(), b["ask_sz_0"].to_numpy()
        imb = ((qb - qa) / (qb + qa))[:-1]
        dm = np.diff(mid)
        moved = dm != 0
        p_up = [
            np.mean(dm[moved & (imb >= lo) & (imb < hi)] > 0)
            for lo, hi in ((-1.01, -0.33), (-0.33, 0.33), (0.33, 1.01))
        ]
        assert p_up[0] < p_up[1] < p_up[2], p_up


def test_imbalance_tilt_strengthens_the_predictable_component() -> None:
    def p_buy_given_bid_heavy(tilt: float) -> float:
        cfg = SyntheticMarketConfig(
            seed=5, days=1, day_hours=2.0, regimes=(RegimeConfig(imbalance_tilt=tilt),)
        )
        _, book, trades = next(generate_market(cfg))
        b = sample_bars(book, trades, FeatureSpec(interval_ms=1000))
        qb, qa = b["bid_sz_0"].to_numpy()[:-1], b["ask_sz_0"].to_numpy()[:-1]
        imb = (qb - qa) / (qb + qa)
        nxt_buy, nxt_sell = b["buy_vol"].to_numpy()[1:], b["sell_vol"].to_numpy()[1:]
        heavy = (imb > 0.3) & ((nxt_buy + nxt_sell) > 0)
        return float(np.mean(nxt_buy[heavy] > nxt_sell[heavy]))

    assert p_buy_given_bid_heavy(0.6) > p_buy_given_bid_heavy(0.0) + 0.03
