"""Outbox jobs of the Official Account."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import select, update

from frontdesk.accounts import service as accounts
from frontdesk.core import outbox
from frontdesk.core.outbox import JobContext, PermanentFailure, RetryLater
from frontdesk.wechat.oa.models import (
    TEMPLATE_FAILED,
    TEMPLATE_QUEUED,
    TEMPLATE_SENT,
    TemplateMessage,
)
from frontdesk.wechat.oa.port import (
    TemplateRequest,
    TemplateSent,
    WeChatPlatform,
    WeChatRejected,
    WeChatUnavailable,
)
from frontdesk.wechat.oa.service import is_following, set_following
from frontdesk.wechat.oa.templates import SEND_JOB, template_id_for
from frontdesk.wechat.oa.tokens import TokenManager, call_with_token

log = logging.getLogger("frontdesk.wechat.oa.jobs")

MAX_ATTEMPTS = 8
UNFOLLOWED = 43004


async def _mark_failed_apart(
    ctx: JobContext, row_id: int, *, errcode: int | None, error: str, at: datetime
) -> None:
    """Record a terminal failure in its own transaction: the job's own transaction rolls
    back when it goes to dead letters, and the failure must stay visible on the row."""
    async with ctx.container.db.session() as session:
        await session.execute(
            update(TemplateMessage)
            .where(TemplateMessage.id == row_id, TemplateMessage.state == TEMPLATE_QUEUED)
            .values(
                state=TEMPLATE_FAILED,
                errcode=errcode,
                last_error=error[:500],
                attempts=ctx.attempt,
                finished_at=at,
            )
            .execution_options(synchronize_session=False)
        )


@outbox.job(SEND_JOB, max_attempts=MAX_ATTEMPTS, timeout_seconds=60)
async def send_template(ctx: JobContext, *, template_message_id: int) -> None:
    """Send one queued template message; safe to run twice (only a ``queued`` row is sent,
    and its fixed ``client_msg_id`` makes WeChat deliver a repeated send once).

    Policy by errcode: 43004 (unfollowed) stops and marks the user; 45009/-1/network fail
    retry later with backoff; 40001/40014/42001 refresh the shared token and retry at once;
    anything else fails the row and puts the job in dead letters for staff.
    """
    # Read in a short transaction of its own and call WeChat before the job's session
    # touches the database, so no database lock is held while WeChat answers.
    async with ctx.container.db.session() as read:
        row = (
            await read.execute(
                select(TemplateMessage).where(TemplateMessage.id == template_message_id)
            )
        ).scalar_one_or_none()
        following = row is not None and await is_following(read, openid=row.openid)
        consenting = row is not None and await accounts.may_message(read, openid=row.openid)
    if row is None or row.state != TEMPLATE_QUEUED:
        return
    now = ctx.now
    template_id = template_id_for(ctx.container.settings, row.kind)
    if not template_id:
        await _mark_failed_apart(
            ctx, row.id, errcode=None, at=now, error=f"no template id configured for {row.kind!r}"
        )
        raise PermanentFailure(f"no template id configured for {row.kind!r}")
    if not following:
        await _finish(
            ctx,
            row.id,
            state=TEMPLATE_FAILED,
            errcode=UNFOLLOWED,
            at=now,
            template_id=template_id,
            error="user unfollowed before sending",
        )
        return
    if not consenting:
        await _finish(
            ctx,
            row.id,
            state=TEMPLATE_FAILED,
            errcode=None,
            at=now,
            template_id=template_id,
            error="patient withdrew consent before sending",
        )
        return
    platform: WeChatPlatform = ctx.container.services["wechat"]
    tokens: TokenManager = ctx.container.services["wechat_tokens"]
    request = TemplateRequest(
        openid=row.openid,
        template_id=template_id,
        data={str(k): str(v) for k, v in row.data.items()},
        url=row.url,
        client_msg_id=row.client_msg_id,
    )

    async def send(token: str) -> TemplateSent:
        return await platform.send_template(token, request)

    try:
        sent: TemplateSent = await call_with_token(tokens, send)
    except WeChatRejected as exc:
        if exc.user_unfollowed:
            await set_following(ctx.session, openid=row.openid, following=False, now=now)
            await _finish(
                ctx,
                row.id,
                state=TEMPLATE_FAILED,
                errcode=exc.errcode,
                at=now,
                template_id=template_id,
                error="require subscribe",
            )
            return
        if exc.token_invalid:
            raise RetryLater(f"access token refused twice (errcode {exc.errcode})") from exc
        await _mark_failed_apart(ctx, row.id, errcode=exc.errcode, at=now, error=str(exc))
        log.warning("template message %s rejected: errcode %s", row.id, exc.errcode)
        raise PermanentFailure(str(exc)) from exc
    except WeChatUnavailable as exc:
        if ctx.attempt >= MAX_ATTEMPTS:
            await _mark_failed_apart(ctx, row.id, errcode=exc.errcode, at=now, error=str(exc))
        raise RetryLater(str(exc)) from exc
    await _finish(
        ctx,
        row.id,
        state=TEMPLATE_SENT,
        errcode=None,
        at=now,
        template_id=template_id,
        msgid=sent.msgid,
    )


async def _finish(
    ctx: JobContext,
    row_id: int,
    *,
    state: str,
    errcode: int | None,
    at: datetime,
    template_id: str,
    error: str | None = None,
    msgid: int | None = None,
) -> None:
    values: dict[str, Any] = {
        "state": state,
        "errcode": errcode,
        "attempts": ctx.attempt,
        "template_id": template_id,
        "last_error": error,
    }
    if state == TEMPLATE_SENT:
        values.update(msgid=msgid, sent_at=at)
    else:
        values["finished_at"] = at
    await ctx.session.execute(
        update(TemplateMessage)
        .where(TemplateMessage.id == row_id, TemplateMessage.state == TEMPLATE_QUEUED)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
