"""The ONE order book and the ONE fixed-interval sampler (DESIGN.md "One book, one
sampler"), below both `ingest` (desync checks while reading raw formats) and `features`
(bars for feature building), and used by the env's queue model and the live loop.

Modules
- order_book.py  the order-book state machine: numba kernels on an int64 array, and the
                 `OrderBook` class over them; `check_book` replays a partition
                 (`check_book_pieces`: the same, a piece of whole messages at a time)
- sampler.py     bars at multiples of `spec.interval_ns`: `sample_bars` (batch),
                 `BarSampler` (streaming) and `ResumableSampler` (day by day), one kernel

Imports core, numba, numpy and polars only.
"""
