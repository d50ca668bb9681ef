"""Chappie live: the loop that trades (or observes) the promoted model (DESIGN.md).

Observe-only and testnet by default; never imports prefect, great_expectations or
stable_baselines3, and never unpickles anything.

Modules, by ring:
- pure: `risk` (model-independent limits), `snapshot` (when inference may run); the
  observe-only position is `envs.broker.BrokerAccount` (the env's own order/fill/roll
  kernels, bar by bar);
- adapters: `feed` (BitMEX websocket client: heartbeat, reconnect, partials, resubscribe,
  recording), `exchange` (signed BitMEX REST: post-only orders, lookups on unknown outcomes,
  rate budget, dead man's switch), `journal` (fsynced intents and outcomes), `recording`
  and `jsonl` (JSON lines files), `decode` (ingest's one BitMEX decoder, strict);
- orchestration: `predictor` (sampler -> streaming features -> frozen stats -> encoder ->
  policy), `orders` (decisions -> orders under the risk limits), `model_watch` (champion
  polling and swap), `loop` (`LiveSession`, `run_live`), `app` (`chappie live`).

The BitMEX-protocol servers a replay or a test runs against (the replay websocket, the
fake REST exchange) are the `sim` package; of `live`, only `app` imports it.
"""
