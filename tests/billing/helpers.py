"""Helpers for billing tests: a phone signed in through the WeChat simulator with cards
bound through the real pages, the demo HIS and the WeChat Pay simulator wired to our app,
and the worker run as it would run."""

from __future__ import annotations

import html
import json
import re
from typing import Any

import httpx
from sqlalchemy import func, select
from tests.accounts.helpers import SimPatient, sim_patients
from tests.accounts.test_pages import csrf_of
from tests.reports.helpers import phone_with_cards

from frontdesk.billing import jobs as _billing_jobs  # noqa: F401 - registers jobs and handlers
from frontdesk.billing import models as bm
from frontdesk.core import outbox
from frontdesk.core.worker import Worker
from frontdesk.his import jobs as his_jobs
from frontdesk.sims.his_sim import models as hm
from frontdesk.sims.his_sim.app import sim_state
from frontdesk.wechat.oa.models import TemplateMessage

__all__ = ["SimPatient", "csrf_of", "phone_with_cards", "sim_patients"]


def wire(wechat_sim: Any, his_gateway: Any, sms_sender: Any, pay_sim: Any) -> Any:
    services = wechat_sim.container.services
    services["his"], services["sms"], services["pay"] = his_gateway, sms_sender, pay_sim.pay
    pay_sim.connect_notify(wechat_sim.front_app)
    return wechat_sim


async def drain(container: Any) -> int:
    return await Worker(container).drain()


async def poll_his(container: Any) -> int:
    """Run the real HIS event poller and whatever it queues, as the worker would."""
    async with container.db.session() as session:
        await outbox.enqueue(session, his_jobs.POLL_JOB)
    return await drain(container)


async def his_unpaid(his_sim: Any, card_no: str) -> list[Any]:
    async with sim_state(his_sim).engine.connect() as conn:
        return list(
            (
                await conn.execute(
                    select(hm.order)
                    .where(hm.order.c.card_no == card_no, hm.order.c.status == "unpaid")
                    .order_by(hm.order.c.created_at, hm.order.c.id)
                )
            ).all()
        )


async def his_rows(his_sim: Any, table: Any, **where: Any) -> list[Any]:
    stmt = select(table)
    for key, value in where.items():
        stmt = stmt.where(getattr(table.c, key) == value)
    async with sim_state(his_sim).engine.connect() as conn:
        return list((await conn.execute(stmt)).all())


async def count(container: Any, model: Any, **where: Any) -> int:
    async with container.db.session() as s:
        stmt = select(func.count()).select_from(model)
        for key, value in where.items():
            stmt = stmt.where(getattr(model, key) == value)
        return int((await s.execute(stmt)).scalar_one())


async def payment_row(container: Any, payment_id: int) -> bm.BillingPayment:
    async with container.db.session() as s:
        row = await s.get(bm.BillingPayment, payment_id)
        assert isinstance(row, bm.BillingPayment)
        return row


async def templates(container: Any, kind: str) -> list[TemplateMessage]:
    async with container.db.session() as s:
        rows = await s.scalars(
            select(TemplateMessage).where(TemplateMessage.kind == kind).order_by(TemplateMessage.id)
        )
        return list(rows)


async def snapshot(container: Any) -> dict[str, int]:
    """Row counts of every billing table and of the outbox (nothing-changed checks)."""
    out = {}
    for model in (
        bm.BillingPayment,
        bm.BillingPaymentOrder,
        bm.BillingRefund,
        bm.BillingEvent,
        outbox.OutboxJob,
    ):
        out[model.__tablename__] = await count(container, model)
    return out


def pay_params(page: httpx.Response) -> dict[str, str]:
    found = re.search(r"data-pay-params='([^']+)'", page.text)
    assert found is not None, "the payment page has no pay params"
    params: dict[str, str] = json.loads(html.unescape(found.group(1)))
    return params


def payment_id_of(response: httpx.Response) -> int:
    assert response.status_code == 303, response.text[:500]
    found = re.fullmatch(r"/h5/payments/(\d+)", response.headers["location"])
    assert found is not None, response.headers["location"]
    return int(found.group(1))


async def phone_pays(pay_sim: Any, params: dict[str, str], openid: str) -> None:
    """The patient confirms in WeChat's pay sheet; WeChat then notifies us."""
    order = pay_sim.sim.confirm_jsapi(params)
    pay_sim.sim.pay(order, openid=openid)
    await pay_sim.sim.deliver_due()


async def start_payment(
    phone: httpx.AsyncClient, order_ids: list[str]
) -> tuple[int, httpx.Response]:
    listing = await phone.get("/h5/payments", params=[("order", o) for o in order_ids])
    assert listing.status_code == 200, listing.text[:500]
    started = await phone.post(
        "/h5/payments",
        data={"csrf": csrf_of(listing), "order": order_ids},
    )
    payment_id = payment_id_of(started)
    page = await phone.get(f"/h5/payments/{payment_id}")
    assert page.status_code == 200
    return payment_id, page
