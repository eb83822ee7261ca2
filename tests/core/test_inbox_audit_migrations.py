from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from frontdesk.container import Container
from frontdesk.core import audit, inbox, migrate
from frontdesk.core.audit import AuditEntry
from frontdesk.core.clock import FrozenClock
from frontdesk.core.inbox import InboxMessage


async def test_inbox_recognises_a_repeat(db: AsyncSession, clock: FrozenClock) -> None:
    assert (
        await inbox.receive(db, source="wechat", external_id="m1", at=clock.now(), payload={"n": 1})
        is True
    )
    assert (
        await inbox.receive(db, source="wechat", external_id="m1", at=clock.now(), payload={"n": 2})
        is False
    )
    assert await inbox.receive(db, source="wxpay", external_id="m1", at=clock.now()) is True
    row = await inbox.get(db, source="wechat", external_id="m1")
    assert row is not None and row.payload == {"n": 1}
    await inbox.mark_processed(
        db, source="wechat", external_id="m1", at=clock.now(), result="replied"
    )
    await db.refresh(row)
    assert (row.processed_at, row.result) == (clock.now(), "replied")


async def test_concurrent_deliveries_are_one(container: Container, clock: FrozenClock) -> None:
    async def deliver() -> bool:
        async with container.db.session() as s:
            return await inbox.receive(s, source="wxpay", external_id="notify-9", at=clock.now())

    results = await asyncio.gather(*(deliver() for _ in range(10)))
    assert sorted(results) == [False] * 9 + [True]
    async with container.db.session() as s:
        n = (await s.execute(select(func.count()).select_from(InboxMessage))).scalar_one()
    assert n == 1


async def test_audit_rows_are_written_and_cannot_be_changed(
    db: AsyncSession, clock: FrozenClock
) -> None:
    entry = await audit.record(
        db,
        at=clock.now(),
        actor="staff:3",
        action="report.view",
        record_type="report",
        record_id=42,
        card_id=7,
        ip="10.0.0.8",
        detail={"via": "console"},
    )
    assert await audit.count(db, action="report.view", record_id="42") == 1
    for statement in (
        update(AuditEntry).where(AuditEntry.id == entry.id).values(actor="staff:4"),
        delete(AuditEntry).where(AuditEntry.id == entry.id),
    ):
        with pytest.raises(DBAPIError, match="append-only"):
            async with db.begin_nested():
                await db.execute(statement)
    row = (await db.execute(select(AuditEntry).where(AuditEntry.id == entry.id))).scalar_one()
    assert (row.actor, row.card_id, row.detail) == ("staff:3", 7, {"via": "console"})


async def test_migrations_match_the_models(connection: AsyncConnection) -> None:
    """A model changed without a migration fails here (alembic check)."""
    await connection.run_sync(migrate.check_on)


async def test_database_is_at_head(container: Container) -> None:
    assert await migrate.is_current(container.db.engine)
    assert await migrate.current_revisions(container.db.engine) == migrate.head_revisions()


async def test_naive_datetimes_are_refused_by_the_column_type(db: AsyncSession) -> None:
    from datetime import datetime

    from sqlalchemy.exc import StatementError

    with pytest.raises(StatementError, match="naive datetime"):
        await inbox.receive(db, source="x", external_id="y", at=datetime(2026, 1, 1))  # noqa: DTZ001
    n = (await db.execute(text("SELECT count(*) FROM inbox_message"))).scalar_one()
    assert n == 0
