"""Helpers for the window tests: the HIS calling our front server, signed as the bridge
signs (his/signing.py) with the bridge's key id and secret from our settings."""

from __future__ import annotations

import json
from typing import Any

import httpx
from sqlalchemy import func, select

from frontdesk.billing import models as bm
from frontdesk.core.clock import FrozenClock
from frontdesk.his import signing


class HisCaller:
    """The HIS's cashier station / order-sheet printer: signs every request it sends."""

    def __init__(self, app: Any, settings: Any, clock: FrozenClock) -> None:
        self.http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        )
        self.key_id = settings.his_key_id
        self.secret = settings.his_secret.get_secret_value()
        self.clock = clock

    def headers(
        self,
        method: str,
        path: str,
        body: bytes,
        *,
        query: str = "",
        secret: str | None = None,
        key_id: str | None = None,
        skew_seconds: int = 0,
        nonce: str | None = None,
    ) -> dict[str, str]:
        signed = signing.signed_headers(
            key_id=key_id or self.key_id,
            secret=secret or self.secret,
            method=method,
            path=path,
            query=query,
            body=body,
            unix_time=int(self.clock.now().timestamp()) + skew_seconds,
            nonce=nonce,
        )
        return {**signed.as_dict(), "Content-Type": "application/json"}

    async def post(self, path: str, payload: Any, **sign: Any) -> httpx.Response:
        body = json.dumps(payload, ensure_ascii=False).encode()
        return await self.http.post(
            path, content=body, headers=self.headers("POST", path, body, **sign)
        )

    async def get(self, path: str, query: str = "", **sign: Any) -> httpx.Response:
        url = f"{path}?{query}" if query else path
        return await self.http.get(url, headers=self.headers("GET", path, b"", query=query, **sign))

    async def aclose(self) -> None:
        await self.http.aclose()


async def requests_count(container: Any) -> int:
    async with container.db.session() as s:
        stmt = select(func.count()).select_from(bm.BillingCashierRequest)
        return int((await s.execute(stmt)).scalar_one())
