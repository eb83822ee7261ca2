"""All SQL of the reports domain: the short-lived local copy of what the HIS said."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from frontdesk.core.sql import dialect_name, insert_ignoring_conflict
from frontdesk.reports.models import CachedCardList, CachedLabItem, CachedReport, ReportNotice


def _insert(session: AsyncSession, table: Any) -> Any:
    if dialect_name(session) == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


async def fresh_list(
    session: AsyncSession, card_no: str, *, now: datetime
) -> CachedCardList | None:
    row = await session.get(CachedCardList, card_no)
    if row is None or row.expires_at <= now:
        return None
    return row


async def listed(
    session: AsyncSession, card_no: str, *, since_at: datetime, now: datetime
) -> list[Any]:
    """The card's cached summaries reviewed on or after ``since_at``, newest first (rows of
    the summary columns only: the bodies are not read for a list)."""
    rows = await session.execute(
        select(
            CachedReport.report_id,
            CachedReport.card_no,
            CachedReport.kind,
            CachedReport.title,
            CachedReport.department,
            CachedReport.reviewed_at,
            CachedReport.has_abnormal,
        )
        .where(
            CachedReport.card_no == card_no,
            CachedReport.reviewed_at >= since_at,
            CachedReport.expires_at > now,
        )
        .order_by(CachedReport.reviewed_at.desc(), CachedReport.report_id)
    )
    return list(rows.all())


async def replace_list(
    session: AsyncSession,
    card_no: str,
    rows: Sequence[dict[str, Any]],
    *,
    since_on: date,
    now: datetime,
    expires_at: datetime,
) -> None:
    """Make the cache hold exactly ``rows`` for the card (bodies already fetched are kept
    when the report is still listed; a report the HIS no longer lists is dropped)."""
    keep = [r["report_id"] for r in rows]
    for model in (CachedReport, CachedLabItem):
        await session.execute(
            delete(model)
            .where(model.card_no == card_no, model.report_id.not_in(keep))
            .execution_options(synchronize_session=False)
        )
    if rows:
        stmt = _insert(session, CachedReport.__table__)
        stmt = stmt.on_conflict_do_update(
            index_elements=["report_id"],
            set_={
                name: stmt.excluded[name]
                for name in (
                    "card_no",
                    "kind",
                    "title",
                    "department",
                    "reviewed_at",
                    "has_abnormal",
                    "expires_at",
                )
            },
        )
        await session.execute(
            stmt,
            [{**r, "body": None, "body_expires_at": None, "expires_at": expires_at} for r in rows],
        )
    stmt = _insert(session, CachedCardList.__table__).values(
        card_no=card_no, since_on=since_on, fetched_at=now, expires_at=expires_at
    )
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=["card_no"],
            set_={"since_on": since_on, "fetched_at": now, "expires_at": expires_at},
        )
    )


async def cached(session: AsyncSession, report_id: str, *, now: datetime) -> CachedReport | None:
    row = (
        await session.execute(
            select(CachedReport).where(
                CachedReport.report_id == report_id, CachedReport.expires_at > now
            )
        )
    ).scalar_one_or_none()
    return row


async def bodies(
    session: AsyncSession, report_ids: Sequence[str], *, now: datetime
) -> dict[str, dict[str, Any]]:
    if not report_ids:
        return {}
    rows = await session.execute(
        select(CachedReport.report_id, CachedReport.body).where(
            CachedReport.report_id.in_(list(report_ids)),
            CachedReport.body.is_not(None),
            CachedReport.body_expires_at > now,
        )
    )
    return {rid: body for rid, body in rows.all() if body is not None}


async def store_bodies(
    session: AsyncSession,
    rows: Sequence[dict[str, Any]],
    items: Sequence[dict[str, Any]],
    *,
    expires_at: datetime,
) -> None:
    """Keep many bodies and their item rows in three statements (a trend stores hundreds;
    one upsert, delete and insert per report would cost more than the HIS call)."""
    if not rows:
        return
    stmt = _insert(session, CachedReport.__table__)
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=["report_id"],
            set_={"body": stmt.excluded.body, "body_expires_at": stmt.excluded.body_expires_at},
        ),
        [{**row, "body_expires_at": expires_at, "expires_at": expires_at} for row in rows],
    )
    await session.execute(
        delete(CachedLabItem)
        .where(CachedLabItem.report_id.in_([row["report_id"] for row in rows]))
        .execution_options(synchronize_session=False)
    )
    if items:
        await session.execute(insert(CachedLabItem), list(items))


async def fresh_body_ids(
    session: AsyncSession, report_ids: Sequence[str], *, now: datetime
) -> set[str]:
    """Which of these reports have a fresh body here (ids only: nothing is decoded)."""
    if not report_ids:
        return set()
    rows = await session.execute(
        select(CachedReport.report_id).where(
            CachedReport.report_id.in_(list(report_ids)),
            CachedReport.body_expires_at > now,
        )
    )
    return set(rows.scalars())


async def items_of(session: AsyncSession, card_no: str, code: str, *, now: datetime) -> list[Any]:
    """The card's cached results of one item code, with their report's kind and review
    time (the caller applies the history window and the hold)."""
    rows = await session.execute(
        select(
            CachedLabItem,
            CachedReport.reviewed_at,
        )
        .join(CachedReport, CachedReport.report_id == CachedLabItem.report_id)
        .where(
            CachedLabItem.card_no == card_no,
            CachedLabItem.code == code,
            CachedLabItem.expires_at > now,
            CachedReport.body_expires_at > now,
            CachedReport.kind == "lab",
        )
    )
    return list(rows.all())


async def forget_list(session: AsyncSession, card_no: str) -> None:
    """The card's list is stale (a report was reviewed): read it from the HIS next time."""
    await session.execute(
        delete(CachedCardList)
        .where(CachedCardList.card_no == card_no)
        .execution_options(synchronize_session=False)
    )


async def purge(session: AsyncSession, *, now: datetime) -> int:
    """Delete every copy whose time is up; returns how many reports were dropped."""
    gone = await session.execute(
        delete(CachedReport)
        .where(CachedReport.expires_at <= now)
        .execution_options(synchronize_session=False)
    )
    await session.execute(
        update(CachedReport)
        .where(CachedReport.body_expires_at <= now)
        .values(body=None, body_expires_at=None)
        .execution_options(synchronize_session=False)
    )
    await session.execute(
        delete(CachedCardList)
        .where(CachedCardList.expires_at <= now)
        .execution_options(synchronize_session=False)
    )
    await session.execute(
        delete(CachedLabItem)
        .where(CachedLabItem.expires_at <= now)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(gone, "rowcount", 0) or 0)


async def claim_notice(
    session: AsyncSession, *, report_id: str, openid: str, now: datetime
) -> bool:
    """Record that this account is told about this report; False if it already was."""
    result = await session.execute(
        insert_ignoring_conflict(
            session,
            ReportNotice.__table__,
            {"report_id": report_id, "openid": openid, "queued_at": now},
            conflict_columns=["report_id", "openid"],
        )
    )
    return bool(getattr(result, "rowcount", 0))
