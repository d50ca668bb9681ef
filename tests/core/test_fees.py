"""core.fees: the dated BitMEX XBTUSD schedule, the rule that picks a bar's rate, the
override, and the checks that refuse a fee typed in percent or an unordered list."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from core.fees import (
    BITMEX_XBTUSD,
    DEFAULT_FEES,
    FeeChange,
    FeeConfig,
    merge_override,
    since_ns,
    split_instrument_fees,
)
from core.instrument import InstrumentSpec

DAY = 86_400 * 10**9


def test_since_ns_reads_a_utc_date_or_an_offset_time_and_refuses_naive_times() -> None:
    assert since_ns("1970-01-02") == DAY
    assert since_ns("2021-08-18") == 1_629_244_800 * 10**9
    assert since_ns("2021-08-18T02:00:00+02:00") == since_ns("2021-08-18")
    assert since_ns("2021-08-18T00:00:00.000001Z") == since_ns("2021-08-18") + 1_000
    with pytest.raises(ValueError, match="no UTC offset"):
        since_ns("2021-08-18T00:00:00")


def test_bitmex_schedule_has_the_researched_base_tier_changes_with_sources() -> None:
    assert [(c.since, c.maker, c.taker) for c in BITMEX_XBTUSD] == [
        ("2016-05-13", -0.00025, 0.00075),
        ("2021-08-18", -0.0001, 0.0005),
        ("2023-01-17", 0.0002, 0.00075),
    ]
    assert all(c.source for c in BITMEX_XBTUSD)
    assert DEFAULT_FEES.changes() == BITMEX_XBTUSD


@pytest.mark.parametrize(
    ("when", "maker", "taker"),
    [
        (0, -0.00025, 0.00075),  # before XBTUSD existed: its launch rates
        (since_ns("2021-07-22"), -0.00025, 0.00075),  # the real capture's day
        (since_ns("2021-08-18") - 1, -0.00025, 0.00075),
        (since_ns("2021-08-18"), -0.0001, 0.0005),  # a change applies from its instant
        (since_ns("2023-01-17") - 1, -0.0001, 0.0005),
        (since_ns("2023-01-17"), 0.0002, 0.00075),
        (since_ns("2024-01-01"), 0.0002, 0.00075),  # the synthetic market's days
    ],
)
def test_rate_in_force_is_the_last_change_at_or_before_the_bar(
    when: int, maker: float, taker: float
) -> None:
    assert DEFAULT_FEES.rates_at(when) == (maker, taker)
    m, t = DEFAULT_FEES.resolve(np.array([when, when]))
    assert m.tolist() == [maker, maker] and t.tolist() == [taker, taker]


def test_override_beats_the_schedule_per_side() -> None:
    ts = np.array([0, since_ns("2021-08-18"), since_ns("2024-01-01")])
    m, t = FeeConfig(maker=0.0001).resolve(ts)
    assert m.tolist() == [0.0001] * 3
    assert t.tolist() == [0.00075, 0.0005, 0.00075]  # the taker side still follows the dates
    m, t = FeeConfig.constant(-0.00025, 0.00075).resolve(ts)
    assert m.tolist() == [-0.00025] * 3 and t.tolist() == [0.00075] * 3
    assert FeeConfig.constant(0.0, 0.0).is_constant and not DEFAULT_FEES.is_constant


def test_a_users_own_dated_list_is_used_and_its_first_rate_covers_earlier_bars() -> None:
    own = FeeConfig(
        schedule=(
            FeeChange(since="2022-01-01", maker=0.0001, taker=0.0004),
            {"since": "2022-06-01T12:00:00Z", "maker": 0.0, "taker": 0.0003},
        )
    )
    assert own.rates_at(0) == (0.0001, 0.0004)
    assert own.rates_at(since_ns("2022-06-01T12:00:00Z") - 1) == (0.0001, 0.0004)
    assert own.rates_at(since_ns("2022-06-01T12:00:00Z")) == (0.0, 0.0003)
    assert "2 change(s) from 2022-01-01" in own.describe()


@pytest.mark.parametrize(
    ("fees", "match"),
    [
        ({"maker": 0.02}, "percent|fraction"),  # 0.02 % typed as 0.02
        ({"taker": float("nan")}, "not a fee rate"),
        ({"schedule": []}, "empty"),
        (
            {
                "schedule": [
                    {"since": "2023-01-01", "maker": 0, "taker": 0},
                    {"since": "2022-01-01", "maker": 0, "taker": 0},
                ]
            },
            "strictly increasing",
        ),
        ({"schedule": [{"since": "2023-01-01T00:00", "maker": 0, "taker": 0}]}, "UTC offset"),
        ({"schedule": "binance"}, "bitmex-xbtusd"),
        ({"maker_fee": 0.0}, "maker_fee"),  # unknown key
    ],
)
def test_bad_fee_configs_are_refused(fees: dict, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        FeeConfig.model_validate(fees)


def test_instrument_fee_fields_split_off_as_an_override_and_conflicts_are_refused() -> None:
    inst, found = split_instrument_fees(InstrumentSpec(maker_fee=0.0001))
    assert found == {"maker": 0.0001} and inst.maker_fee is None and inst.taker_fee is None
    raw, found = split_instrument_fees({"tick_size": 0.5, "taker_fee": 0.0005})
    assert raw == {"tick_size": 0.5} and found == {"taker": 0.0005}
    assert split_instrument_fees(InstrumentSpec()) == (InstrumentSpec(), {})
    assert merge_override(None, found, "x") == {"taker": 0.0005}
    assert merge_override(FeeConfig(taker=0.0005), found, "x")["taker"] == 0.0005
    with pytest.raises(ValueError, match="set twice"):
        merge_override({"taker": 0.0004}, found, "ingest.instrument")
