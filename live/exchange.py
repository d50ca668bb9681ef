"""BitMEX REST client: signed requests, post-only orders, lookups, rate limits, dead man's switch.

Adapter ring (HTTP only, no trading rules: the risk checks and the decision of what to send
live elsewhere).

Authentication (https://www.bitmex.com/app/apiKeysUsage): headers `api-expires` (unix
seconds), `api-key`, `api-signature` = hex HMAC-SHA256(secret, verb + path + expires + body),
`path` including `/api/v1` and the query string. Keys come only from `core.settings.Settings`
(`CHAPPIE_BITMEX_API_KEY` / `CHAPPIE_BITMEX_API_SECRET`, SecretStr) and never appear in a
log, an exception or a repr.

Order creation is never blindly retried: a timeout, a transport error, an undecodable
answer or a 5xx leaves the outcome unknown (`classify_error` -> "unknown"). `create_post_only`
sends one POST and leaves the resolution to its caller (`live.orders.OrderManager` re-queries
by clOrdID with backoff); `place_post_only` is the blocking convenience that looks the order
up at once, and raises `UnknownOutcomeError` when even that cannot tell. Every request is
signed with an `api-expires` deadline that BitMEX enforces: a request still queued after it
is dropped by the exchange, so an order not found after its `last_expires` has passed was
never created.

Answers are BitMEX's JSON as it came (`JsonObject` rows: the order manager reads the keys it
needs and tolerates garbled values); an answer of the wrong shape (not a list of objects
where rows are expected) raises ValueError, which `classify_error` calls "unknown".
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlencode, urlsplit

import httpx
from pydantic import SecretStr

from core.jsontypes import JsonObject, JsonValue

# Every order Chappie sends carries this clOrdID prefix: a restarted loop (a new session)
# still recognises the orders of the session before it as its own.
OWN_PREFIX = "chappie-"


class ExchangeError(RuntimeError):
    """An error answer from the exchange (status and message, never the keys)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class UnknownOutcomeError(ExchangeError):
    """A create whose outcome could not be learned (the POST and the lookups failed): the
    order may exist. Carries its clOrdID so the caller can keep looking it up."""

    def __init__(self, cl_ord_id_: str, message: str) -> None:
        super().__init__(503, message)
        self.cl_ord_id = cl_ord_id_


class RateLimitedError(ExchangeError):
    """HTTP 429, or the client's own budget from the x-ratelimit-* headers is spent."""

    def __init__(self, status: int, message: str, retry_after_s: float) -> None:
        super().__init__(status, message)
        self.retry_after_s = retry_after_s


ErrorKind = Literal["unknown", "busy", "refused", "auth"]


def classify_error(exc: BaseException) -> ErrorKind:
    """What a failed request means. Pure.

    - "auth": HTTP 401/403, the keys or their permissions are refused (retrying cannot help);
    - "busy": HTTP 429 or the client's own rate budget: the request was not carried out;
    - "refused": any other 4xx, the exchange processed the request and said no;
    - "unknown": 5xx, timeouts, transport errors, an undecodable answer, anything else: the
      request may or may not have taken effect (a mutation must be looked up).
    """
    if isinstance(exc, RateLimitedError):
        return "busy"
    if isinstance(exc, ExchangeError) and not isinstance(exc, UnknownOutcomeError):
        if exc.status in (401, 403):
            return "auth"
        if exc.status == 429:
            return "busy"
        if 400 <= exc.status < 500:
            return "refused"
    return "unknown"


def sign_request(secret: str, verb: str, path: str, expires: int, body: str) -> str:
    """BitMEX API signature: hex HMAC-SHA256(secret, verb + path + str(expires) + body). Pure."""
    message = (verb.upper() + path + str(int(expires)) + body).encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def cl_ord_id(session: str, decision_ts_ns: int, side: int, purpose: str = "open") -> str:
    """Deterministic clOrdID of one order intent (<= 36 chars, BitMEX's limit). Pure.

    The same (session, decision time, side, purpose) always gives the same id, so a
    re-sent intent is recognised by the exchange as a duplicate instead of a second order.
    """
    digest = hashlib.sha256(f"{session}|{decision_ts_ns}|{side}|{purpose}".encode()).hexdigest()
    return f"{OWN_PREFIX}{session[:8]}-{digest[:16]}"


@dataclass
class RateLimit:
    """Budget from the last `x-ratelimit-*` headers."""

    limit: int | None = None
    remaining: int | None = None
    reset_s: float | None = None  # unix seconds when the budget refills

    def wait_s(self, now_s: float, reserve: int = 1) -> float:
        """Seconds to wait before the next request so that `reserve` requests stay spare."""
        if self.remaining is None or self.remaining > reserve or self.reset_s is None:
            return 0.0
        return max(0.0, self.reset_s - now_s)


class BitmexRest:
    """Signed BitMEX REST calls used by the live loop (see module docstring)."""

    def __init__(
        self,
        base_url: str,
        api_key: SecretStr,
        api_secret: SecretStr,
        *,
        timeout_s: float = 5.0,
        expires_in_s: int = 10,
        client: httpx.Client | None = None,
        now_s: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        reserve_requests: int = 5,
        max_wait_s: float = 2.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._prefix = urlsplit(self.base_url).path  # "/api/v1"
        self._key = api_key
        self._secret = api_secret
        self.timeout_s = timeout_s
        self.expires_in_s = expires_in_s
        self._client = client or httpx.Client(timeout=timeout_s)
        self._now_s = now_s
        self._sleep = sleep
        self.rate = RateLimit()
        self.reserve_requests = reserve_requests
        self.max_wait_s = max_wait_s
        self.requests = 0
        self.lookups_after_unknown = 0
        self.last_expires = 0  # `api-expires` (unix s) of the last request sent

    def wall_s(self) -> float:
        """The client's wall clock (unix seconds), the one `api-expires` is computed from."""
        return self._now_s()

    def __repr__(self) -> str:  # never show the keys
        return f"BitmexRest({self.base_url!r})"

    def close(self) -> None:
        self._client.close()

    # ------------------------------------------------------------------ transport
    def request(
        self,
        verb: str,
        endpoint: str,
        params: Mapping[str, str | int] | None = None,
        body: JsonObject | None = None,
        *,
        urgent: bool = False,
    ) -> JsonValue:
        """One signed request; returns the decoded JSON. Raises ExchangeError, RateLimitedError,
        httpx.TimeoutException / httpx.TransportError (outcome unknown).

        Rate budget (the last `x-ratelimit-*` headers): ordinary requests keep
        `reserve_requests` spare for cancels (`urgent=True`, which keep only one). When the
        budget is spent the client waits for the reset if that is at most `max_wait_s`,
        else it raises RateLimitedError without sending (the loop must not stall)."""
        wait = self.rate.wait_s(self._now_s(), reserve=1 if urgent else self.reserve_requests)
        if wait > self.max_wait_s:
            raise RateLimitedError(429, f"rate budget spent for {wait:.1f} s (client-side)", wait)
        if wait > 0:
            self._sleep(wait)
        query = ("?" + urlencode(params)) if params else ""
        path = f"{self._prefix}{endpoint}{query}"
        data = json.dumps(body, separators=(",", ":")) if body is not None else ""
        expires = int(self._now_s()) + self.expires_in_s
        self.last_expires = expires
        headers = {
            "api-expires": str(expires),
            "api-key": self._key.get_secret_value(),
            "api-signature": sign_request(
                self._secret.get_secret_value(), verb, path, expires, data
            ),
            "content-type": "application/json",
            "accept": "application/json",
        }
        url = f"{self.base_url}{endpoint}{query}"
        self.requests += 1
        resp = self._client.request(
            verb.upper(), url, content=data.encode() if data else None, headers=headers
        )
        self._update_rate(resp)
        if resp.status_code == 429:
            retry = float(resp.headers.get("retry-after", "1"))
            raise RateLimitedError(429, _error_text(resp), retry)
        if resp.status_code >= 400:
            raise ExchangeError(resp.status_code, _error_text(resp))
        return resp.json()  # a ValueError on a garbled body: outcome unknown (classify_error)

    def _update_rate(self, resp: httpx.Response) -> None:
        h = resp.headers
        if "x-ratelimit-remaining" in h:
            self.rate = RateLimit(
                limit=int(h.get("x-ratelimit-limit", 0)) or None,
                remaining=int(h["x-ratelimit-remaining"]),
                reset_s=float(h["x-ratelimit-reset"]) if "x-ratelimit-reset" in h else None,
            )

    # ------------------------------------------------------------------ orders
    def get_order(self, symbol: str, cl_ord_id_: str) -> JsonObject | None:
        """The order with this clOrdID (any status), or None."""
        answer = self.request(
            "GET",
            "/order",
            {
                "symbol": symbol,
                "filter": json.dumps({"clOrdID": cl_ord_id_}),
                "count": 10,
                "reverse": "true",
            },
        )
        for r in _rows(answer, "GET /order"):
            if r.get("clOrdID") == cl_ord_id_:
                return r
        return None

    def open_orders(self, symbol: str) -> list[JsonObject]:
        answer = self.request(
            "GET", "/order", {"symbol": symbol, "filter": json.dumps({"open": True}), "count": 500}
        )
        return _rows(answer, "GET /order")

    def position(self, symbol: str) -> JsonObject:
        """The position row of `symbol` (currentQty 0 when none)."""
        answer = self.request("GET", "/position", {"filter": json.dumps({"symbol": symbol})})
        for r in _rows(answer, "GET /position"):
            if r.get("symbol") == symbol:
                return r
        return {"symbol": symbol, "currentQty": 0, "avgEntryPrice": None}

    def create_post_only(
        self, symbol: str, side: int, qty: int, price: float, cl_ord_id_: str
    ) -> JsonObject:
        """ONE POST of a post-only limit order (`execInst=ParticipateDoNotInitiate`): it only
        ever adds liquidity; the exchange cancels it instead of crossing. Raises whatever
        `request` raises; `classify_error` says whether the order may exist ("unknown")."""
        body: JsonObject = {
            "symbol": symbol,
            "side": "Buy" if side > 0 else "Sell",
            "orderQty": int(qty),
            "price": price,
            "ordType": "Limit",
            "execInst": "ParticipateDoNotInitiate",
            "clOrdID": cl_ord_id_,
        }
        return _object(self.request("POST", "/order", body=body), "POST /order")

    def place_post_only(
        self, symbol: str, side: int, qty: int, price: float, cl_ord_id_: str
    ) -> JsonObject:
        """`create_post_only`, resolved at once: on an unknown outcome the order is looked up
        by its clOrdID; found -> that is the order; not found -> sent once more with the same
        clOrdID (BitMEX refuses a duplicate clOrdID, so even that cannot create two). Raises
        ExchangeError on a refusal and UnknownOutcomeError when a lookup fails too (the
        order may exist: the caller must keep looking it up, never send another)."""
        for attempt in range(2):
            try:
                return self.create_post_only(symbol, side, qty, price, cl_ord_id_)
            except Exception as exc:  # noqa: BLE001 - classified below
                if classify_error(exc) != "unknown":
                    raise
            # outcome unknown: look it up before anything else
            self.lookups_after_unknown += 1
            try:
                found = self.get_order(symbol, cl_ord_id_)
            except Exception as exc:  # noqa: BLE001 - the order may exist: say so
                raise UnknownOutcomeError(
                    cl_ord_id_, f"order {cl_ord_id_}: outcome unknown, lookup failed ({exc})"
                ) from exc
            if found is not None:
                return found
            if attempt == 1:
                break
        raise UnknownOutcomeError(
            cl_ord_id_, f"order {cl_ord_id_}: not found after two unknown outcomes"
        )

    def amend_price(self, order_id: str, price: float) -> JsonObject:
        answer = self.request("PUT", "/order", body={"orderID": order_id, "price": price})
        return _object(answer, "PUT /order")

    def cancel(self, cl_ord_ids: list[str]) -> list[JsonObject]:
        """Cancel orders by clOrdID (idempotent: cancelling a closed order is not an error)."""
        if not cl_ord_ids:
            return []
        ids: list[JsonValue] = list(cl_ord_ids)
        answer = self.request("DELETE", "/order", body={"clOrdID": ids}, urgent=True)
        return _rows(answer, "DELETE /order")

    def cancel_all(self, symbol: str) -> list[JsonObject]:
        answer = self.request("DELETE", "/order/all", body={"symbol": symbol}, urgent=True)
        return _rows(answer, "DELETE /order/all")

    def cancel_all_after(self, timeout_ms: int) -> JsonObject:
        """Dead man's switch: cancel everything if not refreshed within `timeout_ms` (0 disarms)."""
        answer = self.request(
            "POST", "/order/cancelAllAfter", body={"timeout": int(timeout_ms)}, urgent=True
        )
        return _object(answer, "POST /order/cancelAllAfter")


def _object(answer: JsonValue, what: str) -> JsonObject:
    """An answer that must be one JSON object (an order, the switch's state). Raises
    ValueError otherwise (an undecodable answer: the outcome is unknown)."""
    if not isinstance(answer, dict):
        raise ValueError(f"{what}: expected a JSON object, got {type(answer).__name__}")
    return answer


def _rows(answer: JsonValue, what: str) -> list[JsonObject]:
    """An answer that must be a list of JSON objects (orders, positions). Raises
    ValueError otherwise (an undecodable answer: the outcome is unknown)."""
    if not isinstance(answer, list):
        raise ValueError(f"{what}: expected a JSON list, got {type(answer).__name__}")
    return [_object(row, what) for row in answer]


def _error_text(resp: httpx.Response) -> str:
    try:
        err = resp.json().get("error", {})
        return str(err.get("message", err)) if isinstance(err, dict) else str(err)
    except (ValueError, AttributeError):
        return resp.text[:200]
