""" "Report ready": the HIS event feed says a report was reviewed → after the hold, one
template message per account of the card through the outbox and the WeChat simulator,
linking straight to the report (through sign-in when needed)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from frontdesk.core import outbox
from frontdesk.core.clock import FrozenClock
from frontdesk.core.worker import Worker
from frontdesk.reports import jobs as report_jobs
from frontdesk.sims.his_sim import service as his_sim_service
from frontdesk.sims.his_sim.app import sim_state
from frontdesk.wechat.oa.models import TemplateMessage
from tests.reports.helpers import (
    count,
    lab_item,
    phone_with_cards,
    poll_his,
    put_lab_report,
    report_links,
    sim_patients,
)
from tests.wechat.test_oauth import sign_in


@pytest.fixture
def env(wechat_sim: Any, his_gateway: Any, sms_sender: Any) -> Any:
    services = wechat_sim.container.services
    services["his"], services["sms"] = his_gateway, sms_sender
    return wechat_sim


async def review(his_sim: Any, report_id: str) -> None:
    """The laboratory reviews the report in the HIS (which writes its event)."""
    async with AsyncSession(sim_state(his_sim).engine) as s, s.begin():
        await his_sim_service.review_report(s, report_id)


async def test_ready_message_after_the_hold_once_per_account(
    env: Any,
    his_sim: Any,
    his_gateway: Any,
    sms_sim: Any,
    clock: FrozenClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert report_jobs.ANNOUNCE_JOB == "reports.announce"
    monkeypatch.setattr(env.container.settings, "reports_hold_hours", {"lab": 2, "exam": 0})
    p, stranger = await sim_patients(his_sim, count=2)
    owner, owner_openid = await phone_with_cards(env, sms_sim, "张三", [p])
    sms_sim.state.sim.per_minute = 5
    _, family_openid = await phone_with_cards(env, sms_sim, "张小三", [p])
    _, stranger_openid = await phone_with_cards(env, sms_sim, "王五", [stranger])
    for openid in (owner_openid, family_openid, stranger_openid):
        assert (await env.sim.user_follows(openid)).ok
    await poll_his(env.container)  # the feed so far
    # The owner's list is read (and kept) before the report exists.
    assert "RNEW" not in report_links(await owner.get("/h5/reports"))
    await put_lab_report(
        his_sim,
        report_id="RNEW",
        card_no=p.card_no,
        sampled_at=clock.now() - timedelta(hours=3),
        items=[lab_item("GLU", "葡萄糖", "7.2", abnormal="high")],
        reviewed=False,
    )
    await review(his_sim, "RNEW")
    await poll_his(env.container)
    # Held: no message yet, and the report is neither listed nor shown.
    assert await count(env, TemplateMessage, kind="report_ready") == 0
    assert "RNEW" not in report_links(await owner.get("/h5/reports"))
    assert (await owner.get("/h5/reports/RNEW")).status_code == 404
    # Two hours on: one message each to the owner and the family member, none to others.
    clock.advance(hours=2, seconds=1)
    await Worker(env.container).drain()
    assert await count(env, TemplateMessage, kind="report_ready") == 2
    sent = [m for m in env.sim.sent_templates if m["template_id"] == "TPL_REPORT_READY"]
    assert sorted(m["touser"] for m in sent) == sorted([owner_openid, family_openid])
    assert {m["url"] for m in sent} == {"http://127.0.0.1:8000/h5/reports/RNEW"}
    assert sent[0]["data"]["thing1"] == "检验报告 生化检验"
    assert sent[0]["data"]["thing2"] == f"就诊卡 61****{p.card_no[-4:]}"
    assert "7.2" not in str(sent)  # no results on a lock screen
    # The list was forgotten when the event came: the new report is listed at once.
    assert "RNEW" in report_links(await owner.get("/h5/reports"))
    # The same event again, or the job run twice: nobody is told twice.
    async with env.container.db.session() as s:
        await outbox.enqueue(
            s, report_jobs.ANNOUNCE_JOB, report_id="RNEW", card_no=p.card_no, dedupe_key="again"
        )
    await poll_his(env.container)
    assert await count(env, TemplateMessage, kind="report_ready") == 2
    # The link in the message: a phone that is not signed in goes through WeChat sign-in
    # and lands on the report.
    env.front = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=env.front_app), base_url="http://testserver"
    )
    path = urlsplit(sent[0]["url"]).path
    first = await env.front.get(path)
    assert first.status_code == 303
    assert first.headers["location"] == "/wechat/oauth/start?next=%2Fh5%2Freports%2FRNEW"
    landed, _ = await sign_in(env, sent[0]["touser"], next_url=path)
    assert landed.headers["location"] == "/h5/reports/RNEW"
    page = await env.front.get("/h5/reports/RNEW")
    assert page.status_code == 200 and "葡萄糖" in page.text
    await env.front.aclose()


async def test_a_report_the_his_withdrew_is_not_announced(
    env: Any, his_sim: Any, his_gateway: Any, sms_sim: Any, clock: FrozenClock
) -> None:
    [p] = await sim_patients(his_sim, count=1)
    _, openid = await phone_with_cards(env, sms_sim, "张三", [p])
    assert (await env.sim.user_follows(openid)).ok
    async with env.container.db.session() as s:
        await outbox.enqueue(
            s, report_jobs.ANNOUNCE_JOB, report_id="RGONE", card_no=p.card_no, dedupe_key="x"
        )
    await Worker(env.container).drain()
    assert await count(env, TemplateMessage, kind="report_ready") == 0
