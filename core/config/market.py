"""Synthetic market config (owned by ingest/synthetic.py).

Two models share one config: ``model: simple`` (the original queue-reactive book, the
default; its output is pinned byte for byte) and ``model: realistic`` (a market that
fights back: touch queues of the real capture's order, informed sweeps through stale
quotes, and a planted edge with a dial, `PlantedEdgeConfig`). See ingest/synthetic.py.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SerializerFunctionWrapHandler, model_serializer, model_validator

from core.config.base import FrozenModel


class RegimeConfig(FrozenModel):
    """Parameters that may change per day, so that a stress day unlike training exists."""

    name: str = "normal"
    volatility_scale: float = Field(1.0, gt=0)
    # simple model only: tilt of the next market order's side by L1 imbalance
    imbalance_tilt: float = Field(0.15, ge=0, le=1)
    trade_rate_scale: float = Field(1.0, gt=0)
    # realistic model only: multiplies the planted edge's strength on this day (0: the
    # edge vanishes, a regime change the model must survive)
    edge_scale: float = Field(1.0, ge=0)


class PlantedEdgeConfig(FrozenModel):
    """The planted edge of the realistic model: how much a named feature tells about the
    next price move.

    A latent lean Z (Ornstein-Uhlenbeck, stationary std 1, half-life `half_life_s`) gives
    ``L = tanh(lean * Z)`` in [-1, 1]. The next price move is up with probability
    ``(1 + strength * L) / 2``. Where L shows, at every strength (`feature`):
    - ``imbalance_l1``: the touch queues lean (targets ``median * exp(+-touch_lean_ln *
      L)``, bid +, ask -);
    - ``trade_imbalance_60s``: uninformed market orders buy with probability
      ``(1 + flow_lean * L) / 2`` (the book leans on an independent twin of Z);
    - ``log_return_60s``: nowhere but in the price path itself (momentum; the book
      leans on the twin);
    - ``imbalance_l10``: real size behind the touch leans as the touch queues would
      (``median * exp(+-touch_lean_ln * L)``); the touch queues lean on the twin, so
      level 1 tells nothing.
    strength 0: no feature carries information about any future move (the book and the
    flow look exactly as they do with an edge); 1: the price moves the way L points as
    often as |L| allows. With any strength > 0 past returns carry some of it too (the
    price drifts the way L points while L persists).
    """

    feature: Literal["imbalance_l1", "trade_imbalance_60s", "log_return_60s", "imbalance_l10"] = (
        "imbalance_l1"
    )
    strength: float = Field(0.0, ge=0, le=1)
    half_life_s: float = Field(60.0, gt=0)
    lean: float = Field(2.5, gt=0)
    flow_lean: float = Field(0.8, ge=0, le=1)
    # "lean": Z is the OU lean above. It adds a drift that accumulates, so the edge also
    # multiplies the market's volatility (7x over 1 h at strength 0.4, half-life 300 s).
    # "fair_value": Z = (F - mid) / fair_value_jump_ticks, F a hidden fair value that
    # jumps by +-fair_value_jump_ticks at the rate that gives it the variance per second
    # of the mid's own moves (the no-edge mid's); the mid, pulled toward F by the edge,
    # follows it, so over hours the market is as volatile as without the edge and only
    # the way the gap closes is predictable. half_life_s is unused there.
    model: Literal["lean", "fair_value"] = "lean"
    fair_value_jump_ticks: float = Field(30.0, gt=0)

    @model_serializer(mode="wrap")
    def _lean_dumps_as_before(self, handler: SerializerFunctionWrapHandler) -> Any:
        """A "lean" edge dumps exactly as before `model` existed: the same JSON and
        fingerprint, so markets already generated are not generated again."""
        data = handler(self)
        if self.model == "lean" and isinstance(data, dict):
            data.pop("model", None)
            data.pop("fair_value_jump_ticks", None)
        return data


class RealisticMarketConfig(FrozenModel):
    """Rates and sizes of the realistic model (defaults: calibrated to the real XBTUSD
    capture's touch queues, spread and message mix; see bench/RESULTS_market.md)."""

    moves_per_s: float = Field(0.2, gt=0)  # price moves (changes of value), per second
    jump_continue_p: float = Field(0.35, ge=0, lt=1)  # P(move size > k | >= k), ticks
    # share of one-tick moves executed by an informed market order through the stale
    # quotes (the rest: makers cancel first); moves of 2+ ticks are always swept
    informed_share: float = Field(0.6, ge=0, le=1)
    noise_orders_per_s: float = Field(0.4, gt=0)  # uninformed market orders
    noise_size_median: float = Field(250.0, gt=0)  # contracts
    noise_size_sigma: float = Field(1.9, ge=0)  # of ln size
    # touch queue targets: median * exp(+-touch_lean_ln * L + touch_queue_sigma * eps),
    # contracts (the capture: ~1.4 M on the heavy side, a few hundred on the light one)
    touch_queue_median: float = Field(45_000.0, gt=0)
    touch_lean_ln: float = Field(3.6, ge=0)
    touch_queue_sigma: float = Field(0.3, ge=0)  # per-level noise of a touch target (ln)
    touch_updates_per_s: float = Field(10.0, gt=0)  # both sides, in steady state
    burst_updates_per_s: float = Field(150.0, gt=0)  # a fresh touch level filling up
    burst_ms: float = Field(150.0, gt=0)  # mean duration of that burst
    follow_ms: float = Field(15.0, gt=0)  # mean delay of the side that follows a move
    deep_updates_per_s: float = Field(8.0, gt=0)  # adds and cancels behind the touch
    # a new deep level is a lone small order (median 200 contracts) or real size
    deep_small_p: float = Field(0.4, ge=0, le=1)
    deep_size_median: float = Field(50_000.0, gt=0)  # contracts, the real-size levels
    deep_full_cancel_p: float = Field(0.45, ge=0, le=1)  # a deep cancel removes the level


class SyntheticMarketConfig(FrozenModel):
    """Deterministic BitMEX-like XBTUSD market: canonical book deltas and trades."""

    seed: int = 7
    start_day: str = "2024-01-01"
    days: int = Field(3, ge=1)
    day_hours: float = Field(24.0, gt=0, le=24.0)  # generate only the first hours of each day
    # USD. 4,000 (XBTUSD in early 2019, tick 0.5 = 1.25 bps): at this price the model's
    # few-ticks-per-minute moves are a realistic few bps, and the 25 contiguous levels
    # span ~30 bps, so depth features within 10 bps are not the whole book. At 40,000 a
    # tick is 0.125 bps: minute returns of ~0.3 bps and maker rebates dwarf every move.
    start_price: float = Field(4_000.0, gt=0)
    depth_levels: int = Field(25, ge=10)
    book_events_per_s: float = Field(4.0, gt=0)  # simple model
    trades_per_s: float = Field(0.5, gt=0)  # simple model
    regimes: tuple[RegimeConfig, ...] = (RegimeConfig(),)  # day i uses regimes[min(i, len-1)]
    model: Literal["simple", "realistic"] = "simple"
    realistic: RealisticMarketConfig = RealisticMarketConfig()
    edge: PlantedEdgeConfig = PlantedEdgeConfig()

    @model_validator(mode="after")
    def _knobs_belong_to_the_model(self) -> SyntheticMarketConfig:
        # a knob the chosen model ignores would be a silent no-op: refuse one that is not
        # at its default (compared by value, so a dumped config validates again)
        default = SyntheticMarketConfig.model_fields
        regime = RegimeConfig.model_fields
        if self.model == "realistic":
            for r in self.regimes:
                if r.imbalance_tilt != regime["imbalance_tilt"].default:
                    raise ValueError(
                        f"regime {r.name!r}: imbalance_tilt is the simple model's; the "
                        "realistic model's edge is edge.strength (per day: edge_scale)"
                    )
            for name in ("book_events_per_s", "trades_per_s"):
                if getattr(self, name) != default[name].default:
                    raise ValueError(
                        f"{name} is the simple model's; the realistic model's rates are "
                        "under `realistic:`"
                    )
        else:
            bad = [n for n in ("realistic", "edge") if getattr(self, n) != default[n].default]
            bad += [
                f"regimes[{i}].edge_scale"
                for i, r in enumerate(self.regimes)
                if r.edge_scale != regime["edge_scale"].default
            ]
            if bad:
                raise ValueError(f"{', '.join(bad)}: realistic-model knobs need `model: realistic`")
        return self
