from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
from fastapi import APIRouter
from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from frontdesk.core import inbox
from frontdesk.core.clock import now
from frontdesk.core.errors import Conflict, TooManyRequests
from frontdesk.core.inbox import InboxMessage
from frontdesk.web.deps import SessionDep


class Echo(BaseModel):
    name: str
    amount_fen: int


def _test_router() -> APIRouter:
    router = APIRouter()

    @router.post("/api/test/echo")
    async def echo(body: Echo, session: SessionDep) -> dict[str, object]:
        await inbox.receive(session, source="test", external_id=body.name, at=now())
        return {"name": body.name, "amount_fen": body.amount_fen}

    @router.get("/api/test/conflict")
    async def conflict() -> None:
        raise Conflict

    @router.get("/api/test/busy")
    async def busy() -> None:
        raise TooManyRequests(retry_after=3)

    @router.get("/test/boom")
    async def boom() -> None:
        raise RuntimeError("bug with id 320102199001011234")

    return router


async def _rows(db: AsyncSession) -> int:
    return int((await db.execute(select(func.count()).select_from(InboxMessage))).scalar_one())


async def test_healthz_and_readyz(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "checks": {"database": "ok", "migrations": "ok"}}


async def test_request_id_is_echoed_or_made(client: httpx.AsyncClient) -> None:
    given = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    made = await client.get("/healthz", headers={"X-Request-ID": "<script>"})
    assert len(made.headers["x-request-id"]) == 32


async def test_security_headers(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "default-src 'self'" in response.headers["content-security-policy"]
    # Framing: only our own origin, plus the WeChat simulator's phone page in development
    # (CSP frame-ancestors can name it; X-Frame-Options cannot, so it is left out then).
    csp = response.headers["content-security-policy"]
    assert "frame-ancestors 'self' http://127.0.0.1:8102;" in csp
    assert "x-frame-options" not in response.headers


async def test_valid_body_commits_through_the_request_session(
    app: object, client: httpx.AsyncClient, db: AsyncSession
) -> None:
    app.include_router(_test_router())  # type: ignore[attr-defined]
    response = await client.post("/api/test/echo", json={"name": "a", "amount_fen": 5})
    assert response.status_code == 200
    assert await _rows(db) == 1


async def test_oversized_body_gets_413_and_writes_nothing(
    app: object, client: httpx.AsyncClient, db: AsyncSession
) -> None:
    app.include_router(_test_router())  # type: ignore[attr-defined]
    big = json.dumps({"name": "x" * 2_000_000, "amount_fen": 1})
    response = await client.post(
        "/api/test/echo", content=big, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(40):
            yield b"x" * 65536

    chunked = await client.post(
        "/api/test/echo", content=chunks(), headers={"content-type": "application/json"}
    )
    assert chunked.status_code == 413
    assert await _rows(db) == 0


async def test_malformed_and_wrong_bodies_get_422_and_write_nothing(
    app: object, client: httpx.AsyncClient, db: AsyncSession
) -> None:
    app.include_router(_test_router())  # type: ignore[attr-defined]
    for content in (
        b"{not json",
        b"",
        b'{"name": "a"}',
        b'{"name": "a", "amount_fen": "x"}',
        b"\xff\xfe",
        b'{"name": ["a"], "amount_fen": 1}',
    ):
        response = await client.post(
            "/api/test/echo", content=content, headers={"content-type": "application/json"}
        )
        assert response.status_code == 422, content
        assert response.json()["error"]["code"] == "invalid"
    assert await _rows(db) == 0


async def test_errors_in_chinese_by_default_and_english_on_request(
    app: object, client: httpx.AsyncClient
) -> None:
    app.include_router(_test_router())  # type: ignore[attr-defined]
    zh = await client.get("/api/test/conflict")
    assert zh.status_code == 409
    assert zh.json()["error"]["message"] == "操作冲突，请刷新后重试"
    en = await client.get("/api/test/conflict", headers={"Accept-Language": "en-US,en;q=0.9"})
    assert en.json()["error"]["message"].startswith("That conflicts")
    busy = await client.get("/api/test/busy")
    assert (busy.status_code, busy.headers["retry-after"]) == (429, "3")


async def test_browsers_get_an_error_page(app: object, client: httpx.AsyncClient) -> None:
    app.include_router(_test_router())  # type: ignore[attr-defined]
    page = await client.get("/no/such/page", headers={"Accept": "text/html"})
    assert page.status_code == 404
    assert page.headers["content-type"].startswith("text/html")
    assert "找不到您要的内容" in page.text
    api = await client.get("/api/no/such")
    assert api.json()["error"]["code"] == "not_found"


async def test_unexpected_errors_are_500_without_details(
    app: object, client: httpx.AsyncClient
) -> None:
    app.include_router(_test_router())  # type: ignore[attr-defined]
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        response = await c.get("/test/boom")
    assert response.status_code == 500
    assert "320102" not in response.text
    assert response.json()["error"]["code"] == "internal_error"


async def test_production_forbids_framing_by_anyone_else() -> None:
    from frontdesk.core.settings import Settings
    from frontdesk.web.app import create_app
    from tests.core.test_settings import production_values

    app = create_app(Settings(_env_file=None, **production_values()))  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        response = await c.get("/healthz")
    assert response.headers["x-frame-options"] == "SAMEORIGIN"
    assert "frame-ancestors 'self';" in response.headers["content-security-policy"]
    assert response.headers["strict-transport-security"] == "max-age=31536000"
    await app.state.container.aclose()
