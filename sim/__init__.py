"""Chappie sim: BitMEX-protocol servers on 127.0.0.1 that stand in for the exchange.

- `replay_server`: the realtime websocket (subscribe, partials, ping/pong) replaying a
  recording or canonical events (`canonical_to_messages`) on one shared timeline, with fault
  injection (refused handshakes, silence, crafted messages). It backs the demo
  `chappie live --feed replay --replay synthetic` and the live loop's tests.
- `fake_exchange`: the REST subset the order manager uses (signed like BitMEX, rate-limit
  headers, the dead man's switch) with scripted and seeded faults: the fault campaign's
  and the trading tests' exchange.

Adapter ring. Depends on `core` only: the live loop (`live.loop` and what it runs) never
imports this package; only the `chappie live` wiring (`live.app`) starts a replay server
(`.importlinter`).
"""
