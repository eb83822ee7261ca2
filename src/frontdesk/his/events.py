"""Handlers for HIS events, registered per event type by the domains that own them.

    from frontdesk.his import events

    @events.on("report.reviewed")
    async def report_ready(ctx: events.EventContext) -> None:
        ...  # write rows with ctx.session; enqueue pushes with outbox.enqueue(ctx.session, ...)

The poller (``frontdesk.his.jobs``) calls every handler of an event's type inside the
transaction that also moves the feed cursor and records the event in the inbox, so a
handler's effects happen exactly once. Handlers must not commit, and should be quick: they
run while the feed is held. Slow side effects (pushes, HIS writes) go to the outbox.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from frontdesk.his.port import HisEvent


@dataclass(frozen=True)
class EventContext:
    session: AsyncSession
    event: HisEvent
    now: datetime
    container: Any


EventHandler = Callable[[EventContext], Awaitable[None]]

_handlers: dict[str, list[EventHandler]] = {}


def on(event_type: str) -> Callable[[EventHandler], EventHandler]:
    """Register ``handler`` for events of ``event_type`` (e.g. ``"schedule.suspended"``)."""

    def decorate(handler: EventHandler) -> EventHandler:
        register(event_type, handler)
        return handler

    return decorate


def register(event_type: str, handler: EventHandler) -> None:
    bucket = _handlers.setdefault(event_type, [])
    if handler not in bucket:  # importing a module twice must not double a handler
        bucket.append(handler)


def unregister(event_type: str, handler: EventHandler) -> None:
    bucket = _handlers.get(event_type, [])
    if handler in bucket:
        bucket.remove(handler)


def handlers_for(event_type: str) -> list[EventHandler]:
    return list(_handlers.get(event_type, ()))
