"""How the HIS bridge is doing, read from what every process already records: the event
poller's outbox attempts (shared by all workers) and the feed cursor."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from frontdesk.core.outbox import OutboxAttempt, OutboxJob
from frontdesk.his.jobs import POLL_JOB
from frontdesk.his.models import HisFeedCursor


@dataclass(frozen=True)
class BridgeStatus:
    last_success_at: datetime | None
    attempts_last_hour: int
    errors_last_hour: int
    cursor: str | None
    events_applied: int
    lag_seconds: float | None  # since the last complete poll (the feed is read to its end)

    @property
    def error_rate(self) -> float:
        return self.errors_last_hour / self.attempts_last_hour if self.attempts_last_hour else 0.0


async def bridge_status(session: AsyncSession, *, now: datetime) -> BridgeStatus:
    polls = (
        select(OutboxAttempt.outcome, OutboxAttempt.finished_at)
        .join(OutboxJob, OutboxJob.id == OutboxAttempt.job_id)
        .where(OutboxJob.name == POLL_JOB)
    )
    last_ok = (
        await session.execute(
            select(func.max(OutboxAttempt.finished_at))
            .join(OutboxJob, OutboxJob.id == OutboxAttempt.job_id)
            .where(OutboxJob.name == POLL_JOB, OutboxAttempt.outcome == "ok")
        )
    ).scalar_one_or_none()
    recent = (
        await session.execute(polls.where(OutboxAttempt.finished_at >= now - timedelta(hours=1)))
    ).all()
    cursor = (await session.execute(select(HisFeedCursor).limit(1))).scalar_one_or_none()
    return BridgeStatus(
        last_success_at=last_ok,
        attempts_last_hour=len(recent),
        errors_last_hour=sum(1 for outcome, _ in recent if outcome != "ok"),
        cursor=cursor.cursor if cursor else None,
        events_applied=cursor.events_applied if cursor else 0,
        lag_seconds=(now - last_ok).total_seconds() if last_ok else None,
    )
