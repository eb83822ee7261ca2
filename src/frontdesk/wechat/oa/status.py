"""How the Official Account integration is doing: the shared token and template sends."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from frontdesk.wechat.oa.models import TemplateMessage, WeChatAccessToken


@dataclass(frozen=True)
class OfficialAccountStatus:
    token_refreshed_at: datetime | None
    token_expires_at: datetime | None
    templates_last_day: dict[str, int]  # state -> count (queued, sent, delivered, failed)


async def account_status(session: AsyncSession, *, now: datetime) -> OfficialAccountStatus:
    token = (
        await session.execute(
            select(WeChatAccessToken).order_by(WeChatAccessToken.refreshed_at.desc()).limit(1)
        )
    ).scalar_one_or_none()
    rows = (
        await session.execute(
            select(TemplateMessage.state, func.count())
            .where(TemplateMessage.created_at >= now - timedelta(days=1))
            .group_by(TemplateMessage.state)
        )
    ).all()
    return OfficialAccountStatus(
        token_refreshed_at=token.refreshed_at if token else None,
        token_expires_at=token.expires_at if token else None,
        templates_last_day={state: int(n) for state, n in rows},
    )
