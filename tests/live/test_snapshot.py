"""The readiness gate: populated book, sane timestamps, warm-up, full window."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from live.snapshot import SnapshotManager

S = 1_000_000_000


def _gate(window: int = 3) -> SnapshotManager:
    return SnapshotManager(window=window, stale_after_ns=10 * S, max_skew_ns=30 * S)


def test_ready_only_after_window_consecutive_complete_warm_bars() -> None:
    g = _gate(3)
    g.on_message(1 * S)
    assert (
        g.on_bar(1 * S, book_ok=True, warmup=True, features_finite=True).reason == "feature warm-up"
    )
    assert not g.on_bar(2 * S, True, False, True).ok
    assert not g.on_bar(3 * S, True, False, True).ok
    assert g.on_bar(4 * S, True, False, True).ok
    assert not g.on_bar(5 * S, False, False, True).ok  # book broken: reset
    assert not g.on_bar(6 * S, True, False, True).ok


def test_stale_data_blocks_inference() -> None:
    g = _gate(1)
    g.on_message(1 * S)
    assert g.on_bar(2 * S, True, False, True).ok
    r = g.on_bar(12 * S, True, False, True)
    assert not r.ok and "stale" in r.reason


def test_backwards_receive_time_and_large_skew_are_not_sane() -> None:
    g = _gate(1)
    assert g.on_message(5 * S)
    assert not g.on_message(4 * S)
    assert not g.on_message(6 * S, ts_exchange=6 * S - 31 * S)
    assert g.on_message(7 * S, ts_exchange=7 * S - 29 * S)
    assert g.violations == 2


@given(
    st.lists(st.tuples(st.booleans(), st.booleans(), st.booleans()), max_size=60), st.integers(1, 5)
)
def test_never_ready_without_window_clean_bars_in_a_row(flags: list, window: int) -> None:
    g = _gate(window)
    g.on_message(0)
    run = 0
    for k, (book_ok, warm, finite) in enumerate(flags):
        g.on_message(k * S)
        r = g.on_bar(k * S, book_ok, warm, finite)
        run = run + 1 if (book_ok and not warm and finite) else 0
        assert r.ok == (run >= window)
