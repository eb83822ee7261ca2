"""Every patient view of orders and payments writes one audit row (who, which card, which
record), as every report view does; a refused view (another account's id, or none) writes
nothing."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from tests.billing.conftest import World
from tests.billing.helpers import drain, his_unpaid, pay_params, phone_pays, start_payment

from frontdesk.core.audit import AuditEntry


async def _audit_rows(container: Any) -> list[AuditEntry]:
    async with container.db.session() as session:
        return list(
            (await session.execute(select(AuditEntry).order_by(AuditEntry.id))).scalars().all()
        )


async def _new_rows(container: Any, before: int) -> list[AuditEntry]:
    return (await _audit_rows(container))[before:]


async def test_each_patient_view_is_audited_once_with_the_card(
    world: World, his_sim: Any, pay_sim: Any
) -> None:
    container = world.env.container
    ids = [o.id for o in await his_unpaid(his_sim, world.mine.card_no)]
    payment_id, page = await start_payment(world.alice, ids)
    await phone_pays(pay_sim, pay_params(page), world.alice_openid)
    await drain(container)
    async with container.db.session() as session:
        card_id = (
            await session.execute(
                select(AuditEntry.card_id).where(AuditEntry.action == "billing.payment_start")
            )
        ).scalar_one()
    assert card_id is not None

    views = [
        ("/h5/payments", "billing.pending_view", "card", str(card_id)),
        ("/h5/payments/paid", "billing.paid_view", "card", str(card_id)),
        ("/h5/payments/refunds", "billing.refundable_view", "card", str(card_id)),
        (f"/h5/payments/orders/{ids[0]}", "billing.order_view", "billing_order", ids[0]),
        (f"/h5/payments/{payment_id}", "billing.payment_view", "billing_payment", str(payment_id)),
        (
            f"/h5/payments/{payment_id}/receipt",
            "billing.receipt_view",
            "billing_payment",
            str(payment_id),
        ),
    ]
    for url, action, record_type, record_id in views:
        before = len(await _audit_rows(container))
        answer = await world.alice.get(url)
        assert answer.status_code == 200, url
        [row] = await _new_rows(container, before)
        assert (row.action, row.record_type, row.record_id) == (action, record_type, record_id)
        assert row.actor == f"patient:{world.alice_openid}", url
        assert row.card_id == card_id, url
        assert row.detail["card_no"] == world.mine.card_no, url
        assert row.outcome == "ok"


async def test_refused_views_write_no_audit_row(world: World, his_sim: Any, pay_sim: Any) -> None:
    container = world.env.container
    ids = [o.id for o in await his_unpaid(his_sim, world.mine.card_no)]
    payment_id, page = await start_payment(world.alice, ids)
    # The receipt of a payment not yet paid is not shown, so not audited as shown.
    before = len(await _audit_rows(container))
    assert (await world.alice.get(f"/h5/payments/{payment_id}/receipt")).status_code == 404
    assert await _new_rows(container, before) == []
    await phone_pays(pay_sim, pay_params(page), world.alice_openid)
    await drain(container)
    # Another account naming the payment and order, or ids that do not exist: nothing written.
    refused = [
        f"/h5/payments/orders/{ids[0]}",
        f"/h5/payments/{payment_id}",
        f"/h5/payments/{payment_id}/receipt",
        "/h5/payments/orders/O999999999",
        "/h5/payments/999999",
        "/h5/payments/999999/receipt",
    ]
    before = len(await _audit_rows(container))
    for url in refused:
        assert (await world.bob.get(url)).status_code == 404, url
    assert await _new_rows(container, before) == []
