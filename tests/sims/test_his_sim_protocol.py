"""The demo HIS refuses every bad-input class with the error envelope and changes nothing."""

from __future__ import annotations

from typing import Any

import pytest

from frontdesk.core.clock import now as clock_now
from frontdesk.his import signing
from frontdesk.sims.his_sim.app import sim_state
from tests.sims.his_helpers import client_for, signed, snapshot

SETTLE = "/his/v1/settlements"


async def _settle_body(app: Any, secret: str) -> dict[str, Any]:
    async with client_for(app) as c:
        orders = (
            await signed(
                c, secret, "GET", "/his/v1/orders", query="card_no=6100000002&status=unpaid"
            )
        ).json()["items"]
        ids = [o["order_id"] for o in orders]
        pre = (
            await signed(
                c,
                secret,
                "POST",
                "/his/v1/orders/pre-settle",
                body={"card_no": "6100000002", "order_ids": ids},
            )
        ).json()
    return {
        "card_no": "6100000002",
        "order_ids": ids,
        "payment_ref": "PAYBAD0001",
        "self_pay_fen": pre["self_pay_fen"],
    }


def _is_envelope(body: Any, code: str, *, retryable: bool = False) -> bool:
    return (
        set(body) == {"code", "message", "retryable"}
        and body["code"] == code
        and body["retryable"] is retryable
        and isinstance(body["message"], str)
    )


async def test_a_good_signed_write_works(his_sim: Any, his_secret: str) -> None:
    body = await _settle_body(his_sim, his_secret)
    async with client_for(his_sim) as c:
        ok = await signed(
            c, his_secret, "POST", SETTLE, body=body, headers={"Idempotency-Key": "k-good-1"}
        )
    assert ok.status_code == 200
    assert ok.json()["self_pay_fen"] == body["self_pay_fen"]


@pytest.mark.parametrize(
    ("case", "status", "code"),
    [
        ("missing_signature", 401, "signature_missing"),
        ("forged_signature", 401, "signature_invalid"),
        ("wrong_secret", 401, "signature_invalid"),
        ("unknown_key", 401, "unknown_key"),
        ("stale_timestamp", 401, "timestamp_out_of_window"),
        ("future_timestamp", 401, "timestamp_out_of_window"),
        ("body_changed_after_signing", 401, "signature_invalid"),
    ],
)
async def test_bad_signatures_are_refused_and_change_nothing(
    his_sim: Any, his_secret: str, case: str, status: int, code: str
) -> None:
    body = await _settle_body(his_sim, his_secret)
    before = await snapshot(his_sim)
    now = int(clock_now().timestamp())
    idem = {"Idempotency-Key": f"k-{case}"}
    async with client_for(his_sim) as c:
        if case == "missing_signature":
            response = await c.post(SETTLE, json=body, headers=idem)
        elif case == "forged_signature":
            response = await signed(
                c,
                his_secret,
                "POST",
                SETTLE,
                body=body,
                headers={**idem, signing.HEADER_SIGNATURE: "0" * 64},
            )
        elif case == "wrong_secret":
            response = await signed(c, "not-the-secret", "POST", SETTLE, body=body, headers=idem)
        elif case == "unknown_key":
            response = await signed(
                c, his_secret, "POST", SETTLE, body=body, headers=idem, key_id="someone-else"
            )
        elif case == "stale_timestamp":
            response = await signed(
                c, his_secret, "POST", SETTLE, body=body, headers=idem, unix_time=now - 301
            )
        elif case == "future_timestamp":
            response = await signed(
                c, his_secret, "POST", SETTLE, body=body, headers=idem, unix_time=now + 301
            )
        else:
            import json

            payload = json.dumps(body).encode()
            headers = signing.signed_headers(
                key_id="test-key",
                secret=his_secret,
                method="POST",
                path=SETTLE,
                query="",
                body=payload,
                unix_time=now,
            ).as_dict()
            tampered = json.dumps({**body, "self_pay_fen": 0}).encode()
            response = await c.post(
                SETTLE,
                content=tampered,
                headers={**headers, **idem, "Content-Type": "application/json"},
            )
    assert response.status_code == status
    assert _is_envelope(response.json(), code)
    assert await snapshot(his_sim) == before


async def test_a_timestamp_inside_the_window_is_accepted(his_sim: Any, his_secret: str) -> None:
    now = int(clock_now().timestamp())
    async with client_for(his_sim) as c:
        response = await signed(c, his_secret, "GET", "/his/v1/departments", unix_time=now - 299)
    assert response.status_code == 200


async def test_a_reused_nonce_is_refused(his_sim: Any, his_secret: str) -> None:
    body = await _settle_body(his_sim, his_secret)
    async with client_for(his_sim) as c:
        first = await signed(
            c,
            his_secret,
            "POST",
            "/his/v1/orders/pre-settle",
            body={"card_no": body["card_no"], "order_ids": body["order_ids"]},
            nonce="n" * 32,
        )
        assert first.status_code == 200
        before = await snapshot(his_sim)
        replay = await signed(
            c,
            his_secret,
            "POST",
            SETTLE,
            body=body,
            nonce="n" * 32,
            headers={"Idempotency-Key": "k-replay"},
        )
    assert replay.status_code == 401
    assert _is_envelope(replay.json(), "nonce_reused")
    assert await snapshot(his_sim) == before


@pytest.mark.parametrize(
    ("case", "status", "code"),
    [
        ("malformed_json", 400, "malformed_json"),
        ("wrong_type_fen_as_string", 422, "invalid_request"),
        ("wrong_type_fen_as_float", 422, "invalid_request"),
        ("negative_fen", 422, "invalid_request"),
        ("missing_field", 422, "invalid_request"),
        ("order_ids_not_a_list", 422, "invalid_request"),
        ("injection_in_ref", 422, "invalid_request"),
        ("no_idempotency_key", 400, "idempotency_key_required"),
    ],
)
async def test_bad_bodies_are_refused_and_change_nothing(
    his_sim: Any, his_secret: str, case: str, status: int, code: str
) -> None:
    body = await _settle_body(his_sim, his_secret)
    before = await snapshot(his_sim)
    idem = {"Idempotency-Key": f"k-{case}"}
    raw: bytes | None = None
    send: Any = dict(body)
    if case == "malformed_json":
        raw = b'{"card_no": "6100000002", "order_ids": ['
    elif case == "wrong_type_fen_as_string":
        send["self_pay_fen"] = str(body["self_pay_fen"])
    elif case == "wrong_type_fen_as_float":
        send["self_pay_fen"] = body["self_pay_fen"] + 0.5
    elif case == "negative_fen":
        send["self_pay_fen"] = -1
    elif case == "missing_field":
        del send["payment_ref"]
    elif case == "order_ids_not_a_list":
        send["order_ids"] = body["order_ids"][0]
    elif case == "injection_in_ref":
        send["payment_ref"] = "x'; DROP TABLE his_order;--"
    elif case == "no_idempotency_key":
        idem = {}
    async with client_for(his_sim) as c:
        response = await signed(c, his_secret, "POST", SETTLE, body=send, raw=raw, headers=idem)
    assert response.status_code == status, response.text
    assert _is_envelope(response.json(), code)
    assert await snapshot(his_sim) == before


async def test_unknown_fields_are_ignored(his_sim: Any, his_secret: str) -> None:
    body = await _settle_body(his_sim, his_secret)
    async with client_for(his_sim) as c:
        response = await signed(
            c,
            his_secret,
            "POST",
            SETTLE,
            body={**body, "future_field": {"x": 1}},
            headers={"Idempotency-Key": "k-extra"},
        )
    assert response.status_code == 200


async def test_unknown_operation_and_method(his_sim: Any, his_secret: str) -> None:
    before = await snapshot(his_sim)
    async with client_for(his_sim) as c:
        unknown = await signed(c, his_secret, "POST", "/his/v1/patients/delete", body={})
        wrong_method = await signed(c, his_secret, "DELETE", "/his/v1/departments")
        old_version = await signed(c, his_secret, "GET", "/his/v0/departments")
    assert unknown.status_code == 404
    assert _is_envelope(unknown.json(), "unknown_operation")
    assert wrong_method.status_code == 405
    assert _is_envelope(wrong_method.json(), "unknown_operation")
    assert old_version.status_code == 404
    assert _is_envelope(old_version.json(), "unknown_operation")
    assert await snapshot(his_sim) == before


async def test_an_oversized_body_is_refused_before_it_is_read(
    his_sim: Any, his_secret: str
) -> None:
    before = await snapshot(his_sim)
    limit = sim_state(his_sim).max_body_bytes
    async with client_for(his_sim) as c:
        response = await signed(
            c,
            his_secret,
            "POST",
            SETTLE,
            raw=b'{"card_no": "' + b"9" * limit + b'"}',
            headers={"Idempotency-Key": "k-big"},
        )
    assert response.status_code == 413
    assert _is_envelope(response.json(), "body_too_large")
    assert await snapshot(his_sim) == before


async def test_idempotency_key_returns_the_first_result_and_refuses_reuse(
    his_sim: Any, his_secret: str
) -> None:
    body = await _settle_body(his_sim, his_secret)
    async with client_for(his_sim) as c:
        first = await signed(
            c, his_secret, "POST", SETTLE, body=body, headers={"Idempotency-Key": "k-once"}
        )
        after_first = await snapshot(his_sim)
        second = await signed(
            c, his_secret, "POST", SETTLE, body=body, headers={"Idempotency-Key": "k-once"}
        )
        assert await snapshot(his_sim) == after_first
        reused = await signed(
            c,
            his_secret,
            "POST",
            SETTLE,
            body={**body, "payment_ref": "PAYOTHER01"},
            headers={"Idempotency-Key": "k-once"},
        )
    assert first.status_code == second.status_code == 200
    assert second.json() == first.json()
    assert second.headers["Idempotent-Replayed"] == "true"
    assert reused.status_code == 422
    assert _is_envelope(reused.json(), "idempotency_key_reused")
    assert await snapshot(his_sim) == after_first


async def test_a_refused_write_is_replayed_as_the_same_refusal(
    his_sim: Any, his_secret: str
) -> None:
    body = await _settle_body(his_sim, his_secret)
    wrong = {**body, "self_pay_fen": body["self_pay_fen"] + 1}
    async with client_for(his_sim) as c:
        first = await signed(
            c, his_secret, "POST", SETTLE, body=wrong, headers={"Idempotency-Key": "k-wrong"}
        )
        second = await signed(
            c, his_secret, "POST", SETTLE, body=wrong, headers={"Idempotency-Key": "k-wrong"}
        )
    assert first.status_code == second.status_code == 422
    assert _is_envelope(first.json(), "amount_mismatch")
    assert second.json() == first.json()


async def test_bad_query_values_are_refused(his_sim: Any, his_secret: str) -> None:
    async with client_for(his_sim) as c:
        bad_date = await signed(
            c, his_secret, "GET", "/his/v1/schedules", query="start=2026-13-01&end=2026-12-01"
        )
        bad_cursor = await signed(c, his_secret, "GET", "/his/v1/events", query="after=-1")
        traversal = await signed(c, his_secret, "GET", "/his/v1/reports/..%2F..%2Fetc")
    assert bad_date.status_code == 422
    assert _is_envelope(bad_date.json(), "invalid_request")
    assert bad_cursor.status_code == 422
    assert traversal.status_code in {404, 422}
    assert traversal.json()["retryable"] is False
