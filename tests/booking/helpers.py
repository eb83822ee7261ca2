"""Helpers for booking tests: a synced catalog, real cards bound through accounts, and the
invariant checker used by the race tests and the benchmark."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from frontdesk.accounts import service as accounts
from frontdesk.accounts.schemas import BindRequest, PatientScope, Relationship
from frontdesk.booking.models import Booking
from frontdesk.booking.schemas import BookingPolicy
from frontdesk.catalog import cache
from frontdesk.catalog import jobs as catalog_jobs
from frontdesk.catalog.models import Schedule, Slot
from frontdesk.catalog.schemas import SyncResult
from frontdesk.core.clock import get_clock
from tests.accounts.helpers import SimPatient

POLICY = BookingPolicy()


async def sync(
    session: AsyncSession, his: Any, *, department_code: str | None = "GIM", days: int = 14
) -> SyncResult:
    cache.full_pools.clear()
    start = get_clock().today()
    end = start + timedelta(days=days - 1)
    known = await catalog_jobs.known_pool_versions(session, start=start, end=end)
    snap = await catalog_jobs.fetch_snapshot(
        his, start=start, end=end, known_versions=known, department_code=department_code
    )
    return await catalog_jobs.apply_snapshot(session, snap, now=get_clock().now())


async def bind(
    session: AsyncSession, his: Any, openid: str, patients: list[SimPatient]
) -> PatientScope:
    """Bind real demo-HIS cards to ``openid`` through the accounts service (SMS step off)."""
    now = get_clock().now()
    await accounts.accept_notice(session, openid=openid, version="v1", now=now)
    policy = accounts.BindingPolicy(
        max_cards=10, sms_enabled=False, code_ttl=timedelta(seconds=300), max_code_attempts=5
    )
    for p in patients:
        await accounts.start_binding(
            session,
            his=his,
            sms=None,
            openid=openid,
            request=BindRequest(
                card_no=p.card_no,
                holder_name=p.name,
                id_or_phone_last4=p.id_last4,
                relationship=Relationship.self_,
            ),
            policy=policy,
            secret="test-secret",
            now=now,
        )
    return await accounts.scope_for(session, openid=openid)


async def open_schedule(
    session: AsyncSession, *, on_date: date, min_slots: int = 1, period: str | None = None
) -> Schedule:
    """An open schedule on ``on_date`` with at least ``min_slots`` free slots."""
    free = func.count(Slot.id)
    stmt = (
        select(Schedule)
        .join(Slot, Slot.schedule_id == Schedule.id)
        .where(
            Schedule.on_date == on_date,
            Schedule.status == "open",
            Slot.booking_id.is_(None),
            Slot.his_available.is_(True),
        )
        .group_by(Schedule.id)
        .having(free >= min_slots)
        .order_by(Schedule.id)
    )
    if period:
        stmt = stmt.where(Schedule.period == period)
    found = (await session.execute(stmt)).scalars().first()
    assert found is not None, f"no open schedule on {on_date}"
    return found


async def bookable_days(session: AsyncSession, count: int = 6) -> list[date]:
    """Distinct dates after today, within the release window, that have open schedules."""
    today = get_clock().today()
    rows = await session.execute(
        select(Schedule.on_date)
        .where(
            Schedule.on_date > today,
            Schedule.on_date <= today + timedelta(days=7),
            Schedule.status == "open",
        )
        .distinct()
        .order_by(Schedule.on_date)
    )
    days = list(rows.scalars())
    assert len(days) >= count, days
    return days[:count]


async def free_slots(session: AsyncSession, schedule_id: int) -> list[int]:
    rows = await session.execute(
        select(Slot.id)
        .where(Slot.schedule_id == schedule_id, Slot.booking_id.is_(None))
        .order_by(Slot.sequence_no)
    )
    return list(rows.scalars())


async def snapshot(session: AsyncSession) -> dict[str, Any]:
    """Everything a refused action must leave as it was."""
    out: dict[str, Any] = {}
    for table in ("booking", "booking_request", "credit_block", "outbox_job", "audit_log"):
        out[table] = (await session.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one()
    out["held_slots"] = (
        await session.execute(select(func.count()).where(Slot.booking_id.is_not(None)))
    ).scalar_one()
    out["statuses"] = sorted((await session.execute(select(Booking.id, Booking.status))).all())
    return out


async def invariant_violations(
    session: AsyncSession, *, booking: str = "booking"
) -> dict[str, int]:
    """What must always be zero. Reads both tables on purpose (a checker, not domain code):

    - slot_given_twice: slots held by more than one live booking;
    - slot_mismatch: a live booking whose slot does not point back at it;
    - card_day_twice: a card with two live bookings for one doctor on one day;
    - slot_orphan: a slot held by no live booking (a leak: it can never be booked again).
    ``booking`` names the bookings table, so the same checker can judge the wrong-way
    baseline's table."""
    live = "status IN ('booked', 'held', 'checked_in', 'no_show')"  # a hold holds its slot
    q = {
        "slot_given_twice": f"SELECT count(*) FROM (SELECT slot_id FROM {booking} WHERE {live} "
        "GROUP BY slot_id HAVING count(*) > 1) t",
        "slot_mismatch": f"SELECT count(*) FROM {booking} b LEFT JOIN slot s ON s.id = b.slot_id "
        f"AND s.booking_id = b.id WHERE b.{live} AND s.id IS NULL",
        "card_day_twice": f"SELECT count(*) FROM (SELECT card_id FROM {booking} WHERE {live} "
        "GROUP BY card_id, doctor_code, on_date HAVING count(*) > 1) t",
        "slot_orphan": f"SELECT count(*) FROM slot s LEFT JOIN {booking} b ON b.id = s.booking_id "
        f"AND b.{live} WHERE s.booking_id IS NOT NULL AND b.id IS NULL",
    }
    return {k: int((await session.execute(text(sql))).scalar_one()) for k, sql in q.items()}
