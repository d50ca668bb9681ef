"""Streaming twin of `features.compute`: one bar in, the same float64 feature vector out.

Used by the live loop. Pure state machine (no I/O, no clock). Equality with the batch
path is bit for bit: windowed quantities are exact Python-int differences of cumulative
sums (the batch uses int64 cumulative sums), and each float is made by the same IEEE
operations in the same order, with scalar `math.sqrt` / `math.log` (glibc, as polars).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from typing import Any

import numpy as np

from core import schema as S
from core.clock import NS_PER_S
from core.config.features import FeatureSpec
from features.compute import bars_for

NAN = float("nan")

# positions in one history record
_OFI, _SIGNED, _TOTAL, _NTR, _DSQ, _NOTOK, _S2 = range(7)


class FeatureStream:
    """Incremental features for one symbol on the spec's bar grid.

    `update(bar)` takes one bar (a mapping with `core.schema.bar_columns(spec.depth)`
    keys, bars in grid order) and returns the feature vector in `spec.names` order.
    A bar that is not after the previous one raises ValueError; a skipped grid point
    restarts every window (counted in `gaps`), as after a fresh start. After each
    update, `warmup` tells whether the row would be a warm-up row in the batch, and
    `mid_ticks` holds the bar's mid.
    """

    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec
        self._names = spec.names
        self._windows = [(w, bars_for(w, spec)) for w in spec.windows_s]
        self._horizons = [bars_for(h, spec) for h in spec.return_horizons_s]
        self._lookback = spec.lookback_bars
        self._cap_ns = spec.lookback_ns
        self._depth = spec.depth
        self._interval = spec.interval_ns
        self._depth_bps = [float(x) for x in spec.depth_bps]
        self._keep = max([n for _, n in self._windows] + self._horizons + [self._lookback]) + 1
        self.gaps = 0  # times the bar grid broke and the stream started over
        self._start()
        self._bid_px = [S.bid_px(i) for i in range(spec.depth)]
        self._bid_sz = [S.bid_sz(i) for i in range(spec.depth)]
        self._ask_px = [S.ask_px(i) for i in range(spec.depth)]
        self._ask_sz = [S.ask_sz(i) for i in range(spec.depth)]
        self.ts = -1

    def _start(self) -> None:
        """Empty state: every window restarts (warm-up again)."""
        self._hist: deque[tuple[int, ...]] = deque(maxlen=self._keep)
        self._cum = [0, 0, 0, 0, 0, 0]
        self._prev_s2: int | None = None
        self.rows = 0
        self.warmup = True
        self.mid_ticks = NAN

    def _wsum(self, k: int, n: int) -> int:
        """Exact sum of quantity k over the last n bars (partial at the start)."""
        h = self._hist
        cur = h[-1][k]
        return cur - h[-n - 1][k] if len(h) > n else cur

    def update(self, bar: Mapping[str, Any]) -> np.ndarray:
        """Advance by one bar; return the float64 feature vector (spec.names order)."""
        bp = [int(bar[c]) for c in self._bid_px]
        bz = [int(bar[c]) for c in self._bid_sz]
        ap = [int(bar[c]) for c in self._ask_px]
        az = [int(bar[c]) for c in self._ask_sz]
        ts = int(bar[S.TS])
        if self.ts >= 0:
            if ts <= self.ts:
                raise ValueError(f"bar at {ts} ns is not after the previous bar at {self.ts} ns")
            if ts != self.ts + self._interval:
                # a broken grid (e.g. a feed outage): windows cannot span it; start over,
                # as the batch path refuses such bars (features.slices.check_grid)
                self._start()
                self.gaps += 1
        buy, sell = int(bar[S.BUY_VOL]), int(bar[S.SELL_VOL])
        last_trade = int(bar[S.LAST_TRADE_TS])
        s2 = bp[0] + ap[0]
        ds = 0 if self._prev_s2 is None else s2 - self._prev_s2
        self._prev_s2 = s2
        cum = self._cum
        cum[_OFI] += int(bar[S.OFI_L1])
        cum[_SIGNED] += buy - sell
        cum[_TOTAL] += buy + sell
        cum[_NTR] += int(bar[S.N_TRADES])
        cum[_DSQ] += ds * ds
        cum[_NOTOK] += 0 if bar[S.BOOK_OK] else 1
        self._hist.append((*cum, s2))
        self.rows += 1
        self.ts = ts
        self.mid_ticks = float(s2) * 0.5

        out: list[float] = []
        spread = ap[0] - bp[0]
        out.append(float(spread))
        out.append(float(spread * 20000) / float(s2) if s2 != 0 else NAN)
        bs, as_ = bz[0], az[0]
        den = (bs + as_) * s2
        out.append(float(spread * (bs - as_)) / float(den) * 10000.0 if den != 0 else NAN)
        out.append(float(bs - as_) / float(bs + as_) if bs + as_ != 0 else 0.0)
        for levels in (5, 10):
            num = 0
            dsum = 0
            for i in range(levels):
                w = levels - i
                num += (bz[i] - az[i]) * w
                dsum += (bz[i] + az[i]) * w
            out.append(float(num) / float(dsum) if dsum != 0 else 0.0)
        wsum = self._wsum
        for _, n in self._windows:
            sg = wsum(_SIGNED, n)
            tot = wsum(_TOTAL, n)
            out.append(float(wsum(_OFI, n)))
            out.append(float(sg))
            out.append(float(sg) / float(tot) if tot != 0 else 0.0)
        for w, n in self._windows:
            out.append(float(wsum(_NTR, n)) * (1.0 / w))
            out.append(math.sqrt(float(wsum(_DSQ, n))) / float(s2) * 10000.0 if s2 != 0 else NAN)
        if last_trade < 0:
            out.append(NAN)
        else:
            out.append(float(min(ts - last_trade, self._cap_ns)) * (1.0 / NS_PER_S))
        h = self._hist
        for n in self._horizons:
            past = h[-n - 1][_S2] if len(h) > n else 0
            out.append(math.log(float(s2) / float(past)) if s2 > 0 and past > 0 else NAN)
        lim = float(s2)
        for x in self._depth_bps:
            limx = lim * x
            for px, sz in ((bp, bz), (ap, az)):
                total = 0
                for i in range(self._depth):
                    p = px[i]
                    if p > 0 and float(abs(p * 2 - s2) * 10000) <= limx:
                        total += sz[i]
                out.append(float(total))

        self.warmup = (
            self.rows - 1 < self._lookback - 1 or wsum(_NOTOK, self._lookback) > 0 or last_trade < 0
        )
        return np.array(out, dtype=np.float64)
