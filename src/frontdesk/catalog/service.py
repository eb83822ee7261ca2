"""The catalog's rules: apply what the HIS says (idempotently), answer what patients browse,
and give or take back a slot with one guarded statement.

Sync functions take values already fetched from the HIS, so no database transaction is
open while the HIS is called (``catalog.jobs`` does the fetching).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import and_, bindparam, case, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from frontdesk.catalog import cache
from frontdesk.catalog.errors import DepartmentNotFound, DoctorNotFound, ScheduleNotFound
from frontdesk.catalog.models import Department, Doctor, Schedule, Slot
from frontdesk.catalog.schemas import (
    DepartmentView,
    DoctorView,
    ScheduleView,
    SlotForBooking,
    SlotView,
    SyncResult,
)
from frontdesk.core.sql import dialect_name, pg_connection
from frontdesk.his import port

SUSPENDED = port.ScheduleStatus.suspended.value

# Rendered-schedule data for patient pages, a few seconds old at most (see cache.py).
page_cache: cache.TtlCache[Any] = cache.TtlCache(3.0)


def _insert(session: AsyncSession) -> Any:
    return postgresql.insert if dialect_name(session) == "postgresql" else sqlite.insert


async def _upsert(
    session: AsyncSession, model: Any, values: dict[str, Any], *, key: list[str]
) -> None:
    stmt = _insert(session)(model).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=key, set_={k: v for k, v in values.items() if k not in key}
    )
    await session.execute(stmt)


# --------------------------------------------------------------------------- sync


async def apply_catalog(
    session: AsyncSession,
    *,
    departments: Sequence[port.Department],
    doctors: Sequence[port.Doctor],
    schedules: Sequence[port.Schedule],
    now: datetime,
) -> SyncResult:
    """Upsert what the HIS listed. Running it twice with the same input changes nothing.

    Schedules that turn ``suspended`` here are returned so booking can cancel their
    bookings (the event feed normally says so first; this is the safety net)."""
    for position, d in enumerate(departments):
        await _upsert(
            session,
            Department,
            {
                "code": d.code,
                "name": d.name,
                "intro": d.intro,
                "position": position,
                "synced_at": now,
            },
            key=["code"],
        )
    for doc in doctors:
        await _upsert(
            session,
            Doctor,
            {
                "code": doc.code,
                "department_code": doc.department_code,
                "name": doc.name,
                "title": doc.title,
                "specialty": doc.specialty,
                "intro": doc.intro,
                "photo_url": doc.photo_url,
                "synced_at": now,
            },
            key=["code"],
        )
    newly_suspended: list[int] = []
    for s in schedules:
        if s.status == port.ScheduleStatus.suspended:
            local = await suspend(session, his_schedule_id=s.schedule_id, now=now)
            if local is not None:
                newly_suspended.append(local)
        # A suspension is final: the upsert never turns a suspended schedule back to open.
        values = {
            "his_schedule_id": s.schedule_id,
            "doctor_code": s.doctor_code,
            "department_code": s.department_code,
            "on_date": s.on_date,
            "period": s.period.value,
            "level": s.level.value,
            "fee_fen": s.fee_fen,
            "status": s.status.value,
            "synced_at": now,
        }
        stmt = _insert(session)(Schedule).values(**values, pool_version=0)
        stmt = stmt.on_conflict_do_update(
            index_elements=["his_schedule_id"],
            set_={
                **{k: v for k, v in values.items() if k not in {"his_schedule_id", "status"}},
                "status": _status_keep_suspended(stmt),
            },
        )
        await session.execute(stmt)
    return SyncResult(
        departments=len(departments),
        doctors=len(doctors),
        schedules=len(schedules),
        suspended=tuple(newly_suspended),
    )


def _status_keep_suspended(stmt: Any) -> Any:
    return case((Schedule.status == SUSPENDED, SUSPENDED), else_=stmt.excluded.status)


async def schedule_ids_needing_pool(session: AsyncSession, *, start: date, end: date) -> list[str]:
    """HIS ids of open schedules in [start, end] that have no pool yet."""
    rows = await session.execute(
        select(Schedule.his_schedule_id).where(
            Schedule.on_date >= start,
            Schedule.on_date <= end,
            Schedule.pool_version == 0,
            Schedule.status != SUSPENDED,
        )
    )
    return list(rows.scalars())


async def apply_pool(session: AsyncSession, pool: port.SlotPool) -> bool:
    """Apply a pool the HIS uploaded if it is newer than the one we have.

    Idempotent and order-safe: a pool whose version is not above the stored one is ignored.
    A slot we gave to a booking keeps its ``booking_id``; a free slot the HIS no longer
    offers (taken by another channel, removed) becomes unavailable."""
    moved = await session.execute(
        update(Schedule)
        .where(Schedule.his_schedule_id == pool.schedule_id, Schedule.pool_version < pool.version)
        .values(pool_version=pool.version)
        .returning(Schedule.id)
    )
    schedule_id = moved.scalar_one_or_none()
    if schedule_id is None:
        return False
    seen: list[int] = []
    for s in pool.slots:
        seen.append(s.sequence_no)
        await _upsert(
            session,
            Slot,
            {
                "schedule_id": schedule_id,
                "sequence_no": s.sequence_no,
                "starts_at": s.starts_at,
                "ends_at": s.ends_at,
                "his_available": s.available,
            },
            key=["schedule_id", "sequence_no"],
        )
    await session.execute(
        update(Slot)
        .where(Slot.schedule_id == schedule_id, Slot.sequence_no.not_in(seen or [-1]))
        .values(his_available=False)
    )
    cache.full_pools.forget(schedule_id)
    slot_cache.clear()  # times or numbers may have moved
    return True


SUSPENSION_REASON_MAX = 200


async def suspend(
    session: AsyncSession, *, his_schedule_id: str, now: datetime, reason: str | None = None
) -> int | None:
    """Mark a schedule suspended (停诊). Returns its local id if this call changed it, None if
    it was already suspended or is unknown (so the caller's follow-up happens once).

    ``reason`` is the HIS's (blank means none). It is kept the first time one is known, also
    for a schedule the sync already saw suspended (the sync's list has no reason); a later
    different reason does not overwrite it, so what patients were told stays on the page."""
    clean = " ".join((reason or "").split())[:SUSPENSION_REASON_MAX] or None
    done = await session.execute(
        update(Schedule)
        .where(Schedule.his_schedule_id == his_schedule_id, Schedule.status != SUSPENDED)
        .values(status=SUSPENDED, synced_at=now, suspension_reason=clean)
        .returning(Schedule.id)
    )
    local = done.scalar_one_or_none()
    if local is None and clean is not None:
        await session.execute(
            update(Schedule)
            .where(
                Schedule.his_schedule_id == his_schedule_id,
                Schedule.status == SUSPENDED,
                Schedule.suspension_reason.is_(None),
            )
            .values(suspension_reason=clean)
        )
    if local is not None:
        cache.full_pools.put(local, True)
        slot_cache.clear()
    return local


async def local_schedule_id(session: AsyncSession, his_schedule_id: str) -> int | None:
    return (
        await session.execute(
            select(Schedule.id).where(Schedule.his_schedule_id == his_schedule_id)
        )
    ).scalar_one_or_none()


# --------------------------------------------------------------------------- slots


def _take_stmt() -> Any:
    suspended = (
        select(Schedule.id)
        .where(Schedule.id == Slot.schedule_id, Schedule.status == SUSPENDED)
        .exists()
    )
    return (
        update(Slot)
        .where(
            Slot.id == bindparam("slot_id"),
            Slot.booking_id.is_(None),
            Slot.his_available.is_(True),
            ~suspended,
        )
        .values(booking_id=bindparam("new_booking_id"))
        .returning(Slot.booking_id)
    )


# Built once: the hot path runs it thousands of times a second at release time.
_TAKE = _take_stmt()


# The same statement for asyncpg directly (see ``core.sql.pg_connection``); {next_id} is
# the booking id: a parameter, or booking's own ``nextval`` expression.
_TAKE_PG = (
    "UPDATE slot SET booking_id = {next_id} WHERE slot.id = $1 AND slot.booking_id IS NULL"
    " AND slot.his_available IS true AND NOT EXISTS (SELECT 1 FROM catalog_schedule"
    " WHERE catalog_schedule.id = slot.schedule_id AND catalog_schedule.status = $2)"
    " RETURNING slot.booking_id"
)


async def claim_slot(
    session: AsyncSession, *, slot_id: int, booking_id: int | None = None, next_id_sql: str = ""
) -> int | None:
    """Give a free slot of an unsuspended schedule to a booking: ONE guarded UPDATE, which
    returns the booking id it stored for the one winner and None for everybody else.

    The booking id is ``booking_id``, or (PostgreSQL) the SQL expression ``next_id_sql``:
    booking passes ``nextval`` of its own sequence, so the slot is taken before the
    booking row is written. The same statement on SQLite (transactions are BEGIN
    IMMEDIATE) and PostgreSQL (the row lock makes a racing UPDATE re-check ``booking_id IS
    NULL`` after the winner commits), so no slot is ever given twice. The schedule's
    status is checked in the statement too, so a cached "open" never books a suspended
    session."""
    pg = await pg_connection(session)
    if pg is not None:
        if booking_id is not None:
            found = await pg.fetchval(_TAKE_PG.format(next_id="$3"), slot_id, SUSPENDED, booking_id)
        else:
            found = await pg.fetchval(_TAKE_PG.format(next_id=next_id_sql), slot_id, SUSPENDED)
        return int(found) if found is not None else None
    if booking_id is None:
        raise ValueError("a booking id is needed outside PostgreSQL")
    conn = await session.connection()
    result = await conn.execute(_TAKE, {"slot_id": slot_id, "new_booking_id": booking_id})
    taken = result.scalar_one_or_none()
    return int(taken) if taken is not None else None


async def take_slot(session: AsyncSession, *, slot_id: int, booking_id: int) -> bool:
    """``claim_slot`` for a known booking id: true only for the one winner."""
    return await claim_slot(session, slot_id=slot_id, booking_id=booking_id) is not None


async def release_slot(
    session: AsyncSession, *, slot_id: int, booking_id: int, his_available: bool = True
) -> bool:
    """Give a slot back to the pool, only if this booking holds it."""
    done = await session.execute(
        update(Slot)
        .where(Slot.id == slot_id, Slot.booking_id == booking_id)
        .values(booking_id=None, his_available=his_available)
        .execution_options(synchronize_session=False)
    )
    released = int(getattr(done, "rowcount", 0)) == 1
    if released:
        schedule_id = (
            await session.execute(select(Slot.schedule_id).where(Slot.id == slot_id))
        ).scalar_one()
        cache.full_pools.forget(schedule_id)
    return released


def known_full(schedule_id: int) -> bool:
    """True when this process found the pool empty a moment ago (no database touched)."""
    return bool(cache.full_pools.get(schedule_id))


def mark_full(schedule_id: int) -> None:
    cache.full_pools.put(schedule_id, True)


# Built once: it runs for every refused attempt at the release time (is the pool empty?).
_FREE_SLOT = (
    select(Slot.id)
    .where(
        Slot.schedule_id == bindparam("schedule_id"),
        Slot.booking_id.is_(None),
        Slot.his_available.is_(True),
    )
    .limit(1)
)


async def has_free_slot(session: AsyncSession, *, schedule_id: int) -> bool:
    conn = await session.connection()
    found = await conn.execute(_FREE_SLOT, {"schedule_id": schedule_id})
    return found.scalar_one_or_none() is not None


# A slot and the other slots of its schedule, with the schedule: one read fills the cache
# for the whole session (patients at the release time pick among the same few sessions).
_SCHEDULE_OF_SLOT = (
    select(
        Slot.id,
        Slot.sequence_no,
        Slot.starts_at,
        Slot.ends_at,
        Slot.booking_id,
        Slot.his_available,
        Schedule.id,
        Schedule.his_schedule_id,
        Schedule.doctor_code,
        Schedule.department_code,
        Schedule.on_date,
        Schedule.period,
        Schedule.level,
        Schedule.fee_fen,
        Schedule.status,
    )
    .join(Schedule, Schedule.id == Slot.schedule_id)
    .where(
        Slot.schedule_id
        == select(Slot.schedule_id).where(Slot.id == bindparam("slot_id")).scalar_subquery()
    )
)

# What booking needs of a slot, by slot id, a few seconds old at most: a slot's number,
# times and schedule do not change during the rush, and everything that does (free, the
# HIS's availability, a suspension) is re-checked by the guarded UPDATE in ``claim_slot``.
slot_cache: cache.TtlCache[SlotForBooking] = cache.TtlCache(3.0, max_entries=50_000)


async def slot_for_booking(
    session: AsyncSession, *, slot_id: int, cached: bool = False
) -> SlotForBooking | None:
    """The slot and its schedule. ``cached`` answers from ``slot_cache`` when it can (the
    booking path); ``free`` and ``status`` of a cached answer may then be seconds old.
    A read also caches the other slots of the same schedule."""
    if cached:
        hit = slot_cache.get(slot_id)
        if hit is not None:
            return hit
    conn = await session.connection()
    found: SlotForBooking | None = None
    for row in await conn.execute(_SCHEDULE_OF_SLOT, {"slot_id": slot_id}):
        view = SlotForBooking(
            slot_id=row[0],
            sequence_no=row[1],
            starts_at=row[2],
            ends_at=row[3],
            free=row[4] is None and bool(row[5]),
            schedule_id=row[6],
            his_schedule_id=row[7],
            doctor_code=row[8],
            department_code=row[9],
            on_date=row[10],
            period=row[11],
            level=row[12],
            fee_fen=row[13],
            status=row[14],
        )
        slot_cache.put(view.slot_id, view)
        if view.slot_id == slot_id:
            found = view
    return found


def configure_caches(ttl_seconds: float) -> None:
    """How long the read-storm caches keep an answer (``booking_cache_seconds``)."""
    page_cache.ttl = slot_cache.ttl = cache.full_pools.ttl = ttl_seconds


def clear_caches() -> None:
    """Forget every cached answer (tests, whose databases reuse ids, start from nothing)."""
    page_cache.clear()
    slot_cache.clear()
    cache.full_pools.clear()


def cached_slot(slot_id: int) -> SlotForBooking | None:
    """The cached slot, if this process read it a moment ago (no database touched)."""
    return slot_cache.get(slot_id)


# --------------------------------------------------------------------------- browsing


async def departments(session: AsyncSession, *, query: str = "") -> list[DepartmentView]:
    stmt = select(Department).order_by(Department.position, Department.code)
    rows = (await session.execute(stmt)).scalars().all()
    q = query.strip().lower()
    out = []
    for d in rows:
        if q and q not in d.name.lower() and q not in d.intro.lower() and q not in d.code.lower():
            continue
        out.append(DepartmentView(code=d.code, name=d.name, intro=d.intro, group=_group(d.code)))
    return out


# The hospital's own grouping of clinics (by department code); unknown codes go to "other".
GROUPS = {
    "GIM": "internal",
    "HEP": "internal",
    "INF": "internal",
    "CAR": "internal",
    "RES": "internal",
    "GAS": "internal",
    "END": "internal",
    "NEP": "internal",
    "NEU": "internal",
    "GSU": "surgical",
    "ORT": "surgical",
    "URO": "surgical",
    "OBG": "women_children",
    "GYN": "women_children",
    "PED": "women_children",
    "OPH": "specialist",
    "ENT": "specialist",
    "DER": "specialist",
    "STO": "specialist",
}


def _group(code: str) -> str:
    return GROUPS.get(code, "other")


async def department(session: AsyncSession, code: str) -> DepartmentView:
    d = (
        await session.execute(select(Department).where(Department.code == code))
    ).scalar_one_or_none()
    if d is None:
        raise DepartmentNotFound
    return DepartmentView(code=d.code, name=d.name, intro=d.intro, group=_group(d.code))


async def _next_available(
    session: AsyncSession, *, doctor_codes: list[str], start: date, end: date
) -> dict[str, date]:
    if not doctor_codes:
        return {}
    stmt = (
        select(Schedule.doctor_code, func.min(Schedule.on_date))
        .join(Slot, and_(Slot.schedule_id == Schedule.id))
        .where(
            Schedule.doctor_code.in_(doctor_codes),
            Schedule.on_date >= start,
            Schedule.on_date <= end,
            Schedule.status != SUSPENDED,
            Slot.booking_id.is_(None),
            Slot.his_available.is_(True),
        )
        .group_by(Schedule.doctor_code)
    )
    return dict((await session.execute(stmt)).all())


def _doctor_view(d: Doctor, next_on: date | None) -> DoctorView:
    return DoctorView(
        code=d.code,
        name=d.name,
        department_code=d.department_code,
        title=d.title,
        specialty=d.specialty,
        intro=d.intro,
        photo_url=d.photo_url,
        next_available_on=next_on,
    )


async def doctors(
    session: AsyncSession, *, department_code: str, start: date, end: date
) -> list[DoctorView]:
    rows = (
        (
            await session.execute(
                select(Doctor)
                .where(Doctor.department_code == department_code)
                .order_by(Doctor.code)
            )
        )
        .scalars()
        .all()
    )
    nexts = await _next_available(
        session, doctor_codes=[d.code for d in rows], start=start, end=end
    )
    return [_doctor_view(d, nexts.get(d.code)) for d in rows]


async def doctor(session: AsyncSession, code: str, *, start: date, end: date) -> DoctorView:
    d = (await session.execute(select(Doctor).where(Doctor.code == code))).scalar_one_or_none()
    if d is None:
        raise DoctorNotFound
    nexts = await _next_available(session, doctor_codes=[code], start=start, end=end)
    return _doctor_view(d, nexts.get(code))


async def schedules(
    session: AsyncSession,
    *,
    start: date,
    end: date,
    doctor_code: str | None = None,
    department_code: str | None = None,
) -> list[ScheduleView]:
    """Sessions in [start, end] with how many slots they have and how many are left."""
    free = _free_count()
    stmt = (
        select(Schedule, func.count(Slot.id), func.coalesce(free, 0))
        .outerjoin(Slot, Slot.schedule_id == Schedule.id)
        .where(Schedule.on_date >= start, Schedule.on_date <= end)
        .group_by(Schedule.id)
        .order_by(Schedule.on_date, Schedule.period, Schedule.id)
    )
    if doctor_code is not None:
        stmt = stmt.where(Schedule.doctor_code == doctor_code)
    if department_code is not None:
        stmt = stmt.where(Schedule.department_code == department_code)
    out = []
    for sched, total, left in (await session.execute(stmt)).all():
        out.append(_schedule_view(sched, int(total), int(left or 0)))
    return out


def _free_count() -> Any:
    return func.sum(
        case((and_(Slot.booking_id.is_(None), Slot.his_available.is_(True)), 1), else_=0)
    )


def _schedule_view(sched: Schedule, total: int, left: int) -> ScheduleView:
    return ScheduleView(
        schedule_id=sched.id,
        his_schedule_id=sched.his_schedule_id,
        doctor_code=sched.doctor_code,
        department_code=sched.department_code,
        on_date=sched.on_date,
        period=sched.period,
        level=sched.level,
        fee_fen=sched.fee_fen,
        status=sched.status,
        slots_total=total,
        slots_left=0 if sched.status == SUSPENDED else left,
        suspension_reason=sched.suspension_reason,
    )


async def schedule(session: AsyncSession, schedule_id: int) -> ScheduleView:
    found = await schedules_by_ids(session, [schedule_id])
    if not found:
        raise ScheduleNotFound
    return found[0]


async def schedules_by_ids(session: AsyncSession, ids: Sequence[int]) -> list[ScheduleView]:
    if not ids:
        return []
    free = _free_count()
    stmt = (
        select(Schedule, func.count(Slot.id), func.coalesce(free, 0))
        .outerjoin(Slot, Slot.schedule_id == Schedule.id)
        .where(Schedule.id.in_(list(ids)))
        .group_by(Schedule.id)
        .order_by(Schedule.on_date, Schedule.period, Schedule.id)
    )
    return [
        _schedule_view(s, int(t), int(left or 0))
        for s, t, left in (await session.execute(stmt)).all()
    ]


async def slots(session: AsyncSession, *, schedule_id: int) -> list[SlotView]:
    rows = (
        (
            await session.execute(
                select(Slot).where(Slot.schedule_id == schedule_id).order_by(Slot.sequence_no)
            )
        )
        .scalars()
        .all()
    )
    return [
        SlotView(
            slot_id=s.id,
            sequence_no=s.sequence_no,
            starts_at=s.starts_at,
            ends_at=s.ends_at,
            free=s.booking_id is None and s.his_available,
        )
        for s in rows
    ]


async def doctor_names(session: AsyncSession, codes: Sequence[str]) -> dict[str, DoctorView]:
    if not codes:
        return {}
    rows = (await session.execute(select(Doctor).where(Doctor.code.in_(list(codes))))).scalars()
    return {d.code: _doctor_view(d, None) for d in rows}


async def department_names(session: AsyncSession) -> dict[str, str]:
    return dict((await session.execute(select(Department.code, Department.name))).all())
