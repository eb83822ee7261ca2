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
from typing import Any

from sqlalchemy import Integer, String, bindparam, delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from frontdesk.core.errors import TooManyRequests
from frontdesk.core.models import Base, UTCDateTime
from frontdesk.core.sql import dialect_name, pg_connection


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


def _hit_stmt(dialect: str) -> Any:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return (
        insert(RateCounter)
        .values(
            key=bindparam("key"),
            window_start=bindparam("window_start"),
            count=1,
            expires_at=bindparam("expires_at"),
        )
        .on_conflict_do_update(
            index_elements=["key", "window_start"], set_={"count": RateCounter.count + 1}
        )
        .returning(RateCounter.count)
    )


_HIT_PG = (
    "INSERT INTO rate_counter (key, window_start, count, expires_at) VALUES ($1, $2, 1, $3) "
    "ON CONFLICT (key, window_start) DO UPDATE SET count = rate_counter.count + 1 "
    "RETURNING count"
)
# Built once per dialect (booking counts every attempt at release time).
_HIT = {name: _hit_stmt(name) for name in ("postgresql", "sqlite")}


def window_of(limit: Limit, subject: str, now: datetime) -> tuple[str, int, datetime]:
    """The counter row of ``subject`` now: (key, window_start, expires_at)."""
    window = int(now.timestamp()) // limit.window_seconds
    expires = datetime.fromtimestamp((window + 1) * limit.window_seconds, tz=now.tzinfo)
    return f"{limit.name}:{subject}", window, expires


async def hit(session: AsyncSession, limit: Limit, subject: str, *, now: datetime) -> int:
    """Count one event for ``subject``; returns the count in the current window."""
    _key, window, expires = window_of(limit, subject, now)
    pg = await pg_connection(session)
    if pg is not None:
        return int(await pg.fetchval(_HIT_PG, f"{limit.name}:{subject}", window, expires))
    conn = await session.connection()
    found = await conn.execute(
        _HIT[dialect_name(session)],
        {"key": f"{limit.name}:{subject}", "window_start": window, "expires_at": expires},
    )
    return int(found.scalar_one())


def retry_after(limit: Limit, now: datetime) -> int:
    """Seconds until the current window of ``limit`` ends (at least 1)."""
    elapsed = now.timestamp() % limit.window_seconds
    return max(1, math.ceil(limit.window_seconds - elapsed))


class LocalLimiter:
    """The same fixed-window count kept in this process's memory, for a limit whose subject
    is shared by very many requests (an IP behind a carrier NAT): counted in the database,
    its one row would be locked by every booking transaction in turn and serialise them
    all. Each process counts for itself, so N processes allow up to N times the limit."""

    def __init__(self, limit: Limit, *, max_subjects: int = 100_000) -> None:
        self.limit = limit
        self.max_subjects = max_subjects
        self._window = -1
        self._counts: dict[str, int] = {}

    def hit(self, subject: str, *, now: datetime) -> int:
        window = int(now.timestamp()) // self.limit.window_seconds
        if window != self._window or len(self._counts) >= self.max_subjects:
            self._window, self._counts = window, {}
        n = self._counts.get(subject, 0) + 1
        self._counts[subject] = n
        return n


async def check(session: AsyncSession, limit: Limit, subject: str, *, now: datetime) -> None:
    """Count one event and refuse it with ``TooManyRequests`` (429, Retry-After) when over.

    Call it in its own short transaction before the action, so a refused attempt still
    counts (a brute-force loop cannot reset its own counter by failing).
    """
    count = await hit(session, limit, subject, now=now)
    if count > limit.max_events:
        raise TooManyRequests(retry_after=retry_after(limit, now))


async def purge_expired(session: AsyncSession, *, now: datetime) -> int:
    result = await session.execute(delete(RateCounter).where(RateCounter.expires_at <= now))
    return int(getattr(result, "rowcount", 0))
