"""The QR code on a paper order sheet: the HIS asks for it (signed), the link opens the
visit's pending orders in WeChat after sign-in — for accounts that bound the card only —
and a Native-pay code where the hospital prefers it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from tests.billing.conftest import World
from tests.billing.helpers import (
    csrf_of,
    drain,
    his_unpaid,
    pay_params,
    payment_id_of,
    payment_row,
    phone_pays,
    snapshot,
)
from tests.billing.window_helpers import HisCaller

from frontdesk.core.clock import FrozenClock

QR = "/front/v1/paper-qr"


@pytest.fixture
async def printer(world: World, clock: FrozenClock) -> AsyncIterator[HisCaller]:
    caller = HisCaller(world.env.front_app, world.env.container.settings, clock)
    yield caller
    await caller.aclose()


def _csrf(container: Any, openid: str) -> str:
    """Bob's own valid form token (web.patient.csrf_token), to show the refusal is not CSRF."""
    import hashlib
    import hmac

    secret = container.settings.secret_key.get_secret_value().encode()
    return hmac.new(secret, f"h5-csrf|{openid}".encode(), hashlib.sha256).hexdigest()[:32]


async def _visit(his_sim: Any, card_no: str) -> tuple[str, list[str], list[str]]:
    """A visit with unpaid orders: its number, its orders, the card's other unpaid orders."""
    unpaid = await his_unpaid(his_sim, card_no)
    visit_no = unpaid[0].visit_no
    mine = [o.id for o in unpaid if o.visit_no == visit_no]
    others = [o.id for o in unpaid if o.visit_no != visit_no]
    return visit_no, mine, others


async def test_the_paper_link_opens_the_visit_for_the_cards_own_account_only(
    world: World, printer: HisCaller, his_sim: Any, pay_sim: Any, clock: FrozenClock
) -> None:
    container = world.env.container
    card_no = world.mine.card_no
    visit_no, ids, others = await _visit(his_sim, card_no)

    answer = await printer.post(QR, {"card_no": card_no, "visit_no": visit_no})

    assert answer.status_code == 200, answer.text
    qr = answer.json()
    assert (qr["mode"], qr["card_no"], qr["visit_no"], qr["order_ids"]) == (
        "link",
        card_no,
        visit_no,
        ids,
    )
    assert qr["qr_svg"].startswith("<svg") and qr["payment"] is None
    assert qr["expires_at"] == "2026-11-30T01:00:00Z"  # 72 hours
    link = urlsplit(qr["url"])
    assert link.path.startswith("/h5/pay/v/")
    path = link.path

    # Not signed in: WeChat sign-in first, then back to the link.
    anonymous = await world.env.front.get(path)
    assert anonymous.status_code == 303
    assert anonymous.headers["location"].startswith("/wechat/oauth/start?next=")

    # Bob has not bound the card: told to bind it first, nothing of the orders shown.
    stranger = await world.bob.get(path)
    assert stranger.status_code == 403
    assert 'data-paper="unbound"' in stranger.text
    for order_id in ids + others:
        assert order_id not in stranger.text
    forced = await world.bob.post(path, data={"csrf": _csrf(container, world.bob_openid)})
    assert forced.status_code == 403
    before = await snapshot(container)
    assert before["billing_payment"] == 0

    # Alice bound it (it is her active card, but the link works for any bound card).
    page = await world.alice.get(path)
    assert page.status_code == 200
    assert f'data-visit="{visit_no}"' in page.text
    for order_id in ids:
        assert f'data-order="{order_id}"' in page.text
    for order_id in others:
        assert f'data-order="{order_id}"' not in page.text
    pre = await container.services["his"].pre_settle(card_no=card_no, order_ids=ids)
    assert f'data-self-pay="{pre.self_pay_fen}"' in page.text

    started = await world.alice.post(path, data={"csrf": csrf_of(page)})
    payment_id = payment_id_of(started)
    row = await payment_row(container, payment_id)
    assert (row.channel, row.card_no, row.amount_fen) == ("JSAPI", card_no, pre.self_pay_fen)
    pay_page = await world.alice.get(f"/h5/payments/{payment_id}")
    await phone_pays(pay_sim, pay_params(pay_page), world.alice_openid)
    await drain(container)
    row = await payment_row(container, payment_id)
    assert (row.state, row.his_state) == ("paid", "settled")
    # Paid: the link now shows nothing left to pay.
    done = await world.alice.get(path)
    assert 'data-paper-empty="1"' in done.text


async def test_forged_altered_or_expired_links_are_not_found(
    world: World, printer: HisCaller, his_sim: Any, clock: FrozenClock
) -> None:
    card_no = world.mine.card_no
    visit_no, _ids, _ = await _visit(his_sim, card_no)
    qr = (await printer.post(QR, {"card_no": card_no, "visit_no": visit_no})).json()
    path = urlsplit(qr["url"]).path
    token = path.rsplit("/", 1)[1]
    payload, mac = token.split(".")
    # Another card's token made by re-encoding the payload (the MAC no longer matches).
    import base64
    import json

    forged_payload = (
        base64.urlsafe_b64encode(
            json.dumps({"c": world.stranger.card_no, "v": visit_no, "e": 9999999999}).encode()
        )
        .rstrip(b"=")
        .decode()
    )
    for bad in (
        f"{forged_payload}.{mac}",
        f"{payload}.{mac[:-2]}AA",
        f"{payload[:-1]}.{mac}",
        "nonsense",
        f"{payload}.",
    ):
        answer = await world.alice.get(f"/h5/pay/v/{bad}")
        assert answer.status_code == 404, bad
        assert 'data-paper="invalid"' in answer.text
    clock.advance(hours=72)
    expired = await world.alice.get(path)
    assert expired.status_code == 404 and 'data-paper="invalid"' in expired.text


async def test_refused_paper_qr_requests_change_nothing(
    world: World, printer: HisCaller, his_sim: Any, pay_sim: Any
) -> None:
    container = world.env.container
    card_no = world.mine.card_no
    visit_no, _ids, _ = await _visit(his_sim, card_no)
    stranger_visit, _s, _ = await _visit(his_sim, world.stranger.card_no)
    before = await snapshot(container)
    good: dict[str, Any] = {"card_no": card_no, "visit_no": visit_no}
    cases: list[tuple[dict[str, Any], dict[str, Any], int, str]] = [
        ({"card_no": card_no, "visit_no": stranger_visit}, {}, 404, "billing_order_not_found"),
        ({"card_no": card_no, "visit_no": "V999999999"}, {}, 404, "billing_order_not_found"),
        ({"card_no": card_no, "visit_no": "../x"}, {}, 404, "billing_order_not_found"),
        ({"card_no": card_no}, {}, 422, "invalid_request"),
        ({"card_no": card_no, "visit_no": 7}, {}, 422, "invalid_request"),
        (good, {"secret": "wrong"}, 401, "signature_invalid"),
        (good, {"skew_seconds": 400}, 401, "timestamp_out_of_window"),
        (good, {"key_id": "other"}, 401, "unknown_key"),
    ]
    for body, sign, status, code in cases:
        answer = await printer.post(QR, body, **sign)
        assert (answer.status_code, answer.json()["code"]) == (status, code), body
    unsigned = await printer.http.post(QR, json=good)
    assert (unsigned.status_code, unsigned.json()["code"]) == (401, "signature_missing")
    assert await snapshot(container) == before
    assert pay_sim.sim.orders == {}


async def test_a_native_pay_code_where_the_hospital_prefers_it(
    world: World, printer: HisCaller, his_sim: Any, pay_sim: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    container = world.env.container
    monkeypatch.setattr(container.settings, "billing_paper_qr", "native")
    card_no = world.mine.card_no
    visit_no, ids, _ = await _visit(his_sim, card_no)
    pre = await container.services["his"].pre_settle(card_no=card_no, order_ids=ids)
    answer = await printer.post(QR, {"card_no": card_no, "visit_no": visit_no})
    assert answer.status_code == 200, answer.text
    qr = answer.json()
    assert qr["mode"] == "native" and qr["url"].startswith("weixin://")
    payment = qr["payment"]
    assert (payment["channel"], payment["amount_fen"], payment["order_ids"]) == (
        "NATIVE",
        pre.self_pay_fen,
        ids,
    )
    # The patient scans it in WeChat and pays; the notify confirms; the saga settles.
    order = pay_sim.sim.orders[payment["out_trade_no"]]
    pay_sim.sim.pay(order, openid=world.alice_openid)
    await pay_sim.sim.deliver_due()
    await drain(container)
    async with container.db.session() as s:
        from sqlalchemy import select

        from frontdesk.billing import models as bm

        row = await s.scalar(
            select(bm.BillingPayment).where(
                bm.BillingPayment.out_trade_no == payment["out_trade_no"]
            )
        )
    assert row is not None and (row.state, row.his_state) == ("paid", "settled")


async def test_the_demo_his_prints_the_order_sheet_with_the_front_servers_qr_code(
    world: World, his_sim: Any, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The HIS side: its order sheet page asks our front server for the QR code, signed with
    the bridge's key — here the sim shares our settings' key, as in the demo."""
    import httpx

    from frontdesk.sims.his_sim.app import sim_state

    settings = world.env.container.settings
    state = sim_state(his_sim)
    state.keys = {**state.keys, "front-demo": settings.his_secret.get_secret_value()}
    state.front_key_id = "front-demo"
    monkeypatch.setattr(settings, "his_key_id", "front-demo")
    state.front_base_url = "http://testserver"
    state.front_transport = httpx.ASGITransport(app=world.env.front_app)
    card_no = world.mine.card_no
    visit_no, ids, _ = await _visit(his_sim, card_no)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=his_sim), base_url="http://his-sim"
    ) as operator:
        visits = await operator.get("/operator/sheet", params={"card_no": card_no})
        assert f'data-visit="{visit_no}"' in visits.text
        sheet = await operator.get(
            "/operator/sheet", params={"card_no": card_no, "visit_no": visit_no}
        )
        assert sheet.status_code == 200
        assert 'data-qr="link"' in sheet.text and "<svg" in sheet.text
        for order_id in ids:
            assert f'data-order="{order_id}"' in sheet.text
        # The front server refuses a sheet whose QR request is not signed with its key.
        state.keys = {**state.keys, "front-demo": "not-the-shared-secret"}
        refused = await operator.get(
            "/operator/sheet", params={"card_no": card_no, "visit_no": visit_no}
        )
        assert 'data-qr-error="signature_invalid"' in refused.text
        assert "<svg" not in refused.text
