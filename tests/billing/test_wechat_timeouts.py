"""WeChat answering too late (the pay simulator's ``timeout`` fault: the call is carried
out, its answer held past the adapter's deadline): a refund is retried with the same refund
number and made once; a payment query that timed out is asked again until the payment is
known. Through the real adapters and the simulators."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from sqlalchemy import select
from tests.billing.conftest import World
from tests.billing.helpers import (
    drain,
    his_unpaid,
    pay_params,
    payment_row,
    phone_pays,
    start_payment,
)

from frontdesk.billing import models as bm
from frontdesk.billing import service
from frontdesk.core.clock import FrozenClock

REFUNDS = "/v3/refund/domestic/refunds"
QUERY = "/v3/pay/transactions/out-trade-no/"


@pytest.fixture
def impatient(pay_sim: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The adapter gives up after 0.2 s; a faulted answer comes after 0.4 s."""
    monkeypatch.setattr(
        pay_sim.pay, "config", dataclasses.replace(pay_sim.pay.config, timeout_seconds=0.2)
    )

    def late(path: str, calls: int = 1) -> None:
        pay_sim.sim.faults.timeout = calls
        pay_sim.sim.faults.timeout_path = path
        pay_sim.sim.faults.timeout_seconds = 0.4

    return late


async def test_a_refund_answered_too_late_is_made_once_under_one_number(
    world: World, his_sim: Any, pay_sim: Any, clock: FrozenClock, impatient: Any
) -> None:
    container = world.env.container
    ids = [o.id for o in await his_unpaid(his_sim, world.mine.card_no)][:1]
    payment_id, page = await start_payment(world.alice, ids)
    await phone_pays(pay_sim, pay_params(page), world.alice_openid)
    await drain(container)
    paid = await payment_row(container, payment_id)
    assert (paid.state, paid.his_state) == ("paid", "settled")

    impatient(REFUNDS)
    async with container.db.session() as s:
        refund_id = await service.refund_payment(
            s, out_trade_no=paid.out_trade_no, amount_fen=100, reason="退一部分", actor="finance1"
        )
    for _ in range(6):
        clock.advance(seconds=60)
        await drain(container)

    assert pay_sim.sim.answers_held == [REFUNDS]  # WeChat took the first call, answered late
    number = f"{paid.out_trade_no}R01"
    at_wechat = [r for r in pay_sim.sim.refunds.values() if r.out_trade_no == paid.out_trade_no]
    assert [(r.out_refund_no, r.refund_fen) for r in at_wechat] == [(number, 100)]
    async with container.db.session() as s:
        refunds = list(
            await s.scalars(
                select(bm.BillingRefund).where(bm.BillingRefund.payment_id == payment_id)
            )
        )
    assert [(r.id, r.out_refund_no, r.amount_fen) for r in refunds] == [(refund_id, number, 100)]
    assert refunds[0].state in ("processing", "success")
    assert (await payment_row(container, payment_id)).refunded_fen == 100


async def test_a_payment_query_answered_too_late_is_asked_again(
    world: World, his_sim: Any, pay_sim: Any, clock: FrozenClock, impatient: Any
) -> None:
    container = world.env.container
    ids = [o.id for o in await his_unpaid(his_sim, world.mine.card_no)][:1]
    payment_id, page = await start_payment(world.alice, ids)
    pay_sim.sim.faults.notify.append("drop")  # only the query can find out
    await phone_pays(pay_sim, pay_params(page), world.alice_openid)
    assert (await payment_row(container, payment_id)).state == "pending"

    impatient(QUERY, calls=2)
    for _ in range(6):
        clock.advance(seconds=6)
        await drain(container)

    assert len(pay_sim.sim.answers_held) == 2
    assert all(p.startswith(QUERY) for p in pay_sim.sim.answers_held)
    row = await payment_row(container, payment_id)
    assert (row.state, row.his_state) == ("paid", "settled")
