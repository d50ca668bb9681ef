"""A fake BitMEX on 127.0.0.1 for tests: the REST subset the live loop uses plus the
market websocket (`sim.replay_server`). Adapter ring (a real HTTP server, real sockets).

REST (under `/api/v1`, every request signature-checked as BitMEX documents it, by this
module's own `expected_signature` and not the client's signer, so a signing bug in
`live.exchange` is refused here as the exchange would refuse it; with
`x-ratelimit-limit/remaining/reset` headers on every answer):
`POST /order` (post-only limit; a duplicate clOrdID is refused), `GET /order` (filters
`clOrdID`, `open`), `PUT /order` (amend price), `DELETE /order` (by clOrdID or orderID),
`DELETE /order/all`, `POST /order/cancelAllAfter`, `GET /position`.

Scripted faults: `fail_creates_after_commit` (status codes answered AFTER the order was
created, the "503 but it went through" case), `fail_creates_before_commit` (answered and
nothing created), `delay_next_create_s` (answer later than the client's timeout, order
created), `rate_remaining` (the budget reported in the headers).

Seeded faults (`FaultPlan`): every request draws from one `random.Random(seed)` against the
rates of its route: creates answered 503 after or before the commit, answered too late
(committed, or committed late if the request's `api-expires` has not passed by then, as
BitMEX drops expired requests), lookups and polls answered 503 or too late, cancels answered
503 after or before taking effect, amends, positions and `cancelAllAfter` answered 503.
`faults_injected` counts what was injected. `now_s` is the exchange's clock (unix seconds):
`api-expires`, the dead man's switch; a test may run it in simulated time, with the client's
clock the same.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


def expected_signature(secret: str, verb: str, path: str, expires: str, body: str) -> str:
    """The signature BitMEX expects (https://www.bitmex.com/app/apiKeysUsage): hex
    HMAC-SHA256 of the secret over verb + path with query + api-expires + body. Pure."""
    message = f"{verb}{path}{expires}{body}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


OPEN = ("New", "PartiallyFilled")


@dataclass(frozen=True)
class FaultPlan:
    """Seeded REST fault rates (probability per request of that route, 0..1)."""

    seed: int = 0
    create_after_commit: float = 0.0  # created, answered 503
    create_before_commit: float = 0.0  # answered 503, nothing created
    create_timeout: float = 0.0  # created, answered after `delay_s`
    create_late_commit: float = 0.0  # created after `delay_s` if not expired by then
    lookup_fail: float = 0.0  # GET /order answered 503
    lookup_timeout: float = 0.0  # GET /order answered after `delay_s`
    cancel_after_commit: float = 0.0  # cancelled, answered 503
    cancel_before_commit: float = 0.0  # answered 503, nothing cancelled
    amend_fail: float = 0.0  # PUT /order answered 503, price unchanged
    position_fail: float = 0.0  # GET /position answered 503
    dead_man_fail: float = 0.0  # POST /order/cancelAllAfter answered 503, not re-armed
    delay_s: float = 0.3  # how late a late answer comes (set above the client's timeout)

    @classmethod
    def uniform(cls, seed: int, rate: float, timeout_rate: float, delay_s: float) -> FaultPlan:
        """Every 503 fault at `rate`, every late answer at `timeout_rate`."""
        return cls(
            seed=seed,
            create_after_commit=rate,
            create_before_commit=rate,
            create_timeout=timeout_rate,
            create_late_commit=timeout_rate,
            lookup_fail=rate,
            lookup_timeout=timeout_rate,
            cancel_after_commit=rate,
            cancel_before_commit=rate,
            amend_fail=rate,
            position_fail=rate,
            dead_man_fail=rate,
            delay_s=delay_s,
        )


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that timed out closed its socket before a late answer: not an error."""


class FakeBitmexRest:
    """The REST half of the fake exchange, in its own thread."""

    def __init__(
        self,
        api_key: str,
        api_secret: str,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        faults: FaultPlan | None = None,
        now_s: Callable[[], float] = time.time,
    ) -> None:
        self.api_key = api_key
        self.api_secret = api_secret
        self.orders: dict[str, dict[str, Any]] = {}  # orderID -> order
        self.position_qty: dict[str, int] = {}
        self.requests: list[tuple[str, str, dict[str, Any] | None]] = []
        self.auth_failures = 0
        self.creates_committed = 0
        self.fail_creates_after_commit: list[int] = []
        self.fail_creates_before_commit: list[int] = []
        self.delay_next_create_s = 0.0
        self.rate_limit = 120
        self.rate_remaining = 119
        self.rate_reset_in_s = 1
        self.dead_man_timeout_ms = 0
        self.dead_man_armed_at = 0.0
        self.dead_man_calls = 0
        self.dead_man_log: list[tuple[float, int]] = []  # (now_s, timeout_ms) of every arm
        self.dead_man_fired = 0
        self.now_s = now_s
        self.faults = faults
        self._rng = random.Random(faults.seed if faults else 0)
        self.faults_injected: Counter[str] = Counter()
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the exchange's endpoint
            disable_nagle_algorithm = True  # headers and body go out at once (no 40 ms stall)

            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                outer._handle(self)

            do_GET = do_POST = do_PUT = do_DELETE = _serve

        self._httpd = _QuietServer((host, port), Handler)
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},  # a quick stop
            name="fake-bitmex-rest",
            daemon=True,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1"

    def start(self) -> str:
        self._thread.start()
        return self.url

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> FakeBitmexRest:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ views for tests
    def open_orders(self) -> list[dict[str, Any]]:
        with self._lock:
            self._expire_dead_man()
            return [dict(o) for o in self.orders.values() if o["ordStatus"] in OPEN]

    def fill(self, cl_ord_id: str, qty: int | None = None) -> int:
        """Fill a resting order (all of it, or `qty` contracts of it): the position moves by
        the filled qty. Returns the qty filled (0 when the order is not open)."""
        with self._lock:
            for o in self.orders.values():
                if o["clOrdID"] == cl_ord_id and o["ordStatus"] in OPEN:
                    n = o["leavesQty"] if qty is None else max(0, min(int(qty), o["leavesQty"]))
                    o["leavesQty"] -= n
                    o["cumQty"] += n
                    o["ordStatus"] = "Filled" if o["leavesQty"] == 0 else "PartiallyFilled"
                    sign = 1 if o["side"] == "Buy" else -1
                    self.position_qty[o["symbol"]] = (
                        self.position_qty.get(o["symbol"], 0) + sign * n
                    )
                    return n
        return 0

    def _expire_dead_man(self) -> None:
        if (
            self.dead_man_timeout_ms
            and self.now_s() > self.dead_man_armed_at + self.dead_man_timeout_ms / 1000
        ):
            for o in self.orders.values():
                if o["ordStatus"] in OPEN:
                    o["ordStatus"] = "Canceled"
            self.dead_man_timeout_ms = 0
            self.dead_man_fired += 1

    def _fault(self, name: str) -> bool:
        """Draw one seeded fault (under the lock); True when `name` is injected."""
        rate = getattr(self.faults, name, 0.0) if self.faults is not None else 0.0
        if rate <= 0.0 or self._rng.random() >= rate:
            return False
        self.faults_injected[name] += 1
        return True

    def _late(self) -> None:
        """Answer after the plan's delay (the lock released meanwhile: the exchange goes on)."""
        assert self.faults is not None
        self._lock.release()
        try:
            time.sleep(self.faults.delay_s)
        finally:
            self._lock.acquire()

    # ------------------------------------------------------------------ HTTP
    def _reply(self, h: BaseHTTPRequestHandler, status: int, obj: Any) -> None:
        data = json.dumps(obj).encode()
        h.send_response(status)
        h.send_header("content-type", "application/json")
        h.send_header("content-length", str(len(data)))
        h.send_header("x-ratelimit-limit", str(self.rate_limit))
        h.send_header("x-ratelimit-remaining", str(self.rate_remaining))
        h.send_header("x-ratelimit-reset", str(int(self.now_s()) + self.rate_reset_in_s))
        h.end_headers()
        h.wfile.write(data)

    def _error(self, h: BaseHTTPRequestHandler, status: int, message: str) -> None:
        self._reply(h, status, {"error": {"message": message, "name": "HTTPError"}})

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        n = int(h.headers.get("content-length") or 0)
        raw = h.rfile.read(n).decode() if n else ""
        verb = h.command
        parts = urlsplit(h.path)
        expires = h.headers.get("api-expires", "")
        sig = h.headers.get("api-signature", "")
        ok = (
            h.headers.get("api-key") == self.api_key
            and expires.isdigit()
            and int(expires) >= int(self.now_s())
            and hmac.compare_digest(
                sig, expected_signature(self.api_secret, verb, h.path, expires, raw)
            )
        )
        if not ok:
            self.auth_failures += 1
            self._error(h, 401, "Signature not valid.")
            return
        body = json.loads(raw) if raw else None
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        endpoint = parts.path.removeprefix("/api/v1")
        self.requests.append((verb, endpoint, body))
        with self._lock:
            self._expire_dead_man()
            route = (verb, endpoint)
            if route == ("POST", "/order"):
                self._create(h, body or {}, int(expires))
            elif route == ("GET", "/order"):
                if self._fault("lookup_fail"):
                    self._error(h, 503, "The system is currently overloaded.")
                    return
                if self._fault("lookup_timeout"):
                    self._late()
                self._list(h, query)
            elif route == ("PUT", "/order"):
                if self._fault("amend_fail"):
                    self._error(h, 503, "The system is currently overloaded.")
                    return
                self._amend(h, body or {})
            elif route == ("DELETE", "/order"):
                if self._fault("cancel_before_commit"):
                    self._error(h, 503, "The system is currently overloaded.")
                    return
                self._cancel(h, body or {}, fail_after=self._fault("cancel_after_commit"))
            elif route == ("DELETE", "/order/all"):
                sym = (body or {}).get("symbol")
                out = []
                for o in self.orders.values():
                    if o["ordStatus"] in OPEN and (sym is None or o["symbol"] == sym):
                        o["ordStatus"] = "Canceled"
                        out.append(dict(o))
                self._reply(h, 200, out)
            elif route == ("POST", "/order/cancelAllAfter"):
                if self._fault("dead_man_fail"):
                    self._error(h, 503, "The system is currently overloaded.")
                    return
                self.dead_man_calls += 1
                self.dead_man_timeout_ms = int((body or {}).get("timeout", 0))
                self.dead_man_armed_at = self.now_s()
                self.dead_man_log.append((self.dead_man_armed_at, self.dead_man_timeout_ms))
                self._reply(h, 200, {"now": time.time(), "cancelTime": self.dead_man_timeout_ms})
            elif route == ("GET", "/position"):
                if self._fault("position_fail"):
                    self._error(h, 503, "The system is currently overloaded.")
                    return
                flt = json.loads(query.get("filter", "{}"))
                sym = flt.get("symbol", "XBTUSD")
                self._reply(
                    h,
                    200,
                    [
                        {
                            "symbol": sym,
                            "currentQty": self.position_qty.get(sym, 0),
                            "avgEntryPrice": None,
                        }
                    ],
                )
            else:
                self._error(h, 404, f"Not found: {verb} {endpoint}")

    def _create(self, h: BaseHTTPRequestHandler, b: dict[str, Any], expires: int) -> None:
        if self.fail_creates_before_commit:
            self._error(
                h, self.fail_creates_before_commit.pop(0), "The system is currently overloaded."
            )
            return
        if self._fault("create_before_commit"):
            self._error(h, 503, "The system is currently overloaded.")
            return
        if b.get("execInst") != "ParticipateDoNotInitiate" or b.get("ordType") != "Limit":
            self._error(h, 400, "only post-only limit orders are supported by this fake")
            return
        if self._fault("create_late_commit"):
            self._late()  # queued in the exchange: the client gives up meanwhile
            if int(self.now_s()) > expires:  # BitMEX drops a request whose api-expires passed
                self._error(h, 503, "request expired while queued")
                return
        cid = b.get("clOrdID", "")
        if cid and any(o["clOrdID"] == cid for o in self.orders.values()):
            self._error(h, 400, "Duplicate clOrdID")
            return
        oid = str(uuid.uuid4())
        order = {
            "orderID": oid,
            "clOrdID": cid,
            "symbol": b["symbol"],
            "side": b["side"],
            "orderQty": int(b["orderQty"]),
            "price": float(b["price"]),
            "ordType": "Limit",
            "execInst": b["execInst"],
            "ordStatus": "New",
            "leavesQty": int(b["orderQty"]),
            "cumQty": 0,
        }
        self.orders[oid] = order
        self.creates_committed += 1
        if self.delay_next_create_s:
            d, self.delay_next_create_s = self.delay_next_create_s, 0.0
            self._lock.release()
            try:
                time.sleep(d)
            finally:
                self._lock.acquire()
        if self.fail_creates_after_commit:
            self._error(
                h, self.fail_creates_after_commit.pop(0), "The system is currently overloaded."
            )
            return
        if self._fault("create_after_commit"):
            self._error(h, 503, "The system is currently overloaded.")
            return
        if self._fault("create_timeout"):
            self._late()
        self._reply(h, 200, dict(order))

    def _list(self, h: BaseHTTPRequestHandler, q: dict[str, str]) -> None:
        flt = json.loads(q.get("filter", "{}"))
        out = []
        for o in self.orders.values():
            if q.get("symbol") and o["symbol"] != q["symbol"]:
                continue
            if "clOrdID" in flt and o["clOrdID"] != flt["clOrdID"]:
                continue
            if flt.get("open") and o["ordStatus"] not in ("New", "PartiallyFilled"):
                continue
            out.append(dict(o))
        self._reply(h, 200, out)

    def _amend(self, h: BaseHTTPRequestHandler, b: dict[str, Any]) -> None:
        o = self.orders.get(b.get("orderID", ""))
        if o is None or o["ordStatus"] not in OPEN:
            self._error(h, 400, "Invalid ordStatus")
            return
        o["price"] = float(b["price"])
        self._reply(h, 200, dict(o))

    def _cancel(self, h: BaseHTTPRequestHandler, b: dict[str, Any], fail_after: bool) -> None:
        cids = b.get("clOrdID") or []
        oids = b.get("orderID") or []
        cids = [cids] if isinstance(cids, str) else cids
        oids = [oids] if isinstance(oids, str) else oids
        out = []
        for o in self.orders.values():
            if o["clOrdID"] in cids or o["orderID"] in oids:
                if o["ordStatus"] in OPEN:
                    o["ordStatus"] = "Canceled"
                out.append(dict(o))
        if fail_after:
            self._error(h, 503, "The system is currently overloaded.")
            return
        self._reply(h, 200, out)
