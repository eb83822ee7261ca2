"""Console pages of the window: the cashier page (card → pending orders → pre-settlement →
payment code, or a Native-pay QR code), payment search, a payment's detail with its event
history, and a refund with a reason — on the real app with the HIS and Pay simulators."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from tests.billing.conftest import World
from tests.billing.helpers import count, drain, his_unpaid, payment_row, snapshot
from tests.console.conftest import Staff, create_staff, csrf_from, sign_in

from frontdesk.billing import models as bm
from frontdesk.console.models import Role
from frontdesk.core.audit import AuditEntry
from frontdesk.core.clock import FrozenClock
from frontdesk.sims.wechat_sim.pay_state import new_auth_code


async def _staff(world: World, clock: FrozenClock, username: str, role: Role) -> Staff:
    async with world.env.container.db.session() as s:
        return await create_staff(s, clock, username=username, role=role)


@pytest.fixture
async def desk(world: World) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=world.env.front_app), base_url="http://testserver"
    ) as c:
        yield c


async def _audit(container: Any, action: str) -> list[AuditEntry]:
    async with container.db.session() as s:
        rows = await s.scalars(
            select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)
        )
        return list(rows)


async def _cashier_pays(
    desk: httpx.AsyncClient, card_no: str, ids: list[str], scenario: str = "success"
) -> httpx.Response:
    page = await desk.get("/console/cashier", params={"card_no": card_no, "order": ids})
    assert page.status_code == 200, page.text[:400]
    self_pay = re.search(r'data-self-pay="(\d+)"', page.text)
    request_id = re.search(r'name="request_id" value="([^"]+)"', page.text)
    assert self_pay and request_id
    return await desk.post(
        "/console/cashier/pay",
        data={
            "csrf_token": csrf_from(page.text),
            "card_no": card_no,
            "request_id": request_id.group(1),
            "self_pay_fen": self_pay.group(1),
            "order": ids,
            "auth_code": new_auth_code(scenario),
        },
    )


async def test_the_cashier_takes_a_payment_code_and_finance_refunds_with_a_reason(
    world: World, desk: httpx.AsyncClient, his_sim: Any, pay_sim: Any, clock: FrozenClock
) -> None:
    container = world.env.container
    card_no = world.mine.card_no
    ids = [o.id for o in await his_unpaid(his_sim, card_no)]
    cashier = await _staff(world, clock, "carol", Role.cashier)
    await sign_in(desk, clock, cashier)
    home = await desk.get("/console/")
    assert re.findall(r'<li><a href="([^"]+)"', home.text) == [
        "/console/",
        "/console/cashier",
        "/console/payments",
    ]

    listing = await desk.get("/console/cashier", params={"card_no": card_no})
    for order_id in ids:
        assert f'data-order="{order_id}"' in listing.text
    assert 'data-self-pay="' not in listing.text
    pre = await container.services["his"].pre_settle(card_no=card_no, order_ids=ids)

    paid = await _cashier_pays(desk, card_no, ids)

    assert paid.status_code == 200
    assert 'data-result="paid"' in paid.text
    payment_id = int(re.search(r'data-payment="(\d+)"', paid.text).group(1))  # type: ignore[union-attr]
    row = await payment_row(container, payment_id)
    assert (row.channel, row.amount_fen, row.actor) == (
        "MICROPAY",
        pre.self_pay_fen,
        f"staff:{cashier.id}",
    )
    await drain(container)
    assert (await payment_row(container, payment_id)).his_state == "settled"
    assert [a.actor for a in await _audit(container, "billing.cashier_pay")] == [
        f"staff:{cashier.id}"
    ]
    assert len(await _audit(container, "billing.cashier_card_view")) >= 2

    # A code WeChat refuses: the page says so, nothing is charged.
    more = [o.id for o in await his_unpaid(his_sim, world.family.card_no)]
    refused = await _cashier_pays(desk, world.family.card_no, more, "insufficient")
    assert 'data-result="failed"' in refused.text
    assert 'data-failure="insufficient_funds"' in refused.text

    # Finance finds the payment every way and sees its history.
    await desk.post("/console/logout", data={"csrf_token": csrf_from(paid.text)})
    desk.cookies.clear()
    finance = await _staff(world, clock, "fiona", Role.finance)
    await sign_in(desk, clock, finance)
    row = await payment_row(container, payment_id)
    for by, q in (
        ("out_trade_no", row.out_trade_no),
        ("transaction_id", row.transaction_id),
        ("card_no", card_no),
    ):
        found = await desk.get("/console/payments", params={"by": by, "q": q})
        assert f'data-payment="{payment_id}"' in found.text, by
    by_day = await desk.get("/console/payments", params={"day": "2026-11-27"})
    assert f'data-payment="{payment_id}"' in by_day.text
    other_day = await desk.get("/console/payments", params={"day": "2026-11-26"})
    assert f'data-payment="{payment_id}"' not in other_day.text
    detail = await desk.get(f"/console/payments/{payment_id}")
    assert detail.status_code == 200
    events = re.findall(r'data-event="([\w.]+)"', detail.text)
    assert events[:3] == ["payment.created", "payment.paid", "settle.done"]

    # Refusals: each shows the reason and changes nothing.
    before = await snapshot(container)
    token = csrf_from(detail.text)
    for amount, reason, code in (
        ("-1", "多收", "billing_amount_invalid"),
        ("0", "多收", "billing_amount_invalid"),
        ("0.001", "多收", "billing_amount_invalid"),
        ("abc", "多收", "billing_amount_invalid"),
        ("99999999999", "多收", "billing_amount_invalid"),
        (f"{(pre.self_pay_fen + 1) / 100:.2f}", "多收", "billing_refund_exceeds_payment"),
        ("1.00", " ", "billing_reason_required"),
    ):
        refused_refund = await desk.post(
            f"/console/payments/{payment_id}/refund",
            data={"csrf_token": token, "amount": amount, "reason": reason},
        )
        assert f'data-error="{code}"' in refused_refund.text, (amount, reason)
    assert await snapshot(container) == before
    assert await _audit(container, "billing.refund_start") == []

    refunded = await desk.post(
        f"/console/payments/{payment_id}/refund",
        data={"csrf_token": token, "amount": "1.50", "reason": "收费员多收"},
    )
    assert refunded.status_code == 303
    [refund] = await _rows(container, bm.BillingRefund)
    assert (refund.amount_fen, refund.reason, refund.reason_text, refund.actor) == (
        150,
        "staff",
        "收费员多收",
        f"staff:{finance.id}",
    )
    assert refund.out_refund_no == f"{row.out_trade_no}R01"
    [audited] = await _audit(container, "billing.refund_start")
    assert audited.actor == f"staff:{finance.id}" and audited.detail["amount_fen"] == 150
    await drain(container)
    clock.advance(seconds=10)
    await pay_sim.sim.deliver_due()
    await drain(container)  # the refund notify, or else the query job, finds it done
    after = await desk.get(f"/console/payments/{payment_id}")
    assert f'data-refund="{refund.out_refund_no}"' in after.text
    assert "refund.success" in re.findall(r'data-event="([\w.]+)"', after.text)


async def _rows(container: Any, model: Any) -> list[Any]:
    async with container.db.session() as s:
        return list(await s.scalars(select(model).order_by(model.id)))


async def test_other_roles_cannot_use_the_window_pages(
    world: World, desk: httpx.AsyncClient, his_sim: Any, clock: FrozenClock
) -> None:
    container = world.env.container
    desk_staff = await _staff(world, clock, "dora", Role.customer_service)
    token = await sign_in(desk, clock, desk_staff)
    before = await snapshot(container)
    ids = [o.id for o in await his_unpaid(his_sim, world.mine.card_no)]
    for method, path, data in (
        ("GET", "/console/cashier", None),
        ("GET", "/console/payments", None),
        ("GET", "/console/payments/1", None),
        (
            "POST",
            "/console/cashier/pay",
            {
                "card_no": world.mine.card_no,
                "order": ids,
                "request_id": "C-forbidden-1",
                "self_pay_fen": "1",
                "auth_code": new_auth_code(),
            },
        ),
        ("POST", "/console/cashier/native", {"card_no": world.mine.card_no, "order": ids}),
        ("POST", "/console/payments/1/refund", {"amount": "1.00", "reason": "试试"}),
    ):
        if method == "GET":
            answer = await desk.get(path)
        else:
            answer = await desk.post(path, data={"csrf_token": token, **(data or {})})
        assert answer.status_code == 403, path
    assert await snapshot(container) == before
    assert await count(container, bm.BillingPayment) == 0


async def test_the_cashier_page_offers_a_native_qr_code_where_the_hospital_prefers_it(
    world: World,
    desk: httpx.AsyncClient,
    his_sim: Any,
    pay_sim: Any,
    clock: FrozenClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    container = world.env.container
    monkeypatch.setattr(container.settings, "billing_paper_qr", "native")
    card_no = world.mine.card_no
    ids = [o.id for o in await his_unpaid(his_sim, card_no)]
    await sign_in(desk, clock, await _staff(world, clock, "carl", Role.cashier))
    page = await desk.get("/console/cashier", params={"card_no": card_no, "order": ids})
    assert 'data-testid="native"' in page.text
    shown = await desk.post(
        "/console/cashier/native",
        data={"csrf_token": csrf_from(page.text), "card_no": card_no, "order": ids},
    )
    assert shown.status_code == 200
    assert "<svg" in shown.text
    payment_id = int(re.search(r'data-native="(\d+)"', shown.text).group(1))  # type: ignore[union-attr]
    row = await payment_row(container, payment_id)
    assert row.channel == "NATIVE" and row.code_url
    # The patient scans and pays; WeChat notifies; the saga settles.
    order = pay_sim.sim.orders[row.out_trade_no]
    pay_sim.sim.pay(order, openid=world.alice_openid)
    await pay_sim.sim.deliver_due()
    await drain(container)
    row = await payment_row(container, payment_id)
    assert (row.state, row.his_state) == ("paid", "settled")
