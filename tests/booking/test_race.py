"""Real concurrency on a committing database: many sessions race for few slots and no slot
is ever given twice. On PostgreSQL the same checker also catches a deliberately wrong
read-then-write booking, which proves the checker can fail."""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta

import pytest
from sqlalchemy import select, text

from frontdesk.booking import service
from frontdesk.booking.errors import DuplicateBooking, ScheduleFull, SlotTaken
from frontdesk.booking.models import Booking
from frontdesk.catalog import cache
from frontdesk.core.clock import FrozenClock
from frontdesk.core.database import Database
from tests.booking.factories import create_schedule, scope
from tests.booking.helpers import POLICY, invariant_violations

CLIENTS = 200
SLOTS = 10


async def test_many_clients_race_for_few_slots(committed: Database, clock: FrozenClock) -> None:
    cache.full_pools.clear()
    day = clock.today() + timedelta(days=3)
    async with committed.session() as s:
        _sid, slot_ids = await create_schedule(s, his_schedule_id="RACE1", on_date=day, slots=SLOTS)
    rng = random.Random(7)
    outcomes: list[str] = []

    async def client(n: int) -> None:
        who = scope(f"openid-race-{n}", 100_000 + n)
        target = rng.choice(slot_ids)
        try:
            async with committed.session() as s:
                await service.book(
                    s,
                    scope=who,
                    card_id=100_000 + n,
                    slot_id=target,
                    policy=POLICY,
                    now=clock.now(),
                )
            outcomes.append("booked")
        except (SlotTaken, ScheduleFull) as exc:
            outcomes.append(exc.code)

    await asyncio.gather(*(client(n) for n in range(CLIENTS)))
    assert outcomes.count("booked") <= SLOTS
    async with committed.session() as s:
        booked = (
            (await s.execute(select(Booking.slot_id).where(Booking.status == "booked")))
            .scalars()
            .all()
        )
        assert len(booked) == outcomes.count("booked") == len(set(booked))
        assert await invariant_violations(s) == {
            "slot_given_twice": 0,
            "slot_mismatch": 0,
            "card_day_twice": 0,
            "slot_orphan": 0,
        }
    # every refused client got a clear answer, none an unexpected error
    assert len(outcomes) == CLIENTS


async def test_one_card_racing_for_two_slots_of_one_doctor_gets_one(
    committed: Database, clock: FrozenClock
) -> None:
    cache.full_pools.clear()
    day = clock.today() + timedelta(days=3)
    async with committed.session() as s:
        _sid, slot_ids = await create_schedule(s, his_schedule_id="RACE2", on_date=day, slots=20)
    who = scope("openid-one", 555)
    results: list[str] = []

    async def attempt(slot_id: int) -> None:
        try:
            async with committed.session() as s:
                await service.book(
                    s, scope=who, card_id=555, slot_id=slot_id, policy=POLICY, now=clock.now()
                )
            results.append("booked")
        except DuplicateBooking:
            results.append("duplicate")

    await asyncio.gather(*(attempt(sid) for sid in slot_ids))
    assert sorted(set(results)) == ["booked", "duplicate"] and results.count("booked") == 1
    async with committed.session() as s:
        assert (await invariant_violations(s))["card_day_twice"] == 0


async def test_the_checker_catches_the_wrong_way(
    committed: Database, clock: FrozenClock, is_postgres: bool
) -> None:
    """Read-then-write (SELECT the slot, then INSERT and UPDATE without a guard) sells the
    same slot several times under the same load; the same checker must say so."""
    if not is_postgres:
        pytest.skip("SQLite serialises every writer (BEGIN IMMEDIATE): nothing can interleave")
    day = clock.today() + timedelta(days=3)
    async with committed.session() as s:
        _sid, slot_ids = await create_schedule(s, his_schedule_id="WRONG", on_date=day, slots=SLOTS)
        await s.execute(
            text(
                "CREATE TABLE wrong_booking (id BIGSERIAL PRIMARY KEY, slot_id BIGINT NOT NULL, "
                "card_id BIGINT NOT NULL, doctor_code TEXT NOT NULL, on_date DATE NOT NULL, "
                "status TEXT NOT NULL)"
            )
        )
    try:
        rng = random.Random(7)

        async def wrong(n: int) -> None:
            target = rng.choice(slot_ids)
            async with committed.session() as s:
                free = (
                    await s.execute(
                        text("SELECT booking_id FROM slot WHERE id = :id"), {"id": target}
                    )
                ).scalar_one() is None
                if not free:
                    return
                await asyncio.sleep(0.001)  # any application work between read and write
                new_id = (
                    await s.execute(
                        text(
                            "INSERT INTO wrong_booking "
                            "(slot_id, card_id, doctor_code, on_date, status) "
                            "VALUES (:s, :c, 'D9001', :d, 'booked') RETURNING id"
                        ),
                        {"s": target, "c": 200_000 + n, "d": day},
                    )
                ).scalar_one()
                await s.execute(
                    text("UPDATE slot SET booking_id = :b WHERE id = :id"),
                    {"b": new_id, "id": target},
                )

        await asyncio.gather(*(wrong(n) for n in range(CLIENTS)))
        async with committed.session() as s:
            found = await invariant_violations(s, booking="wrong_booking")
            sold = (await s.execute(text("SELECT count(*) FROM wrong_booking"))).scalar_one()
        assert sold > SLOTS
        assert found["slot_given_twice"] > 0 and found["slot_mismatch"] > 0
    finally:
        async with committed.session() as s:
            await s.execute(text("DROP TABLE IF EXISTS wrong_booking"))
