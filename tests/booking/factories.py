"""Typed factories for booking tests that need many patients fast (races, state machine):
a schedule with its pool written directly, and scopes built as values (booking never reads
the card tables; it trusts the scope the accounts service gives it)."""

from __future__ import annotations

from datetime import date, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from frontdesk.accounts.schemas import BoundCard, PatientScope
from frontdesk.catalog.models import Schedule, Slot
from frontdesk.core.clock import get_clock


async def create_schedule(
    session: AsyncSession,
    *,
    his_schedule_id: str,
    on_date: date,
    slots: int,
    doctor_code: str = "D9001",
    department_code: str = "GIM",
    fee_fen: int = 1_500,
    period: str = "am",
) -> tuple[int, list[int]]:
    now = get_clock().now()
    sched = Schedule(
        his_schedule_id=his_schedule_id,
        doctor_code=doctor_code,
        department_code=department_code,
        on_date=on_date,
        period=period,
        level="ordinary",
        fee_fen=fee_fen,
        status="open",
        pool_version=1,
        synced_at=now,
    )
    session.add(sched)
    await session.flush()
    start: datetime = get_clock().at_local(on_date, __import__("datetime").time(8, 0))
    rows = [
        Slot(
            schedule_id=sched.id,
            sequence_no=n + 1,
            starts_at=start + timedelta(minutes=5 * n),
            ends_at=start + timedelta(minutes=5 * (n + 1)),
            his_available=True,
        )
        for n in range(slots)
    ]
    session.add_all(rows)
    await session.flush()
    return sched.id, [r.id for r in rows]


def scope(openid: str, *card_ids: int) -> PatientScope:
    now = get_clock().now()
    return PatientScope(
        openid=openid,
        cards=tuple(
            BoundCard(
                card_id=cid,
                card_no=f"C{cid:08d}",
                card_type="self_pay",
                holder_name_masked="张*",
                id_number_masked="3201**********1234",
                phone_masked="138****5678",
                relationship="self",
                status="active",
                is_active=n == 0,
                bound_at=now,
            )
            for n, cid in enumerate(card_ids)
        ),
    )
