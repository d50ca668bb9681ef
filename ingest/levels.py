"""Top-of-book states (quotes, top-N snapshots) -> canonical book deltas. Pure (numba).

Row r of (bid_px, bid_sz, ask_px, ask_sz), each (n, k) int64 with 0 for an absent level,
is the whole visible book at that time. The first row becomes a snapshot (is_snapshot);
each later row becomes the deltas from the previous row: levels that left -> size 0,
new or changed levels -> their size. Rows equal to the previous one give no delta.
"""

from __future__ import annotations

import numpy as np

from core.numba_cache import njit


@njit(cache=True)
def _diff_side(
    side: int,
    old_p: np.ndarray,
    old_q: np.ndarray,
    new_p: np.ndarray,
    new_q: np.ndarray,
    out: np.ndarray,
    n: int,
    te: np.int64,
    tr: np.int64,
    snap: int,
) -> int:
    k = new_p.shape[0]
    if snap == 0:
        for a in range(k):
            p = old_p[a]
            if p == 0 or old_q[a] == 0:
                continue
            gone = True
            for b in range(k):
                if new_p[b] == p and new_q[b] > 0:
                    gone = False
                    break
            if gone:
                out[n, 0] = te
                out[n, 1] = tr
                out[n, 2] = side
                out[n, 3] = p
                out[n, 4] = 0
                out[n, 5] = 0
                n += 1
    for b in range(k):
        p = new_p[b]
        q = new_q[b]
        if p == 0 or q <= 0:
            continue
        changed = True
        if snap == 0:
            for a in range(k):
                if old_p[a] == p and old_q[a] > 0:
                    changed = old_q[a] != q
                    break
        if changed:
            out[n, 0] = te
            out[n, 1] = tr
            out[n, 2] = side
            out[n, 3] = p
            out[n, 4] = q
            out[n, 5] = snap
            n += 1
    return n


@njit(cache=True)
def _levels_kernel(
    ts_event: np.ndarray,
    ts_recv: np.ndarray,
    bp: np.ndarray,
    bq: np.ndarray,
    ap: np.ndarray,
    aq: np.ndarray,
    out: np.ndarray,
) -> int:
    n = 0
    rows = bp.shape[0]
    for r in range(rows):
        snap = 1 if r == 0 else 0
        prev = 0 if r == 0 else r - 1
        n = _diff_side(1, bp[prev], bq[prev], bp[r], bq[r], out, n, ts_event[r], ts_recv[r], snap)
        n = _diff_side(-1, ap[prev], aq[prev], ap[r], aq[r], out, n, ts_event[r], ts_recv[r], snap)
    return n


def levels_to_deltas(
    ts_event: np.ndarray,
    ts_recv: np.ndarray,
    bid_px: np.ndarray,
    bid_sz: np.ndarray,
    ask_px: np.ndarray,
    ask_sz: np.ndarray,
) -> np.ndarray:
    """(m, 6) int64 rows (ts_event, ts_recv, side, price_ticks, size, is_snapshot)."""
    bp, bq, ap, aq = (
        np.ascontiguousarray(x.reshape(x.shape[0], -1), dtype=np.int64)
        for x in (bid_px, bid_sz, ask_px, ask_sz)
    )
    n, k = bp.shape
    out = np.zeros((n * 4 * k + 1, 6), dtype=np.int64)
    m = _levels_kernel(
        np.ascontiguousarray(ts_event, dtype=np.int64),
        np.ascontiguousarray(ts_recv, dtype=np.int64),
        bp,
        bq,
        ap,
        aq,
        out,
    )
    return out[:m]
