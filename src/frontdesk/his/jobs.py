"""The HIS event poller: a recurring worker job that reads the HIS event feed.

Guarantee: every event of the feed is handed to its handlers exactly once, across crashes,
restarts and several workers. Per page, in ONE transaction (the job's):

1. lock the cursor row (``FOR UPDATE`` on PostgreSQL; SQLite transactions are
   ``BEGIN IMMEDIATE`` and already exclusive), read the cursor;
2. fetch ``events(after=cursor)`` from the HIS;
3. for each event: record it in the inbox (``source="his"``, unique on the event id) and,
   only if it is new, run the handlers of its type;
4. move the cursor with a guarded ``UPDATE ... WHERE cursor = :seen``.

A crash anywhere before the commit rolls all of it back, so the next run starts from the
same cursor; the inbox catches an event seen twice anyway (e.g. a HIS that re-sends one).
A handler that fails rolls back the page and the job is retried with backoff: the feed
waits rather than skip an event (its dead letter is visible to staff).
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from frontdesk.core import inbox, outbox, scheduler
from frontdesk.core.clock import now as clock_now
from frontdesk.core.sql import insert_ignoring_conflict
from frontdesk.his import events as registry
from frontdesk.his.models import HisFeedCursor
from frontdesk.his.port import HisGateway

log = logging.getLogger("frontdesk.his.jobs")

FEED = "his"
PAGE_SIZE = 100
MAX_PAGES_PER_RUN = 20

POLL_JOB = "his.poll_events"
scheduler.recurring(POLL_JOB, "every 5s")


async def _locked_cursor(session: AsyncSession) -> str:
    await session.execute(
        insert_ignoring_conflict(
            session,
            HisFeedCursor.__table__,  # type: ignore[arg-type]
            {"feed": FEED, "cursor": "", "updated_at": clock_now(), "events_applied": 0},
            conflict_columns=["feed"],
        )
    )
    row = (
        await session.execute(
            select(HisFeedCursor.cursor).where(HisFeedCursor.feed == FEED).with_for_update()
        )
    ).scalar_one()
    return str(row)


async def poll_once(
    session: AsyncSession, his: HisGateway, *, container: Any = None, page_size: int = PAGE_SIZE
) -> tuple[int, bool]:
    """Apply one page of events in the caller's transaction; (events applied, more?)."""
    seen = await _locked_cursor(session)
    page = await his.events(after=seen or None, limit=page_size)
    now = clock_now()
    applied = 0
    for event in page.events:
        fresh = await inbox.receive(
            session,
            source=FEED,
            external_id=event.event_id,
            at=now,
            payload={"type": event.type, "cursor": event.cursor},
        )
        if not fresh:
            continue
        ctx = registry.EventContext(session=session, event=event, now=now, container=container)
        handlers = registry.handlers_for(event.type)
        for handler in handlers:
            await handler(ctx)
        await inbox.mark_processed(
            session,
            source=FEED,
            external_id=event.event_id,
            at=now,
            result=f"{len(handlers)} handler(s)",
        )
        applied += 1
    if page.next_cursor != seen:
        moved = await session.execute(
            update(HisFeedCursor)
            .where(HisFeedCursor.feed == FEED, HisFeedCursor.cursor == seen)
            .values(
                cursor=page.next_cursor,
                updated_at=now,
                events_applied=HisFeedCursor.events_applied + applied,
            )
            .execution_options(synchronize_session=False)
        )
        if moved.rowcount != 1:  # type: ignore[attr-defined]
            raise outbox.RetryLater("the feed cursor moved under us", delay_seconds=1)
    return applied, page.has_more


@outbox.job(POLL_JOB, max_attempts=3, timeout_seconds=60)
async def poll_events(ctx: outbox.JobContext, **_payload: Any) -> None:
    """Read the HIS event feed from the stored cursor and apply each event exactly once.

    Runs every few seconds (recurring). Each run applies up to ``MAX_PAGES_PER_RUN`` pages
    in the job's transaction; what is left waits for the next run.
    """
    his: HisGateway = ctx.container.services["his"]
    total = 0
    for _ in range(MAX_PAGES_PER_RUN):
        applied, more = await poll_once(ctx.session, his, container=ctx.container)
        total += applied
        if not more:
            break
    if total:
        log.info("applied %d HIS event(s)", total)


async def current_cursor(session: AsyncSession) -> str | None:
    return (
        await session.execute(select(HisFeedCursor.cursor).where(HisFeedCursor.feed == FEED))
    ).scalar_one_or_none()
