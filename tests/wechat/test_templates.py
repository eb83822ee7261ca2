"""Template messages end to end: queue → outbox job → real client → simulator →
TEMPLATESENDJOBFINISH callback → our row; and the errcode policy."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from frontdesk.core.clock import FrozenClock
from frontdesk.core.outbox import OutboxJob
from frontdesk.core.worker import Worker
from frontdesk.wechat.oa import service
from frontdesk.wechat.oa.errors import UnknownTemplateKind
from frontdesk.wechat.oa.models import TemplateMessage, WeChatUser
from frontdesk.wechat.oa.templates import queue_template

DATA = {"thing1": "内科 王医生", "time2": "2026-11-28 09:30", "thing3": "请提前15分钟到达"}


async def follow(env: Any, name: str = "张三") -> str:
    user = env.sim.add_user(name)
    delivery = await env.sim.user_follows(user.openid)
    assert delivery.ok
    return str(user.openid)


async def queue(
    env: Any, openid: str, kind: str = "booking_made", data: dict[str, str] | None = None
) -> int | None:
    async with env.container.db.session() as session:
        row = await queue_template(
            session,
            openid=openid,
            kind=kind,
            data=data or DATA,
            url="http://testserver/h5/bookings/1",
        )
        return row.id if row else None


async def row_of(env: Any, row_id: int) -> TemplateMessage:
    async with env.container.db.session() as session:
        row: TemplateMessage = (
            await session.execute(select(TemplateMessage).where(TemplateMessage.id == row_id))
        ).scalar_one()
        return row


async def job_status(env: Any) -> list[str]:
    async with env.container.db.session() as session:
        return list(
            (
                await session.execute(
                    select(OutboxJob.status).where(OutboxJob.name == "wechat.send_template")
                )
            ).scalars()
        )


async def test_sent_then_delivered(wechat_sim: Any) -> None:
    openid = await follow(wechat_sim)
    row_id = await queue(wechat_sim, openid)
    assert row_id is not None
    assert await Worker(wechat_sim.container).drain() == 1
    row = await row_of(wechat_sim, row_id)
    assert (row.state, row.template_id, row.attempts) == ("sent", "TPL_BOOKING_MADE", 1)
    [sent] = wechat_sim.sim.sent_templates
    assert sent["msgid"] == row.msgid
    assert sent["client_msg_id"] == row.client_msg_id == f"fd-tpl-{row_id}"
    assert sent["data"] == DATA
    [delivery] = await wechat_sim.sim.flush_events()
    assert delivery.ok
    row = await row_of(wechat_sim, row_id)
    assert (row.state, row.delivery_status) == ("delivered", "success")
    # The phone shows it as a card.
    assert [e.kind for e in wechat_sim.sim.chat(openid)][-1] == "card"


async def test_unfollowed_user_gets_nothing(wechat_sim: Any) -> None:
    openid = await follow(wechat_sim)
    assert (await wechat_sim.sim.user_unfollows(openid)).ok
    assert await queue(wechat_sim, openid) is None
    assert await job_status(wechat_sim) == []
    async with wechat_sim.container.db.session() as session:
        count = (
            await session.execute(select(func.count()).select_from(TemplateMessage))
        ).scalar_one()
    assert count == 0


async def test_43004_stops_and_marks_the_user(wechat_sim: Any) -> None:
    openid = await follow(wechat_sim)
    row_id = await queue(wechat_sim, openid)
    assert row_id is not None
    wechat_sim.sim.users[openid].following = False  # the unsubscribe event was lost
    await Worker(wechat_sim.container).drain()
    row = await row_of(wechat_sim, row_id)
    assert (row.state, row.errcode) == ("failed", 43004)
    assert await job_status(wechat_sim) == ["done"]
    async with wechat_sim.container.db.session() as session:
        user = (await session.execute(select(WeChatUser))).scalar_one()
        assert user.following is False
    assert wechat_sim.sim.sent_templates == []


@pytest.mark.parametrize("errcode", [45009, -1])
async def test_busy_or_quota_retries_later(
    wechat_sim: Any, clock: FrozenClock, errcode: int
) -> None:
    openid = await follow(wechat_sim)
    row_id = await queue(wechat_sim, openid)
    assert row_id is not None
    wechat_sim.sim.inject("template", errcode)
    worker = Worker(wechat_sim.container)
    await worker.drain()
    assert (await row_of(wechat_sim, row_id)).state == "queued"
    assert await job_status(wechat_sim) == ["queued"]
    clock.advance(seconds=60)
    await worker.drain()
    row = await row_of(wechat_sim, row_id)
    assert (row.state, row.attempts) == ("sent", 2)
    assert len(wechat_sim.sim.sent_templates) == 1


async def test_40001_refreshes_the_token_and_sends(wechat_sim: Any) -> None:
    openid = await follow(wechat_sim)
    row_id = await queue(wechat_sim, openid)
    assert row_id is not None
    wechat_sim.sim.revoke_token(await wechat_sim.tokens.get())
    await Worker(wechat_sim.container).drain()
    row = await row_of(wechat_sim, row_id)
    assert (row.state, row.attempts) == ("sent", 1)
    assert wechat_sim.sim.stable_token_requests == 2


async def test_other_rejection_is_a_dead_letter_with_a_failed_row(wechat_sim: Any) -> None:
    openid = await follow(wechat_sim)
    settings = wechat_sim.container.settings
    wechat_sim.container.settings = settings.model_copy(
        update={
            "wechat_template_ids": {**settings.wechat_template_ids, "booking_made": "TPL_DELETED"}
        }
    )
    row_id = await queue(wechat_sim, openid)
    assert row_id is not None
    await Worker(wechat_sim.container).drain()
    row = await row_of(wechat_sim, row_id)
    assert (row.state, row.errcode) == ("failed", 40037)
    assert await job_status(wechat_sim) == ["dead"]
    assert wechat_sim.sim.sent_templates == []


async def test_long_values_are_cut_at_20_characters_by_the_platform(wechat_sim: Any) -> None:
    openid = await follow(wechat_sim)
    long_value = "请携带身份证和医保卡到门诊楼一楼自助机签到后候诊"
    assert await queue(wechat_sim, openid, data={"thing1": long_value})
    await Worker(wechat_sim.container).drain()
    [sent] = wechat_sim.sim.sent_templates
    assert sent["data"]["thing1"] == long_value[:20]
    assert sent["truncated"] == ["thing1"]


async def test_unknown_kind_is_refused_and_writes_nothing(wechat_sim: Any) -> None:
    openid = await follow(wechat_sim)
    with pytest.raises(UnknownTemplateKind):
        await queue(wechat_sim, openid, kind="lottery_won")
    assert await job_status(wechat_sim) == []


async def test_is_following_defaults_to_true_for_unknown_users(db: Any) -> None:
    assert await service.is_following(db, openid="o-never-seen") is True
