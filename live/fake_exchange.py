"""A fake BitMEX on 127.0.0.1 for tests: the REST subset the live loop uses plus the
market websocket (`live.replay_server`). Adapter ring (a real HTTP server, real sockets).

REST (under `/api/v1`, every request signature-checked exactly as BitMEX does, with
`x-ratelimit-limit/remaining/reset` headers on every answer):
`POST /order` (post-only limit; a duplicate clOrdID is refused), `GET /order` (filters
`clOrdID`, `open`), `PUT /order` (amend price), `DELETE /order` (by clOrdID or orderID),
`DELETE /order/all`, `POST /order/cancelAllAfter`, `GET /position`.

Faults: `fail_creates_after_commit` (status codes answered AFTER the order was created, the
"503 but it went through" case), `fail_creates_before_commit` (answered and nothing
created), `delay_next_create_s` (answer later than the client's timeout, order created),
`rate_remaining` (the budget reported in the headers).
"""

from __future__ import annotations

import hmac
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from live.exchange import sign_request


class FakeBitmexRest:
    """The REST half of the fake exchange, in its own thread."""

    def __init__(
        self, api_key: str, api_secret: str, host: str = "127.0.0.1", port: int = 0
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
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                outer._handle(self)

            do_GET = do_POST = do_PUT = do_DELETE = _serve

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="fake-bitmex-rest", daemon=True
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
            return [
                dict(o)
                for o in self.orders.values()
                if o["ordStatus"] in ("New", "PartiallyFilled")
            ]

    def fill(self, cl_ord_id: str) -> None:
        """Fill a resting order completely (the position moves by its qty)."""
        with self._lock:
            for o in self.orders.values():
                if o["clOrdID"] == cl_ord_id and o["ordStatus"] == "New":
                    o["ordStatus"] = "Filled"
                    o["leavesQty"] = 0
                    o["cumQty"] = o["orderQty"]
                    sign = 1 if o["side"] == "Buy" else -1
                    self.position_qty[o["symbol"]] = (
                        self.position_qty.get(o["symbol"], 0) + sign * o["orderQty"]
                    )

    def _expire_dead_man(self) -> None:
        if (
            self.dead_man_timeout_ms
            and time.time() > self.dead_man_armed_at + self.dead_man_timeout_ms / 1000
        ):
            for o in self.orders.values():
                if o["ordStatus"] == "New":
                    o["ordStatus"] = "Canceled"
            self.dead_man_timeout_ms = 0

    # ------------------------------------------------------------------ HTTP
    def _reply(self, h: BaseHTTPRequestHandler, status: int, obj: Any) -> None:
        data = json.dumps(obj).encode()
        h.send_response(status)
        h.send_header("content-type", "application/json")
        h.send_header("content-length", str(len(data)))
        h.send_header("x-ratelimit-limit", str(self.rate_limit))
        h.send_header("x-ratelimit-remaining", str(self.rate_remaining))
        h.send_header("x-ratelimit-reset", str(int(time.time()) + self.rate_reset_in_s))
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
            and int(expires) >= int(time.time())
            and hmac.compare_digest(
                sig, sign_request(self.api_secret, verb, h.path, int(expires), raw)
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
                self._create(h, body or {})
            elif route == ("GET", "/order"):
                self._list(h, query)
            elif route == ("PUT", "/order"):
                self._amend(h, body or {})
            elif route == ("DELETE", "/order"):
                self._cancel(h, body or {})
            elif route == ("DELETE", "/order/all"):
                sym = (body or {}).get("symbol")
                out = []
                for o in self.orders.values():
                    if o["ordStatus"] == "New" and (sym is None or o["symbol"] == sym):
                        o["ordStatus"] = "Canceled"
                        out.append(dict(o))
                self._reply(h, 200, out)
            elif route == ("POST", "/order/cancelAllAfter"):
                self.dead_man_calls += 1
                self.dead_man_timeout_ms = int((body or {}).get("timeout", 0))
                self.dead_man_armed_at = time.time()
                self._reply(h, 200, {"now": time.time(), "cancelTime": self.dead_man_timeout_ms})
            elif route == ("GET", "/position"):
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

    def _create(self, h: BaseHTTPRequestHandler, b: dict[str, Any]) -> None:
        if self.fail_creates_before_commit:
            self._error(
                h, self.fail_creates_before_commit.pop(0), "The system is currently overloaded."
            )
            return
        if b.get("execInst") != "ParticipateDoNotInitiate" or b.get("ordType") != "Limit":
            self._error(h, 400, "only post-only limit orders are supported by this fake")
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
        if o is None or o["ordStatus"] != "New":
            self._error(h, 400, "Invalid ordStatus")
            return
        o["price"] = float(b["price"])
        self._reply(h, 200, dict(o))

    def _cancel(self, h: BaseHTTPRequestHandler, b: dict[str, Any]) -> None:
        cids = b.get("clOrdID") or []
        oids = b.get("orderID") or []
        cids = [cids] if isinstance(cids, str) else cids
        oids = [oids] if isinstance(oids, str) else oids
        out = []
        for o in self.orders.values():
            if o["clOrdID"] in cids or o["orderID"] in oids:
                if o["ordStatus"] == "New":
                    o["ordStatus"] = "Canceled"
                out.append(dict(o))
        self._reply(h, 200, out)
