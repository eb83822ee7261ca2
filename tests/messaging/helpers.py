"""Messaging test helpers: phones of several patients, a signed-in staff console, images."""

from __future__ import annotations

import dataclasses
import re
import struct
import zlib
from typing import Any

import httpx
from sqlalchemy import func, select

from frontdesk.console.models import Role
from frontdesk.core.clock import FrozenClock
from tests.console.conftest import Staff, create_staff
from tests.console.conftest import sign_in as staff_sign_in
from tests.wechat.test_oauth import sign_in


async def phone(env: Any, name: str = "张三") -> tuple[httpx.AsyncClient, str]:
    """A new phone (its own cookie jar) signed in to our H5 pages as a new follower."""
    user = env.sim.add_user(name)
    await env.sim.user_follows(user.openid)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=env.front_app), base_url=FRONT)
    await sign_in(dataclasses.replace(env, front=client), user.openid, next_url="/h5/")
    return client, str(user.openid)


FRONT = "http://testserver"


async def console(
    env: Any, clock: FrozenClock, *, role: Role = Role.customer_service, username: str = "kefu"
) -> tuple[httpx.AsyncClient, str, Staff]:
    """A staff browser signed in to the console; returns it, its CSRF token, the staff."""
    async with env.container.db.session() as session:
        staff = await create_staff(session, clock, username=username, role=role)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=env.front_app), base_url=FRONT)
    token = await staff_sign_in(client, clock, staff)
    return client, token, staff


def csrf_of(page: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
    assert found is not None, "the page has no CSRF token"
    return found.group(1)


async def count(env: Any, model: Any, *where: Any) -> int:
    async with env.container.db.session() as s:
        stmt = select(func.count()).select_from(model)
        for clause in where:
            stmt = stmt.where(clause)
        return int((await s.execute(stmt)).scalar_one())


def png(width: int = 2, height: int = 2) -> bytes:
    """A real, decodable RGB PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    raw = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )
