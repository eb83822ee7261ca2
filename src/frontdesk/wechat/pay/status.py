"""How WeChat Pay is doing: the notifications received (stored in the inbox by the notify
endpoint) and the payments still waiting for a query to settle them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from frontdesk.core.inbox import InboxMessage
from frontdesk.core.outbox import QUEUED, RUNNING, OutboxJob
from frontdesk.wechat.pay.notifications import INBOX_SOURCE

# Outbox jobs that query WeChat Pay for a payment or refund whose notify has not come.
QUERY_JOB_PREFIX = "billing.query_"


@dataclass(frozen=True)
class PayStatus:
    last_notify_at: datetime | None
    notifies_last_day: int
    pending_queries: int


async def pay_status(session: AsyncSession, *, now: datetime) -> PayStatus:
    last, day = (
        await session.execute(
            select(
                func.max(InboxMessage.received_at),
                func.count().filter(InboxMessage.received_at >= now - timedelta(days=1)),
            ).where(InboxMessage.source == INBOX_SOURCE)
        )
    ).one()
    pending = (
        await session.execute(
            select(func.count())
            .select_from(OutboxJob)
            .where(
                OutboxJob.name.like(f"{QUERY_JOB_PREFIX}%"), OutboxJob.status.in_((QUEUED, RUNNING))
            )
        )
    ).scalar_one()
    return PayStatus(
        last_notify_at=last, notifies_last_day=int(day or 0), pending_queries=int(pending)
    )
