"""The audit log: who did what to which record, when, from where. Append-only.

Rows are only ever inserted. The migration installs triggers on both databases that refuse
UPDATE and DELETE on ``audit_log``, so no application role (or bug) can rewrite history;
retention (at least 180 days) is therefore "forever" unless an operator archives by hand.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, String, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from frontdesk.core.models import Base, BigId, UTCDateTime
from frontdesk.core.sql import pg_connection


class AuditEntry(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    # "staff:12", "patient:oXYZ...", "his", "system", "worker"
    actor: Mapped[str] = mapped_column(String(128), nullable=False)
    action: Mapped[str] = mapped_column(String(64), nullable=False)  # "report.view"
    record_type: Mapped[str] = mapped_column(String(64), nullable=False)  # "report"
    record_id: Mapped[str] = mapped_column(String(128), nullable=False)
    card_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    request_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    outcome: Mapped[str] = mapped_column(String(16), nullable=False, default="ok")
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)

    __table_args__ = (
        Index("ix_audit_log_at", "at"),
        Index("ix_audit_log_actor_at", "actor", "at"),
        Index("ix_audit_log_record", "record_type", "record_id"),
        Index("ix_audit_log_card_at", "card_id", "at"),
    )


async def record(
    session: AsyncSession,
    *,
    at: datetime,
    actor: str,
    action: str,
    record_type: str,
    record_id: str | int,
    card_id: int | None = None,
    ip: str | None = None,
    request_id: str | None = None,
    outcome: str = "ok",
    detail: dict[str, Any] | None = None,
) -> AuditEntry:
    """Append one audit row in the caller's transaction (it commits with the change)."""
    entry = AuditEntry(
        at=at,
        actor=actor,
        action=action,
        record_type=record_type,
        record_id=str(record_id),
        card_id=card_id,
        ip=ip,
        request_id=request_id,
        outcome=outcome,
        detail=detail or {},
    )
    session.add(entry)
    await session.flush()
    return entry


async def append(
    session: AsyncSession,
    *,
    at: datetime,
    actor: str,
    action: str,
    record_type: str,
    record_id: str | int,
    card_id: int | None = None,
    ip: str | None = None,
    request_id: str | None = None,
    outcome: str = "ok",
    detail: dict[str, Any] | None = None,
) -> None:
    """``record`` as one prebuilt INSERT on the session's connection, for hot paths: it
    neither builds an ORM object nor flushes the session."""
    pg = await pg_connection(session)
    if pg is not None:
        await pg.execute(
            _APPEND_PG,
            at,
            actor,
            action,
            record_type,
            str(record_id),
            card_id,
            ip,
            request_id,
            outcome,
            json.dumps(detail or {}),
        )
        return
    conn = await session.connection()
    await conn.execute(
        _APPEND,
        {
            "at": at,
            "actor": actor,
            "action": action,
            "record_type": record_type,
            "record_id": str(record_id),
            "card_id": card_id,
            "ip": ip,
            "request_id": request_id,
            "outcome": outcome,
            "detail": detail or {},
        },
    )


_APPEND = AuditEntry.__table__.insert()  # type: ignore[attr-defined]
_APPEND_PG = (
    "INSERT INTO audit_log (at, actor, action, record_type, record_id, card_id, ip,"
    " request_id, outcome, detail) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
)


async def count(
    session: AsyncSession, *, action: str | None = None, record_id: str | None = None
) -> int:
    stmt = select(func.count()).select_from(AuditEntry)
    if action is not None:
        stmt = stmt.where(AuditEntry.action == action)
    if record_id is not None:
        stmt = stmt.where(AuditEntry.record_id == record_id)
    return int((await session.execute(stmt)).scalar_one())
