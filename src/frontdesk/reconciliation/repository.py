"""All of reconciliation's SQL."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from frontdesk.core.sql import insert_ignoring_conflict
from frontdesk.reconciliation.models import (
    ALARM_STATUSES,
    FAILED,
    PENDING_OTHER_DAY,
    ReconAdjustment,
    ReconDifference,
    ReconItem,
    ReconProposal,
    ReconRun,
    ReconTotals,
)


async def run_for(session: AsyncSession, day: date) -> ReconRun | None:
    return (
        await session.execute(select(ReconRun).where(ReconRun.day_on == day))
    ).scalar_one_or_none()


async def ensure_run(session: AsyncSession, day: date, *, now: datetime, state: str) -> ReconRun:
    """The day's run row, created if missing (insert-once under concurrency)."""
    await session.execute(
        insert_ignoring_conflict(
            session,
            ReconRun.__table__,
            {"day_on": day, "state": state, "started_at": now, "attempts": 0},
            conflict_columns=["day_on"],
        )
    )
    run = (
        await session.execute(select(ReconRun).where(ReconRun.day_on == day).with_for_update())
    ).scalar_one()
    await session.refresh(run)
    return run


async def runs(session: AsyncSession, *, start: date, end: date) -> Sequence[ReconRun]:
    return (
        (
            await session.execute(
                select(ReconRun)
                .where(ReconRun.day_on >= start, ReconRun.day_on < end)
                .order_by(ReconRun.day_on.desc())
            )
        )
        .scalars()
        .all()
    )


async def latest_runs(session: AsyncSession, limit: int) -> Sequence[ReconRun]:
    return (
        (await session.execute(select(ReconRun).order_by(ReconRun.day_on.desc()).limit(limit)))
        .scalars()
        .all()
    )


async def replace_items(session: AsyncSession, day: date, items: list[dict[str, Any]]) -> None:
    await session.execute(delete(ReconItem).where(ReconItem.day_on == day))
    for start in range(0, len(items), 1000):
        await session.execute(insert(ReconItem), items[start : start + 1000])


async def replace_totals(session: AsyncSession, day: date, rows: list[dict[str, Any]]) -> None:
    await session.execute(delete(ReconTotals).where(ReconTotals.day_on == day))
    if rows:
        await session.execute(insert(ReconTotals), rows)


async def items(session: AsyncSession, day: date) -> Sequence[ReconItem]:
    return (
        (
            await session.execute(
                select(ReconItem)
                .where(ReconItem.day_on == day)
                .order_by(ReconItem.bill_at, ReconItem.key)
            )
        )
        .scalars()
        .all()
    )


async def totals(session: AsyncSession, *, start: date, end: date) -> Sequence[ReconTotals]:
    return (
        (
            await session.execute(
                select(ReconTotals)
                .where(ReconTotals.day_on >= start, ReconTotals.day_on < end)
                .order_by(ReconTotals.day_on, ReconTotals.trade_type)
            )
        )
        .scalars()
        .all()
    )


async def differences_of(session: AsyncSession, day: date) -> dict[str, ReconDifference]:
    rows = (
        (
            await session.execute(
                select(ReconDifference)
                .where(ReconDifference.day_on == day)
                .execution_options(populate_existing=True)
            )
        )
        .scalars()
        .all()
    )
    return {row.key: row for row in rows}


async def differences(
    session: AsyncSession,
    *,
    day: date | None = None,
    statuses: Sequence[str] | None = None,
    start: date | None = None,
    end: date | None = None,
) -> Sequence[ReconDifference]:
    stmt = select(ReconDifference)
    if day is not None:
        stmt = stmt.where(ReconDifference.day_on == day)
    if start is not None:
        stmt = stmt.where(ReconDifference.day_on >= start)
    if end is not None:
        stmt = stmt.where(ReconDifference.day_on < end)
    if statuses:
        stmt = stmt.where(ReconDifference.status.in_(statuses))
    stmt = stmt.order_by(
        ReconDifference.day_on, ReconDifference.diff_class, ReconDifference.key
    ).execution_options(populate_existing=True)
    return (await session.execute(stmt)).scalars().all()


async def difference(session: AsyncSession, difference_id: int) -> ReconDifference | None:
    return await session.get(ReconDifference, difference_id, populate_existing=True)


async def pending_other_day(
    session: AsyncSession, days: Sequence[date]
) -> Sequence[ReconDifference]:
    return (
        (
            await session.execute(
                select(ReconDifference)
                .where(
                    ReconDifference.day_on.in_(days),
                    ReconDifference.status == PENDING_OTHER_DAY,
                )
                .execution_options(populate_existing=True)
            )
        )
        .scalars()
        .all()
    )


async def set_difference_status(
    session: AsyncSession, difference_id: int, *, from_statuses: Sequence[str], **values: Any
) -> bool:
    result = await session.execute(
        update(ReconDifference)
        .where(ReconDifference.id == difference_id, ReconDifference.status.in_(from_statuses))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


async def add_proposal(session: AsyncSession, **values: Any) -> ReconProposal:
    proposal = ReconProposal(**values)
    session.add(proposal)
    await session.flush()
    return proposal


async def proposal(session: AsyncSession, proposal_id: int) -> ReconProposal | None:
    return await session.get(ReconProposal, proposal_id, populate_existing=True)


async def proposals_for(
    session: AsyncSession, difference_ids: Sequence[int]
) -> Sequence[ReconProposal]:
    if not difference_ids:
        return []
    return (
        (
            await session.execute(
                select(ReconProposal)
                .where(ReconProposal.difference_id.in_(difference_ids))
                .order_by(ReconProposal.id)
            )
        )
        .scalars()
        .all()
    )


async def decide_proposal(
    session: AsyncSession, proposal_id: int, *, from_state: str, **values: Any
) -> bool:
    result = await session.execute(
        update(ReconProposal)
        .where(ReconProposal.id == proposal_id, ReconProposal.state == from_state)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


async def add_adjustment(session: AsyncSession, **values: Any) -> ReconAdjustment:
    row = ReconAdjustment(**values)
    session.add(row)
    await session.flush()
    return row


async def adjustments(
    session: AsyncSession, *, start: date, end: date
) -> Sequence[ReconAdjustment]:
    return (
        (
            await session.execute(
                select(ReconAdjustment)
                .where(ReconAdjustment.day_on >= start, ReconAdjustment.day_on < end)
                .order_by(ReconAdjustment.id)
            )
        )
        .scalars()
        .all()
    )


async def alarm_counts(session: AsyncSession) -> tuple[int, int]:
    """(unresolved differences, days whose run failed)."""
    open_count = (
        await session.execute(
            select(func.count())
            .select_from(ReconDifference)
            .where(ReconDifference.status.in_(ALARM_STATUSES))
        )
    ).scalar_one()
    failed = (
        await session.execute(
            select(func.count()).select_from(ReconRun).where(ReconRun.state == FAILED)
        )
    ).scalar_one()
    return int(open_count), int(failed)
