"""Signing: the published test vector, canonical queries, and verification refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from frontdesk.his import signing

VECTOR = {
    "method": "POST",
    "path": "/his/v1/orders/pre-settle",
    "query": "b=2&a=1&a=%E4%B8%AD",
    "timestamp": "1795741200",
    "nonce": "3f2a9c0e7b1d4e5fa6b7c8d9e0f1a2b3",
    "body": b'{"card_no":"6100000002","order_ids":["O000000005"]}',
}
SIGNATURE = "ec9b8ca6afd5c9d416826685771588c1c0bc5f422009d8dd52b92764bb319f30"


def test_the_published_test_vector() -> None:
    assert signing.sign("test-secret-please-rotate", **VECTOR) == SIGNATURE  # type: ignore[arg-type]
    doc = (Path(__file__).resolve().parents[2] / "docs" / "his-bridge.md").read_text("utf-8")
    assert f"signature   {SIGNATURE}" in doc
    assert signing.string_to_sign(**VECTOR).split("\n")[3] == "a=%E4%B8%AD&a=1&b=2"  # type: ignore[arg-type]


def test_canonical_query() -> None:
    assert signing.canonical_query("") == ""
    assert signing.canonical_query("z=1&a=x y&a=") == "a=&a=x%20y&z=1"
    assert signing.canonical_query([("since", "2026-01-01"), ("card_no", "61")]) == (
        "card_no=61&since=2026-01-01"
    )


def _headers(secret: str = "s3cret", **over: str) -> dict[str, str]:
    headers = signing.signed_headers(
        key_id="k1",
        secret=secret,
        method="GET",
        path="/his/v1/departments",
        query="",
        body=b"",
        unix_time=1_000_000,
        nonce="a" * 32,
    ).as_dict()
    headers.update(over)
    return headers


def _verify(headers: dict[str, str], unix_time: int = 1_000_000) -> tuple[str, str]:
    return signing.verify(
        keys={"k1": "s3cret"},
        headers=headers,
        method="GET",
        path="/his/v1/departments",
        query="",
        body=b"",
        unix_time=unix_time,
    )


def test_verify_accepts_a_good_signature_inside_the_window() -> None:
    assert _verify(_headers()) == ("k1", "a" * 32)
    assert _verify(_headers(), unix_time=1_000_300) == ("k1", "a" * 32)


@pytest.mark.parametrize(
    ("headers", "now", "code"),
    [
        ({signing.HEADER_SIGNATURE: ""}, 1_000_000, "signature_missing"),
        ({signing.HEADER_KEY_ID: "k2"}, 1_000_000, "unknown_key"),
        ({}, 1_000_301, "timestamp_out_of_window"),
        ({}, 999_699, "timestamp_out_of_window"),
        ({signing.HEADER_TIMESTAMP: "1e6"}, 1_000_000, "timestamp_out_of_window"),
        ({signing.HEADER_NONCE: "short"}, 1_000_000, "signature_invalid"),
        ({signing.HEADER_SIGNATURE: "f" * 64}, 1_000_000, "signature_invalid"),
    ],
)
def test_verify_refusals(headers: dict[str, str], now: int, code: str) -> None:
    with pytest.raises(signing.SignatureError) as refused:
        _verify(_headers(**headers), unix_time=now)
    assert refused.value.code == code


def test_a_different_secret_does_not_verify() -> None:
    with pytest.raises(signing.SignatureError) as refused:
        _verify(_headers(secret="other"))
    assert refused.value.code == "signature_invalid"
