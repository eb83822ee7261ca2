"""Races on sign-in, reproduced with real concurrency on separate connections."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from frontdesk.console import service
from frontdesk.console.auth import cookie_options
from frontdesk.console.models import StaffSession, StaffUser
from frontdesk.core import migrate
from frontdesk.core.clock import FrozenClock
from frontdesk.core.database import Database
from frontdesk.core.settings import Environment, Settings

PASSWORD = "correct horse battery"
POLICY = service.Policy(
    idle=timedelta(minutes=30),
    absolute=timedelta(hours=12),
    lockout_attempts=5,
    lockout=timedelta(minutes=15),
)


async def _make_staff(committed: Database, clock: FrozenClock) -> tuple[int, str]:
    async with committed.session() as session:
        created = await service.create_staff(
            session,
            username="alice",
            display_name="Alice",
            role="admin",
            password=PASSWORD,
            now=clock.now(),
            actor="test",
        )
    return created.staff.id, created.totp_secret


async def _attempt(committed: Database, clock: FrozenClock, *, password: str, code: str) -> object:
    async with committed.session() as session:
        return await service.sign_in(
            session, username="alice", password=password, code=code, now=clock.now(), policy=POLICY
        )


async def test_the_same_code_sent_twice_at_once_opens_one_session(
    committed: Database, clock: FrozenClock
) -> None:
    staff_id, secret = await _make_staff(committed, clock)
    code = service.totp_code(secret, clock.now())

    results = await asyncio.gather(
        *(_attempt(committed, clock, password=PASSWORD, code=code) for _ in range(4))
    )

    assert sorted(type(r).__name__ for r in results) == [
        "Refused",
        "Refused",
        "Refused",
        "SignedIn",
    ]
    async with committed.session() as session:
        sessions = (
            await session.execute(
                select(func.count())
                .select_from(StaffSession)
                .where(StaffSession.staff_id == staff_id)
            )
        ).scalar_one()
        user = await session.get(StaffUser, staff_id)
    assert sessions == 1
    assert user is not None
    assert user.failed_attempts == 3


async def test_parallel_guessing_cannot_outrun_the_lock(
    committed: Database, clock: FrozenClock
) -> None:
    staff_id, secret = await _make_staff(committed, clock)

    await asyncio.gather(
        *(_attempt(committed, clock, password="guess guess guess", code="000000") for _ in range(9))
    )
    right = await _attempt(
        committed, clock, password=PASSWORD, code=service.totp_code(secret, clock.now())
    )

    assert right == service.Refused("locked")
    async with committed.session() as session:
        user = await session.get(StaffUser, staff_id)
        sessions = (
            await session.execute(select(func.count()).select_from(StaffSession))
        ).scalar_one()
    assert user is not None
    assert user.locked_until_at == clock.now() + timedelta(minutes=15)
    assert sessions == 0


async def test_console_models_match_the_migrations(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.run_sync(migrate.check_on)
    assert "0400_console" in await migrate.current_revisions(engine)


def test_the_session_cookie_is_secure_in_production_only() -> None:
    production = Settings.model_construct(env=Environment.production)
    test = Settings.model_construct(env=Environment.test)

    assert cookie_options(production) == {
        "path": "/console",
        "httponly": True,
        "samesite": "strict",
        "secure": True,
    }
    assert cookie_options(test)["secure"] is False
