"""The catalog follows the HIS: the recurring sync job through the worker (twice changes
nothing), a pool change from the event feed, and a suspension the sync finds on its own."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from frontdesk.catalog import jobs
from frontdesk.catalog.models import Department, Doctor, Schedule, Slot
from frontdesk.core import outbox
from frontdesk.core.clock import FrozenClock
from frontdesk.core.worker import Worker
from tests.booking.pages import deliver_his_events, his_op


async def _counts(env: Any) -> list[int]:
    async with env.container.db.session() as s:
        return [
            int((await s.execute(select(func.count()).select_from(m))).scalar_one())
            for m in (Department, Doctor, Schedule, Slot)
        ]


@pytest.fixture
def small(env: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    # keep the pool fetches few (settings are shared by the session: restored after)
    monkeypatch.setattr(env.container.settings, "booking_schedule_days", 2)
    return env


async def test_sync_job_is_idempotent_and_follows_pool_events(
    small: Any, his_sim: Any, clock: FrozenClock
) -> None:
    env = small
    async with env.container.db.session() as s:
        await outbox.enqueue(s, jobs.SYNC_JOB)
    await Worker(env.container).drain()
    first = await _counts(env)
    assert all(n > 0 for n in first)
    async with env.container.db.session() as s:
        await outbox.enqueue(s, jobs.SYNC_JOB)
    await Worker(env.container).drain()
    assert await _counts(env) == first

    async with env.container.db.session() as s:
        sched = (
            (
                await s.execute(
                    select(Schedule).where(Schedule.status == "open").order_by(Schedule.id)
                )
            )
            .scalars()
            .first()
        )
        assert sched is not None
        before = int(
            (await s.execute(select(func.count()).where(Slot.schedule_id == sched.id))).scalar_one()
        )
    cursor = await deliver_his_events(env, "")
    await his_op(his_sim, f"/operator/schedules/{sched.his_schedule_id}/slots", {"count": 3})
    await deliver_his_events(env, cursor)
    await Worker(env.container).drain()  # catalog.refresh_pool
    async with env.container.db.session() as s:
        after = int(
            (await s.execute(select(func.count()).where(Slot.schedule_id == sched.id))).scalar_one()
        )
        version = (
            await s.execute(select(Schedule.pool_version).where(Schedule.id == sched.id))
        ).scalar_one()
    assert (after, version) == (before + 3, 2)


async def test_a_suspension_found_by_the_sync_is_applied_once(
    small: Any, his_sim: Any, clock: FrozenClock
) -> None:
    env = small
    async with env.container.db.session() as s:
        await outbox.enqueue(s, jobs.SYNC_JOB)
    await Worker(env.container).drain()
    async with env.container.db.session() as s:
        sched = (
            (
                await s.execute(
                    select(Schedule).where(Schedule.status == "open").order_by(Schedule.id)
                )
            )
            .scalars()
            .first()
        )
    assert sched is not None
    await his_op(his_sim, f"/operator/schedules/{sched.his_schedule_id}/suspend", {})
    for _ in range(2):
        async with env.container.db.session() as s:
            await outbox.enqueue(s, jobs.SYNC_JOB)
        await Worker(env.container).drain()
    async with env.container.db.session() as s:
        status = (
            await s.execute(select(Schedule.status).where(Schedule.id == sched.id))
        ).scalar_one()
        follow_ups = int(
            (
                await s.execute(
                    select(func.count())
                    .select_from(outbox.OutboxJob)
                    .where(outbox.OutboxJob.name == "booking.cancel_suspended")
                )
            ).scalar_one()
        )
    assert (status, follow_ups) == ("suspended", 1)
