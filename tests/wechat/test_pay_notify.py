"""The notify endpoint: the simulator's real notifications, and every kind of bad one."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from frontdesk.core.clock import FrozenClock
from frontdesk.core.inbox import InboxMessage
from frontdesk.wechat.pay import events, signing
from frontdesk.wechat.pay.port import JsapiOrder, RefundRequest
from tests.sims.pay_rig import PaySimRig

OPENID = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"


@pytest.fixture
def seen() -> Iterator[list[events.PayEvent]]:
    """Events handed to a registered handler (what billing will register later)."""
    received: list[events.PayEvent] = []

    async def handler(_session: AsyncSession, event: events.PayEvent) -> None:
        received.append(event)

    events.register(events.PayEvent, handler)
    try:
        yield received
    finally:
        events.unregister(events.PayEvent, handler)


@pytest.fixture
async def wired(app: Any, pay_sim: PaySimRig) -> PaySimRig:
    app.state.container.services["pay"] = pay_sim.pay
    pay_sim.connect_notify(app)
    return pay_sim


async def inbox_rows(db: AsyncSession) -> int:
    count = await db.scalar(
        select(func.count()).select_from(InboxMessage).where(InboxMessage.source == "wxpay")
    )
    return int(count or 0)


async def pay_order(rig: PaySimRig, out_trade_no: str = "P20261127000001") -> None:
    prepay_id = await rig.pay.create_jsapi_order(
        JsapiOrder(
            out_trade_no=out_trade_no, description="门诊缴费", amount_fen=2350, openid=OPENID
        )
    )
    order = rig.sim.confirm_jsapi(rig.pay.jsapi_pay_params(prepay_id).as_bridge_dict())
    rig.sim.pay(order, openid=OPENID)


async def test_a_payment_notification_is_stored_and_dispatched_once(
    wired: PaySimRig, db: AsyncSession, seen: list[events.PayEvent]
) -> None:
    await pay_order(wired)

    attempts = await wired.sim.deliver_due()

    notify = wired.sim.notifies[0]
    assert attempts == 1
    assert notify.answers == [204]
    assert notify.done
    assert len(seen) == 1
    event = seen[0]
    assert isinstance(event, events.PaymentSucceeded)
    assert (event.notify_id, event.out_trade_no, event.amount_fen, event.payer_total_fen) == (
        notify.notify_id,
        "P20261127000001",
        2350,
        2350,
    )
    assert event.openid == OPENID
    assert event.transaction_id == wired.sim.orders["P20261127000001"].transaction_id
    row = (await db.execute(select(InboxMessage))).scalar_one()
    assert (row.source, row.external_id) == ("wxpay", notify.notify_id)
    assert row.payload["kind"] == "PaymentSucceeded"
    assert row.payload["amount_fen"] == 2350
    assert row.processed_at is not None


async def test_a_repeated_notification_is_acknowledged_but_processed_once(
    wired: PaySimRig, db: AsyncSession, seen: list[events.PayEvent]
) -> None:
    wired.sim.faults.notify.append("duplicate")
    await pay_order(wired)

    await wired.sim.deliver_due()
    # And WeChat Pay may repeat it much later, freshly signed.
    notify = wired.sim.notifies[0]
    headers, body = wired.sim.notify_request(notify)
    again = await wired.sim.notify_http.post(notify.url, content=body, headers=headers)  # type: ignore[union-attr]

    assert notify.answers == [204, 204]
    assert again.status_code == 204
    assert len(seen) == 1
    assert await inbox_rows(db) == 1


async def test_a_refund_notification_becomes_a_refund_event(
    wired: PaySimRig, clock: FrozenClock, seen: list[events.PayEvent]
) -> None:
    await pay_order(wired)
    await wired.sim.deliver_due()
    await wired.pay.refund(
        RefundRequest(
            out_trade_no="P20261127000001",
            out_refund_no="R20261127000001",
            refund_fen=350,
            total_fen=2350,
        )
    )
    clock.advance(seconds=5)

    await wired.sim.deliver_due()

    assert [type(e).__name__ for e in seen] == ["PaymentSucceeded", "RefundSucceeded"]
    refund = seen[1]
    assert isinstance(refund, events.RefundSucceeded)
    assert (refund.out_refund_no, refund.refund_fen, refund.total_fen, refund.status) == (
        "R20261127000001",
        350,
        2350,
        "SUCCESS",
    )
    assert refund.success_at == clock.now()


async def test_a_failing_handler_rolls_back_and_wechat_retries(
    wired: PaySimRig, db: AsyncSession, clock: FrozenClock
) -> None:
    calls: list[str] = []

    async def flaky(_session: AsyncSession, event: events.PaymentSucceeded) -> None:
        calls.append(event.notify_id)
        if len(calls) == 1:
            raise RuntimeError("billing is down")

    events.register(events.PaymentSucceeded, flaky)
    try:
        await pay_order(wired)
        await wired.sim.deliver_due()
        rows_after_failure = await inbox_rows(db)
        clock.advance(seconds=15 * wired.sim.config.time_scale + 1)
        await wired.sim.deliver_due()
    finally:
        events.unregister(events.PaymentSucceeded, flaky)

    assert rows_after_failure == 0
    assert wired.sim.notifies[0].answers == [500, 204]
    assert len(calls) == 2
    assert await inbox_rows(db) == 1


# --- bad input: each refused, logged, nothing changed ---------------------------------------


async def post_notify(client: httpx.AsyncClient, headers: dict[str, str], body: bytes) -> Any:
    return await client.post("/wechat/pay/notify", content=body, headers=headers)


async def assert_refused(
    response: httpx.Response,
    status: int,
    reason: str,
    db: AsyncSession,
    seen: list[events.PayEvent],
) -> None:
    assert response.status_code == status
    assert response.json() == {"code": "FAIL", "message": reason}
    assert await inbox_rows(db) == 0
    assert seen == []


async def a_real_notification(rig: PaySimRig) -> tuple[dict[str, str], bytes]:
    rig.sim.faults.notify.append("drop")  # the simulator will not send it itself
    await pay_order(rig)
    return rig.sim.notify_request(rig.sim.notifies[0])


def resign(rig: PaySimRig, body: bytes) -> dict[str, str]:
    """Headers as if WeChat Pay itself had signed ``body`` (isolates the checks after it)."""
    headers = rig.sim.signed_headers(body)
    headers["Content-Type"] = "application/json"
    return headers


async def test_a_body_altered_after_signing_is_refused(
    wired: PaySimRig, client: httpx.AsyncClient, db: AsyncSession, seen: list[events.PayEvent]
) -> None:
    headers, body = await a_real_notification(wired)
    altered = body.replace(b'"summary":"', b'"summary":"!')

    response = await post_notify(client, headers, altered)

    await assert_refused(response, 401, "bad_signature", db, seen)


async def test_a_reserialised_body_is_refused(
    wired: PaySimRig, client: httpx.AsyncClient, db: AsyncSession, seen: list[events.PayEvent]
) -> None:
    headers, body = await a_real_notification(wired)
    spaced = json.dumps(json.loads(body)).encode()  # same data, other bytes

    response = await post_notify(client, headers, spaced)

    await assert_refused(response, 401, "bad_signature", db, seen)


@pytest.mark.parametrize(
    "header", ["Wechatpay-Signature", "Wechatpay-Timestamp", "Wechatpay-Nonce", "Wechatpay-Serial"]
)
async def test_missing_signature_headers_are_refused(
    wired: PaySimRig,
    client: httpx.AsyncClient,
    db: AsyncSession,
    seen: list[events.PayEvent],
    header: str,
) -> None:
    headers, body = await a_real_notification(wired)
    del headers[header]

    response = await post_notify(client, headers, body)

    await assert_refused(response, 401, "missing_headers", db, seen)


async def test_a_stale_notification_is_refused(
    wired: PaySimRig,
    client: httpx.AsyncClient,
    db: AsyncSession,
    seen: list[events.PayEvent],
    clock: FrozenClock,
) -> None:
    headers, body = await a_real_notification(wired)
    clock.advance(minutes=5, seconds=1)

    response = await post_notify(client, headers, body)

    await assert_refused(response, 401, "stale_timestamp", db, seen)


async def test_a_signature_probe_is_refused(
    wired: PaySimRig, client: httpx.AsyncClient, db: AsyncSession, seen: list[events.PayEvent]
) -> None:
    await a_real_notification(wired)
    wired.sim.faults.signtest = 1
    headers, body = wired.sim.notify_request(wired.sim.notifies[0])

    response = await post_notify(client, headers, body)

    await assert_refused(response, 401, "signature_probe", db, seen)


async def test_an_unknown_platform_key_is_refused(
    wired: PaySimRig, client: httpx.AsyncClient, db: AsyncSession, seen: list[events.PayEvent]
) -> None:
    headers, body = await a_real_notification(wired)
    headers["Wechatpay-Serial"] = "PUB_KEY_ID_0000000000000000000000000000000"

    response = await post_notify(client, headers, body)

    await assert_refused(response, 401, "unknown_serial", db, seen)


def _mutate_resource(body: bytes, **changes: str) -> bytes:
    envelope = json.loads(body)
    envelope["resource"].update(changes)
    return json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode()


@pytest.mark.parametrize(
    "change",
    [
        {"associated_data": "refund"},
        {"nonce": "AAAAAAAAAAAA"},
        {"ciphertext": "QUJD" * 40},
    ],
)
async def test_altered_ciphertext_or_associated_data_is_refused(
    wired: PaySimRig,
    client: httpx.AsyncClient,
    db: AsyncSession,
    seen: list[events.PayEvent],
    change: dict[str, str],
) -> None:
    _, body = await a_real_notification(wired)
    forged = _mutate_resource(body, **change)

    response = await post_notify(client, resign(wired, forged), forged)

    await assert_refused(response, 400, "decrypt_failed", db, seen)


def _encrypted(rig: PaySimRig, resource: dict[str, Any], event_type: str, kind: str) -> bytes:
    nonce = "0123456789ab"
    plain = json.dumps(resource, ensure_ascii=False).encode()
    envelope = {
        "id": "EV-FORGED-1",
        "create_time": "2026-11-27T09:00:00+08:00",
        "resource_type": "encrypt-resource",
        "event_type": event_type,
        "summary": "支付成功",
        "resource": {
            "original_type": kind,
            "algorithm": "AEAD_AES_256_GCM",
            "associated_data": kind,
            "nonce": nonce,
            "ciphertext": signing.aead_encrypt(
                rig.keys.apiv3_key, nonce=nonce, associated_data=kind, plaintext=plain
            ),
        },
    }
    return json.dumps(envelope, ensure_ascii=False).encode()


def _transaction(rig: PaySimRig, **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "mchid": rig.keys.mchid,
        "appid": rig.keys.appid,
        "out_trade_no": "P1",
        "transaction_id": "4200000000202611270000000001",
        "trade_type": "JSAPI",
        "trade_state": "SUCCESS",
        "trade_state_desc": "支付成功",
        "bank_type": "OTHERS",
        "attach": "",
        "success_time": "2026-11-27T09:00:00+08:00",
        "payer": {"openid": OPENID},
        "amount": {"total": 100, "payer_total": 100, "currency": "CNY"},
    }
    data.update(changes)
    return data


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"mchid": "1900000999"}, "not_ours"),
        ({"appid": "wx0000000000000000"}, "not_ours"),
        ({"amount": {"total": "100", "currency": "CNY"}}, "malformed"),
        ({"amount": {"total": 1.5, "currency": "CNY"}}, "malformed"),
        ({"trade_state": "NOTPAY"}, "malformed"),
        ({"trade_state": "WHATEVER"}, "malformed"),
    ],
)
async def test_authentic_but_unacceptable_resources_are_refused(
    wired: PaySimRig,
    client: httpx.AsyncClient,
    db: AsyncSession,
    seen: list[events.PayEvent],
    changes: dict[str, Any],
    reason: str,
) -> None:
    body = _encrypted(wired, _transaction(wired, **changes), "TRANSACTION.SUCCESS", "transaction")

    response = await post_notify(client, resign(wired, body), body)

    await assert_refused(response, 400, reason, db, seen)


async def test_a_resource_of_the_wrong_kind_is_refused(
    wired: PaySimRig, client: httpx.AsyncClient, db: AsyncSession, seen: list[events.PayEvent]
) -> None:
    body = _encrypted(wired, _transaction(wired), "TRANSACTION.SUCCESS", "refund")

    response = await post_notify(client, resign(wired, body), body)

    await assert_refused(response, 400, "malformed", db, seen)


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[]",
        b'{"id":"EV-1","event_type":"TRANSACTION.SUCCESS"}',
        b'{"id":"EV-1","event_type":"TRANSACTION.SUCCESS","resource":{"algorithm":"RSA"}}',
        "\ufeff{}".encode(),
        b"\xff\xfe\x00",
    ],
)
async def test_malformed_bodies_are_refused(
    wired: PaySimRig,
    client: httpx.AsyncClient,
    db: AsyncSession,
    seen: list[events.PayEvent],
    body: bytes,
) -> None:
    response = await post_notify(client, resign(wired, body), body)

    await assert_refused(response, 400, "malformed", db, seen)


async def test_an_oversize_body_is_refused_before_reading(
    wired: PaySimRig, client: httpx.AsyncClient, db: AsyncSession, seen: list[events.PayEvent]
) -> None:
    body = b'{"id":"' + b"x" * 70_000 + b'"}'

    response = await post_notify(client, resign(wired, body), body)

    await assert_refused(response, 413, "body too large", db, seen)


async def test_without_a_configured_merchant_notifications_are_refused(
    client: httpx.AsyncClient, db: AsyncSession, seen: list[events.PayEvent]
) -> None:
    response = await post_notify(client, {"Content-Type": "application/json"}, b"{}")

    await assert_refused(response, 503, "not configured", db, seen)


async def test_the_simulator_retries_an_unacknowledged_notification_on_schedule(
    wired: PaySimRig, clock: FrozenClock, seen: list[events.PayEvent]
) -> None:
    wired.sim.config.time_scale = 1.0
    await pay_order(wired)
    notify = wired.sim.notifies[0]
    real_url = notify.url
    notify.url = "http://testserver/nowhere"  # our endpoint misconfigured: 404s

    await wired.sim.deliver_due()
    clock.advance(seconds=14)
    early = await wired.sim.deliver_due()
    clock.advance(seconds=1)
    await wired.sim.deliver_due()
    clock.advance(seconds=15)
    notify.url = real_url
    await wired.sim.deliver_due()

    assert early == 0
    assert notify.answers == [404, 404, 204]
    assert notify.done
    assert len(seen) == 1


async def test_the_schedule_gives_up_after_fifteen_retries(
    wired: PaySimRig, clock: FrozenClock
) -> None:
    await pay_order(wired)
    notify = wired.sim.notifies[0]
    notify.url = "http://testserver/nowhere"

    for _ in range(20):
        await wired.sim.deliver_due()
        clock.advance(hours=1)

    assert len(notify.answers) == 16
    assert notify.gave_up
    assert not notify.done


async def test_a_delayed_notification_arrives_late(
    wired: PaySimRig, clock: FrozenClock, seen: list[events.PayEvent]
) -> None:
    wired.sim.faults.notify.append("delay")
    wired.sim.faults.notify_delay_seconds = 120
    await pay_order(wired)

    first = await wired.sim.deliver_due()
    clock.advance(seconds=120)
    second = await wired.sim.deliver_due()

    assert (first, second) == (0, 1)
    assert len(seen) == 1


async def test_a_dropped_notification_never_arrives(
    wired: PaySimRig, clock: FrozenClock, seen: list[events.PayEvent]
) -> None:
    wired.sim.faults.notify.append("drop")
    await pay_order(wired)

    await wired.sim.deliver_due()
    clock.advance(days=1)
    await wired.sim.deliver_due()

    assert seen == []
    assert wired.sim.notifies[0].answers == []
    # The order is paid all the same: a query finds it (the billing issue's fallback).
    assert (await wired.pay.query_order("P20261127000001")).paid


async def test_an_abnormal_refund_is_reported_as_such(
    wired: PaySimRig, clock: FrozenClock, seen: list[events.PayEvent]
) -> None:
    await pay_order(wired)
    wired.sim.faults.refund_abnormal = 1
    await wired.pay.refund(
        RefundRequest(
            out_trade_no="P20261127000001", out_refund_no="R1", refund_fen=100, total_fen=2350
        )
    )
    clock.advance(seconds=5)

    await wired.sim.deliver_due()

    kinds = [type(e).__name__ for e in seen]
    assert kinds == ["PaymentSucceeded", "RefundAbnormal"]
    assert (await wired.pay.query_refund("R1")).status.value == "ABNORMAL"


async def test_certificate_mode_verifies_notifications_after_fetching_certificates(
    app: Any, pay_keys: Any, clock: FrozenClock, seen: list[events.PayEvent]
) -> None:
    from tests.sims.pay_rig import build_pay_rig

    rig = build_pay_rig(pay_keys, clock, mode="certificate")
    app.state.container.services["pay"] = rig.pay
    rig.connect_notify(app)
    try:
        rig.sim.faults.notify.append("drop")
        await pay_order(rig)  # the order call itself makes the client fetch certificates
        rig.pay.verifier = signing.PlatformVerifier()  # forget them: rotation
        headers, body = rig.sim.notify_request(rig.sim.notifies[0])
        assert headers["Wechatpay-Serial"] == pay_keys.platform_cert_serial
        response = await rig.sim.notify_http.post(  # type: ignore[union-attr]
            "/wechat/pay/notify", content=body, headers=headers
        )
    finally:
        await rig.aclose()

    assert response.status_code == 204
    assert [type(e).__name__ for e in seen] == ["PaymentSucceeded"]
    assert rig.pay.verifier.knows(pay_keys.platform_cert_serial)
