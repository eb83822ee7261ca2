"""Withdrawing consent stops messages: nothing new is queued, and what was queued is not sent."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from frontdesk.accounts import service
from frontdesk.core.clock import FrozenClock
from frontdesk.core.worker import Worker
from frontdesk.wechat.oa.models import TemplateMessage
from tests.wechat.test_templates import follow, queue, row_of


async def test_no_message_is_queued_after_withdrawal(wechat_sim: Any, clock: FrozenClock) -> None:
    openid = await follow(wechat_sim)
    async with wechat_sim.container.db.session() as s:
        await service.accept_notice(s, openid=openid, version="v1", now=clock.now())
    assert await queue(wechat_sim, openid) is not None
    async with wechat_sim.container.db.session() as s:
        await service.withdraw_consent(s, openid=openid, now=clock.now())
    assert await queue(wechat_sim, openid) is None
    async with wechat_sim.container.db.session() as s:
        rows = (await s.execute(select(func.count()).select_from(TemplateMessage))).scalar_one()
    assert rows == 1


async def test_a_queued_message_is_not_sent_after_withdrawal(
    wechat_sim: Any, clock: FrozenClock
) -> None:
    openid = await follow(wechat_sim)
    async with wechat_sim.container.db.session() as s:
        await service.accept_notice(s, openid=openid, version="v1", now=clock.now())
    row_id = await queue(wechat_sim, openid)
    assert row_id is not None
    async with wechat_sim.container.db.session() as s:
        await service.withdraw_consent(s, openid=openid, now=clock.now())
    await Worker(wechat_sim.container).drain()
    row = await row_of(wechat_sim, row_id)
    assert (row.state, row.last_error) == ("failed", "patient withdrew consent before sending")
    assert wechat_sim.sim.sent_templates == []
