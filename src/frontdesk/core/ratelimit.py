"""Rate limits shared by every process: fixed-window counters in the database.

A limit is "at most N events per key per window". Counting is one atomic upsert
(``INSERT ... ON CONFLICT DO UPDATE ... RETURNING count``) on both databases, so several web
processes share the same counters and a burst cannot slip through between a read and a
write. Used for binding attempts, booking attempts and message-board posts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Integer, String, delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from frontdesk.core.errors import TooManyRequests
from frontdesk.core.models import Base, UTCDateTime
from frontdesk.core.sql import dialect_name


class RateCounter(Base):
    __tablename__ = "rate_counter"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    window_start: Mapped[int] = mapped_column(Integer, primary_key=True)  # epoch // window
    count: Mapped[int] = mapped_column(Integer, nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, index=True)


@dataclass(frozen=True)
class Limit:
    name: str
    max_events: int
    window_seconds: int

    def __post_init__(self) -> None:
        if self.max_events < 1 or self.window_seconds < 1:
            raise ValueError("a limit needs at least one event and a window of one second")


async def hit(session: AsyncSession, limit: Limit, subject: str, *, now: datetime) -> int:
    """Count one event for ``subject``; returns the count in the current window."""
    epoch = int(now.timestamp())
    window = epoch // limit.window_seconds
    key = f"{limit.name}:{subject}"
    expires = datetime.fromtimestamp((window + 1) * limit.window_seconds, tz=now.tzinfo)
    insert = postgresql.insert if dialect_name(session) == "postgresql" else sqlite.insert
    stmt = (
        insert(RateCounter)
        .values(key=key, window_start=window, count=1, expires_at=expires)
        .on_conflict_do_update(
            index_elements=["key", "window_start"], set_={"count": RateCounter.count + 1}
        )
        .returning(RateCounter.count)
    )
    return int((await session.execute(stmt)).scalar_one())


async def check(session: AsyncSession, limit: Limit, subject: str, *, now: datetime) -> None:
    """Count one event and refuse it with ``TooManyRequests`` (429, Retry-After) when over.

    Call it in its own short transaction before the action, so a refused attempt still
    counts (a brute-force loop cannot reset its own counter by failing).
    """
    count = await hit(session, limit, subject, now=now)
    if count > limit.max_events:
        elapsed = now.timestamp() % limit.window_seconds
        raise TooManyRequests(retry_after=max(1, math.ceil(limit.window_seconds - elapsed)))


async def purge_expired(session: AsyncSession, *, now: datetime) -> int:
    result = await session.execute(delete(RateCounter).where(RateCounter.expires_at <= now))
    return int(getattr(result, "rowcount", 0))
