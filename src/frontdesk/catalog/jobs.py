"""Catalog jobs: keep the local departments, doctors, schedules and pools in step with the HIS.

- ``catalog.sync`` (every 10 minutes): lists departments, doctors and the schedules of the
  bookable window, and fetches the pool of every schedule that has none yet. Safe to run
  twice: every write is an upsert and a pool is applied only if its version is newer.
- ``slot_pool.changed`` (HIS event): enqueues ``catalog.refresh_pool`` for that schedule,
  which fetches the pool outside any transaction and applies it if newer.

HIS calls are made before the job's session runs any statement, so no database
transaction (on SQLite, the write lock) is held while the HIS answers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from frontdesk.catalog import service
from frontdesk.catalog.models import Schedule
from frontdesk.catalog.schemas import SyncResult
from frontdesk.core import outbox, scheduler
from frontdesk.core.clock import get_clock
from frontdesk.his import events
from frontdesk.his.port import (
    Department,
    Doctor,
    HisGateway,
    HisRejected,
    HisUnavailable,
    SlotPool,
)
from frontdesk.his.port import Schedule as HisSchedule

log = logging.getLogger("frontdesk.catalog")

SYNC_JOB = "catalog.sync"
REFRESH_POOL_JOB = "catalog.refresh_pool"
CANCEL_SUSPENDED_JOB = "booking.cancel_suspended"  # owned by booking.jobs

scheduler.recurring(SYNC_JOB, "every 10m")


@dataclass(frozen=True)
class Snapshot:
    departments: list[Department]
    doctors: list[Doctor]
    schedules: list[HisSchedule]
    pools: list[SlotPool]


async def known_pool_versions(session: AsyncSession, *, start: date, end: date) -> dict[str, int]:
    rows = await session.execute(
        select(Schedule.his_schedule_id, Schedule.pool_version).where(
            Schedule.on_date >= start, Schedule.on_date <= end
        )
    )
    return {sid: int(v) for sid, v in rows.all()}


async def fetch_snapshot(
    his: HisGateway,
    *,
    start: date,
    end: date,
    known_versions: dict[str, int],
    department_code: str | None = None,
) -> Snapshot:
    """Everything the HIS says about the window, and the pools we have not got yet."""
    departments = await his.departments()
    doctors = await his.doctors(department_code=department_code)
    schedules = await his.schedules(start=start, end=end, department_code=department_code)
    pools = []
    for s in schedules:
        if known_versions.get(s.schedule_id, 0) == 0 and s.status.value == "open":
            pools.append(await his.slot_pool(s.schedule_id))
    return Snapshot(departments, doctors, schedules, pools)


async def apply_snapshot(session: AsyncSession, snapshot: Snapshot, *, now: Any) -> SyncResult:
    result = await service.apply_catalog(
        session,
        departments=snapshot.departments,
        doctors=snapshot.doctors,
        schedules=snapshot.schedules,
        now=now,
    )
    applied = 0
    for pool in snapshot.pools:
        applied += int(await service.apply_pool(session, pool))
    for local_id in result.suspended:
        await outbox.enqueue(
            session,
            CANCEL_SUSPENDED_JOB,
            schedule_id=local_id,
            dedupe_key=f"{CANCEL_SUSPENDED_JOB}:{local_id}",
        )
    return SyncResult(
        departments=result.departments,
        doctors=result.doctors,
        schedules=result.schedules,
        pools=applied,
        suspended=result.suspended,
    )


def window(container: Any) -> tuple[date, date]:
    today = get_clock().today()
    return today, today + timedelta(days=container.settings.booking_schedule_days - 1)


@outbox.job(SYNC_JOB, max_attempts=3, timeout_seconds=600)
async def sync(ctx: outbox.JobContext, **_payload: Any) -> None:
    """Bring the local catalog in line with the HIS for the bookable window (idempotent)."""
    his: HisGateway = ctx.container.services["his"]
    start, end = window(ctx.container)
    async with ctx.container.db.session() as read:
        known = await known_pool_versions(read, start=start, end=end)
    try:
        snapshot = await fetch_snapshot(his, start=start, end=end, known_versions=known)
    except HisUnavailable as exc:
        log.warning("catalog sync: HIS unavailable (%s); the next run retries", exc.code)
        return
    except HisRejected as exc:
        raise outbox.PermanentFailure(f"HIS refused the catalog sync: {exc.code}") from exc
    result = await apply_snapshot(ctx.session, snapshot, now=ctx.now)
    log.info("catalog sync: %s", result)


@outbox.job(REFRESH_POOL_JOB, max_attempts=8, timeout_seconds=60)
async def refresh_pool(ctx: outbox.JobContext, *, his_schedule_id: str, **_: Any) -> None:
    """Fetch one schedule's pool and apply it if newer (safe to run twice)."""
    his: HisGateway = ctx.container.services["his"]
    try:
        pool = await his.slot_pool(his_schedule_id)
    except HisUnavailable as exc:
        raise outbox.RetryLater(f"HIS unavailable: {exc.code}") from exc
    except HisRejected as exc:
        raise outbox.PermanentFailure(f"HIS refused the pool of {his_schedule_id}") from exc
    await service.apply_pool(ctx.session, pool)


@events.on("slot_pool.changed")
async def on_pool_changed(ctx: events.EventContext) -> None:
    schedule_id = ctx.event.data.get("schedule_id")
    if not isinstance(schedule_id, str) or not schedule_id:
        log.warning("slot_pool.changed without a schedule id: %s", ctx.event.event_id)
        return
    await outbox.enqueue(
        ctx.session,
        REFRESH_POOL_JOB,
        his_schedule_id=schedule_id,
        dedupe_key=f"{REFRESH_POOL_JOB}:{ctx.event.event_id}",
    )
