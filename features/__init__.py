"""Chappie feature store: batch features and their streaming twin, walk-forward slices,
frozen stats (see DESIGN.md). Bars come from the one book and sampler in `book/`.

Modules
- compute.py           batch features v1 (polars), one builder per column
- stream.py            `FeatureStream`: the same features one bar at a time, bit for bit
- walk_forward.py      pure fold / stress-window generation
- stats.py             `FrozenStats`: mean and floored sigma from train slices only
- slices.py            the contracts: slice manifest, fold index (folds.json), staging
                       plan; `load_fold_index`, `load_manifest`, `manifest_path`
- slicing.py           pure: slice rows (features with look-backs carried, warm-up
                       dropped), the bar grid check, window lineage, segment bounds
- bars.py              bars sampled day by day from the events (a bars index of day
                       parts), read whole, part by part or by window; event lineage
- publish.py           stage slices (segments, per-fold frozen stats), then publish
                       segments, stats, manifests and folds.json (the features flow
                       validates in between: flows/features.py)
- store.py             slice storage: content-addressed Arrow IPC segments (each row
                       written once), `read_slice`, `slice_table`, `verify_slice`
- audit.py             `chappie audit parity|lookahead` on users' own event partitions

Feature set v1 (`core.schema.feature_names`; W = `spec.windows_s`, H = `spec.return_horizons_s`,
X = `spec.depth_bps`; every window trailing, (t - W, t]):

| column | unit | look-back | source |
|---|---|---|---|
| mid_ticks (carried, not observed) | ticks | none | |
| spread_ticks, spread_bps | ticks, bps of mid | none | quoted spread |
| microprice_offset_bps | bps of mid | none | Stoikov 2018; Gatheral-Oomen 2010 |
| imbalance_l1 | [-1, 1] | none | Cartea-Jaimungal-Penalva 2015; Gould-Bonart 2016 |
| imbalance_l5, imbalance_l10 | [-1, 1], linear depth weights | none | Cao-Hansch-Wang 2009 |
| ofi_{W}s | contracts | W | Cont-Kukanov-Stoikov 2014 (level-1 e_n per message) |
| signed_volume_{W}s | contracts | W | Kyle 1985; Chordia-Subrahmanyam 2004 |
| trade_imbalance_{W}s | [-1, 1] (0 without trades) | W | Chordia-Subrahmanyam 2004 |
| trade_intensity_{W}s | trades / s | W | Engle 2000 (intensity = count / window) |
| realized_vol_{W}s | bps of mid | W + 1 bar | Andersen-Bollerslev 1998 |
| time_since_trade_s | s, capped at the look-back | cap | |
| log_return_{H}s | ln ratio | H | |
| depth_bid_{X}bps, depth_ask_{X}bps | contracts | none | resting depth near mid |

Warm-up: the first `spec.lookback_bars - 1` bars, any bar whose look-back holds a bar
with an incomplete book, and bars before the first trade. Warm-up rows never enter a
slice.
"""
