"""The other channels the service serves (for the cashier and QR work built on it): a Native
QR payment and a payment-code (MICROPAY) payment go through the same transitions and saga
as JSAPI; refunds retry with the same number through WeChat outages; an abnormal refund is
recorded as such; the HIS port's new read answers "did you settle this?"."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select
from tests.billing.conftest import World
from tests.billing.helpers import drain, his_unpaid, payment_row, snapshot

from frontdesk.billing import errors, service
from frontdesk.billing import models as bm
from frontdesk.core.clock import FrozenClock
from frontdesk.sims.wechat_sim.pay_state import new_auth_code


async def _orders(world: World, his_sim: Any) -> list[str]:
    return [o.id for o in await his_unpaid(his_sim, world.mine.card_no)]


async def test_native_qr_payment_settles(
    world: World, his_sim: Any, pay_sim: Any, clock: FrozenClock
) -> None:
    container = world.env.container
    ids = await _orders(world, his_sim)
    async with container.db.session() as s:
        view, placed = await service.start_payment(
            s,
            his=container.services["his"],
            pay=pay_sim.pay,
            card_no=world.mine.card_no,
            order_ids=ids,
            channel="NATIVE",
            actor="system:qr",
            now=clock.now(),
        )
    assert placed.code_url and placed.code_url.startswith("weixin://")
    scanned = await pay_sim.http.post(
        "/sim/pay/native/confirm", json={"code_url": placed.code_url, "openid": "o-scanner"}
    )
    assert scanned.status_code == 200
    await pay_sim.sim.deliver_due()
    await drain(container)
    row = await payment_row(container, view.payment_id)
    assert (row.channel, row.state, row.his_state) == ("NATIVE", "paid", "settled")


async def test_micropay_payment_code_settles_and_a_refused_code_fails(
    world: World, his_sim: Any, pay_sim: Any, clock: FrozenClock
) -> None:
    container = world.env.container
    ids = await _orders(world, his_sim)
    async with container.db.session() as s:
        view = await service.create_payment(
            s,
            his=container.services["his"],
            card_no=world.mine.card_no,
            order_ids=ids[:1],
            channel="MICROPAY",
            actor="cashier1",
            now=clock.now(),
            store_id="W01",
        )
    async with container.db.session() as s:
        placed = await service.place_wechat_order(
            s,
            pay=pay_sim.pay,
            payment_id=view.payment_id,
            now=clock.now(),
            auth_code=new_auth_code("success"),
        )
    assert placed.state == "paid"
    await drain(container)
    assert (await payment_row(container, view.payment_id)).his_state == "settled"
    # An expired payment code: the payment fails, nothing is settled.
    async with container.db.session() as s:
        second = await service.create_payment(
            s,
            his=container.services["his"],
            card_no=world.mine.card_no,
            order_ids=ids[1:],
            channel="MICROPAY",
            actor="cashier1",
            now=clock.now(),
            store_id="W01",
        )
    async with container.db.session() as s:
        with pytest.raises(errors.PayRefused):
            await service.place_wechat_order(
                s,
                pay=pay_sim.pay,
                payment_id=second.payment_id,
                now=clock.now(),
                auth_code=new_auth_code("expired"),
            )
        await s.commit()
    row = await payment_row(container, second.payment_id)
    assert (row.state, row.his_state) == ("failed", "not_needed")


async def test_refund_retries_with_the_same_number_and_abnormal_is_recorded(
    world: World, his_sim: Any, pay_sim: Any, clock: FrozenClock
) -> None:
    container = world.env.container
    ids = await _orders(world, his_sim)
    async with container.db.session() as s:
        view, _ = await service.start_payment(
            s,
            his=container.services["his"],
            pay=pay_sim.pay,
            card_no=world.mine.card_no,
            order_ids=ids,
            channel="NATIVE",
            actor="system:qr",
            now=clock.now(),
        )
    await pay_sim.http.post(
        "/sim/pay/native/confirm",
        json={"code_url": (await payment_row(container, view.payment_id)).code_url, "openid": "o1"},
    )
    await pay_sim.sim.deliver_due()
    await drain(container)
    pay_sim.sim.faults.api_500 = 5  # WeChat answers SYSTEMERROR for a while
    pay_sim.sim.faults.refund_abnormal = 1
    async with container.db.session() as s:
        refund_id = await service.refund_payment(
            s, out_trade_no=view.out_trade_no, amount_fen=100, reason="测试", actor="finance1"
        )
    for _ in range(10):
        clock.advance(seconds=30)
        await drain(container)
        await pay_sim.sim.deliver_due()
    async with container.db.session() as s:
        refund = await s.get(bm.BillingRefund, refund_id)
        assert refund is not None
        events = list(
            await s.scalars(select(bm.BillingEvent).where(bm.BillingEvent.refund_id == refund_id))
        )
    wechat = [r for r in pay_sim.sim.refunds.values() if r.out_trade_no == view.out_trade_no]
    assert [r.out_refund_no for r in wechat] == [refund.out_refund_no]  # one number, reused
    assert refund.state == "abnormal"
    assert [e.kind for e in events if e.to_state] == [
        "refund.created",
        "refund.processing",
        "refund.abnormal",
    ]


async def test_bad_channel_is_refused(world: World, his_sim: Any, clock: FrozenClock) -> None:
    container = world.env.container
    ids = await _orders(world, his_sim)
    before = await snapshot(container)
    for channel, openid in (("APP", None), ("JSAPI", None)):
        with pytest.raises(errors.ChannelInvalid):
            async with container.db.session() as s:
                await service.create_payment(
                    s,
                    his=container.services["his"],
                    card_no=world.mine.card_no,
                    order_ids=ids,
                    channel=channel,
                    actor="x",
                    now=clock.now(),
                    openid=openid,
                )
    assert await snapshot(container) == before


async def test_his_settlement_read_and_visit_numbers(his_gateway: Any, his_sim: Any) -> None:
    assert await his_gateway.settlement("PNEVERSETTLED000") is None
    orders = await his_gateway.unpaid_orders(card_no="6100000002")
    assert orders and all(o.visit_no.startswith("V") for o in orders)
    pre = await his_gateway.pre_settle(card_no="6100000002", order_ids=[orders[0].order_id])
    done = await his_gateway.settle(
        card_no="6100000002",
        order_ids=[orders[0].order_id],
        payment_ref="PVISITTEST0001",
        self_pay_fen=pre.self_pay_fen,
    )
    assert await his_gateway.settlement("PVISITTEST0001") == done


async def test_item_refund_the_his_already_made_goes_on_to_wechat(
    world: World, his_sim: Any, pay_sim: Any, clock: FrozenClock
) -> None:
    from tests.billing.helpers import his_rows

    from frontdesk.sims.his_sim import models as hm
    from frontdesk.sims.his_sim import service as his_service
    from frontdesk.sims.his_sim.app import sim_state

    container = world.env.container
    ids = await _orders(world, his_sim)
    async with container.db.session() as s:
        _, placed = await service.start_payment(
            s,
            his=container.services["his"],
            pay=pay_sim.pay,
            card_no=world.mine.card_no,
            order_ids=ids,
            channel="NATIVE",
            actor="system:qr",
            now=clock.now(),
        )
    await pay_sim.http.post(
        "/sim/pay/native/confirm", json={"code_url": placed.code_url, "openid": "o1"}
    )
    await pay_sim.sim.deliver_due()
    await drain(container)
    [item, *_] = await his_rows(his_sim, hm.order_item, order_id=ids[0])
    async with container.db.session() as s:
        refund_id = await service.request_item_refund(
            s,
            his=container.services["his"],
            card_no=world.mine.card_no,
            item_ids=[item.id],
            actor="cashier1",
            now=clock.now(),
        )
        number = (await s.get(bm.BillingRefund, refund_id)).out_refund_no
    # The HIS refunds under our number before our call gets its answer through.
    async with sim_state(his_sim).sessionmaker.begin() as hs:
        await his_service.refund(
            hs, card_no=world.mine.card_no, item_ids=[item.id], refund_ref=number, channel="wechat"
        )
    await drain(container)
    async with container.db.session() as s:
        refund = await s.get(bm.BillingRefund, refund_id)
        assert refund is not None
        assert (refund.his_state, refund.state) == ("refunded", "processing")
    assert len(await his_rows(his_sim, hm.refund, refund_ref=number)) == 1
