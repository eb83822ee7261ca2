"""Property-based: random sequences of hold / pay (in time or late) / expire / cancel /
suspend with the registration fee taken at booking, checked after every step against a
plain model: no slot given twice, a held or booked slot is held in the pool, every paid fee
belongs to a booking that stands or is refunded exactly once, and refunds never exceed
the fee.

Payments go through billing's one transition code (``apply_trade``, as a notify or query
would) and the booking's ``fee_paid`` step (the job's body); the WeChat side is covered by
``test_fee.py`` through the simulator."""

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
from sqlalchemy import func, select

from frontdesk.billing import models as bm
from frontdesk.billing import service as billing
from frontdesk.booking import service
from frontdesk.booking.models import Booking
from frontdesk.booking.schemas import BookingPolicy
from frontdesk.catalog import cache
from frontdesk.catalog import service as catalog
from frontdesk.catalog.models import Schedule, Slot
from frontdesk.core.clock import FrozenClock, set_clock
from frontdesk.core.database import Database
from frontdesk.core.errors import DomainError
from frontdesk.core.models import Base
from frontdesk.migrations import all_models  # noqa: F401 - every table
from frontdesk.wechat.pay.port import Payment, TradeState
from tests.booking.factories import create_schedule, scope
from tests.booking.helpers import invariant_violations

POLICY = BookingPolicy(
    max_open_per_card=3, max_cards_per_session=2, fee_mode="at_booking", hold=timedelta(minutes=15)
)
T0 = datetime(2026, 11, 27, 1, 0, tzinfo=UTC)
_ids = itertools.count(1)
SLOT_HOLDING = ("held", "booked")


@dataclass
class Hold:
    booking_id: int
    card: int
    account: str
    schedule: int
    slot: int
    status: str = "held"
    fee: str = "pending"  # pending | paid | refunded
    payment_id: int | None = None


@dataclass
class Model:
    holds: dict[int, Hold] = field(default_factory=dict)
    suspended: set[int] = field(default_factory=set)

    def holder(self, slot: int) -> Hold | None:
        return next(
            (h for h in self.holds.values() if h.slot == slot and h.status in SLOT_HOLDING), None
        )

    def day_taken(self, card: int, doctor: str, doctor_of: dict[int, str]) -> bool:
        return any(
            h.card == card and doctor_of[h.schedule] == doctor and h.status in SLOT_HOLDING
            for h in self.holds.values()
        )


class FeeMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop: asyncio.AbstractEventLoop = FEE_ENV["loop"]
        self.db: Database = FEE_ENV["db"]
        cache.full_pools.clear()
        n = next(_ids)
        self.model = Model()
        self.now = T0
        self.day = FROZEN.today() + timedelta(days=2)
        self.schedules: dict[int, list[int]] = {}
        self.doctor_of: dict[int, str] = {}
        for doctor in ("A", "B"):
            sid, slots = self.run(self._schedule(f"FM{n}{doctor}", f"F{n}{doctor}"))
            self.schedules[sid] = slots
            self.doctor_of[sid] = f"F{n}{doctor}"
        base = n * 10
        self.accounts = {f"fee{n}-1": (base + 1, base + 2), f"fee{n}-2": (base + 3,)}

    async def _schedule(self, his_id: str, doctor: str) -> tuple[int, list[int]]:
        async with self.db.session() as s:
            return await create_schedule(
                s, his_schedule_id=his_id, on_date=self.day, slots=2, doctor_code=doctor
            )

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def all_slots(self) -> list[tuple[int, int]]:
        return [(sid, slot) for sid, slots in self.schedules.items() for slot in slots]

    def _scope(self, account: str) -> Any:
        return scope(account, *self.accounts[account])

    # ------------------------------------------------------------------ rules

    @rule(account_n=st.integers(0, 1), card_n=st.integers(0, 1), pick=st.integers(0, 3))
    def hold(self, account_n: int, card_n: int, pick: int) -> None:
        account = sorted(self.accounts)[account_n]
        cards = self.accounts[account]
        card = cards[card_n % len(cards)]
        sid, slot = self.all_slots()[pick]
        m = self.model
        free = (
            sid not in m.suspended
            and m.holder(slot) is None
            and not m.day_taken(card, self.doctor_of[sid], self.doctor_of)
        )
        open_ = sum(1 for h in m.holds.values() if h.card == card and h.status in SLOT_HOLDING)
        in_session = {
            h.card
            for h in m.holds.values()
            if h.account == account and h.schedule == sid and h.status in SLOT_HOLDING
        }
        caps_ok = open_ < POLICY.max_open_per_card and (
            card in in_session or len(in_session) < POLICY.max_cards_per_session
        )

        async def go() -> Any:
            async with self.db.session() as s:
                view = await service.book(
                    s,
                    scope=self._scope(account),
                    card_id=card,
                    slot_id=slot,
                    policy=POLICY,
                    now=self.now,
                )
                await s.commit()
                return view

        try:
            view = self.run(go())
        except DomainError:
            assert not (free and caps_ok), "a free slot within the caps was refused"
            return
        assert free and caps_ok, "booked a slot the rules refuse"
        assert view.status == "held" and view.hold_expires_at == self.now + POLICY.hold
        m.holds[view.booking_id] = Hold(view.booking_id, card, account, sid, slot)
        self.start_payment(len(m.holds) - 1)  # the patient goes on to the pay step

    def _pick(self, statuses: tuple[str, ...], fee: str, pick: int) -> Hold | None:
        found = sorted(
            (h for h in self.model.holds.values() if h.status in statuses and h.fee == fee),
            key=lambda h: h.booking_id,
        )
        return found[pick % len(found)] if found else None

    @rule(pick=st.integers(0, 20))
    def start_payment(self, pick: int) -> None:
        h = self._pick(
            ("held", "hold_expired", "cancelled", "cancelled_by_hospital"), "pending", pick
        )
        if h is None or h.payment_id is not None:
            return

        async def go() -> int:
            async with self.db.session() as s:
                pid = await service.fee_payment_for(
                    s, scope=self._scope(h.account), booking_id=h.booking_id, now=self.now
                )
                await s.commit()
                return pid

        code = None
        try:
            h.payment_id = self.run(go())
        except DomainError as exc:
            code = exc.code
        if h.status == "held":
            assert code is None, code
        else:
            assert code == "booking_not_awaiting_payment"

    @precondition(
        lambda self: any(
            h.payment_id is not None and h.fee == "pending" for h in self.model.holds.values()
        )
    )
    @rule(pick=st.integers(0, 20))
    def paid(self, pick: int) -> None:
        """WeChat reports the fee paid (a notify in time, or late after the hold lapsed or
        the booking was cancelled); the job's step runs."""
        found = sorted(
            (h for h in self.model.holds.values() if h.payment_id and h.fee == "pending"),
            key=lambda h: h.booking_id,
        )
        h = found[pick % len(found)]
        assert h.payment_id is not None
        payment_id = h.payment_id

        async def go() -> str:
            async with self.db.session() as s:
                row = await s.get(bm.BillingPayment, payment_id)
                assert row is not None
                await billing.apply_trade(
                    s,
                    payment_id=payment_id,
                    observed=Payment(
                        out_trade_no=row.out_trade_no,
                        state=TradeState.SUCCESS,
                        state_desc="ok",
                        amount_fen=row.amount_fen,
                        transaction_id=f"T{payment_id:020d}",
                        trade_type="JSAPI",
                        openid=row.openid,
                        success_at=self.now,
                    ),
                    source="notify",
                    now=self.now,
                    observation_key=f"notify:{payment_id}",
                )
                outcome = await service.fee_paid(
                    s, payment_id=payment_id, policy=POLICY, now=self.now
                )
                again = await service.fee_paid(  # a duplicate run changes nothing
                    s, payment_id=payment_id, policy=POLICY, now=self.now
                )
                assert again == "none"
                await s.commit()
                return outcome

        m = self.model
        if h.status == "held":
            expected = "booked"
        elif (
            h.status == "hold_expired"
            and h.schedule not in m.suspended
            and m.holder(h.slot) is None
            and not m.day_taken(h.card, self.doctor_of[h.schedule], self.doctor_of)
        ):
            expected = "rebooked"
        else:
            expected = "refunded"
        assert self.run(go()) == expected
        if expected == "refunded":
            h.fee = "refunded"
        else:
            h.fee, h.status = "paid", "booked"

    @rule(pick=st.integers(0, 20))
    def expire(self, pick: int) -> None:
        """Time passes beyond a hold's end and the release job runs."""
        self.now += POLICY.hold + timedelta(seconds=1)
        h = self._pick(("held",), "pending", pick)
        if h is None:
            return

        async def go() -> bool:
            async with self.db.session() as s:
                done = await service.expire_hold(s, booking_id=h.booking_id, now=self.now)
                await s.commit()
                return done

        assert self.run(go())
        h.status = "hold_expired"
        for other in self.model.holds.values():  # every older hold has lapsed too
            if other.status == "held" and other is not h:
                assert self.run(self._expire(other.booking_id))
                other.status = "hold_expired"

    async def _expire(self, booking_id: int) -> bool:
        async with self.db.session() as s:
            done = await service.expire_hold(s, booking_id=booking_id, now=self.now)
            await s.commit()
            return done

    @rule(pick=st.integers(0, 20))
    def cancel(self, pick: int) -> None:
        live = sorted(
            (h for h in self.model.holds.values() if h.status in SLOT_HOLDING),
            key=lambda h: h.booking_id,
        )
        if not live:
            return
        h = live[pick % len(live)]

        async def go() -> Any:
            async with self.db.session() as s:
                view = await service.cancel(
                    s,
                    scope=self._scope(h.account),
                    booking_id=h.booking_id,
                    policy=POLICY,
                    now=self.now,
                )
                await s.commit()
                return view

        assert self.run(go()).status == "cancelled"
        h.status = "cancelled"
        if h.fee == "paid":
            h.fee = "refunded"

    @rule(which=st.integers(0, 1))
    def suspend(self, which: int) -> None:
        sid = sorted(self.schedules)[which]

        async def go() -> list[int]:
            async with self.db.session() as s:
                row = (await s.execute(select(Schedule).where(Schedule.id == sid))).scalar_one()
                await catalog.suspend(s, his_schedule_id=row.his_schedule_id, now=self.now)
                done = await service.cancel_for_suspension(s, schedule_id=sid, now=self.now)
                await s.commit()
                return done

        cancelled = self.run(go())
        hit = [
            h for h in self.model.holds.values() if h.schedule == sid and h.status in SLOT_HOLDING
        ]
        assert sorted(cancelled) == sorted(h.booking_id for h in hit)
        for h in hit:
            h.status = "cancelled_by_hospital"
            if h.fee == "paid":
                h.fee = "refunded"
        self.model.suspended.add(sid)

    # ------------------------------------------------------------------ invariants

    @invariant()
    def database_agrees_with_the_model(self) -> None:
        async def go() -> Any:
            async with self.db.session() as s:
                ids = list(self.model.holds) or [-1]
                rows = {
                    b.id: (b.status, b.fee_state)
                    for b in (await s.execute(select(Booking).where(Booking.id.in_(ids)))).scalars()
                }
                slots = [slot for sl in self.schedules.values() for slot in sl]
                taken = set(
                    (
                        await s.execute(
                            select(Slot.id).where(Slot.id.in_(slots), Slot.booking_id.is_not(None))
                        )
                    ).scalars()
                )
                pids = [h.payment_id for h in self.model.holds.values() if h.payment_id] or [-1]
                refunds = dict(
                    (
                        await s.execute(
                            select(bm.BillingRefund.payment_id, func.count())
                            .where(bm.BillingRefund.payment_id.in_(pids))
                            .group_by(bm.BillingRefund.payment_id)
                        )
                    ).all()
                )
                over = (
                    await s.execute(
                        select(func.count()).where(
                            bm.BillingPayment.id.in_(pids),
                            bm.BillingPayment.refunded_fen > bm.BillingPayment.amount_fen,
                        )
                    )
                ).scalar_one()
                return rows, taken, refunds, over, await invariant_violations(s)

        rows, taken, refunds, over, violations = self.run(go())
        assert rows == {i: (h.status, h.fee) for i, h in self.model.holds.items()}
        assert taken == {h.slot for h in self.model.holds.values() if h.status in SLOT_HOLDING}
        assert refunds == {
            h.payment_id: 1 for h in self.model.holds.values() if h.fee == "refunded"
        }
        assert over == 0
        assert violations == {
            "slot_given_twice": 0,
            "slot_mismatch": 0,
            "card_day_twice": 0,
            "slot_orphan": 0,
        }


FROZEN = FrozenClock(T0)
FEE_ENV: dict[str, Any] = {}


def test_fee_state_machine(tmp_path: Path) -> None:
    loop = asyncio.new_event_loop()
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'fee.db'}")

    async def create() -> None:
        async with db.engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)

    loop.run_until_complete(create())
    previous = set_clock(FROZEN)
    FEE_ENV.update(loop=loop, db=db)
    try:
        FeeMachine.TestCase.settings = settings(
            max_examples=40,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        )
        FeeMachine.TestCase().runTest()
    finally:
        set_clock(previous)
        loop.run_until_complete(db.dispose())
        loop.close()
