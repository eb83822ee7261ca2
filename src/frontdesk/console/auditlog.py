"""Reading the audit log for the viewer and the CSV export (never writing it).

Filters: staff member (a username or a raw actor such as ``staff:12`` or ``system``), card id,
action (exact, or a prefix ending in ``*``), and a date range in the hospital's calendar.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from frontdesk.console.errors import BadStaffInput
from frontdesk.console.models import StaffUser
from frontdesk.console.service import Page, find_staff_by_username, staff_actor
from frontdesk.core.audit import AuditEntry
from frontdesk.core.clock import Clock

PAGE_SIZE = 50
EXPORT_BATCH = 500
CSV_COLUMNS = (
    "id",
    "at",
    "actor",
    "action",
    "record_type",
    "record_id",
    "card_id",
    "ip",
    "request_id",
    "outcome",
    "detail",
)


@dataclass(frozen=True)
class AuditFilters:
    actor: str = ""
    card_id: int | None = None
    action: str = ""
    date_from: date | None = None
    date_to: date | None = None

    def as_query(self) -> dict[str, str]:
        """The filters as query parameters (for paging links and the export link)."""
        values = {
            "actor": self.actor,
            "card_id": "" if self.card_id is None else str(self.card_id),
            "action": self.action,
            "date_from": self.date_from.isoformat() if self.date_from else "",
            "date_to": self.date_to.isoformat() if self.date_to else "",
        }
        return {key: value for key, value in values.items() if value}


def parse_filters(
    *, actor: str = "", card_id: str = "", action: str = "", date_from: str = "", date_to: str = ""
) -> AuditFilters:
    """Validate the viewer's query parameters; a bad one raises ``BadStaffInput``."""
    actor, action, card_id = actor.strip()[:128], action.strip()[:64], card_id.strip()
    card: int | None = None
    if card_id:
        if not (card_id.isascii() and card_id.isdigit()) or len(card_id) > 18:
            raise BadStaffInput(field="card_id")
        card = int(card_id)
    start = _parse_date(date_from, "date_from")
    end = _parse_date(date_to, "date_to")
    if start and end and end < start:
        raise BadStaffInput(field="date_to")
    return AuditFilters(actor=actor, card_id=card, action=action, date_from=start, date_to=end)


def _parse_date(value: str, field: str) -> date | None:
    value = value.strip()
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise BadStaffInput(field=field) from None


async def _filtered(
    session: AsyncSession,
    filters: AuditFilters,
    clock: Clock,
) -> Select[AuditEntry]:
    stmt = select(AuditEntry)
    if filters.actor:
        staff = await find_staff_by_username(session, filters.actor)
        stmt = stmt.where(
            AuditEntry.actor == (staff_actor(staff.id) if staff is not None else filters.actor)
        )
    if filters.card_id is not None:
        stmt = stmt.where(AuditEntry.card_id == filters.card_id)
    if filters.action.endswith("*"):
        stmt = stmt.where(AuditEntry.action.startswith(filters.action[:-1], autoescape=True))
    elif filters.action:
        stmt = stmt.where(AuditEntry.action == filters.action)
    if filters.date_from:
        stmt = stmt.where(AuditEntry.at >= clock.start_of_day(filters.date_from))
    if filters.date_to:
        stmt = stmt.where(AuditEntry.at < clock.day_bounds(filters.date_to)[1])
    return stmt


async def search(
    session: AsyncSession,
    filters: AuditFilters,
    *,
    clock: Clock,
    page: int = 1,
    page_size: int = PAGE_SIZE,
) -> Page[AuditEntry]:
    page = max(page, 1)
    stmt = await _filtered(session, filters, clock)
    rows = list(
        (
            await session.execute(
                stmt.order_by(AuditEntry.id.desc())
                .offset((page - 1) * page_size)
                .limit(page_size + 1)
            )
        ).scalars()
    )
    return Page(items=rows[:page_size], page=page, has_next=len(rows) > page_size)


async def staff_names(session: AsyncSession, entries: list[AuditEntry]) -> dict[str, str]:
    """``{"staff:12": "alice"}`` for the staff actors on a page, to show names beside ids."""
    ids = {
        int(e.actor.split(":", 1)[1])
        for e in entries
        if e.actor.startswith("staff:") and e.actor.split(":", 1)[1].isdigit()
    }
    if not ids:
        return {}
    rows = await session.execute(
        select(StaffUser.id, StaffUser.username).where(StaffUser.id.in_(ids))
    )
    return {staff_actor(staff_id): username for staff_id, username in rows.all()}


def _cell(value: object) -> str:
    text = "" if value is None else str(value)
    # A cell starting with = + - @ would run as a formula in a spreadsheet: neutralise it.
    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        text = "'" + text
    return text


def csv_row(entry: AuditEntry, clock: Clock) -> list[str]:
    local = entry.at.astimezone(clock.tz).isoformat(timespec="seconds")
    return [
        _cell(v)
        for v in (
            entry.id,
            local,
            entry.actor,
            entry.action,
            entry.record_type,
            entry.record_id,
            entry.card_id,
            entry.ip,
            entry.request_id,
            entry.outcome,
            json.dumps(entry.detail, ensure_ascii=False, sort_keys=True),
        )
    ]


async def export_csv(
    sessions: Callable[[], AbstractAsyncContextManager[AsyncSession]],
    filters: AuditFilters,
    *,
    clock: Clock,
) -> AsyncIterator[bytes]:
    """The filtered log as CSV, newest first, read in batches so memory stays flat.

    Each batch is its own short transaction (keyset paging on id), so a long export never
    holds a database lock or a connection for its whole duration.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    # A byte-order mark so spreadsheet programs on Chinese Windows read UTF-8 correctly.
    buffer.write("\ufeff")
    writer.writerow(CSV_COLUMNS)
    yield buffer.getvalue().encode("utf-8")
    last_id: int | None = None
    while True:
        async with sessions() as session:
            stmt = await _filtered(session, filters, clock)
            if last_id is not None:
                stmt = stmt.where(AuditEntry.id < last_id)
            batch = list(
                (
                    await session.execute(stmt.order_by(AuditEntry.id.desc()).limit(EXPORT_BATCH))
                ).scalars()
            )
        if not batch:
            return
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        for entry in batch:
            writer.writerow(csv_row(entry, clock))
        yield buffer.getvalue().encode("utf-8")
        last_id = batch[-1].id


def local_time(value: datetime | None, clock: Clock) -> str:
    if value is None:
        return ""
    return value.astimezone(clock.tz).strftime("%Y-%m-%d %H:%M:%S")
