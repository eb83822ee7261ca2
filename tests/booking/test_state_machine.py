"""Property-based: random sequences of book / cancel / suspend / no-show / lift against the
rules, checked step by step against a plain model and the invariants.

Each example gets fresh schedules and cards in one SQLite database (its own event loop), so
examples do not see each other. A refusal must name a rule that applies; an accepted
booking must break none; the database must always agree with the model."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from sqlalchemy import select

from frontdesk.booking import service
from frontdesk.booking.models import Booking
from frontdesk.booking.schemas import BookingPolicy
from frontdesk.catalog import cache
from frontdesk.catalog import service as catalog
from frontdesk.catalog.models import Slot
from frontdesk.core.clock import FrozenClock, set_clock
from frontdesk.core.database import Database
from frontdesk.core.errors import DomainError
from frontdesk.core.models import Base
from frontdesk.migrations import all_models  # noqa: F401 - every table
from tests.booking.factories import create_schedule, scope
from tests.booking.helpers import invariant_violations

POLICY = BookingPolicy(max_open_per_card=2, max_cards_per_session=1, no_show_limit=2)
T0 = datetime(2026, 11, 27, 1, 0, tzinfo=UTC)
_ids = itertools.count(1)
HOLDING = ("booked", "no_show")  # a no-show keeps its slot: the time was used up


@dataclass
class ModelBooking:
    booking_id: int
    card: int
    account: str
    schedule: int
    slot: int
    status: str = "booked"


@dataclass
class Model:
    suspended: set[int] = field(default_factory=set)
    bookings: dict[int, ModelBooking] = field(default_factory=dict)
    no_shows_since_block: dict[int, int] = field(default_factory=dict)
    blocked: dict[int, int] = field(default_factory=dict)  # card -> block id

    def holder(self, slot: int) -> ModelBooking | None:
        return next(
            (b for b in self.bookings.values() if b.slot == slot and b.status in HOLDING), None
        )


class BookingMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop: asyncio.AbstractEventLoop = MACHINE_ENV["loop"]
        self.db: Database = MACHINE_ENV["db"]
        cache.full_pools.clear()
        n = next(_ids)
        self.model = Model()
        self.day = FROZEN.today() + timedelta(days=2)
        # doctor A's session and doctor B's session, same day, 3 slots each
        self.schedules: dict[int, list[int]] = {}
        self.doctor_of: dict[int, str] = {}
        for doctor in ("A", "B"):
            sid, slots = self.run(self._schedule(f"SM{n}{doctor}", f"D{n}{doctor}"))
            self.schedules[sid] = slots
            self.doctor_of[sid] = f"D{n}{doctor}"
        base = n * 10
        # account 1 holds cards base+1 and base+2; account 2 holds base+3
        self.accounts = {
            f"acct{n}-1": (base + 1, base + 2),
            f"acct{n}-2": (base + 3,),
        }

    async def _schedule(self, his_id: str, doctor: str) -> tuple[int, list[int]]:
        async with self.db.session() as s:
            return await create_schedule(
                s, his_schedule_id=his_id, on_date=self.day, slots=3, doctor_code=doctor
            )

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def all_slots(self) -> list[tuple[int, int]]:
        return [(sid, slot) for sid, slots in self.schedules.items() for slot in slots]

    # ------------------------------------------------------------------ rules

    @rule(account_n=st.integers(0, 1), card_n=st.integers(0, 1), pick=st.integers(0, 5))
    def book(self, account_n: int, card_n: int, pick: int) -> None:
        account = sorted(self.accounts)[account_n]
        cards = self.accounts[account]
        card = cards[card_n % len(cards)]
        sid, slot = self.all_slots()[pick]
        m = self.model
        live = [b for b in m.bookings.values() if b.status == "booked"]
        applicable: set[str] = set()
        if sid in m.suspended:
            applicable.add("booking_schedule_suspended")
        if card in m.blocked:
            applicable.add("booking_blocked")
        if sum(1 for b in live if b.card == card) >= POLICY.max_open_per_card:
            applicable.add("booking_too_many_open")
        in_session = {b.card for b in live if b.account == account and b.schedule == sid}
        if card not in in_session and len(in_session) >= POLICY.max_cards_per_session:
            applicable.add("booking_too_many_cards_in_session")
        if any(
            b.card == card and self.doctor_of[b.schedule] == self.doctor_of[sid]
            for b in m.bookings.values()
            if b.status in ("booked", "no_show")
        ):
            applicable.add("booking_duplicate_day")
        if m.holder(slot) is not None:
            free_left = [s for s in self.schedules[sid] if m.holder(s) is None]
            applicable.add("booking_schedule_full" if not free_left else "booking_slot_taken")
            applicable.add("booking_schedule_full")

        async def go() -> Any:
            async with self.db.session() as s:
                return await service.book(
                    s,
                    scope=scope(account, *cards),
                    card_id=card,
                    slot_id=slot,
                    policy=POLICY,
                    now=FROZEN.now(),
                )

        try:
            view = self.run(go())
        except DomainError as exc:
            refusal: str | None = exc.code
        else:
            refusal = None
        if refusal is not None:
            assert applicable, f"refused {refusal} but no rule applies"
            assert refusal in applicable, (refusal, applicable)
            return
        real = applicable - {"booking_schedule_full"} if m.holder(slot) is None else applicable
        assert not real, f"booked although {applicable}"
        m.bookings[view.booking_id] = ModelBooking(view.booking_id, card, account, sid, slot)

    @precondition(lambda self: any(b.status == "booked" for b in self.model.bookings.values()))
    @rule(pick=st.integers(0, 50))
    def cancel(self, pick: int) -> None:
        booked = sorted(b.booking_id for b in self.model.bookings.values() if b.status == "booked")
        b = self.model.bookings[booked[pick % len(booked)]]
        account_cards = self.accounts[b.account]

        async def go() -> Any:
            async with self.db.session() as s:
                return await service.cancel(
                    s,
                    scope=scope(b.account, *account_cards),
                    booking_id=b.booking_id,
                    policy=POLICY,
                    now=FROZEN.now(),
                )

        assert self.run(go()).status == "cancelled"
        b.status = "cancelled"

    @precondition(lambda self: bool(self.model.bookings))
    @rule(pick=st.integers(0, 50))
    def cancel_again_is_refused(self, pick: int) -> None:
        done = sorted(b.booking_id for b in self.model.bookings.values() if b.status != "booked")
        if not done:
            return
        b = self.model.bookings[done[pick % len(done)]]

        async def go() -> Any:
            async with self.db.session() as s:
                return await service.cancel(
                    s,
                    scope=scope(b.account, *self.accounts[b.account]),
                    booking_id=b.booking_id,
                    policy=POLICY,
                    now=FROZEN.now(),
                )

        code = None
        try:
            self.run(go())
        except DomainError as exc:
            code = exc.code
        assert code == "booking_not_cancellable", "a second cancel was accepted"

    @rule(which=st.integers(0, 1))
    def suspend(self, which: int) -> None:
        sid = sorted(self.schedules)[which]
        his_id = f"SM{sid}"

        async def go() -> list[int]:
            async with self.db.session() as s:
                from frontdesk.catalog.models import Schedule

                row = (await s.execute(select(Schedule).where(Schedule.id == sid))).scalar_one()
                await catalog.suspend(s, his_schedule_id=row.his_schedule_id, now=FROZEN.now())
                return await service.cancel_for_suspension(s, schedule_id=sid, now=FROZEN.now())

        del his_id
        cancelled = self.run(go())
        expected = sorted(
            b.booking_id
            for b in self.model.bookings.values()
            if b.schedule == sid and b.status == "booked"
        )
        assert sorted(cancelled) == expected
        for bid in expected:
            self.model.bookings[bid].status = "cancelled_by_hospital"
        self.model.suspended.add(sid)

    @precondition(lambda self: any(b.status == "booked" for b in self.model.bookings.values()))
    @rule(pick=st.integers(0, 50))
    def no_show(self, pick: int) -> None:
        booked = sorted(b.booking_id for b in self.model.bookings.values() if b.status == "booked")
        b = self.model.bookings[booked[pick % len(booked)]]

        async def go() -> tuple[bool, Any]:
            async with self.db.session() as s:
                ref = (
                    await s.execute(select(Booking.booking_ref).where(Booking.id == b.booking_id))
                ).scalar_one()
                ok = await service.record_no_show(
                    s, booking_ref=ref, policy=POLICY, now=FROZEN.now()
                )
                credit = await service.credit_status(
                    s, card_id=b.card, policy=POLICY, now=FROZEN.now()
                )
                return ok, credit

        ok, credit = self.run(go())
        assert ok
        b.status = "no_show"
        m = self.model
        m.no_shows_since_block[b.card] = m.no_shows_since_block.get(b.card, 0) + 1
        if b.card not in m.blocked and m.no_shows_since_block[b.card] >= POLICY.no_show_limit:
            assert credit.blocked and credit.block_id is not None
            m.blocked[b.card] = credit.block_id
            m.no_shows_since_block[b.card] = 0
        assert credit.blocked == (b.card in m.blocked)

    @precondition(lambda self: bool(self.model.blocked))
    @rule()
    def lift(self) -> None:
        card, block_id = sorted(self.model.blocked.items())[0]

        async def go() -> Any:
            async with self.db.session() as s:
                return await service.lift_block(
                    s, block_id=block_id, staff="staff:t", reason="verified", now=FROZEN.now()
                )

        self.run(go())
        del self.model.blocked[card]

    # ------------------------------------------------------------------ invariants

    @invariant()
    def database_agrees_with_the_model(self) -> None:
        async def go() -> tuple[dict[int, str], set[int], dict[str, int]]:
            async with self.db.session() as s:
                ids = list(self.model.bookings)
                statuses = dict(
                    (
                        await s.execute(
                            select(Booking.id, Booking.status).where(Booking.id.in_(ids or [-1]))
                        )
                    ).all()
                )
                all_slots = [slot for slots in self.schedules.values() for slot in slots]
                held = set(
                    (
                        await s.execute(
                            select(Slot.id).where(
                                Slot.id.in_(all_slots), Slot.booking_id.is_not(None)
                            )
                        )
                    ).scalars()
                )
                return statuses, held, await invariant_violations(s)

        statuses, held, violations = self.run(go())
        assert statuses == {bid: b.status for bid, b in self.model.bookings.items()}
        assert held == {b.slot for b in self.model.bookings.values() if b.status in HOLDING}
        assert violations == {
            "slot_given_twice": 0,
            "slot_mismatch": 0,
            "card_day_twice": 0,
            "slot_orphan": 0,
        }


FROZEN = FrozenClock(T0)
MACHINE_ENV: dict[str, Any] = {}


def test_booking_state_machine(tmp_path: Path) -> None:
    loop = asyncio.new_event_loop()
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'sm.db'}")

    async def create() -> None:
        async with db.engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)

    loop.run_until_complete(create())
    previous = set_clock(FROZEN)
    MACHINE_ENV.update(loop=loop, db=db)
    try:
        BookingMachine.TestCase.settings = settings(
            max_examples=40,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        )
        BookingMachine.TestCase().runTest()
    finally:
        set_clock(previous)
        loop.run_until_complete(db.dispose())
        loop.close()
