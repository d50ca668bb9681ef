"""Streaming twin of `features.compute`: one bar in, the same float64 feature vector out.

Used by the live loop. Pure state machine (no I/O, no clock). Equality with the batch
path is bit for bit: windowed quantities are exact Python-int differences of cumulative
sums (the batch uses int64 cumulative sums), and each float is made by the same IEEE
operations in the same order, with scalar `math.sqrt` / `math.log` (glibc, as polars).
"""

from __future__ import annotations

import math
import operator
from collections import deque
from collections.abc import Mapping

import numpy as np

from core import schema as S
from core.clock import NS_PER_S
from core.config.features import FeatureSpec
from features.compute import bars_for

NAN = float("nan")

# positions in one history record
_OFI, _SIGNED, _TOTAL, _NTR, _DSQ, _NOTOK, _S2 = range(7)
#: the history record before the first bar (every cumulative sum 0)
_ZERO = (0, 0, 0, 0, 0, 0, 0)


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
        self._book = operator.itemgetter(
            *(f(i) for f in (S.bid_px, S.bid_sz, S.ask_px, S.ask_sz) for i in range(spec.depth))
        )
        self.ts = -1

    def _start(self) -> None:
        """Empty state: every window restarts (warm-up again)."""
        self._hist: deque[tuple[int, ...]] = deque(maxlen=self._keep)
        self._cum = [0, 0, 0, 0, 0, 0]
        self._prev_s2: int | None = None
        self.rows = 0
        self.warmup = True
        self.mid_ticks = NAN

    def update(self, bar: Mapping[str, int | bool]) -> np.ndarray:
        """Advance by one bar; return the float64 feature vector (spec.names order)."""
        d = self._depth
        book = list(map(int, self._book(bar)))  # bid px, bid sz, ask px, ask sz; d each
        ts = int(bar[S.TS])
        if self.ts >= 0:
            if ts <= self.ts:
                raise ValueError(f"bar at {ts} ns is not after the previous bar at {self.ts} ns")
            if ts != self.ts + self._interval:
                # a broken grid (e.g. a feed outage): windows cannot span it; start over,
                # as the batch path refuses such bars (features.slicing.check_grid)
                self._start()
                self.gaps += 1
        buy, sell = int(bar[S.BUY_VOL]), int(bar[S.SELL_VOL])
        last_trade = int(bar[S.LAST_TRADE_TS])
        bid0, bs, ask0, as_ = book[0], book[d], book[2 * d], book[3 * d]
        s2 = bid0 + ask0
        ds = 0 if self._prev_s2 is None else s2 - self._prev_s2
        self._prev_s2 = s2
        cum = self._cum
        cum[_OFI] += int(bar[S.OFI_L1])
        cum[_SIGNED] += buy - sell
        cum[_TOTAL] += buy + sell
        cum[_NTR] += int(bar[S.N_TRADES])
        cum[_DSQ] += ds * ds
        cum[_NOTOK] += 0 if bar[S.BOOK_OK] else 1
        h = self._hist
        now = (*cum, s2)
        h.append(now)
        self.rows += 1
        self.ts = ts
        self.mid_ticks = float(s2) * 0.5

        out: list[float] = []
        spread = ask0 - bid0
        out.append(float(spread))
        out.append(float(spread * 20000) / float(s2) if s2 != 0 else NAN)
        den = (bs + as_) * s2
        out.append(float(spread * (bs - as_)) / float(den) * 10000.0 if den != 0 else NAN)
        out.append(float(bs - as_) / float(bs + as_) if bs + as_ != 0 else 0.0)
        # depth-weighted imbalances: sum_{i<L} (L - i) x_i = sum_{j<L} (x_0 + ... + x_j),
        # the running prefix sums of (bid - ask) and (bid + ask) sizes (exact ints)
        pnum = pden = wnum = wden = 0
        for i in range(10):
            b, a = book[d + i], book[3 * d + i]
            pnum += b - a
            pden += b + a
            wnum += pnum
            wden += pden
            if i == 4:
                out.append(float(wnum) / float(wden) if wden != 0 else 0.0)
        out.append(float(wnum) / float(wden) if wden != 0 else 0.0)
        n_hist = len(h)
        for _, n in self._windows:  # exact window sums: cum now - cum n bars ago
            past = h[-n - 1] if n_hist > n else _ZERO
            sg = now[_SIGNED] - past[_SIGNED]
            tot = now[_TOTAL] - past[_TOTAL]
            out.append(float(now[_OFI] - past[_OFI]))
            out.append(float(sg))
            out.append(float(sg) / float(tot) if tot != 0 else 0.0)
        for w, n in self._windows:
            past = h[-n - 1] if n_hist > n else _ZERO
            out.append(float(now[_NTR] - past[_NTR]) * (1.0 / w))
            dsq = now[_DSQ] - past[_DSQ]
            out.append(math.sqrt(float(dsq)) / float(s2) * 10000.0 if s2 != 0 else NAN)
        if last_trade < 0:
            out.append(NAN)
        else:
            out.append(float(min(ts - last_trade, self._cap_ns)) * (1.0 / NS_PER_S))
        for n in self._horizons:
            p0 = h[-n - 1][_S2] if n_hist > n else 0
            out.append(math.log(float(s2) / float(p0)) if s2 > 0 and p0 > 0 else NAN)
        for x in self._depth_bps:
            # level i counts when its price is set and |2 px - s2| * 1e4 <= s2 * x (in
            # floats, as documented on `features.compute.depth_within_bps`), i.e. when
            # lo <= px <= hi for the integer band below (the equivalence is proven
            # there and tested against the float test)
            k = math.floor(float(s2) * x) // 10000
            lo, hi = max((s2 - k + 1) // 2, 1), (s2 + k) // 2
            for px0, sz0 in ((0, d), (2 * d, 3 * d)):
                total = 0
                for i in range(d):
                    if lo <= book[px0 + i] <= hi:
                        total += book[sz0 + i]
                out.append(float(total))

        past = h[-self._lookback - 1] if n_hist > self._lookback else _ZERO
        self.warmup = self.rows < self._lookback or now[_NOTOK] - past[_NOTOK] > 0 or last_trade < 0
        return np.array(out, dtype=np.float64)
