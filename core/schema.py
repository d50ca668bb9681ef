"""Every column name in Chappie lives here: canonical events, bars, features, slices.

Units and windows are in the names: `_ticks`, `_bps`, `_ns`, `_l5`, `_30s`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from core.config.features import FeatureSpec

# ---------------------------------------------------------------- canonical events
TS_EVENT = "ts_event"  # int64 ns UTC, exchange time
TS_RECV = "ts_recv"  # int64 ns UTC, receive time (sampling clock: what an agent could know)
SIDE = "side"  # int8: +1 bid / taker buy, -1 ask / taker sell
PRICE_TICKS = "price_ticks"  # int64
SIZE = "size"  # int64 contracts; for book deltas the new absolute level size, 0 deletes
IS_SNAPSHOT = "is_snapshot"  # bool: row belongs to a snapshot that replaces the book

BOOK_COLUMNS: tuple[str, ...] = (TS_EVENT, TS_RECV, SIDE, PRICE_TICKS, SIZE, IS_SNAPSHOT)
TRADE_COLUMNS: tuple[str, ...] = (TS_EVENT, TS_RECV, SIDE, PRICE_TICKS, SIZE)

# dtype names (polars / pyarrow spelling) of the canonical event columns
EVENT_DTYPES: dict[str, str] = {
    TS_EVENT: "int64",
    TS_RECV: "int64",
    SIDE: "int8",
    PRICE_TICKS: "int64",
    SIZE: "int64",
    IS_SNAPSHOT: "bool",
}

BID, ASK = 1, -1
BUY, SELL = 1, -1

# ---------------------------------------------------------------- bars (sampler output)
# One row per fixed interval (t - dt, t], labelled by its close time `ts`.
TS = "ts"  # int64 ns, bar close
BOOK_OK = "book_ok"  # bool: both sides present, not crossed, after the last event <= ts
N_BOOK_EVENTS = "n_book_events"  # int64 book deltas applied in the bar
OFI_L1 = "ofi_l1"  # int64 contracts: sum of Cont-Kukanov-Stoikov e_n over the bar's events
BUY_VOL = "buy_vol"  # int64 contracts bought by takers in the bar
SELL_VOL = "sell_vol"  # int64 contracts sold by takers in the bar
N_TRADES = "n_trades"  # int64 trades in the bar
LAST_TRADE_TS = "last_trade_ts"  # int64 ns of the last trade at or before ts; -1 before any
BUY_HI_TICKS = "buy_hi_ticks"  # int64 highest taker-buy price in the bar; 0 when none
SELL_LO_TICKS = "sell_lo_ticks"  # int64 lowest taker-sell price in the bar; 0 when none
# Execution columns for the queue models (#17). "The reference" is the previous bar's
# close best bid (sells) / best ask (buys), i.e. its bid_px_0 / ask_px_0: the price a
# maker order placed or rolled at that close rests at. The first bar and a bar whose
# previous close had no bid (ask) have at-volume 0 and through-times -1.
SELL_AT_BID_VOL = "sell_at_bid_vol"  # int64 contracts sold by takers at exactly the reference bid
SELL_THRU_BID_FIRST_TS = "sell_thru_bid_first_ts"  # int64 ns of the first taker sell below it; -1
SELL_THRU_BID_LAST_TS = "sell_thru_bid_last_ts"  # int64 ns of the last taker sell below it; -1
BUY_AT_ASK_VOL = "buy_at_ask_vol"  # int64 contracts bought by takers at exactly the reference ask
BUY_THRU_ASK_FIRST_TS = "buy_thru_ask_first_ts"  # int64 ns of the first taker buy above it; -1
BUY_THRU_ASK_LAST_TS = "buy_thru_ask_last_ts"  # int64 ns of the last taker buy above it; -1
#: the six, in bar and slice column order
QUEUE_COLUMNS: tuple[str, ...] = (
    SELL_AT_BID_VOL,
    SELL_THRU_BID_FIRST_TS,
    SELL_THRU_BID_LAST_TS,
    BUY_AT_ASK_VOL,
    BUY_THRU_ASK_FIRST_TS,
    BUY_THRU_ASK_LAST_TS,
)


def bid_px(i: int) -> str:
    return f"bid_px_{i}"


def bid_sz(i: int) -> str:
    return f"bid_sz_{i}"


def ask_px(i: int) -> str:
    return f"ask_px_{i}"


def ask_sz(i: int) -> str:
    return f"ask_sz_{i}"


def level_columns(depth: int) -> list[str]:
    """Book level columns of a bar, level 0 first. Missing levels have price 0 and size 0."""
    cols: list[str] = []
    for i in range(depth):
        cols += [bid_px(i), bid_sz(i), ask_px(i), ask_sz(i)]
    return cols


BAR_EVENT_COLUMNS: tuple[str, ...] = (
    BOOK_OK,
    N_BOOK_EVENTS,
    OFI_L1,
    BUY_VOL,
    SELL_VOL,
    N_TRADES,
    LAST_TRADE_TS,
    BUY_HI_TICKS,
    SELL_LO_TICKS,
    *QUEUE_COLUMNS,
)
#: the through-time columns: ts_recv within the bar (ts - interval, ts], or -1
THRU_TS_COLUMNS: tuple[str, ...] = (
    SELL_THRU_BID_FIRST_TS,
    SELL_THRU_BID_LAST_TS,
    BUY_THRU_ASK_FIRST_TS,
    BUY_THRU_ASK_LAST_TS,
)


def bar_columns(depth: int) -> list[str]:
    """All bar columns in order: ts, levels, event aggregates."""
    return [TS, *level_columns(depth), *BAR_EVENT_COLUMNS]


# ---------------------------------------------------------------- slices
WARMUP = "warmup"  # bool: look-back not yet filled; such rows never enter a slice
MID_TICKS = "mid_ticks"  # float64 (bid0 + ask0) / 2 in ticks
# raw execution columns carried into every slice for the env's fill model and accounting:
# the bar's best bid / ask (bid_px_0 / ask_px_0 renamed), then bar columns as they are
EXEC_COLUMNS: tuple[str, ...] = (
    "best_bid_ticks",
    "best_ask_ticks",
    BUY_HI_TICKS,
    SELL_LO_TICKS,
    BUY_VOL,
    SELL_VOL,
    bid_sz(0),
    ask_sz(0),
    *QUEUE_COLUMNS,
)
BEST_BID_TICKS, BEST_ASK_TICKS = EXEC_COLUMNS[0], EXEC_COLUMNS[1]


# ---------------------------------------------------------------- features
def feature_names(spec: FeatureSpec) -> list[str]:
    """Ordered feature columns of a FeatureSpec (the observation contract, before the
    management state). Changing this for a given spec version is an API break: bump
    the version instead.
    """
    if spec.version != "v1":
        raise ValueError(f"unknown feature set version {spec.version!r}")
    names = [
        "spread_ticks",
        "spread_bps",
        "microprice_offset_bps",
        "imbalance_l1",
        "imbalance_l5",
        "imbalance_l10",
    ]
    for w in spec.windows_s:
        names += [f"ofi_{w}s", f"signed_volume_{w}s", f"trade_imbalance_{w}s"]
    for w in spec.windows_s:
        names += [f"trade_intensity_{w}s", f"realized_vol_{w}s"]
    names.append("time_since_trade_s")
    for h in spec.return_horizons_s:
        names.append(f"log_return_{h}s")
    for x in spec.depth_bps:
        xs = f"{x:g}".replace(".", "p")
        names += [f"depth_bid_{xs}bps", f"depth_ask_{xs}bps"]
    return names


# How each v1 feature reads in the mirror image of the market: buyers and sellers
# swapped, the log price negated (a rise becomes an equal fall, bids become asks). A
# feature either keeps its value (spreads, intensity, volatility, time), changes sign
# (imbalances, order flow, signed volume, returns, the microprice's offset) or takes its
# twin's value (the depth on one side is the other side's). `training.averaging` builds the
# mirror-averaged policy from it: the policy then treats a market and its mirror image
# alike, so a directional habit learnt from one trending day cannot survive, only what
# the features say about direction.
_ODD_PREFIXES = (
    "microprice_offset_bps",
    "imbalance_l",
    "ofi_",
    "signed_volume_",
    "trade_imbalance_",
    "log_return_",
)
_EVEN_PREFIXES = ("spread_", "trade_intensity_", "realized_vol_", "time_since_trade_s")


def mirror_of(feature: str) -> tuple[str, float]:
    """(source, sign): in the mirror image of the market `feature` takes the value
    sign x (source's value here). Raises ValueError for a feature it does not know (a new
    feature must say how it mirrors before a mirror-averaged policy can read it)."""
    if feature.startswith(_ODD_PREFIXES):
        return feature, -1.0
    if feature.startswith(_EVEN_PREFIXES):
        return feature, 1.0
    for side, other in (("depth_bid_", "depth_ask_"), ("depth_ask_", "depth_bid_")):
        if feature.startswith(side):
            return other + feature[len(side) :], 1.0
    raise ValueError(f"feature {feature!r} has no mirror rule (core.schema.mirror_of)")


# management state appended after the feature window (DESIGN.md "Observation")
MANAGEMENT_STATE: tuple[str, ...] = (
    "long_state",
    "short_state",
    "position_size",
    "unrealized_pct",
    "avg_open_position_hours",
    "last_open_position_hours",
    "hours_since_close",
)

# the policy's actions by `EnvConfig.action_mode` (envs.management documents them): toggle
# places or cancels one side's order; target names the resting orders wanted
ACTION_NAMES: dict[str, tuple[str, ...]] = {
    "toggle": ("hold", "toggle_long", "toggle_short"),
    "target": ("no_orders", "bid", "ask", "both"),
}

# the mirror image of each management value, as for the features: the resting buy and
# sell flags swap, the signed position changes sign, the rest keep their value (a lot's
# unrealised return keeps its sign: a winning long mirrors to a winning short)
STATE_MIRROR: dict[str, tuple[str, float]] = {
    "long_state": ("short_state", 1.0),
    "short_state": ("long_state", 1.0),
    "position_size": ("position_size", -1.0),
    "unrealized_pct": ("unrealized_pct", 1.0),
    "avg_open_position_hours": ("avg_open_position_hours", 1.0),
    "last_open_position_hours": ("last_open_position_hours", 1.0),
    "hours_since_close": ("hours_since_close", 1.0),
}

# the mirror image of each action: the buy-side action and the sell-side one swap
ACTION_MIRROR: dict[str, tuple[int, ...]] = {
    "toggle": (0, 2, 1),
    "target": (0, 2, 1, 3),
}
