"""Recurring jobs ("every day 10:30", "every 5m"), enqueued exactly once per due time.

Each recurring job has a row holding its next due time. A worker that finds it due moves it
forward with a guarded ``UPDATE ... WHERE next_run_at = :seen`` and, only if it won that
update, enqueues the job in the same transaction with a dedupe key naming the due time. Any
number of workers, restarts or clock jitter give one job per due time. After downtime only
the latest missed run is enqueued (the job is told its due time and catches up itself).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import String, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from frontdesk.core import outbox
from frontdesk.core.models import Base, UTCDateTime
from frontdesk.core.sql import insert_ignoring_conflict

_DAILY = re.compile(r"^daily (?P<h>[01]\d|2[0-3]):(?P<m>[0-5]\d)$")
_EVERY = re.compile(r"^every (?P<n>\d{1,6})(?P<unit>[smh])$")


class ScheduleError(ValueError):
    pass


@dataclass(frozen=True)
class Schedule:
    """``daily HH:MM`` (hospital local time) or ``every N{s,m,h}``."""

    spec: str

    def __post_init__(self) -> None:
        if not (_DAILY.match(self.spec) or _EVERY.match(self.spec)):
            raise ScheduleError(f"bad schedule {self.spec!r}: use 'daily HH:MM' or 'every 5m'")
        every = _EVERY.match(self.spec)
        if every and int(every.group("n")) == 0:
            raise ScheduleError("an interval must be greater than zero")

    def next_after(self, instant: datetime, tz: ZoneInfo) -> datetime:
        """The first due time strictly after ``instant``."""
        daily = _DAILY.match(self.spec)
        if daily:
            at = time(int(daily.group("h")), int(daily.group("m")))
            local = instant.astimezone(tz)
            candidate = datetime.combine(local.date(), at, tzinfo=tz)
            if candidate <= local:
                candidate = datetime.combine(local.date() + timedelta(days=1), at, tzinfo=tz)
            return candidate.astimezone(instant.tzinfo)
        every = _EVERY.match(self.spec)
        assert every is not None
        seconds = int(every.group("n")) * {"s": 1, "m": 60, "h": 3600}[every.group("unit")]
        epoch = int(instant.timestamp())
        return datetime.fromtimestamp((epoch // seconds + 1) * seconds, tz=instant.tzinfo)


class RecurringJob(Base):
    __tablename__ = "recurring_job"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    job_name: Mapped[str] = mapped_column(String(100), nullable=False)
    spec: Mapped[str] = mapped_column(String(64), nullable=False)
    next_run_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    last_enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


@dataclass(frozen=True)
class Recurring:
    name: str
    job_name: str
    schedule: Schedule
    setting: str | None = None  # a Settings field that, when given, overrides the spec


recurring_registry: dict[str, Recurring] = {}


def recurring(
    name: str, spec: str, *, job_name: str | None = None, setting: str | None = None
) -> None:
    """Declare a recurring job (call at import time of a domain's ``jobs`` module).

    ``setting`` names a Settings field holding the spec (``spec`` is its default): the
    worker passes its settings to ``sync_definitions``."""
    recurring_registry[name] = Recurring(name, job_name or name, Schedule(spec), setting)


async def sync_definitions(
    session: AsyncSession,
    *,
    now: datetime,
    tz: ZoneInfo,
    definitions: dict[str, Recurring] | None = None,
    settings: object | None = None,
) -> None:
    """Insert rows for new recurring jobs; update the spec of changed ones."""
    for item in (definitions or recurring_registry).values():
        if item.setting and settings is not None:
            item = Recurring(
                item.name, item.job_name, Schedule(str(getattr(settings, item.setting)))
            )
        stmt = insert_ignoring_conflict(
            session,
            RecurringJob.__table__,
            {
                "name": item.name,
                "job_name": item.job_name,
                "spec": item.schedule.spec,
                "next_run_at": item.schedule.next_after(now, tz),
            },
            conflict_columns=["name"],
        )
        await session.execute(stmt)
        await session.execute(
            update(RecurringJob)
            .where(RecurringJob.name == item.name, RecurringJob.spec != item.schedule.spec)
            .values(
                spec=item.schedule.spec,
                job_name=item.job_name,
                next_run_at=item.schedule.next_after(now, tz),
            )
        )


async def enqueue_due(session: AsyncSession, *, now: datetime, tz: ZoneInfo) -> list[str]:
    """Enqueue every recurring job that is due; returns the dedupe keys enqueued."""
    rows = (
        (await session.execute(select(RecurringJob).where(RecurringJob.next_run_at <= now)))
        .scalars()
        .all()
    )
    enqueued: list[str] = []
    for row in rows:
        due = row.next_run_at
        nxt = Schedule(row.spec).next_after(now, tz)
        won = await session.execute(
            update(RecurringJob)
            .where(RecurringJob.name == row.name, RecurringJob.next_run_at == due)
            .values(next_run_at=nxt, last_enqueued_at=now)
            .execution_options(synchronize_session=False)
        )
        if won.rowcount != 1:  # type: ignore[attr-defined]
            continue  # another worker took this due time
        key = f"recurring:{row.name}:{due.isoformat()}"
        job_id = await outbox.enqueue(session, row.job_name, dedupe_key=key, due_at=due.isoformat())
        if job_id is not None:
            enqueued.append(key)
    return enqueued
