"""Booking rules on the service, against a catalog synced from the demo HIS through the real
bridge client, and cards bound through the accounts service. Every refusal changes nothing."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from frontdesk.accounts.errors import CardNotFound
from frontdesk.booking import errors, service
from frontdesk.booking.models import Booking, CreditBlock
from frontdesk.catalog import service as catalog
from frontdesk.catalog.models import Department, Doctor, Schedule, Slot
from frontdesk.core.clock import FrozenClock
from frontdesk.core.errors import DomainError
from frontdesk.core.outbox import OutboxJob
from tests.accounts.helpers import sim_patients
from tests.booking.helpers import (
    POLICY,
    bind,
    bookable_days,
    free_slots,
    open_schedule,
    snapshot,
    sync,
)


@pytest.fixture
async def world(db: AsyncSession, his_sim: Any, his_gateway: Any, clock: FrozenClock) -> Any:
    await sync(db, his_gateway)
    patients = await sim_patients(his_sim, count=8)
    alice = await bind(db, his_gateway, "openid-alice", patients[:3])
    bob = await bind(db, his_gateway, "openid-bob", patients[3:4])
    return {"alice": alice, "bob": bob, "patients": patients, "clock": clock}


async def refused(db: AsyncSession, error: type[DomainError], coro: Any) -> DomainError:
    before = await snapshot(db)
    with pytest.raises(error) as caught:
        await coro
    assert await snapshot(db) == before
    return caught.value


async def test_book_takes_the_slot_and_queues_the_his_registration(
    db: AsyncSession, world: Any, clock: FrozenClock
) -> None:
    alice = world["alice"]
    sched = await open_schedule(db, on_date=(await bookable_days(db))[0])
    slot_id = (await free_slots(db, sched.id))[0]
    view = await service.book(
        db,
        scope=alice,
        card_id=alice.cards[0].card_id,
        slot_id=slot_id,
        policy=POLICY,
        now=clock.now(),
    )
    assert (view.status, view.his_state, view.fee_fen) == ("booked", "pending", sched.fee_fen)
    slot = (await db.execute(select(Slot).where(Slot.id == slot_id))).scalar_one()
    assert slot.booking_id == view.booking_id
    jobs = (await db.execute(select(OutboxJob.name, OutboxJob.payload))).all()
    assert ("booking.register", {"booking_id": view.booking_id}) in [tuple(j) for j in jobs]
    # the cancellation deadline: the end of the day before the visit (midnight local)
    assert view.cancel_deadline_at == clock.start_of_day(sched.on_date)
    assert view.cancellable


async def test_sync_twice_changes_nothing(db: AsyncSession, world: Any, his_gateway: Any) -> None:
    counts = [
        (await db.execute(select(func.count()).select_from(m))).scalar_one()
        for m in (Slot, Schedule, Doctor, Department)
    ]
    again = await sync(db, his_gateway)
    assert again.pools == 0  # every pool already at its version
    assert [
        (await db.execute(select(func.count()).select_from(m))).scalar_one()
        for m in (Slot, Schedule, Doctor, Department)
    ] == counts
    assert counts[0] > 0


async def test_bad_inputs_are_refused_and_change_nothing(
    db: AsyncSession, world: Any, clock: FrozenClock
) -> None:
    alice, bob = world["alice"], world["bob"]
    card = alice.cards[0].card_id
    tomorrow = (await bookable_days(db))[0]
    sched = await open_schedule(db, on_date=tomorrow, min_slots=3)
    slot_id = (await free_slots(db, sched.id))[0]
    now = clock.now()

    # someone else's card
    await refused(
        db,
        CardNotFound,
        service.book(db, scope=bob, card_id=card, slot_id=slot_id, policy=POLICY, now=now),
    )
    # a slot id that does not exist
    await refused(
        db,
        errors.SlotUnknown,
        service.book(db, scope=alice, card_id=card, slot_id=999_999_999, policy=POLICY, now=now),
    )
    # not released yet: 8 days ahead (booking opens 7 days ahead at 07:00)
    later = await open_schedule(db, on_date=clock.today() + timedelta(days=8))
    err = await refused(
        db,
        errors.ScheduleNotReleased,
        service.book(
            db,
            scope=alice,
            card_id=card,
            slot_id=(await free_slots(db, later.id))[0],
            policy=POLICY,
            now=now,
        ),
    )
    assert (
        err.params["opens_at"]
        == clock.at_local(later.on_date - timedelta(days=7), POLICY.release_time).isoformat()
    )
    # past: the slot's time has come
    slot = (await db.execute(select(Slot).where(Slot.id == slot_id))).scalar_one()
    await refused(
        db,
        errors.SchedulePast,
        service.book(
            db,
            scope=alice,
            card_id=card,
            slot_id=slot_id,
            policy=POLICY,
            now=slot.starts_at + timedelta(minutes=1),
        ),
    )
    # cut-off: 10 minutes before the slot
    await refused(
        db,
        errors.BookingClosed,
        service.book(
            db,
            scope=alice,
            card_id=card,
            slot_id=slot_id,
            policy=POLICY,
            now=slot.starts_at - timedelta(minutes=10),
        ),
    )


async def test_suspended_and_full_schedules_are_refused(
    db: AsyncSession, world: Any, clock: FrozenClock
) -> None:
    alice, bob = world["alice"], world["bob"]
    day = (await bookable_days(db))[1]
    sched = await open_schedule(db, on_date=day)
    await catalog.suspend(db, his_schedule_id=sched.his_schedule_id, now=clock.now())
    await refused(
        db,
        errors.ScheduleSuspended,
        service.book(
            db,
            scope=alice,
            card_id=alice.cards[0].card_id,
            slot_id=(await free_slots(db, sched.id))[0],
            policy=POLICY,
            now=clock.now(),
        ),
    )

    # fill a schedule: every slot taken by the database (as other patients would)
    other = await open_schedule(db, on_date=(await bookable_days(db))[2])
    slots = await free_slots(db, other.id)
    for n, sid in enumerate(slots):
        assert await catalog.take_slot(db, slot_id=sid, booking_id=10_000 + n)
    await refused(
        db,
        errors.ScheduleFull,
        service.book(
            db,
            scope=bob,
            card_id=bob.cards[0].card_id,
            slot_id=slots[0],
            policy=POLICY,
            now=clock.now(),
        ),
    )
    # and again, now answered from the "known full" cache without touching the pool
    await refused(
        db,
        errors.ScheduleFull,
        service.book(
            db,
            scope=bob,
            card_id=bob.cards[0].card_id,
            slot_id=slots[-1],
            policy=POLICY,
            now=clock.now(),
        ),
    )


async def test_taken_slot_with_others_free_is_slot_taken(
    db: AsyncSession, world: Any, clock: FrozenClock
) -> None:
    alice, bob = world["alice"], world["bob"]
    sched = await open_schedule(db, on_date=(await bookable_days(db))[0], min_slots=2)
    slot_id = (await free_slots(db, sched.id))[0]
    await service.book(
        db,
        scope=alice,
        card_id=alice.cards[0].card_id,
        slot_id=slot_id,
        policy=POLICY,
        now=clock.now(),
    )
    await refused(
        db,
        errors.SlotTaken,
        service.book(
            db,
            scope=bob,
            card_id=bob.cards[0].card_id,
            slot_id=slot_id,
            policy=POLICY,
            now=clock.now(),
        ),
    )


async def test_one_booking_per_card_per_doctor_per_day(
    db: AsyncSession, world: Any, clock: FrozenClock
) -> None:
    alice = world["alice"]
    card = alice.cards[0].card_id
    sched = await open_schedule(db, on_date=(await bookable_days(db))[0], min_slots=2)
    first, second = (await free_slots(db, sched.id))[:2]
    await service.book(db, scope=alice, card_id=card, slot_id=first, policy=POLICY, now=clock.now())
    await refused(
        db,
        errors.DuplicateBooking,
        service.book(db, scope=alice, card_id=card, slot_id=second, policy=POLICY, now=clock.now()),
    )


async def test_open_bookings_and_cards_per_session_are_capped(
    db: AsyncSession, world: Any, clock: FrozenClock
) -> None:
    alice = world["alice"]
    tight = POLICY.__class__(max_open_per_card=2, max_cards_per_session=2)
    card = alice.cards[0].card_id
    days = (await bookable_days(db))[:3]
    scheds = [await open_schedule(db, on_date=d, min_slots=3) for d in days]
    for s in scheds[:2]:
        await service.book(
            db,
            scope=alice,
            card_id=card,
            slot_id=(await free_slots(db, s.id))[0],
            policy=tight,
            now=clock.now(),
        )
    err = await refused(
        db,
        errors.TooManyOpenBookings,
        service.book(
            db,
            scope=alice,
            card_id=card,
            slot_id=(await free_slots(db, scheds[2].id))[0],
            policy=tight,
            now=clock.now(),
        ),
    )
    assert err.params == {"limit": 2}
    # anti-scalping: a third card of the same account in the same session is refused
    s = scheds[2]
    await service.book(
        db,
        scope=alice,
        card_id=alice.cards[1].card_id,
        slot_id=(await free_slots(db, s.id))[0],
        policy=tight,
        now=clock.now(),
    )
    await service.book(
        db,
        scope=alice,
        card_id=alice.cards[2].card_id,
        slot_id=(await free_slots(db, s.id))[0],
        policy=tight,
        now=clock.now(),
    )
    assert len(alice.cards) == 3
    one = POLICY.__class__(max_cards_per_session=2)
    first_card_slot = (await free_slots(db, s.id))[0]
    await refused(
        db,
        errors.TooManyCardsInSession,
        service.book(
            db, scope=alice, card_id=card, slot_id=first_card_slot, policy=one, now=clock.now()
        ),
    )


async def test_cancel_gives_the_slot_back_and_is_refused_twice_or_late(
    db: AsyncSession, world: Any, clock: FrozenClock
) -> None:
    alice, bob = world["alice"], world["bob"]
    sched = await open_schedule(db, on_date=(await bookable_days(db))[1])
    slot_id = (await free_slots(db, sched.id))[0]
    view = await service.book(
        db,
        scope=alice,
        card_id=alice.cards[0].card_id,
        slot_id=slot_id,
        policy=POLICY,
        now=clock.now(),
    )
    # someone else cannot cancel it (not found, as if it did not exist)
    await refused(
        db,
        errors.BookingNotFound,
        service.cancel(db, scope=bob, booking_id=view.booking_id, policy=POLICY, now=clock.now()),
    )
    # after the deadline (the visit day has begun) the cancel is refused
    await refused(
        db,
        errors.CancelDeadlinePassed,
        service.cancel(
            db,
            scope=alice,
            booking_id=view.booking_id,
            policy=POLICY,
            now=clock.start_of_day(sched.on_date),
        ),
    )
    done = await service.cancel(
        db, scope=alice, booking_id=view.booking_id, policy=POLICY, now=clock.now()
    )
    assert (done.status, done.cancellable, done.not_cancellable_reason) == (
        "cancelled",
        False,
        "booking_not_cancellable",
    )
    assert slot_id in await free_slots(db, sched.id)
    await refused(
        db,
        errors.NotCancellable,
        service.cancel(db, scope=alice, booking_id=view.booking_id, policy=POLICY, now=clock.now()),
    )
    # the slot can be booked again by someone else
    again = await service.book(
        db, scope=bob, card_id=bob.cards[0].card_id, slot_id=slot_id, policy=POLICY, now=clock.now()
    )
    assert again.status == "booked"


async def test_three_no_shows_block_the_card_and_staff_can_lift_it(
    db: AsyncSession, world: Any, clock: FrozenClock
) -> None:
    alice = world["alice"]
    card = alice.cards[0]
    refs = []
    for d in (await bookable_days(db))[:3]:
        s = await open_schedule(db, on_date=d)
        v = await service.book(
            db,
            scope=alice,
            card_id=card.card_id,
            slot_id=(await free_slots(db, s.id))[0],
            policy=POLICY,
            now=clock.now(),
        )
        refs.append(v.booking_ref)
    for n, ref in enumerate(refs):
        assert await service.record_no_show(db, booking_ref=ref, policy=POLICY, now=clock.now())
        assert not await service.record_no_show(
            db, booking_ref=ref, policy=POLICY, now=clock.now()
        )  # once only
        status = await service.credit_status(
            db, card_id=card.card_id, policy=POLICY, now=clock.now()
        )
        assert status.blocked == (n == 2)
    status = await service.credit_status(db, card_id=card.card_id, policy=POLICY, now=clock.now())
    assert status.blocked_until_at == clock.now() + timedelta(days=90)
    s = await open_schedule(db, on_date=(await bookable_days(db))[3])
    await refused(
        db,
        errors.BookingBlocked,
        service.book(
            db,
            scope=alice,
            card_id=card.card_id,
            slot_id=(await free_slots(db, s.id))[0],
            policy=POLICY,
            now=clock.now(),
        ),
    )
    # a lift needs a reason
    assert status.block_id is not None
    await refused(
        db,
        errors.LiftReasonRequired,
        service.lift_block(
            db, block_id=status.block_id, staff="staff:li", reason="  ", now=clock.now()
        ),
    )
    lifted = await service.lift_block(
        db,
        block_id=status.block_id,
        staff="staff:li",
        reason="patient was in hospital",
        now=clock.now(),
    )
    assert (lifted.lifted_by, lifted.lift_reason) == ("staff:li", "patient was in hospital")
    await refused(
        db,
        errors.BlockNotFound,
        service.lift_block(
            db, block_id=status.block_id, staff="staff:li", reason="again", now=clock.now()
        ),
    )
    after = await service.credit_status(db, card_id=card.card_id, policy=POLICY, now=clock.now())
    assert (after.blocked, after.no_shows) == (False, 0)
    ok = await service.book(
        db,
        scope=alice,
        card_id=card.card_id,
        slot_id=(await free_slots(db, s.id))[0],
        policy=POLICY,
        now=clock.now(),
    )
    assert ok.status == "booked"
    assert (await db.execute(select(func.count()).select_from(CreditBlock))).scalar_one() == 1


async def test_suspension_cancels_bookings_without_penalty(
    db: AsyncSession, world: Any, clock: FrozenClock
) -> None:
    alice, bob = world["alice"], world["bob"]
    s = await open_schedule(db, on_date=(await bookable_days(db))[0], min_slots=2)
    a, b = (await free_slots(db, s.id))[:2]
    va = await service.book(
        db, scope=alice, card_id=alice.cards[0].card_id, slot_id=a, policy=POLICY, now=clock.now()
    )
    vb = await service.book(
        db, scope=bob, card_id=bob.cards[0].card_id, slot_id=b, policy=POLICY, now=clock.now()
    )
    assert await catalog.suspend(db, his_schedule_id=s.his_schedule_id, now=clock.now()) == s.id
    cancelled = await service.cancel_for_suspension(db, schedule_id=s.id, now=clock.now())
    assert sorted(cancelled) == sorted([va.booking_id, vb.booking_id])
    assert await service.cancel_for_suspension(db, schedule_id=s.id, now=clock.now()) == []
    rows = (await db.execute(select(Booking.status, Booking.active_day_key))).all()
    assert sorted(rows) == [("cancelled_by_hospital", None)] * 2
    status = await service.credit_status(
        db, card_id=alice.cards[0].card_id, policy=POLICY, now=clock.now()
    )
    assert status.no_shows == 0
