"""Console test helpers: staff factories and a signed-in client."""

from __future__ import annotations

import re
from dataclasses import dataclass

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from frontdesk.console import service
from frontdesk.console.models import Role, StaffSession, StaffUser
from frontdesk.core.audit import AuditEntry
from frontdesk.core.clock import FrozenClock

PASSWORD = "correct horse battery"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass(frozen=True)
class Staff:
    id: int
    username: str
    secret: str
    role: Role


async def create_staff(
    db: AsyncSession,
    clock: FrozenClock,
    *,
    username: str = "alice",
    role: Role = Role.admin,
    password: str = PASSWORD,
) -> Staff:
    created = await service.create_staff(
        db,
        username=username,
        display_name=username.title(),
        role=role.value,
        password=password,
        now=clock.now(),
        actor="test",
    )
    return Staff(id=created.staff.id, username=username, secret=created.totp_secret, role=role)


def csrf_from(html: str) -> str:
    match = _CSRF.search(html)
    assert match is not None, "page has no CSRF field"
    return match.group(1)


async def post_login(
    client: httpx.AsyncClient, *, username: str, password: str, code: str
) -> httpx.Response:
    page = await client.get("/console/login")
    assert page.status_code == 200
    return await client.post(
        "/console/login",
        data={
            "username": username,
            "password": password,
            "code": code,
            "csrf_token": csrf_from(page.text),
        },
    )


async def sign_in(client: httpx.AsyncClient, clock: FrozenClock, staff: Staff) -> str:
    """Sign ``staff`` in and return the CSRF token of the new session."""
    response = await post_login(
        client,
        username=staff.username,
        password=PASSWORD,
        code=service.totp_code(staff.secret, clock.now()),
    )
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/console/"
    home = await client.get("/console/")
    assert home.status_code == 200
    return csrf_from(home.text)


async def count_rows(db: AsyncSession, model: type, *where: object) -> int:
    stmt = select(func.count()).select_from(model)
    for clause in where:
        stmt = stmt.where(clause)  # type: ignore[arg-type]
    return int((await db.execute(stmt)).scalar_one())


async def audit_rows(db: AsyncSession, *, action: str) -> list[AuditEntry]:
    rows = await db.execute(
        select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)
    )
    return list(rows.scalars())


async def reload_staff(db: AsyncSession, staff_id: int) -> StaffUser:
    user = await db.get(StaffUser, staff_id, populate_existing=True)
    assert user is not None
    return user


async def live_sessions(db: AsyncSession, staff_id: int) -> int:
    return await count_rows(
        db, StaffSession, StaffSession.staff_id == staff_id, StaffSession.revoked_at.is_(None)
    )
