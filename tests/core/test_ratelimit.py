from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from frontdesk.container import Container
from frontdesk.core import ratelimit
from frontdesk.core.clock import FrozenClock
from frontdesk.core.errors import TooManyRequests
from frontdesk.core.ratelimit import Limit, RateCounter

BIND = Limit("bind", max_events=3, window_seconds=60)


async def test_limit_refuses_over_the_count_with_retry_after(
    db: AsyncSession, clock: FrozenClock
) -> None:
    for _ in range(3):
        await ratelimit.check(db, BIND, "openid-a", now=clock.now())
    clock.advance(seconds=20)
    with pytest.raises(TooManyRequests) as exc:
        await ratelimit.check(db, BIND, "openid-a", now=clock.now())
    assert exc.value.retry_after == 40
    # Another subject has its own counter.
    await ratelimit.check(db, BIND, "openid-b", now=clock.now())
    # A new window starts afresh.
    clock.advance(seconds=40)
    await ratelimit.check(db, BIND, "openid-a", now=clock.now())


async def test_concurrent_hits_are_all_counted(container: Container, clock: FrozenClock) -> None:
    async def one() -> int:
        async with container.db.session() as s:
            return await ratelimit.hit(s, BIND, "burst", now=clock.now())

    counts = await asyncio.gather(*(one() for _ in range(20)))
    assert sorted(counts) == list(range(1, 21))


async def test_expired_counters_are_purged(db: AsyncSession, clock: FrozenClock) -> None:
    await ratelimit.hit(db, BIND, "x", now=clock.now())
    clock.advance(seconds=61)
    await ratelimit.hit(db, BIND, "y", now=clock.now())
    assert await ratelimit.purge_expired(db, now=clock.now()) == 1
    left = (await db.execute(select(func.count()).select_from(RateCounter))).scalar_one()
    assert left == 1


def test_a_limit_must_allow_something() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Limit("x", max_events=0, window_seconds=60)
