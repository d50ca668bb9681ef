"""The BitMEX REST client against the fake exchange on 127.0.0.1."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from live.exchange import BitmexRest, ExchangeError, RateLimitedError, cl_ord_id, sign_request
from sim.fake_exchange import FakeBitmexRest

KEY = "LAqUlngMIQkIUjXMUreyu3qn"
SECRET = "chNOOS4KvNXR_Xq4k4c9qsfoKWvnDecLATCRlcBwyKDYnWgO"


def test_signature_matches_bitmex_documentation_examples() -> None:
    assert sign_request(SECRET, "GET", "/api/v1/instrument", 1518064236, "") == (
        "c7682d435d0cfe87c16098df34ef2eb5a549d4c5a3c2b1f0f77b8af73423bf00"
    )
    body = '{"symbol":"XBTM15","price":219.0,"clOrdID":"mm_bitmex_1a/oemUeQ4CAJZgP3fjHsA","orderQty":98}'
    assert sign_request(SECRET, "POST", "/api/v1/order", 1518064238, body) == (
        "1749cd2ccae4aa49048ae09f0b95110cee706e0944e6a14ad0b3a8cb45bd336b"
    )


def test_cl_ord_id_is_deterministic_short_and_distinct() -> None:
    a = cl_ord_id("sess-1", 10, 1)
    assert a == cl_ord_id("sess-1", 10, 1) and len(a) <= 36 and a.startswith("chappie-")
    assert (
        len(
            {a, cl_ord_id("sess-1", 10, -1), cl_ord_id("sess-1", 11, 1), cl_ord_id("sess-2", 10, 1)}
        )
        == 4
    )


@pytest.fixture
def fake() -> Iterator[FakeBitmexRest]:
    with FakeBitmexRest(KEY, SECRET) as f:
        yield f


def _client(fake: FakeBitmexRest, timeout_s: float = 2.0, secret: str = SECRET) -> BitmexRest:
    return BitmexRest(fake.url, SecretStr(KEY), SecretStr(secret), timeout_s=timeout_s)


def test_post_only_order_lookup_and_cancel(fake: FakeBitmexRest) -> None:
    c = _client(fake)
    o = c.place_post_only("XBTUSD", 1, 100, 32000.5, "chappie-a")
    assert (
        o["ordStatus"] == "New"
        and o["execInst"] == "ParticipateDoNotInitiate"
        and o["side"] == "Buy"
    )
    assert c.get_order("XBTUSD", "chappie-a")["orderID"] == o["orderID"]
    assert [r["clOrdID"] for r in c.open_orders("XBTUSD")] == ["chappie-a"]
    c.cancel(["chappie-a"])
    assert c.open_orders("XBTUSD") == [] and fake.auth_failures == 0
    assert c.rate.remaining == 119 and c.rate.limit == 120


@pytest.mark.parametrize("status", [503, 502])
def test_unknown_outcome_after_commit_leaves_exactly_one_order(
    fake: FakeBitmexRest, status: int
) -> None:
    fake.fail_creates_after_commit = [status]
    c = _client(fake)
    o = c.place_post_only("XBTUSD", -1, 100, 32001.0, "chappie-b")
    assert o["clOrdID"] == "chappie-b"
    assert len(fake.open_orders()) == 1 and fake.creates_committed == 1
    assert c.lookups_after_unknown == 1


def test_503_before_commit_is_resolved_by_lookup_then_one_resend(fake: FakeBitmexRest) -> None:
    fake.fail_creates_before_commit = [503]
    c = _client(fake)
    c.place_post_only("XBTUSD", 1, 100, 32000.0, "chappie-c")
    assert len(fake.open_orders()) == 1 and c.lookups_after_unknown == 1
    creates = [r for r in fake.requests if r[:2] == ("POST", "/order")]
    assert len(creates) == 2


def test_timeout_on_create_is_resolved_by_lookup(fake: FakeBitmexRest) -> None:
    fake.delay_next_create_s = 0.6
    c = _client(fake, timeout_s=0.3)
    o = c.place_post_only("XBTUSD", 1, 100, 32000.0, "chappie-d")
    assert (
        o["clOrdID"] == "chappie-d" and len(fake.open_orders()) == 1 and fake.creates_committed == 1
    )


def test_duplicate_client_order_id_is_refused_not_duplicated(fake: FakeBitmexRest) -> None:
    c = _client(fake)
    c.place_post_only("XBTUSD", 1, 100, 32000.0, "chappie-e")
    with pytest.raises(ExchangeError, match="Duplicate"):
        c.place_post_only("XBTUSD", 1, 100, 32000.0, "chappie-e")
    assert len(fake.open_orders()) == 1


def test_rate_limit_headers_make_the_client_wait(fake: FakeBitmexRest) -> None:
    waits: list[float] = []
    c = BitmexRest(fake.url, SecretStr(KEY), SecretStr(SECRET), sleep=waits.append)
    fake.rate_remaining, fake.rate_reset_in_s = 0, 2  # refill 1-2 s ahead (whole seconds)
    c.open_orders("XBTUSD")
    assert waits == []
    c.open_orders("XBTUSD")
    assert len(waits) == 1 and 0 < waits[0] <= 2.0


def test_spent_rate_budget_refuses_ordinary_requests_but_keeps_cancels_going(
    fake: FakeBitmexRest,
) -> None:
    waits: list[float] = []
    c = BitmexRest(
        fake.url, SecretStr(KEY), SecretStr(SECRET), sleep=waits.append, reserve_requests=5
    )
    c.place_post_only("XBTUSD", 1, 100, 32000.0, "chappie-r")
    fake.rate_remaining, fake.rate_reset_in_s = 3, 30  # 3 left, refill in 30 s
    c.open_orders("XBTUSD")  # learns the budget from the headers
    sent = len(fake.requests)
    with pytest.raises(RateLimitedError):
        c.place_post_only("XBTUSD", -1, 100, 32001.0, "chappie-s")  # would eat the cancel reserve
    assert len(fake.requests) == sent and waits == []  # refused client-side, nothing sent
    c.cancel(["chappie-r"])  # cancels keep going
    assert fake.open_orders() == []


def test_dead_mans_switch_cancels_when_not_refreshed(fake: FakeBitmexRest) -> None:
    import time

    c = _client(fake)
    c.place_post_only("XBTUSD", 1, 100, 32000.0, "chappie-f")
    c.cancel_all_after(300)
    time.sleep(0.5)
    assert fake.open_orders() == []


def test_keys_never_appear_in_logs_errors_or_reprs(
    fake: FakeBitmexRest, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    c = _client(fake)
    c.place_post_only("XBTUSD", 1, 100, 32000.0, "chappie-g")
    bad = _client(fake, secret="wrong-secret-value-123")
    with pytest.raises(ExchangeError) as exc:
        bad.open_orders("XBTUSD")
    assert exc.value.status == 401
    text = caplog.text + str(exc.value) + repr(exc.value) + repr(c) + repr(bad)
    for secret in (KEY, SECRET, "wrong-secret-value-123"):
        assert secret not in text


def test_an_answer_of_the_wrong_shape_is_an_unknown_outcome() -> None:
    """Rows where a list of objects is due, or a list where one order is: ValueError,
    which the order manager counts as an unknown outcome (looked up, never re-sent)."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from live.exchange import classify_error

    class Garbled(BaseHTTPRequestHandler):
        def _answer(self, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # an object where rows are due
            self._answer({"orderID": "x", "clOrdID": "chappie-z"})

        def do_POST(self) -> None:  # rows where one order is due
            self.rfile.read(int(self.headers.get("content-length", 0)))
            self._answer([{"orderID": "x"}])

        def do_DELETE(self) -> None:  # a list holding something that is not an order
            self.rfile.read(int(self.headers.get("content-length", 0)))
            self._answer([{"orderID": "x"}, "garbled"])

        def log_message(self, *args: object) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Garbled)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    c = BitmexRest(
        f"http://127.0.0.1:{srv.server_address[1]}/api/v1", SecretStr(KEY), SecretStr(SECRET)
    )
    try:
        calls = [
            lambda: c.open_orders("XBTUSD"),
            lambda: c.get_order("XBTUSD", "chappie-z"),
            lambda: c.position("XBTUSD"),
            lambda: c.create_post_only("XBTUSD", 1, 100, 32000.0, "chappie-z"),
            lambda: c.cancel_all_after(60_000),
            lambda: c.cancel(["chappie-z"]),
        ]
        for call in calls:
            with pytest.raises(ValueError, match="expected a JSON") as err:
                call()
            assert classify_error(err.value) == "unknown"
        assert c.requests == len(calls)
    finally:
        c.close()
        srv.shutdown()
        srv.server_close()
