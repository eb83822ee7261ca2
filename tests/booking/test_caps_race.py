"""The per-card and per-account caps hold when the requests race: many sessions of one card
(or one account) book at once on a committing database, and exactly the cap gets through.

On PostgreSQL the caps are a count followed by an insert, made safe by transaction-scoped
locks of the card and of the account's session taken before the count (READ COMMITTED
gives the count a snapshot taken after the lock, so it sees the previous holder's
booking). On SQLite every writer is serialised by BEGIN IMMEDIATE. With the lock statement
replaced by a no-op, both tests fail on PostgreSQL (checked by hand when the locks were
added: 3 runs of 3, a 4th open booking and a 3rd card got through)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import func, select

from frontdesk.booking import service
from frontdesk.booking.errors import TooManyCardsInSession, TooManyOpenBookings
from frontdesk.booking.models import Booking
from frontdesk.catalog import cache
from frontdesk.core.clock import FrozenClock
from frontdesk.core.database import Database
from tests.booking.factories import create_schedule, scope
from tests.booking.helpers import POLICY

RACERS = 8


async def _booked(db: Database, **where: object) -> int:
    async with db.session() as s:
        stmt = select(func.count()).select_from(Booking).where(Booking.status == "booked")
        for column, value in where.items():
            stmt = stmt.where(getattr(Booking, column) == value)
        return int((await s.execute(stmt)).scalar_one())


async def test_one_card_racing_for_many_doctors_gets_at_most_k_open_bookings(
    committed: Database, clock: FrozenClock
) -> None:
    cache.full_pools.clear()
    day = clock.today() + timedelta(days=3)
    targets = []
    async with committed.session() as s:
        for n in range(RACERS):  # a different doctor each: one per doctor per day allows all
            _sid, slot_ids = await create_schedule(
                s, his_schedule_id=f"CAPK{n}", on_date=day, slots=1, doctor_code=f"D8{n:03d}"
            )
            targets.append(slot_ids[0])
    who = scope("openid-cap-k", 4242)
    outcomes: list[str] = []

    async def attempt(slot_id: int) -> None:
        try:
            async with committed.session() as s:
                await service.book(
                    s, scope=who, card_id=4242, slot_id=slot_id, policy=POLICY, now=clock.now()
                )
            outcomes.append("booked")
        except TooManyOpenBookings as exc:
            outcomes.append(exc.code)

    await asyncio.gather(*(attempt(t) for t in targets))
    k = POLICY.max_open_per_card
    assert sorted(outcomes) == ["booked"] * k + ["booking_too_many_open"] * (RACERS - k)
    assert await _booked(committed, card_id=4242) == k


async def test_one_account_racing_with_many_cards_gets_at_most_m_into_a_session(
    committed: Database, clock: FrozenClock
) -> None:
    cache.full_pools.clear()
    day = clock.today() + timedelta(days=3)
    async with committed.session() as s:
        sched_id, slot_ids = await create_schedule(
            s, his_schedule_id="CAPM", on_date=day, slots=RACERS
        )
    cards = [5000 + n for n in range(RACERS)]
    family = scope("openid-cap-m", *cards)
    outcomes: list[str] = []

    async def attempt(card_id: int, slot_id: int) -> None:
        try:
            async with committed.session() as s:
                await service.book(
                    s,
                    scope=family,
                    card_id=card_id,
                    slot_id=slot_id,
                    policy=POLICY,
                    now=clock.now(),
                )
            outcomes.append("booked")
        except TooManyCardsInSession as exc:
            outcomes.append(exc.code)

    await asyncio.gather(*(attempt(c, sl) for c, sl in zip(cards, slot_ids, strict=True)))
    m = POLICY.max_cards_per_session
    assert sorted(outcomes) == ["booked"] * m + ["booking_too_many_cards_in_session"] * (RACERS - m)
    assert await _booked(committed, schedule_id=sched_id) == m
