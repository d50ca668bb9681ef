"""The fake exchange checks signatures with its own code, against BitMEX's documented
examples (https://www.bitmex.com/app/apiKeysUsage), not with the client's signer."""

from __future__ import annotations

from sim.fake_exchange import expected_signature

SECRET = "chNOOS4KvNXR_Xq4k4c9qsfoKWvnDecLATCRlcBwyKDYnWgO"  # BitMEX's documentation key


def test_expected_signature_matches_bitmex_documentation_examples() -> None:
    assert expected_signature(SECRET, "GET", "/api/v1/instrument", "1518064236", "") == (
        "c7682d435d0cfe87c16098df34ef2eb5a549d4c5a3c2b1f0f77b8af73423bf00"
    )
    body = '{"symbol":"XBTM15","price":219.0,"clOrdID":"mm_bitmex_1a/oemUeQ4CAJZgP3fjHsA","orderQty":98}'
    assert expected_signature(SECRET, "POST", "/api/v1/order", "1518064238", body) == (
        "1749cd2ccae4aa49048ae09f0b95110cee706e0944e6a14ad0b3a8cb45bd336b"
    )
