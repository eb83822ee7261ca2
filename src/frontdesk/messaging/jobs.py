"""Outbox jobs of the messaging area."""

from __future__ import annotations

from frontdesk.core import outbox
from frontdesk.core.outbox import JobContext
from frontdesk.messaging import service
from frontdesk.wechat.oa import service as wechat


@outbox.job(wechat.CHAT_TEXT_JOB, max_attempts=5)
async def chat_text(ctx: JobContext, *, msg_id: str) -> None:
    """Put a chat text that no keyword answered on the message board. Safe to run twice:
    the post is unique on the WeChat MsgId."""
    text = await wechat.text_message(ctx.session, msg_id=msg_id)
    if text is None:
        return
    await service.land_chat_text(
        ctx.session,
        openid=text.openid,
        msg_id=text.msg_id,
        content=text.content,
        at=text.received_at,
    )
    await wechat.mark_text_on_board(ctx.session, msg_id=msg_id)


@outbox.job(service.PUSH_JOB, max_attempts=5, timeout_seconds=300)
async def push_notice(ctx: JobContext, *, article_id: int) -> None:
    """Queue a notice's template message to every opted-in follower, throttled; runs once
    per article (``push_notice`` claims the article with a guarded update)."""
    settings = ctx.container.settings
    await service.push_notice(
        ctx.session,
        article_id=article_id,
        now=ctx.now,
        per_minute=settings.messaging_push_per_minute,
        url=f"{settings.public_base_url.rstrip('/')}/h5/news/{article_id}",
    )
