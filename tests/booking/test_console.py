"""The scheduling office's page: pools and fill rates, a session's bookings, and lifting a
no-show block with a reason (audited); other roles are refused."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from frontdesk.booking import service
from frontdesk.booking.models import CreditBlock
from frontdesk.console.models import Role
from frontdesk.core.clock import FrozenClock
from tests.accounts.helpers import sim_patients
from tests.booking.helpers import POLICY, bind, bookable_days, free_slots, open_schedule, sync
from tests.console.conftest import audit_rows, create_staff, sign_in


async def test_pools_sessions_and_lifting_a_block(
    client: httpx.AsyncClient,
    db: AsyncSession,
    clock: FrozenClock,
    his_gateway: Any,
    his_sim: Any,
) -> None:
    await sync(db, his_gateway)
    patients = await sim_patients(his_sim, count=1)
    alice = await bind(db, his_gateway, "openid-console", patients)
    card = alice.cards[0]
    days = await bookable_days(db)
    refs = []
    for d in days[:3]:
        s = await open_schedule(db, on_date=d)
        v = await service.book(
            db,
            scope=alice,
            card_id=card.card_id,
            slot_id=(await free_slots(db, s.id))[0],
            policy=POLICY,
            now=clock.now(),
        )
        refs.append((s, v))
    for _s, v in refs:
        await service.record_no_show(db, booking_ref=v.booking_ref, policy=POLICY, now=clock.now())
    block = (await db.execute(select(CreditBlock))).scalar_one()

    office = await create_staff(db, clock, username="sched1", role=Role.scheduling)
    csrf = await sign_in(client, clock, office)
    first = refs[0][0]
    page = await client.get("/console/booking", params={"day": first.on_date.isoformat()})
    assert page.status_code == 200
    assert f'data-schedule="{first.id}"' in page.text
    assert f'data-block="{block.id}"' in page.text and card.card_no not in page.text
    session_page = await client.get(f"/console/booking/schedules/{first.id}")
    assert 'data-status="no_show"' in session_page.text

    # a lift without a reason changes nothing
    empty = await client.post(
        f"/console/booking/blocks/{block.id}/lift", data={"csrf_token": csrf, "reason": " "}
    )
    assert empty.headers["location"] == "/console/booking?error=booking_lift_reason_required"
    await db.refresh(block)
    assert block.lifted_at is None
    done = await client.post(
        f"/console/booking/blocks/{block.id}/lift",
        data={"csrf_token": csrf, "reason": "admitted to hospital"},
    )
    assert done.headers["location"] == "/console/booking?notice=lifted"
    await db.refresh(block)
    assert (block.lifted_by, block.lift_reason) == (f"staff:{office.id}", "admitted to hospital")
    rows = await audit_rows(db, action="booking.block_lifted")
    assert [(r.actor, r.record_id) for r in rows] == [(f"staff:{office.id}", str(block.id))]


async def test_other_roles_are_refused(
    client: httpx.AsyncClient, db: AsyncSession, clock: FrozenClock
) -> None:
    cashier = await create_staff(db, clock, username="cash1", role=Role.cashier)
    await sign_in(client, clock, cashier)
    assert (await client.get("/console/booking")).status_code == 403
