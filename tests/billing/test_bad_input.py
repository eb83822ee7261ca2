"""Bad input to payments and refunds: each is refused with a clear error and changes nothing
(no payment, refund, history row or job; no money moved in WeChat or the HIS)."""

from __future__ import annotations

from typing import Any

import pytest
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
    snapshot,
    start_payment,
)

from frontdesk.billing import errors, service
from frontdesk.billing import models as bm
from frontdesk.core.clock import FrozenClock
from frontdesk.sims.his_sim import models as hm
from frontdesk.sims.his_sim import service as his_service
from frontdesk.sims.his_sim.app import sim_state
from frontdesk.wechat.pay.port import JsapiOrder


async def _settled(world: World, his_sim: Any, pay_sim: Any) -> tuple[int, list[str]]:
    ids = [o.id for o in await his_unpaid(his_sim, world.mine.card_no)]
    payment_id, page = await start_payment(world.alice, ids)
    await phone_pays(pay_sim, pay_params(page), world.alice_openid)
    await drain(world.env.container)
    assert (await payment_row(world.env.container, payment_id)).his_state == "settled"
    return payment_id, ids


async def test_notify_for_an_unknown_merchant_number_changes_nothing(
    world: World, pay_sim: Any
) -> None:
    container = world.env.container
    before = await snapshot(container)
    prepay = await pay_sim.pay.create_jsapi_order(
        JsapiOrder(
            out_trade_no="PNOTOURS0000000001",
            description="x",
            amount_fen=100,
            openid=world.alice_openid,
        )
    )
    await phone_pays(
        pay_sim, pay_sim.pay.jsapi_pay_params(prepay).as_bridge_dict(), world.alice_openid
    )
    assert pay_sim.sim.notifies[-1].answers == [204]
    assert await snapshot(container) == before


async def test_notify_with_another_amount_is_flagged_and_changes_no_state(
    world: World, his_sim: Any, pay_sim: Any, clock: FrozenClock
) -> None:
    container = world.env.container
    ids = [o.id for o in await his_unpaid(his_sim, world.mine.card_no)][:1]
    async with container.db.session() as s:
        view = await service.create_payment(
            s,
            his=container.services["his"],
            card_no=world.mine.card_no,
            order_ids=ids,
            channel="NATIVE",
            actor="test",
            now=clock.now(),
        )
    # WeChat reports our merchant number paid, but for one fen more than we asked.
    prepay = await pay_sim.pay.create_jsapi_order(
        JsapiOrder(
            out_trade_no=view.out_trade_no,
            description="x",
            amount_fen=view.amount_fen + 1,
            openid=world.alice_openid,
        )
    )
    await phone_pays(
        pay_sim, pay_sim.pay.jsapi_pay_params(prepay).as_bridge_dict(), world.alice_openid
    )
    row = await payment_row(container, view.payment_id)
    assert (row.state, row.his_state, row.flagged) == ("pending", "not_needed", True)
    assert row.flag_reason in {"amount_mismatch", "trade_type_mismatch"}
    assert await count(container, bm.BillingRefund) == 0
    assert await his_rows(his_sim, hm.settlement, payment_ref=view.out_trade_no) == []


@pytest.mark.parametrize("field", ["mchid", "appid"])
async def test_notify_for_another_merchant_or_app_is_refused_at_the_door(
    world: World, his_sim: Any, pay_sim: Any, field: str
) -> None:
    container = world.env.container
    ids = [o.id for o in await his_unpaid(his_sim, world.mine.card_no)][:1]
    payment_id, page = await start_payment(world.alice, ids)
    before = await snapshot(container)
    order = pay_sim.sim.confirm_jsapi(pay_params(page))
    pay_sim.sim.faults.notify.append("drop")  # the real notify is lost...
    pay_sim.sim.pay(order, openid=world.alice_openid)
    resource = pay_sim.sim.transaction_json(order)
    resource[field] = "1900000000" if field == "mchid" else "wx0000000000000000"
    forged = pay_sim.sim.queue_notify(  # ...and one for another merchant / app arrives
        order.notify_url, "TRANSACTION.SUCCESS", "支付成功", "transaction", resource
    )
    await pay_sim.sim.deliver_due()
    assert forged is not None and forged.answers[0] == 400
    assert (await payment_row(container, payment_id)).state == "pending"
    assert await snapshot(container) == before


async def test_paying_someone_elses_orders_is_refused(world: World, his_sim: Any) -> None:
    container = world.env.container
    theirs = [o.id for o in await his_unpaid(his_sim, world.stranger.card_no)]
    listing = await world.alice.get("/h5/cards/bind")  # any page with the account's token
    before = await snapshot(container)
    refused = await world.alice.post(
        "/h5/payments", data={"csrf": csrf_of(listing), "order": theirs}
    )
    assert refused.status_code == 404
    assert 'data-error="billing_order_not_found"' in refused.text
    assert await snapshot(container) == before
    # Seen in the selection view too: not found, no pre-settlement.
    peek = await world.alice.get("/h5/payments", params=[("order", theirs[0])])
    assert "data-self-pay" not in peek.text


async def test_the_amount_is_never_the_clients(world: World, his_sim: Any) -> None:
    container = world.env.container
    ids = [o.id for o in await his_unpaid(his_sim, world.mine.card_no)][:1]
    listing = await world.alice.get("/h5/cards/bind")  # any page with the account's token
    started = await world.alice.post(
        "/h5/payments",
        data={"csrf": csrf_of(listing), "order": ids, "amount_fen": "1", "amount": "0.01"},
    )
    assert started.status_code == 303
    pre = await container.services["his"].pre_settle(card_no=world.mine.card_no, order_ids=ids)
    [payment_id] = [int(started.headers["location"].rsplit("/", 1)[1])]
    assert (await payment_row(container, payment_id)).amount_fen == pre.self_pay_fen != 1


@pytest.mark.parametrize(
    "form",
    [
        {},  # nothing selected
        {"order": ["../../etc"]},
        {"order": ["O1", "O1"]},
        {"order": [f"O{n}" for n in range(51)]},
    ],
)
async def test_bad_selections_are_refused(world: World, form: dict[str, Any]) -> None:
    container = world.env.container
    listing = await world.alice.get("/h5/cards/bind")  # any page with the account's token
    before = await snapshot(container)
    refused = await world.alice.post("/h5/payments", data={"csrf": csrf_of(listing), **form})
    assert refused.status_code in {404, 422}
    assert await snapshot(container) == before


async def test_forms_without_csrf_are_refused(world: World, his_sim: Any) -> None:
    container = world.env.container
    ids = [o.id for o in await his_unpaid(his_sim, world.mine.card_no)]
    before = await snapshot(container)
    assert (await world.alice.post("/h5/payments", data={"order": ids})).status_code == 403
    assert (
        await world.alice.post("/h5/payments/refunds", data={"item": ["I1"]})
    ).status_code == 403
    assert await snapshot(container) == before


@pytest.mark.parametrize("amount", [0, -1, 12.5, "12.50", True, 10**12, 2**63])
async def test_refund_amounts_that_are_not_positive_fen_are_refused(
    world: World, his_sim: Any, pay_sim: Any, amount: Any
) -> None:
    container = world.env.container
    payment_id, _ = await _settled(world, his_sim, pay_sim)
    row = await payment_row(container, payment_id)
    before = await snapshot(container)
    with pytest.raises((errors.AmountInvalid, errors.RefundExceedsPayment)):
        async with container.db.session() as s:
            await service.refund_payment(
                s, out_trade_no=row.out_trade_no, amount_fen=amount, reason="x", actor="finance1"
            )
    assert await snapshot(container) == before
    assert (await payment_row(container, payment_id)).refunded_fen == 0


async def test_refunding_more_than_paid_is_refused(
    world: World, his_sim: Any, pay_sim: Any, clock: FrozenClock
) -> None:
    container = world.env.container
    payment_id, _ = await _settled(world, his_sim, pay_sim)
    row = await payment_row(container, payment_id)
    async with container.db.session() as s:
        await service.refund_payment(
            s,
            out_trade_no=row.out_trade_no,
            amount_fen=row.amount_fen - 100,
            reason="部分退款",
            actor="finance1",
        )
    before = await snapshot(container)
    with pytest.raises(errors.RefundExceedsPayment):
        async with container.db.session() as s:
            await service.refund_payment(
                s, out_trade_no=row.out_trade_no, amount_fen=101, reason="x", actor="finance1"
            )
    assert await snapshot(container) == before
    assert (await payment_row(container, payment_id)).refunded_fen == row.amount_fen - 100


async def test_refunding_an_executed_item_is_refused(
    world: World, his_sim: Any, pay_sim: Any
) -> None:
    container = world.env.container
    _, ids = await _settled(world, his_sim, pay_sim)
    async with sim_state(his_sim).sessionmaker.begin() as s:
        await his_service.execute_order(s, ids[0])
    [item] = (await his_rows(his_sim, hm.order_item, order_id=ids[0]))[:1]
    form = await world.alice.get("/h5/payments/refunds")
    assert f'data-item="{item.id}"' not in form.text
    before = await snapshot(container)
    refused = await world.alice.post(
        "/h5/payments/refunds", data={"csrf": csrf_of(form), "item": [item.id]}
    )
    assert refused.status_code == 409
    assert 'data-error="billing_items_not_refundable"' in refused.text
    assert await snapshot(container) == before
    assert await his_rows(his_sim, hm.refund) == []


async def test_refunding_someone_elses_item_is_refused(
    world: World, his_sim: Any, pay_sim: Any
) -> None:
    container = world.env.container
    _, ids = await _settled(world, his_sim, pay_sim)
    [item] = (await his_rows(his_sim, hm.order_item, order_id=ids[0]))[:1]
    form = await world.bob.get("/h5/cards/bind")
    before = await snapshot(container)
    refused = await world.bob.post(
        "/h5/payments/refunds", data={"csrf": csrf_of(form), "item": [item.id]}
    )
    assert refused.status_code == 409
    assert await snapshot(container) == before


async def test_a_duplicated_notify_changes_state_once(
    world: World, his_sim: Any, pay_sim: Any
) -> None:
    container = world.env.container
    ids = [o.id for o in await his_unpaid(his_sim, world.mine.card_no)][:1]
    payment_id, page = await start_payment(world.alice, ids)
    pay_sim.sim.faults.notify.append("duplicate")
    await phone_pays(pay_sim, pay_params(page), world.alice_openid)
    assert pay_sim.sim.notifies[-1].answers == [204, 204]
    assert await count(container, bm.BillingEvent, payment_id=payment_id, kind="payment.paid") == 1
    assert await count(container, bm.BillingEvent, payment_id=payment_id) == 2
