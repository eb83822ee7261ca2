"""A real day of payments through billing, the worker and the simulators, then the real
``reconciliation.daily`` job on the app's container (its ``BillingLedger``), the Pay
simulator's bill streamed through our client and the demo HIS's ``day_settlements``."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import select

from frontdesk.billing import models as bm
from frontdesk.billing import service as billing
from frontdesk.core import outbox
from frontdesk.core.clock import FrozenClock
from frontdesk.core.worker import load_job_modules
from frontdesk.reconciliation import service as recon
from frontdesk.reconciliation.models import ReconDifference, ReconRun
from frontdesk.sims.his_sim import models as hm
from frontdesk.sims.wechat_sim.pay_state import new_auth_code
from tests.billing.conftest import World
from tests.billing.helpers import (
    csrf_of,
    drain,
    his_rows,
    his_unpaid,
    pay_params,
    payment_row,
    phone_pays,
    start_payment,
)
from tests.reconciliation.helpers import SH

load_job_modules()  # the worker loads every job module (JOB_MODULES) when it starts


@dataclass
class Paid:
    """What the day moved, by trade type: (count, fen) of payments and of refunds."""

    payments: dict[str, list[int]] = field(default_factory=dict)
    refunds: dict[str, list[int]] = field(default_factory=dict)
    numbers: dict[str, str] = field(default_factory=dict)  # label -> out_trade_no

    def add(self, kind: str, trade_type: str, fen: int) -> None:
        book = self.payments if kind == "payment" else self.refunds
        book.setdefault(trade_type, []).append(fen)


async def pay_jsapi(world: World, pay_sim: Any, order_ids: list[str]) -> bm.BillingPayment:
    payment_id, page = await start_payment(world.alice, order_ids)
    await phone_pays(pay_sim, pay_params(page), world.alice_openid)
    return await payment_row(world.env.container, payment_id)


async def pay_native(
    world: World, pay_sim: Any, clock: FrozenClock, card_no: str, order_ids: list[str]
) -> bm.BillingPayment:
    container = world.env.container
    async with container.db.session() as s:
        view, placed = await billing.start_payment(
            s,
            his=container.services["his"],
            pay=pay_sim.pay,
            card_no=card_no,
            order_ids=order_ids,
            channel="NATIVE",
            actor="system:qr",
            now=clock.now(),
        )
    scanned = await pay_sim.http.post(
        "/sim/pay/native/confirm", json={"code_url": placed.code_url, "openid": "o-scanner"}
    )
    assert scanned.status_code == 200, scanned.text
    await pay_sim.sim.deliver_due()
    return await payment_row(container, view.payment_id)


async def pay_micropay(
    world: World, pay_sim: Any, clock: FrozenClock, card_no: str, order_ids: list[str]
) -> bm.BillingPayment:
    container = world.env.container
    async with container.db.session() as s:
        view = await billing.create_payment(
            s,
            his=container.services["his"],
            card_no=card_no,
            order_ids=order_ids,
            channel="MICROPAY",
            actor="cashier1",
            now=clock.now(),
            store_id="W01",
        )
    async with container.db.session() as s:
        placed = await billing.place_wechat_order(
            s,
            pay=pay_sim.pay,
            payment_id=view.payment_id,
            now=clock.now(),
            auth_code=new_auth_code("success"),
        )
    assert placed.state == "paid"
    return await payment_row(container, view.payment_id)


async def refund_an_item(
    world: World, his_sim: Any, pay_sim: Any, clock: FrozenClock, order_id: str
) -> bm.BillingRefund:
    """The patient asks for one item of ``order_id`` back on the phone; the HIS confirms,
    WeChat takes the refund and notifies its success."""
    container = world.env.container
    form = await world.alice.get("/h5/payments/refunds")
    [target, *_] = await his_rows(his_sim, hm.order_item, order_id=order_id)
    assert f'data-item="{target.id}"' in form.text
    asked = await world.alice.post(
        "/h5/payments/refunds", data={"csrf": csrf_of(form), "item": [target.id]}
    )
    assert asked.status_code == 303, asked.text[:300]
    await drain(container)
    clock.advance(seconds=10)
    await pay_sim.sim.deliver_due()
    async with container.db.session() as s:
        refund: bm.BillingRefund | None = (
            (
                await s.execute(
                    select(bm.BillingRefund)
                    .where(bm.BillingRefund.amount_fen == target.self_pay_fen)
                    .order_by(bm.BillingRefund.id.desc())
                )
            )
            .scalars()
            .first()
        )
    assert refund is not None and refund.state == "success" and refund.his_state == "refunded"
    return refund


async def unpaid_ids(his_sim: Any, card_no: str) -> list[str]:
    return [o.id for o in await his_unpaid(his_sim, card_no)]


def bill_time(day: date) -> datetime:
    """The next hospital day at 10:31, after the bill is published and the job is due."""
    return datetime.combine(day + timedelta(days=1), time(10, 31), tzinfo=SH)


async def run_daily(container: Any, clock: FrozenClock) -> None:
    """The real recurring job, queued as the scheduler would, and everything it queues."""
    async with container.db.session() as s:
        await outbox.enqueue(s, recon.DAILY_JOB)
    await drain(container)


async def run_of(container: Any, day: date) -> ReconRun:
    async with container.db.session() as s:
        run: ReconRun = (
            await s.execute(select(ReconRun).where(ReconRun.day_on == day))
        ).scalar_one()
        return run


async def diffs_of(container: Any, day: date | None = None) -> list[ReconDifference]:
    async with container.db.session() as s:
        stmt = select(ReconDifference).order_by(ReconDifference.id)
        if day is not None:
            stmt = stmt.where(ReconDifference.day_on == day)
        return list((await s.execute(stmt)).scalars())
