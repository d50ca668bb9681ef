"""The realistic synthetic market (#16): canonical and deterministic, of the real
capture's order where it matters to a maker, adverse selection, sweeps, and a planted
edge whose zero means no edge. Also: the default (simple) model's output is pinned."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from pydantic import ValidationError

from book.order_book import check_book
from core import schema
from core.clock import NS_PER_S, parse_day
from core.config.experiment import load_config
from core.config.market import PlantedEdgeConfig, RegimeConfig, SyntheticMarketConfig
from features.market_audit import (
    MarketReport,
    edge_correlation,
    market_orders,
    market_report,
    mid_volatility,
    passive_markouts,
    touch_series,
)
from ingest.synthetic import (
    P_TRADE_SCALE,
    P_VOL,
    generate_market,
    market_metadata,
    realistic_params,
)

ROOT = Path(__file__).resolve().parents[2]
REAL = SyntheticMarketConfig(model="realistic", seed=11, days=2, day_hours=3.0)


def _digest(cfg: SyntheticMarketConfig) -> str:
    h = hashlib.sha256()
    for day, book, trades in generate_market(cfg):
        h.update(day.encode())
        for df in (book, trades):
            for c in df.columns:
                h.update(c.encode() + str(df.schema[c]).encode() + df[c].to_numpy().tobytes())
    return h.hexdigest()


def _concat(cfg: SyntheticMarketConfig) -> tuple[pl.DataFrame, pl.DataFrame]:
    days = list(generate_market(cfg))
    return pl.concat([b for _, b, _ in days]), pl.concat([t for _, _, t in days])


@pytest.fixture(scope="module")
def market() -> list[tuple[str, pl.DataFrame, pl.DataFrame]]:
    return list(generate_market(REAL))


@pytest.fixture(scope="module")
def report(market: list[tuple[str, pl.DataFrame, pl.DataFrame]]) -> MarketReport:
    book = pl.concat([b for _, b, _ in market])
    trades = pl.concat([t for _, _, t in market])
    return market_report(book, trades)


def test_the_default_simple_market_is_byte_identical_to_before_the_realistic_model() -> None:
    """Many tests and goldens depend on the default market (3 days x 24 h, seed 7): its
    bytes are pinned (digest recorded before the realistic model existed). A change here
    must be on purpose."""
    assert SyntheticMarketConfig().model == "simple"
    assert (
        _digest(SyntheticMarketConfig())
        == "72eaacee71ab9c3439043500d5800bee492065a317747807628542cc856e14bd"
    )


def test_realistic_days_are_canonical_sorted_and_never_cross(
    market: list[tuple[str, pl.DataFrame, pl.DataFrame]],
) -> None:
    assert [d for d, _, _ in market] == ["2024-01-01", "2024-01-02"]
    for day, book, trades in market:
        assert book.columns == list(schema.BOOK_COLUMNS)
        assert trades.columns == list(schema.TRADE_COLUMNS)
        assert book.schema["side"] == pl.Int8 and trades.schema["size"] == pl.Int64
        assert book["ts_recv"].is_sorted() and trades["ts_recv"].is_sorted()
        assert (book["ts_recv"] >= book["ts_event"]).all()
        t0 = parse_day(day)
        end = t0 + int(REAL.day_hours * 3600 * NS_PER_S)  # no row spills past the span
        assert book["ts_recv"].max() < end and trades["ts_recv"].max() < end
        assert book.head(2)["is_snapshot"].all() and book["ts_recv"][0] == t0
        assert (trades["size"] > 0).all() and (trades["size"] % 100 == 0).all()
        chk = check_book(
            *(book[c].to_numpy() for c in ("ts_recv", "side", "price_ticks", "size", "is_snapshot"))
        )
        assert chk.ok and chk.n_snapshots == 1, chk


def test_realistic_market_is_deterministic_per_seed() -> None:
    cfg = REAL.model_copy(update={"days": 1, "day_hours": 0.25})
    assert _digest(cfg) == _digest(cfg)
    assert _digest(cfg) != _digest(cfg.model_copy(update={"seed": 12}))


def test_realistic_market_has_the_real_captures_order_where_a_maker_cares(
    report: MarketReport,
) -> None:
    """Bands around the 2021-07-22 capture (tests/features/test_market_audit.py pins it):
    touch queues of ~1.4 M on the heavy side, one-tick spread, ~13/74/13 % mix."""
    q = report.queue_at_touch
    assert q.heavy_side_median is not None and q.light_side_median is not None
    assert 300_000 <= q.heavy_side_median <= 3_000_000
    assert q.light_side_median <= 20_000 and q.median is not None and q.median >= 10_000
    share_1_tick = report.spread_ticks.share_1_tick
    assert share_1_tick is not None and share_1_tick > 0.98
    mix = report.message_mix
    assert mix.update_share is not None and 0.65 <= mix.update_share <= 0.85
    assert mix.insert_share is not None and 0.08 <= mix.insert_share <= 0.2
    assert mix.delete_share is not None and 0.08 <= mix.delete_share <= 0.2
    sizes = report.trade_size.per_print
    assert sizes.median is not None and sizes.median <= 1_000
    assert sizes.p99 is not None and sizes.p99 >= 10_000  # the capture's heavy tail


def test_passive_fills_are_adversely_selected_and_sweeps_move_the_price(
    market: list[tuple[str, pl.DataFrame, pl.DataFrame]], report: MarketReport
) -> None:
    for h in ("1s", "10s"):
        m = report.markout[h]
        assert m.mean_ticks is not None and m.se_ticks is not None
        assert m.mean_ticks + 3 * m.se_ticks < 0, (h, m)
    lv = report.levels_swept
    assert lv.max is not None and lv.max >= 3
    assert lv.share_multi is not None and lv.share_multi > 0.03
    # an order that sweeps k levels is the price jumping through stale quotes: the
    # maker it filled at the touch is at least k - 1/2 ticks behind a second later
    book = pl.concat([b for _, b, _ in market])
    trades = pl.concat([t for _, _, t in market])
    orders = market_orders(trades)
    sweeps = orders.filter(pl.col("levels") >= 2)
    out = passive_markouts(touch_series(book), sweeps, horizons_s=(1,))["1s"]
    assert out.n > 20 and out.mean_ticks is not None and out.mean_ticks <= -1.5


def test_stress_regime_scales_moves_and_orders() -> None:
    regime = RegimeConfig(volatility_scale=3.0, trade_rate_scale=3.0)
    p_calm = realistic_params(REAL, RegimeConfig())
    p_busy = realistic_params(REAL, regime)
    assert p_busy[P_VOL] == 3 * p_calm[P_VOL] and p_busy[P_TRADE_SCALE] == 3.0
    # and in the events: both days share the activity path (its own generator), so 3x
    # the rates gives ~3x the orders and ~sqrt(3) x the volatility
    calm = SyntheticMarketConfig(model="realistic", seed=5, days=1, day_hours=4.0)
    busy = calm.model_copy(update={"regimes": (regime,)})
    rows = {name: _concat(c) for name, c in (("calm", calm), ("busy", busy))}
    assert 2.6 < rows["busy"][1].height / rows["calm"][1].height < 3.4
    vol = {n: mid_volatility(touch_series(r[0]), (60,))["60s"].ticks for n, r in rows.items()}
    busy_vol, calm_vol = vol["busy"], vol["calm"]
    assert busy_vol is not None and calm_vol is not None and 1.4 < busy_vol / calm_vol < 2.1


@pytest.mark.parametrize("feature", ["imbalance_l1", "trade_imbalance_60s", "log_return_60s"])
def test_planted_edge_zero_means_no_edge_and_the_dial_plants_one(feature: str) -> None:
    """On 3 hours: corr(named feature, forward mid move) at 10 and 30 s is within 3
    standard errors of 0 at strength 0 (the error counts non-overlapping moves) and
    clearly positive at strength 0.5 (seeds 21-26 checked: null within 1.7 errors,
    planted at least 3.9 errors at 10 s and 0.12 at 30 s)."""
    rep = {}
    for strength in (0.0, 0.5):
        cfg = SyntheticMarketConfig(
            model="realistic",
            seed=21,
            days=1,
            day_hours=3.0,
            edge=PlantedEdgeConfig(feature=feature, strength=strength),
        )
        rep[strength] = edge_correlation(*_concat(cfg), feature, horizons_s=(10, 30)).horizons
    for h in ("10s", "30s"):
        null, planted = rep[0.0][h], rep[0.5][h]
        assert null.corr is not None and null.se is not None
        assert abs(null.corr) < 3 * null.se, (h, null)
        # 3 h hold 360 non-overlapping 30 s moves: the 30 s figure gets 2 errors
        assert planted.corr is not None and planted.se is not None
        assert planted.corr > max(0.1, (3 if h == "10s" else 2) * planted.se), (h, planted)


def test_the_lean_edge_generates_the_same_market_as_before_the_fair_value_model() -> None:
    """Pinned: the digest of a planted "lean" market, computed with the generator before
    the fair_value model and the imbalance_l10 carrier existed (markets already ingested
    and the decisions measured on them stay valid)."""
    cfg = SyntheticMarketConfig(
        model="realistic",
        seed=3,
        days=2,
        day_hours=0.5,
        edge=PlantedEdgeConfig(feature="trade_imbalance_60s", strength=0.4, half_life_s=300),
    )
    assert _digest(cfg) == "ab47f40bc594365caca2c5e9b30bb0fa30019fb58a09fd0cc7e2eba1863577ad"


def test_the_fair_value_edge_is_predictable_without_adding_volatility() -> None:
    """On 6 hours (seed 21; seeds 22 and 23 checked alike): a fair_value edge shown by
    the book behind the touch predicts the next 30 s (corr ~0.39, over 8 errors) while
    its 5 min mid volatility stays that of the market without an edge (ratio ~1.3); the
    "lean" edge at the old planted setting triples it. At strength 0 the same gap
    predicts nothing, and imbalance_l1 (the baseline rule's feature) tells nothing."""

    def measure(edge: PlantedEdgeConfig) -> tuple[float, dict[str, float], dict[str, float]]:
        cfg = SyntheticMarketConfig(model="realistic", seed=21, days=1, day_hours=6.0, edge=edge)
        book, trades = _concat(cfg)
        vol = mid_volatility(touch_series(book), (300,))["300s"].ticks
        assert vol is not None
        corr = {}
        se = {}
        for f in ("imbalance_l10", "imbalance_l1"):
            h = edge_correlation(book, trades, f, horizons_s=(30,)).horizons["30s"]
            assert h.corr is not None and h.se is not None
            corr[f], se[f] = h.corr, h.se
        return vol, corr, se

    fv = dict(model="fair_value", feature="imbalance_l10", fair_value_jump_ticks=20.0)
    null_vol, _, _ = measure(PlantedEdgeConfig())
    lean_vol, _, _ = measure(
        PlantedEdgeConfig(feature="log_return_60s", strength=0.4, half_life_s=300)
    )
    planted_vol, planted, planted_se = measure(PlantedEdgeConfig(strength=0.8, **fv))  # type: ignore[arg-type]
    _, zero, zero_se = measure(PlantedEdgeConfig(strength=0.0, **fv))  # type: ignore[arg-type]
    assert 0.7 < planted_vol / null_vol < 1.6, (planted_vol, null_vol)
    assert lean_vol / null_vol > 2.0, (lean_vol, null_vol)
    assert planted["imbalance_l10"] > max(0.2, 5 * planted_se["imbalance_l10"]), planted
    assert abs(planted["imbalance_l1"]) < 3 * planted_se["imbalance_l1"], planted
    assert abs(zero["imbalance_l10"]) < 3 * zero_se["imbalance_l10"], zero


def test_a_lean_edge_dumps_as_before_and_a_fair_value_edge_says_so() -> None:
    lean = PlantedEdgeConfig(feature="trade_imbalance_60s", strength=0.4)
    assert set(lean.model_dump()) == {"feature", "strength", "half_life_s", "lean", "flow_lean"}
    fv = PlantedEdgeConfig(model="fair_value", feature="imbalance_l10", strength=0.8)
    assert PlantedEdgeConfig.model_validate(fv.model_dump()) == fv
    meta = market_metadata(SyntheticMarketConfig(model="realistic", edge=fv))
    assert "hidden fair value" in meta["edge"]["description"]
    assert "real size behind the touch" in meta["edge"]["description"]


def test_market_metadata_names_the_edge_per_day() -> None:
    cfg = SyntheticMarketConfig(
        model="realistic",
        days=3,
        edge=PlantedEdgeConfig(feature="trade_imbalance_60s", strength=0.4),
        regimes=(RegimeConfig(), RegimeConfig(edge_scale=0.0)),
    )
    meta = market_metadata(cfg)
    assert meta["model"] == "realistic" and meta["edge"]["feature"] == "trade_imbalance_60s"
    assert meta["edge"]["strength_by_day"] == [0.4, 0.0, 0.0]
    simple = market_metadata(SyntheticMarketConfig())
    assert simple["edge"]["strength"] is None and "no zero-edge" in simple["edge"]["description"]


def test_knobs_of_the_other_model_are_refused() -> None:
    with pytest.raises(ValidationError, match="imbalance_tilt is the simple model's"):
        SyntheticMarketConfig(model="realistic", regimes=(RegimeConfig(imbalance_tilt=0.0),))
    with pytest.raises(ValidationError, match="trades_per_s is the simple model's"):
        SyntheticMarketConfig(model="realistic", trades_per_s=1.0)
    with pytest.raises(ValidationError, match="need `model: realistic`"):
        SyntheticMarketConfig(edge=PlantedEdgeConfig(strength=0.3))
    with pytest.raises(ValidationError, match="edge_scale"):
        SyntheticMarketConfig(regimes=(RegimeConfig(edge_scale=0.0),))
    with pytest.raises(ValidationError):
        PlantedEdgeConfig(feature="ofi_10s")  # type: ignore[arg-type]


def test_shipped_no_edge_and_planted_edge_configs_load_with_known_answers() -> None:
    no_edge = load_config(ROOT / "conf" / "no-edge.yaml")
    planted = load_config(ROOT / "conf" / "planted-edge.yaml")
    default = load_config(ROOT / "conf" / "default.yaml")
    for cfg in (no_edge, planted):
        syn = cfg.ingest.synthetic
        assert cfg.ingest.source == "synthetic" and syn.model == "realistic"
        # longer than the default's market: 24 h test slices (power for the paired test)
        assert syn.days > default.ingest.synthetic.days
        assert syn.regimes[-1].name == "stress"  # the last day: the stress window
        assert cfg.features.walk_forward.stress_windows == (
            (24.0 * (syn.days - 1), 24.0 * syn.days),
        )
    assert no_edge.features == planted.features and no_edge.sweep == planted.sweep
    assert no_edge.ingest.synthetic.edge.strength == 0.0
    assert planted.ingest.synthetic.edge.strength > 0.0
    # the same market but for the dial
    assert (
        no_edge.ingest.synthetic.model_copy(update={"edge": planted.ingest.synthetic.edge})
        == planted.ingest.synthetic
    )
    assert no_edge.registry.model_name != planted.registry.model_name
    # the planted edge shows where the baseline panel's rule does not look: a model that
    # finds it must beat that rule, not be it
    fair = load_config(ROOT / "conf" / "planted-fair-value.yaml")
    for cfg in (planted, fair):
        assert cfg.ingest.synthetic.edge.feature != cfg.evaluation.baselines.rule_feature
    # the harder market: the same experiment but for its edge (one that keeps the volatility)
    assert (
        fair.ingest.synthetic.edge.model == "fair_value" and fair.ingest.synthetic.edge.strength > 0
    )
    assert (
        fair.model_copy(
            update={"name": planted.name, "registry": planted.registry, "ingest": planted.ingest}
        )
        == planted
    )


def test_realistic_generation_keeps_numpy_arrays_int64() -> None:
    _, book, trades = next(generate_market(REAL.model_copy(update={"days": 1, "day_hours": 0.05})))
    assert book["price_ticks"].to_numpy().dtype == np.int64
    assert trades["ts_event"].to_numpy().dtype == np.int64


@pytest.mark.parametrize(
    "cfg",
    [
        SyntheticMarketConfig(),
        SyntheticMarketConfig(
            model="realistic",
            edge=PlantedEdgeConfig(feature="log_return_60s", strength=0.2),
            regimes=(RegimeConfig(edge_scale=0.5, volatility_scale=2.0),),
        ),
    ],
)
def test_a_dumped_market_config_validates_again(cfg: SyntheticMarketConfig) -> None:
    assert SyntheticMarketConfig.model_validate_json(cfg.model_dump_json()) == cfg
