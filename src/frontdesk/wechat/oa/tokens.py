"""One global access token shared by every process, refreshed by one process at a time.

The token lives in the ``wechat_access_token`` row of the AppID. A caller that finds it
missing, close to expiry, or known bad (40001/40014/42001 from WeChat) tries to take a short
lease on the row with one guarded ``UPDATE ... WHERE lease expired``: the one that gets it
calls ``stable_token`` and writes the new token; every other caller waits for the row to
change and reuses what it finds. So a thousand concurrent callers cause one request to
WeChat, in one process or in many (wechat.md §2.3).

Each step runs in its own short transaction on the shared database, never in the caller's
request transaction, so the token survives a rolled-back request and the lock is never held
while WeChat answers.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from frontdesk.core.clock import now as clock_now
from frontdesk.core.sql import insert_ignoring_conflict
from frontdesk.wechat.oa.models import WeChatAccessToken
from frontdesk.wechat.oa.port import WeChatPlatform, WeChatUnavailable

log = logging.getLogger("frontdesk.wechat.oa.tokens")

LEASE_SECONDS = 30.0
WAIT_STEP_SECONDS = 0.02


class TokenManager:
    what = "access token"

    def __init__(
        self,
        *,
        platform: WeChatPlatform,
        sessionmaker: Any,
        appid: str,
        key: str | None = None,
        refresh_margin_seconds: int = 300,
        wait_timeout_seconds: float = 15.0,
    ) -> None:
        self.platform = platform
        self.sessionmaker = sessionmaker
        self.appid = appid
        self.key = key or appid
        self.margin = timedelta(seconds=refresh_margin_seconds)
        self.wait_timeout_seconds = wait_timeout_seconds
        # A per-process copy avoids a database read per call; it is only a cache of the row.
        self._cached: tuple[str, datetime] | None = None

    def _fresh(self, token: str | None, expires_at: datetime | None, now: datetime) -> bool:
        return bool(token) and expires_at is not None and expires_at - self.margin > now

    async def get(self) -> str:
        """A valid access token, refreshing it first if it is missing or about to expire."""
        now = clock_now()
        if self._cached and self._fresh(self._cached[0], self._cached[1], now):
            return self._cached[0]
        return await self._obtain(bad_token=None)

    async def invalidate(self, bad_token: str) -> str:
        """WeChat said ``bad_token`` is invalid or expired: get a new one at once.

        Many callers reporting the same bad token cause one refresh: a caller whose bad
        token was already replaced just takes the replacement.
        """
        if self._cached and self._cached[0] == bad_token:
            self._cached = None
        return await self._obtain(bad_token=bad_token)

    async def _read(self) -> WeChatAccessToken | None:
        async with self.sessionmaker() as session, session.begin():
            row = (
                await session.execute(
                    select(WeChatAccessToken).where(WeChatAccessToken.appid == self.key)
                )
            ).scalar_one_or_none()
            return row  # type: ignore[no-any-return]

    def _usable(
        self, row: WeChatAccessToken | None, bad_token: str | None, now: datetime
    ) -> str | None:
        if row is None or not self._fresh(row.access_token, row.expires_at, now):
            return None
        if bad_token is not None and row.access_token == bad_token:
            return None
        assert row.access_token is not None
        assert row.expires_at is not None
        self._cached = (row.access_token, row.expires_at)
        return row.access_token

    async def _obtain(self, *, bad_token: str | None) -> str:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_timeout_seconds
        await self._ensure_row()
        while True:
            now = clock_now()
            row = await self._read()
            token = self._usable(row, bad_token, now)
            if token is not None:
                return token
            lease = await self._take_lease(now)
            if lease is not None:
                return await self._refresh(lease, bad_token=bad_token)
            if loop.time() > deadline:
                raise WeChatUnavailable(
                    -2,
                    "timed out waiting for another process to refresh the access token",
                    operation="token",
                )
            await asyncio.sleep(WAIT_STEP_SECONDS)

    async def _ensure_row(self) -> None:
        async with self.sessionmaker() as session, session.begin():
            await session.execute(
                insert_ignoring_conflict(
                    session,
                    WeChatAccessToken.__table__,
                    {"appid": self.key, "refresh_count": 0},
                    conflict_columns=["appid"],
                )
            )

    async def _take_lease(self, now: datetime) -> str | None:
        lease = uuid.uuid4().hex
        async with self.sessionmaker() as session, session.begin():
            result = await session.execute(
                update(WeChatAccessToken)
                .where(
                    WeChatAccessToken.appid == self.key,
                    (WeChatAccessToken.lease_until_at.is_(None))
                    | (WeChatAccessToken.lease_until_at < now),
                )
                .values(lease_token=lease, lease_until_at=now + timedelta(seconds=LEASE_SECONDS))
                .execution_options(synchronize_session=False)
            )
            return lease if result.rowcount == 1 else None

    async def _release(self, lease: str) -> None:
        async with self.sessionmaker() as session, session.begin():
            await session.execute(
                update(WeChatAccessToken)
                .where(WeChatAccessToken.appid == self.key, WeChatAccessToken.lease_token == lease)
                .values(lease_token=None, lease_until_at=None)
                .execution_options(synchronize_session=False)
            )

    async def _refresh(self, lease: str, *, bad_token: str | None) -> str:
        # Re-read under the lease: another process may have refreshed between our read and
        # our lease (its lease ended just before ours began).
        row = await self._read()
        token = self._usable(row, bad_token, clock_now())
        if token is not None:
            await self._release(lease)
            return token
        try:
            value, expires_in = await self._fetch(bad_token)
        except BaseException:
            await self._release(lease)
            raise
        now = clock_now()
        expires_at = now + timedelta(seconds=expires_in)
        async with self.sessionmaker() as session, session.begin():
            await session.execute(
                update(WeChatAccessToken)
                .where(WeChatAccessToken.appid == self.key, WeChatAccessToken.lease_token == lease)
                .values(
                    access_token=value,
                    expires_at=expires_at,
                    refreshed_at=now,
                    lease_token=None,
                    lease_until_at=None,
                    refresh_count=WeChatAccessToken.refresh_count + 1,
                )
                .execution_options(synchronize_session=False)
            )
        self._cached = (value, expires_at)
        log.info("wechat %s refreshed; valid for %ss", self.what, expires_in)
        return value

    async def _fetch(self, bad_token: str | None) -> tuple[str, int]:
        fetched = await self.platform.fetch_stable_token(force_refresh=False)
        if bad_token is not None and fetched.token == bad_token:
            # The platform still hands out the token it just refused: force a new one.
            fetched = await self.platform.fetch_stable_token(force_refresh=True)
        return fetched.token, fetched.expires_in_seconds


async def call_with_token(tokens: TokenManager, call: Any) -> Any:
    """Run ``await call(token)``; on 40001/40014/42001 refresh the token once and retry.

    The retry happens once: a second token error is WeChat's final answer.
    """
    from frontdesk.wechat.oa.port import WeChatRejected

    token = await tokens.get()
    try:
        return await call(token)
    except WeChatRejected as exc:
        if not exc.token_invalid:
            raise
        log.info("wechat answered errcode %s: refreshing the access token", exc.errcode)
        token = await tokens.invalidate(token)
        return await call(token)


class JsTicketManager(TokenManager):
    """The JS-SDK ``jsapi_ticket``, shared and refreshed exactly like the access token
    (its own row, keyed ``<appid>#jsapi``); WeChat limits how often it may be fetched."""

    what = "jsapi ticket"

    def __init__(self, *, tokens: TokenManager, refresh_margin_seconds: int = 300) -> None:
        super().__init__(
            platform=tokens.platform,
            sessionmaker=tokens.sessionmaker,
            appid=tokens.appid,
            key=f"{tokens.appid}#jsapi",
            refresh_margin_seconds=refresh_margin_seconds,
        )
        self.tokens = tokens

    async def _fetch(self, bad_token: str | None) -> tuple[str, int]:
        ticket = await call_with_token(self.tokens, self.platform.get_js_ticket)
        return ticket.ticket, ticket.expires_in_seconds


async def jssdk_config(
    tickets: JsTicketManager, *, url: str, js_api_list: list[str]
) -> dict[str, Any]:
    """The ``wx.config`` object for the page at ``url`` (full URL, fragment removed)."""
    import secrets

    from frontdesk.wechat.oa.crypto import jssdk_signature

    ticket = await tickets.get()
    timestamp = int(clock_now().timestamp())
    nonce = secrets.token_hex(8)
    return {
        "appId": tickets.appid,
        "timestamp": timestamp,
        "nonceStr": nonce,
        "signature": jssdk_signature(
            jsapi_ticket=ticket, noncestr=nonce, timestamp=timestamp, url=url
        ),
        "jsApiList": list(js_api_list),
    }
