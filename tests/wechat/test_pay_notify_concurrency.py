"""The same notification delivered ten times at once is processed exactly once.

Real concurrency on a committing database (the ``committed`` fixture): the inbox's unique
constraint, not a read first, decides which delivery is the first.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from frontdesk.container import Container
from frontdesk.core.inbox import InboxMessage
from frontdesk.web.app import create_app
from frontdesk.wechat.pay import events
from frontdesk.wechat.pay.port import JsapiOrder
from tests.sims.pay_rig import PaySimRig


async def test_ten_concurrent_deliveries_make_one_change(
    pay_sim: PaySimRig, container: Container, settings: Any
) -> None:
    app = create_app(settings, container=container)
    container.services["pay"] = pay_sim.pay
    calls: list[str] = []

    async def handler(_session: AsyncSession, event: events.PaymentSucceeded) -> None:
        calls.append(event.notify_id)
        await asyncio.sleep(0.01)  # widen the window for a race

    prepay_id = await pay_sim.pay.create_jsapi_order(
        JsapiOrder(out_trade_no="P1000001", description="挂号费", amount_fen=500, openid="o" * 28)
    )
    order = pay_sim.sim.confirm_jsapi(pay_sim.pay.jsapi_pay_params(prepay_id).as_bridge_dict())
    pay_sim.sim.pay(order, openid="o" * 28)
    notify = pay_sim.sim.notifies[0]
    deliveries = [pay_sim.sim.notify_request(notify) for _ in range(10)]

    events.register(events.PaymentSucceeded, handler)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        ) as client:
            answers = await asyncio.gather(
                *(
                    client.post("/wechat/pay/notify", content=body, headers=headers)
                    for headers, body in deliveries
                )
            )
    finally:
        events.unregister(events.PaymentSucceeded, handler)

    assert [a.status_code for a in answers] == [204] * 10
    assert calls == [notify.notify_id]
    async with container.db.session() as session:
        rows = await session.scalar(
            select(func.count()).select_from(InboxMessage).where(InboxMessage.source == "wxpay")
        )
    assert rows == 1
