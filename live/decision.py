"""One live decision as one typed value: made by `LiveSession._decide` once the bar's
action and (trading) the order manager's answer are known, then passed unchanged to the
decision sink (stdout and the --decisions-out JSON lines), the paper record and the tests.

The JSON line is the contract (keys and order unchanged since the decision was a dict):
`to_json()` is what the file holds, `order` only in trade mode. `Decision.from_json` reads
a line back: `Decision.from_json(d.to_json()) == d`.

Pure: a pydantic model, its constructor from the loop's values and its serialisers.
"""

from __future__ import annotations

from typing import Literal, Self

import numpy as np
from pydantic import BaseModel, ConfigDict

from core.clock import iso_ms
from core.jsontypes import JsonObject
from core.schema import ACTION_NAMES, MANAGEMENT_STATE

LiveMode = Literal["observe", "trade"]


class Decision(BaseModel):
    """What the loop decided at the close of bar `ts` (ns), on the management `state`
    (`core.schema.MANAGEMENT_STATE` order): the action in the model's `action_mode` (None:
    no model or no observation yet), the model that decided, the bar's mid (ticks), the
    decision's latency and, when trading, what the order manager did (`order`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ts: int
    time: str
    action: int | None
    action_name: str | None
    action_mode: str
    state: dict[str, float]
    model_version: str | None
    mode: LiveMode
    mid_ticks: float
    latency_us: float
    order: str | None = None  # trade mode only: "placed: ...", "none", "refused: ..."

    @classmethod
    def of(
        cls,
        ts_ns: int,
        action: int | None,
        state: np.ndarray,
        model_version: str | None,
        mode: LiveMode,
        mid_ticks: float,
        latency_us: float,
        action_mode: str = "toggle",
        order: str | None = None,
    ) -> Self:
        """The decision at bar `ts_ns`: the action named in the model's action mode
        (`core.schema.ACTION_NAMES`), the state by name, the latency rounded to 0.1 µs."""
        return cls(
            ts=int(ts_ns),
            time=iso_ms(int(ts_ns)),
            action=action,
            action_name=None if action is None else ACTION_NAMES[action_mode][action],
            action_mode=action_mode,
            state={n: float(v) for n, v in zip(MANAGEMENT_STATE, state.tolist(), strict=True)},
            model_version=model_version,
            mode=mode,
            mid_ticks=mid_ticks,
            latency_us=round(latency_us, 1),
            order=order,
        )

    def to_json(self) -> JsonObject:
        """The decision's JSON line as a dict (`order` only when there is one)."""
        out: JsonObject = self.model_dump(exclude={"order"} if self.order is None else None)
        return out

    @classmethod
    def from_json(cls, obj: JsonObject) -> Self:
        """A decision line read back. Raises pydantic.ValidationError."""
        return cls.model_validate(obj)

    def line(self) -> str:
        """The human line for stdout."""
        st = self.state
        return (
            f"{self.time} action={self.action_name or 'none'} pos={st['position_size']:+.3f} "
            f"long_order={int(st['long_state'])} short_order={int(st['short_state'])} "
            f"model={self.model_version or 'none'} mode={self.mode}"
        )
