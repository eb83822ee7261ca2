"""The HIS event poller: a recurring worker job that reads the HIS event feed.

Guarantee: every event of the feed is handed to its handlers exactly once, across crashes,
restarts and several workers. Each run:

1. reads the stored cursor (a short transaction of its own);
2. fetches ``events(after=cursor)`` from the HIS — outside any database transaction, so a
   slow or unreachable HIS never holds a lock (on SQLite a write transaction blocks every
   other writer);
3. in the job's transaction: locks the cursor row (``FOR UPDATE`` on PostgreSQL; SQLite
   transactions are ``BEGIN IMMEDIATE``), and if the cursor is still the one it read,
   records each event in the inbox (``source="his"``, unique on the event id), runs the
   handlers of each new event, and moves the cursor. If another worker moved the cursor
   meanwhile, this run does nothing.

A crash anywhere before the commit rolls all of it back, so the next run starts from the
same cursor; the inbox catches an event seen twice anyway (e.g. a HIS that re-sends one).
A handler that fails rolls back the page and the job is retried with backoff: the feed
waits rather than skip an event (its dead letter is visible to staff). When the HIS says
there is more, the run enqueues the next run at once in the same transaction.
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
from frontdesk.his.port import EventPage, HisGateway, HisRejected, HisUnavailable

log = logging.getLogger("frontdesk.his.jobs")

FEED = "his"
PAGE_SIZE = 100

POLL_JOB = "his.poll_events"
scheduler.recurring(POLL_JOB, "every 5s")


async def current_cursor(session: AsyncSession) -> str | None:
    return (
        await session.execute(select(HisFeedCursor.cursor).where(HisFeedCursor.feed == FEED))
    ).scalar_one_or_none()


async def apply_page(
    session: AsyncSession, page: EventPage, *, seen: str, container: Any = None
) -> int | None:
    """Apply a page fetched with ``after=seen`` in the caller's transaction.

    Returns how many events were new, or None if the cursor is no longer ``seen`` (another
    worker applied this page first; nothing was done)."""
    await session.execute(
        insert_ignoring_conflict(
            session,
            HisFeedCursor.__table__,
            {"feed": FEED, "cursor": "", "updated_at": clock_now(), "events_applied": 0},
            conflict_columns=["feed"],
        )
    )
    locked = (
        await session.execute(
            select(HisFeedCursor.cursor).where(HisFeedCursor.feed == FEED).with_for_update()
        )
    ).scalar_one()
    if locked != seen:
        return None
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
        await session.execute(
            update(HisFeedCursor)
            .where(HisFeedCursor.feed == FEED, HisFeedCursor.cursor == seen)
            .values(
                cursor=page.next_cursor,
                updated_at=now,
                events_applied=HisFeedCursor.events_applied + applied,
            )
            .execution_options(synchronize_session=False)
        )
    return applied


@outbox.job(POLL_JOB, max_attempts=3, timeout_seconds=60)
async def poll_events(ctx: outbox.JobContext, **_payload: Any) -> None:
    """Read one page of the HIS event feed after the stored cursor and apply each event
    exactly once (see the module docstring). Runs every few seconds."""
    his: HisGateway = ctx.container.services["his"]
    async with ctx.container.db.session() as read:
        seen = await current_cursor(read) or ""
    try:
        page = await his.events(after=seen or None, limit=PAGE_SIZE)
    except HisUnavailable as exc:
        # The next scheduled run is the retry: an HIS outage must not pile up one dead
        # letter per poll.
        log.warning("HIS event feed unavailable (%s); next poll will retry", exc.code)
        return
    except HisRejected as exc:
        # A refusal of a read is configuration (wrong key, clock skew): a dead letter now,
        # where staff see it, rather than silent retries.
        raise outbox.PermanentFailure(f"HIS refused the event feed: {exc.code}") from exc
    applied = await apply_page(ctx.session, page, seen=seen, container=ctx.container)
    if applied is None:
        log.info("HIS feed page after %r was applied by another worker", seen)
        return
    if applied:
        log.info("applied %d HIS event(s)", applied)
    if page.has_more:
        await outbox.enqueue(
            ctx.session, POLL_JOB, dedupe_key=f"{POLL_JOB}:after:{page.next_cursor}"
        )
