"""The settlement saga and the payment watcher, through the real adapters and simulators:
HIS outages, a settlement the HIS made although our call failed, amounts changed after the
pre-settlement, orders paid at the window as well, lost notifies and payments never made."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from tests.billing.conftest import World
from tests.billing.helpers import (
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
from frontdesk.sims.his_sim import service as his_service
from frontdesk.sims.his_sim.app import Faults, sim_state


async def _paid(
    world: World, his_sim: Any, pay_sim: Any, *, count: int = 1
) -> tuple[int, list[str]]:
    ids = [o.id for o in await his_unpaid(his_sim, world.mine.card_no)][:count]
    payment_id, page = await start_payment(world.alice, ids)
    await phone_pays(pay_sim, pay_params(page), world.alice_openid)
    row = await payment_row(world.env.container, payment_id)
    assert row.state == "paid" and row.his_state == "pending"
    return payment_id, ids


async def _refunds(container: Any, payment_id: int) -> list[bm.BillingRefund]:
    async with container.db.session() as s:
        return list(
            await s.scalars(
                select(bm.BillingRefund).where(bm.BillingRefund.payment_id == payment_id)
            )
        )


async def _run_for(container: Any, clock: FrozenClock, *, minutes: int) -> None:
    """Let the worker run for a while of frozen time (each retry's backoff elapses)."""
    for _ in range(minutes * 2):
        clock.advance(seconds=30)
        await drain(container)


async def test_his_down_then_up_settles_exactly_once(
    world: World, his_sim: Any, pay_sim: Any, clock: FrozenClock
) -> None:
    container = world.env.container
    sim_state(his_sim).faults = Faults(mode="error", count=6, path_contains="/settlements")
    payment_id, _ = await _paid(world, his_sim, pay_sim)
    await drain(container)
    assert (await payment_row(container, payment_id)).his_state == "pending"
    await _run_for(container, clock, minutes=3)
    row = await payment_row(container, payment_id)
    assert row.his_state == "settled"
    assert len(await his_rows(his_sim, hm.settlement, payment_ref=row.out_trade_no)) == 1
    assert await _refunds(container, payment_id) == []
    assert len(await templates(container, "payment_received")) == 1


async def test_retries_spent_and_not_settled_refunds_with_reason(
    world: World, his_sim: Any, pay_sim: Any, clock: FrozenClock
) -> None:
    container = world.env.container
    budget = container.settings.billing_settle_attempts
    # Every settle attempt fails (the adapter tries 3 times per call); then the HIS answers.
    sim_state(his_sim).faults = Faults(mode="error", count=3 * budget, path_contains="/settlements")
    payment_id, _ = await _paid(world, his_sim, pay_sim)
    await _run_for(container, clock, minutes=30)
    row = await payment_row(container, payment_id)
    assert (row.his_state, row.his_failure_code) == ("failed", "settlement_failed")
    [refund] = await _refunds(container, payment_id)
    assert (refund.kind, refund.reason, refund.amount_fen) == (
        "auto",
        "settlement_failed",
        row.amount_fen,
    )
    assert refund.state == "success"
    assert await his_rows(his_sim, hm.settlement, payment_ref=row.out_trade_no) == []
    [message] = await templates(container, "refund_made")
    assert message.data["thing1"] == "医院未能完成结算"


async def test_settled_in_the_his_although_our_call_failed_is_not_refunded(
    world: World, his_sim: Any, pay_sim: Any, clock: FrozenClock
) -> None:
    container = world.env.container
    payment_id, ids = await _paid(world, his_sim, pay_sim)
    row = await payment_row(container, payment_id)
    # The HIS settled it (say our request's answer was lost), outside our idempotency key.
    async with sim_state(his_sim).sessionmaker.begin() as s:
        await his_service.settle(
            s,
            card_no=row.card_no,
            order_ids=ids,
            payment_ref=row.out_trade_no,
            self_pay_fen=row.amount_fen,
            channel="wechat",
        )
    await drain(container)
    row = await payment_row(container, payment_id)
    assert row.his_state == "settled"
    assert await _refunds(container, payment_id) == []
    assert len(await his_rows(his_sim, hm.settlement, payment_ref=row.out_trade_no)) == 1


async def test_amount_changed_after_pre_settlement_is_refunded(
    world: World, his_sim: Any, pay_sim: Any, clock: FrozenClock
) -> None:
    container = world.env.container
    payment_id, ids = await _paid(world, his_sim, pay_sim)
    async with sim_state(his_sim).engine.begin() as conn:
        await conn.execute(
            update(hm.order_item)
            .where(hm.order_item.c.order_id == ids[0])
            .values(unit_price_fen=hm.order_item.c.unit_price_fen + 100)
        )
    await drain(container)
    row = await payment_row(container, payment_id)
    assert (row.his_state, row.his_failure_code) == ("failed", "amount_mismatch")
    [refund] = await _refunds(container, payment_id)
    assert (refund.kind, refund.reason, refund.amount_fen) == (
        "auto",
        "amount_mismatch",
        row.amount_fen,
    )
    clock.advance(seconds=10)
    await pay_sim.sim.deliver_due()
    assert (await _refunds(container, payment_id))[0].state == "success"
    [message] = await templates(container, "refund_made")
    assert message.data["thing1"] == "缴费期间费用有变动"
    assert next(o.id for o in await his_unpaid(his_sim, world.mine.card_no)) == ids[0]


async def test_paid_at_the_window_too_is_a_double_payment_refunded(
    world: World, his_sim: Any, pay_sim: Any, clock: FrozenClock
) -> None:
    container = world.env.container
    sim_state(his_sim).faults = Faults(mode="error", count=3, path_contains="/settlements")
    payment_id, ids = await _paid(world, his_sim, pay_sim)
    await drain(container)  # first settle attempt fails: the HIS is down
    async with sim_state(his_sim).sessionmaker.begin() as s:
        await his_service.window_payment(s, card_no=world.mine.card_no, order_ids=ids)
    await poll_his(container)  # window.paid arrives
    await _run_for(container, clock, minutes=3)
    row = await payment_row(container, payment_id)
    assert (row.his_state, row.his_failure_code) == ("failed", "order_not_unpaid")
    [refund] = await _refunds(container, payment_id)
    assert (refund.kind, refund.amount_fen) == ("double_payment", row.amount_fen)
    assert refund.state == "success"
    detail = await world.alice.get(f"/h5/payments/orders/{ids[0]}")
    assert "窗口缴费" in detail.text


async def test_lost_notify_is_found_by_the_query(
    world: World, his_sim: Any, pay_sim: Any, clock: FrozenClock
) -> None:
    container = world.env.container
    ids = [o.id for o in await his_unpaid(his_sim, world.mine.card_no)][:1]
    payment_id, page = await start_payment(world.alice, ids)
    pay_sim.sim.faults.notify.append("drop")
    await phone_pays(pay_sim, pay_params(page), world.alice_openid)
    assert (await payment_row(container, payment_id)).state == "pending"
    clock.advance(seconds=6)
    await drain(container)
    row = await payment_row(container, payment_id)
    assert (row.state, row.his_state) == ("paid", "settled")


async def test_a_payment_never_made_is_closed_at_expiry(
    world: World, his_sim: Any, pay_sim: Any, clock: FrozenClock
) -> None:
    container = world.env.container
    ids = [o.id for o in await his_unpaid(his_sim, world.mine.card_no)][:1]
    payment_id, _ = await start_payment(world.alice, ids)
    await _run_for(container, clock, minutes=20)
    row = await payment_row(container, payment_id)
    assert row.state == "closed"
    order = pay_sim.sim.get_order(row.out_trade_no)
    assert order.state == "CLOSED"
    # The order can be paid again with a new payment (a new merchant number).
    second, _ = await start_payment(world.alice, ids)
    assert (await payment_row(container, second)).out_trade_no != row.out_trade_no


async def test_order_created_event_mirrors_and_tells_the_patient_once(
    world: World, his_sim: Any, pay_sim: Any, clock: FrozenClock
) -> None:
    container = world.env.container
    async with sim_state(his_sim).sessionmaker.begin() as s:
        order = await his_service.write_order(
            s,
            card_no=world.mine.card_no,
            kind="lab",
            title="血常规",
            ordering_department="内科",
            executing_department="检验科",
            doctor_name="王医生",
            items=[{"name": "血常规", "quantity": 1, "unit_price_fen": 2500}],
        )
    await poll_his(container)
    [message] = await templates(container, "payment_due")
    assert message.openid == world.alice_openid
    assert message.data["amount2"] == "¥25.00"
    listing = await world.alice.get("/h5/payments")
    assert f'data-order="{order["order_id"]}"' in listing.text
    await poll_his(container)
    await drain(container)
    assert len(await templates(container, "payment_due")) == 1
