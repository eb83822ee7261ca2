"""The inbox: every inbound callback stored unique on (source, external id).

WeChat and WeChat Pay repeat callbacks; the HIS feed can be re-read. ``receive`` tells the
caller whether this is the first time, decided by the unique constraint (not by a read first),
so two concurrent deliveries of the same message are recognised as one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, String, UniqueConstraint, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from frontdesk.core.models import Base, BigId, UTCDateTime
from frontdesk.core.sql import insert_ignoring_conflict


class InboxMessage(Base):
    __tablename__ = "inbox_message"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(32), nullable=False)  # "wechat", "wxpay", "his"
    external_id: Mapped[str] = mapped_column(String(128), nullable=False)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    result: Mapped[str | None] = mapped_column(String(2000), nullable=True)

    __table_args__ = (UniqueConstraint("source", "external_id"),)


async def receive(
    session: AsyncSession,
    *,
    source: str,
    external_id: str,
    at: datetime,
    payload: dict[str, Any] | None = None,
    result: str | None = None,
) -> bool:
    """Store an inbound message; True if it is new, False if it was seen before.

    A caller that knows its answer before acting may pass ``result``: the row is then
    stored as processed in the same statement (one round trip fewer on a hot path).
    """
    stmt = insert_ignoring_conflict(
        session,
        InboxMessage.__table__,
        {
            "source": source,
            "external_id": external_id,
            "received_at": at,
            "payload": payload or {},
            "result": result,
            "processed_at": at if result is not None else None,
        },
        conflict_columns=["source", "external_id"],
    )
    inserted = await session.execute(stmt)
    return bool(inserted.rowcount)  # type: ignore[attr-defined]


async def get(session: AsyncSession, *, source: str, external_id: str) -> InboxMessage | None:
    stmt = select(InboxMessage).where(
        InboxMessage.source == source, InboxMessage.external_id == external_id
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def mark_processed(
    session: AsyncSession, *, source: str, external_id: str, at: datetime, result: str | None = None
) -> None:
    await session.execute(
        update(InboxMessage)
        .where(InboxMessage.source == source, InboxMessage.external_id == external_id)
        .values(processed_at=at, result=result)
    )
