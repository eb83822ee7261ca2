"""Helpers for report tests: patients signed in through the WeChat simulator with cards
bound through the real pages, and reports written into the demo HIS's own database."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import func, select, update

from frontdesk.core import outbox
from frontdesk.core.audit import AuditEntry
from frontdesk.core.worker import Worker
from frontdesk.his import jobs as his_jobs
from frontdesk.sims.his_sim import models as m
from frontdesk.sims.his_sim.app import sim_state
from tests.accounts.helpers import SimPatient, sim_patients
from tests.accounts.test_pages import accept, bind, csrf_of
from tests.wechat.test_oauth import sign_in

__all__ = ["SimPatient", "csrf_of", "sim_patients"]


async def phone_with_cards(
    env: Any, sms_sim: Any, name: str, patients: list[SimPatient]
) -> tuple[httpx.AsyncClient, str]:
    """A new phone (its own cookies) signed in as a new WeChat user with these cards bound;
    the first card is the active one."""
    user = env.sim.add_user(name)
    phone = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=env.front_app), base_url="http://testserver"
    )
    saved, env.front = env.front, phone
    try:
        await sign_in(env, user.openid, next_url="/h5/")
        await accept(phone)
        for p in patients:
            done = await bind(phone, sms_sim, p)
            assert done.status_code == 303, done.text
    finally:
        env.front = saved
    return phone, user.openid


async def sim_report_ids(his_sim: Any, card_no: str, *, kind: str | None = None) -> list[str]:
    """The card's reviewed reports in the HIS, newest first (what the list must show)."""
    stmt = (
        select(m.report.c.id)
        .where(m.report.c.card_no == card_no, m.report.c.reviewed.is_(True))
        .order_by(m.report.c.reviewed_at.desc(), m.report.c.id)
    )
    if kind:
        stmt = stmt.where(m.report.c.kind == kind)
    async with sim_state(his_sim).engine.connect() as conn:
        return list((await conn.execute(stmt)).scalars())


def lab_item(
    code: str,
    name: str,
    result: str,
    unit: str = "mmol/L",
    reference_range: str = "3.9-6.1",
    abnormal: str = "normal",
    critical: bool = False,
) -> dict[str, Any]:
    return {
        "code": code,
        "name": name,
        "result": result,
        "unit": unit,
        "reference_range": reference_range,
        "abnormal": abnormal,
        "critical": critical,
    }


async def put_lab_report(
    his_sim: Any,
    *,
    report_id: str,
    card_no: str,
    sampled_at: datetime,
    items: list[dict[str, Any]],
    title: str = "生化检验",
    reviewed: bool = True,
    reviewed_after: timedelta = timedelta(hours=3),
) -> None:
    """A lab report in the demo HIS's database, exactly as its LIS would have stored it."""
    reported_at = sampled_at + timedelta(hours=2)
    async with sim_state(his_sim).engine.begin() as conn:
        await conn.execute(
            m.report.insert().values(
                id=report_id,
                card_no=card_no,
                kind="lab",
                title=title,
                department="内分泌科",
                reviewed=reviewed,
                has_abnormal=any(i["abnormal"] != "normal" for i in items),
                reported_at=reported_at,
                reviewed_at=sampled_at + reviewed_after if reviewed else None,
                body={
                    "specimen": "血清",
                    "clinical_diagnosis": "2型糖尿病",
                    "tester": "王检验",
                    "reviewer": "李审核",
                    "sampled_at": sampled_at.isoformat(),
                    "items": items,
                },
            )
        )


async def review_in_his(his_sim: Any, report_id: str, at: datetime) -> None:
    async with sim_state(his_sim).engine.begin() as conn:
        await conn.execute(
            update(m.report).where(m.report.c.id == report_id).values(reviewed=True, reviewed_at=at)
        )


async def audit_rows(env: Any, **where: Any) -> list[AuditEntry]:
    async with env.container.db.session() as s:
        stmt = select(AuditEntry).order_by(AuditEntry.id)
        for key, value in where.items():
            stmt = stmt.where(getattr(AuditEntry, key) == value)
        return list((await s.execute(stmt)).scalars())


async def count(env: Any, model: Any, **where: Any) -> int:
    async with env.container.db.session() as s:
        stmt = select(func.count()).select_from(model)
        for key, value in where.items():
            stmt = stmt.where(getattr(model, key) == value)
        return int((await s.execute(stmt)).scalar_one())


async def poll_his(container: Any) -> int:
    """Run the real HIS event poller (``his.poll_events``) and whatever it queues, as the
    worker would; returns how many jobs ran."""
    async with container.db.session() as session:
        await outbox.enqueue(session, his_jobs.POLL_JOB)
    return await Worker(container).drain()


def report_links(page: httpx.Response) -> list[str]:
    return re.findall(r'data-report-id="([A-Za-z0-9_-]+)"', page.text)
