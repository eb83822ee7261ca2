"""Paying outpatient orders end to end through the real adapters and the simulators: the
pending list by visit, the HIS pre-settlement, a JSAPI payment on the phone, the notify, the
settlement saga, messages, receipt, execution status and an item refund."""

from __future__ import annotations

from typing import Any

from tests.billing.conftest import World
from tests.billing.helpers import (
    count,
    csrf_of,
    drain,
    his_rows,
    his_unpaid,
    pay_params,
    payment_row,
    phone_pays,
    poll_his,
    start_payment,
    templates,
)

from frontdesk.billing import models as bm
from frontdesk.core.clock import FrozenClock
from frontdesk.sims.his_sim import models as hm


async def test_pay_two_orders_settle_once_then_refund_an_item(
    world: World, his_sim: Any, pay_sim: Any, clock: FrozenClock
) -> None:
    env, alice = world.env, world.alice
    container = env.container
    unpaid = await his_unpaid(his_sim, world.mine.card_no)
    assert len(unpaid) == 2
    ids = [o.id for o in unpaid]

    # The pending list shows both orders, grouped by visit, with their items.
    listing = await alice.get("/h5/payments")
    assert listing.status_code == 200
    for o in unpaid:
        assert f'data-order="{o.id}"' in listing.text
        assert f'data-visit="{o.visit_no}"' in listing.text
    # The pre-settlement of the selection is the HIS's.
    pre = await container.services["his"].pre_settle(card_no=world.mine.card_no, order_ids=ids)
    selected = await alice.get("/h5/payments", params=[("order", i) for i in ids])
    assert f'data-self-pay="{pre.self_pay_fen}"' in selected.text

    payment_id, page = await start_payment(alice, ids)
    row = await payment_row(container, payment_id)
    assert (row.amount_fen, row.total_fen, row.insurance_fen) == (
        pre.self_pay_fen,
        pre.total_fen,
        pre.insurance_fen,
    )
    assert row.state == "pending" and row.channel == "JSAPI"
    await phone_pays(pay_sim, pay_params(page), world.alice_openid)
    row = await payment_row(container, payment_id)
    assert row.state == "paid" and row.his_state == "pending"
    assert row.transaction_id is not None

    await drain(container)  # the saga settles in the HIS
    row = await payment_row(container, payment_id)
    assert row.his_state == "settled"
    [settlement] = await his_rows(his_sim, hm.settlement, payment_ref=row.out_trade_no)
    assert settlement.self_pay_fen == pre.self_pay_fen
    assert await his_unpaid(his_sim, world.mine.card_no) == []
    status = (await alice.get(f"/h5/payments/{payment_id}/status.json")).json()
    assert (status["state"], status["his_state"]) == ("paid", "settled")
    receipt = await alice.get(f"/h5/payments/{payment_id}/receipt")
    assert receipt.status_code == 200 and row.out_trade_no in receipt.text
    assert len(await templates(container, "payment_received")) == 1
    # A second notify delivery or a second saga run changes nothing.
    await pay_sim.sim.deliver_due()
    await drain(container)
    assert len(await his_rows(his_sim, hm.settlement, payment_ref=row.out_trade_no)) == 1

    # The pharmacy dispenses the first order: the HIS event updates its execution state.
    await his_execute(his_sim, ids[0])
    await poll_his(container)
    detail = await alice.get(f"/h5/payments/orders/{ids[0]}")
    assert detail.status_code == 200
    assert 'data-exec="pending"' not in detail.text

    # Refund: only the order not executed is offered; ask for one of its items.
    form = await alice.get("/h5/payments/refunds")
    items = await his_rows(his_sim, hm.order_item, order_id=ids[1])
    executed_items = await his_rows(his_sim, hm.order_item, order_id=ids[0])
    for i in executed_items:
        assert f'data-item="{i.id}"' not in form.text
    target = items[0]
    assert f'data-item="{target.id}"' in form.text
    asked = await alice.post(
        "/h5/payments/refunds", data={"csrf": csrf_of(form), "item": [target.id]}
    )
    assert asked.status_code == 303
    await drain(container)  # the HIS confirms, then WeChat takes the refund
    [refund] = await rows(container, bm.BillingRefund)
    assert refund.out_refund_no == f"{row.out_trade_no}R01"
    assert refund.his_state == "refunded" and refund.state == "processing"
    [his_refund] = await his_rows(his_sim, hm.refund, refund_ref=refund.out_refund_no)
    assert his_refund.amount_fen == refund.amount_fen == target.self_pay_fen
    clock.advance(seconds=10)
    await pay_sim.sim.deliver_due()  # WeChat's refund notify
    [refund] = await rows(container, bm.BillingRefund)
    assert refund.state == "success" and refund.succeeded_at is not None
    assert len(await templates(container, "refund_made")) == 1
    row = await payment_row(container, payment_id)
    assert row.refunded_fen == refund.amount_fen
    assert await count(container, bm.BillingRefund) == 1


async def his_execute(his_sim: Any, order_id: str) -> None:
    from frontdesk.sims.his_sim import service as his_service

    async with sim_state_session(his_sim) as s:
        await his_service.execute_order(s, order_id)


def sim_state_session(his_sim: Any) -> Any:
    from frontdesk.sims.his_sim.app import sim_state

    return sim_state(his_sim).sessionmaker.begin()


async def rows(container: Any, model: Any) -> list[Any]:
    from sqlalchemy import select

    async with container.db.session() as s:
        return list(await s.scalars(select(model).order_by(model.id)))


async def test_messages_reach_the_phone(world: World, his_sim: Any, pay_sim: Any) -> None:
    """payment received and refund made use the keywords of the hospital's templates."""
    container = world.env.container
    ids = [o.id for o in await his_unpaid(his_sim, world.mine.card_no)]
    _, page = await start_payment(world.alice, ids)
    await phone_pays(pay_sim, pay_params(page), world.alice_openid)
    await drain(container)
    await drain(container)
    [message] = await templates(container, "payment_received")
    assert message.state == "sent", message.last_error if hasattr(message, "last_error") else ""
    assert any(t["touser"] == world.alice_openid for t in world.env.sim.sent_templates)


async def test_pages_in_english_and_a_stale_list_when_the_his_is_down(
    world: World, his_sim: Any
) -> None:
    from frontdesk.sims.his_sim.app import Faults, sim_state

    ids = [o.id for o in await his_unpaid(his_sim, world.mine.card_no)]
    english = await world.alice.get("/h5/payments", params={"lang": "en"})
    assert english.status_code == 200
    assert "Payments" in english.text and "门诊缴费" not in english.text
    assert "Ordered by" in english.text
    # The HIS stops answering: the list is what we last saw, and says so.
    sim_state(his_sim).faults = Faults(mode="error")
    stale = await world.alice.get("/h5/payments")
    assert stale.status_code == 200
    assert 'data-stale="1"' in stale.text
    assert all(f'data-order="{i}"' in stale.text for i in ids)
    refused = await world.alice.get("/h5/payments", params=[("order", i) for i in ids])
    assert refused.status_code == 503 and "data-self-pay" not in refused.text
