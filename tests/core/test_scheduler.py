from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from frontdesk.container import Container
from frontdesk.core import scheduler
from frontdesk.core.clock import FrozenClock
from frontdesk.core.outbox import OutboxJob
from frontdesk.core.scheduler import Recurring, RecurringJob, Schedule, ScheduleError

SH = ZoneInfo("Asia/Shanghai")


def test_daily_schedule_is_in_hospital_time() -> None:
    daily = Schedule("daily 10:30")
    # 01:00 UTC = 09:00 Shanghai: today at 10:30 local = 02:30 UTC.
    assert daily.next_after(datetime(2026, 11, 27, 1, 0, tzinfo=UTC), SH) == datetime(
        2026, 11, 27, 2, 30, tzinfo=UTC
    )
    # Exactly at the due time: the next one is tomorrow.
    assert daily.next_after(datetime(2026, 11, 27, 2, 30, tzinfo=UTC), SH) == datetime(
        2026, 11, 28, 2, 30, tzinfo=UTC
    )


def test_interval_schedule_aligns_to_the_interval() -> None:
    every = Schedule("every 5m")
    assert every.next_after(datetime(2026, 11, 27, 1, 2, 3, tzinfo=UTC), SH) == datetime(
        2026, 11, 27, 1, 5, tzinfo=UTC
    )


@pytest.mark.parametrize(
    "spec",
    ["daily 24:00", "daily 9:30", "every 0s", "hourly", "every 5d", "daily 10:30; DROP TABLE x"],
)
def test_bad_schedules_are_refused(spec: str) -> None:
    with pytest.raises(ScheduleError):
        Schedule(spec)


async def test_due_job_is_enqueued_once_per_due_time(db: AsyncSession, clock: FrozenClock) -> None:
    defs = {"recon": Recurring("recon", "reconciliation.daily", Schedule("daily 10:30"))}
    await scheduler.sync_definitions(db, now=clock.now(), tz=SH, definitions=defs)
    assert await scheduler.enqueue_due(db, now=clock.now(), tz=SH) == []
    clock.set(datetime(2026, 11, 27, 2, 30, tzinfo=UTC))
    keys = await scheduler.enqueue_due(db, now=clock.now(), tz=SH)
    assert keys == ["recurring:recon:2026-11-27T02:30:00+00:00"]
    assert await scheduler.enqueue_due(db, now=clock.now(), tz=SH) == []
    jobs = (await db.execute(select(OutboxJob))).scalars().all()
    assert [(j.name, j.payload) for j in jobs] == [
        ("reconciliation.daily", {"due_at": "2026-11-27T02:30:00+00:00"})
    ]
    row = (await db.execute(select(RecurringJob))).scalar_one()
    assert row.next_run_at == datetime(2026, 11, 28, 2, 30, tzinfo=UTC)


async def test_concurrent_workers_enqueue_a_due_time_once(
    container: Container, clock: FrozenClock
) -> None:
    defs = {"sweep": Recurring("sweep", "booking.no_show_sweep", Schedule("every 1m"))}
    async with container.db.session() as s:
        await scheduler.sync_definitions(s, now=clock.now(), tz=SH, definitions=defs)
    clock.advance(minutes=1)

    async def tick() -> list[str]:
        async with container.db.session() as s:
            return await scheduler.enqueue_due(s, now=clock.now(), tz=SH)

    results = await asyncio.gather(*(tick() for _ in range(8)))
    assert sorted(len(r) for r in results) == [0] * 7 + [1]
    async with container.db.session() as s:
        jobs = (await s.execute(select(OutboxJob.name))).scalars().all()
    assert jobs == ["booking.no_show_sweep"]


async def test_changed_spec_moves_the_next_run(db: AsyncSession, clock: FrozenClock) -> None:
    await scheduler.sync_definitions(
        db,
        now=clock.now(),
        tz=SH,
        definitions={"r": Recurring("r", "x.y", Schedule("daily 10:30"))},
    )
    await scheduler.sync_definitions(
        db,
        now=clock.now(),
        tz=SH,
        definitions={"r": Recurring("r", "x.y", Schedule("daily 09:30"))},
    )
    row = (await db.execute(select(RecurringJob))).scalar_one()
    assert (row.spec, row.next_run_at) == ("daily 09:30", datetime(2026, 11, 27, 1, 30, tzinfo=UTC))
