"""The event history of payments and refunds is evidence for finance (issue 8): the
database itself refuses to change or delete it (0920_billing_event_append_only), on
SQLite and PostgreSQL alike."""

from __future__ import annotations

import pytest
from sqlalchemy import delete, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from frontdesk.billing import models as bm
from frontdesk.billing import repository as repo
from frontdesk.core.clock import FrozenClock


async def test_billing_events_cannot_be_changed_or_deleted(
    db: AsyncSession, clock: FrozenClock
) -> None:
    await repo.record_event(
        db,
        payment_id=41,
        key="payment:41:paid",
        kind="payment.paid",
        source="notify",
        actor="system:notify",
        at=clock.now(),
        from_state="pending",
        to_state="paid",
        detail={"transaction_id": "4200000001"},
    )
    [event] = (await db.execute(select(bm.BillingEvent))).scalars().all()
    for statement in (
        update(bm.BillingEvent).where(bm.BillingEvent.id == event.id).values(to_state="failed"),
        update(bm.BillingEvent).values(detail={}),
        delete(bm.BillingEvent).where(bm.BillingEvent.id == event.id),
        delete(bm.BillingEvent),
    ):
        with pytest.raises(DBAPIError, match="billing_event is append-only"):
            async with db.begin_nested():
                await db.execute(statement)
    if db.get_bind().dialect.name == "postgresql":
        with pytest.raises(DBAPIError, match="billing_event is append-only"):
            async with db.begin_nested():
                await db.execute(text("TRUNCATE billing_event"))
    db.expunge_all()
    row = (await db.execute(select(bm.BillingEvent))).scalar_one()
    assert (row.id, row.payment_id, row.kind, row.from_state, row.to_state, row.detail) == (
        event.id,
        41,
        "payment.paid",
        "pending",
        "paid",
        {"transaction_id": "4200000001"},
    )
    # Appending still works: the history grows, it is never rewritten.
    await repo.record_event(
        db,
        payment_id=41,
        key="payment:41:refunded",
        kind="refund.succeeded",
        source="query",
        actor="system:query",
        at=clock.now(),
    )
    assert len((await db.execute(select(bm.BillingEvent))).scalars().all()) == 2
