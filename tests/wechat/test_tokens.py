"""The shared access token: one refresh for many callers, early refresh, refresh on 40001."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import select

from frontdesk.core.clock import FrozenClock
from frontdesk.wechat.oa.models import WeChatAccessToken
from frontdesk.wechat.oa.port import WeChatRejected, WeChatUnavailable
from frontdesk.wechat.oa.tokens import TokenManager, call_with_token


async def test_many_concurrent_callers_cause_one_token_request(wechat_sim: Any) -> None:
    tokens = await asyncio.gather(*(wechat_sim.tokens.get() for _ in range(60)))
    assert len(set(tokens)) == 1
    assert wechat_sim.sim.stable_token_requests == 1
    assert wechat_sim.sim.token_requests == 0
    assert wechat_sim.sim.token_error(tokens[0]) is None


async def test_processes_share_the_token_through_the_database(wechat_sim: Any) -> None:
    # Four managers = four processes: each has its own memory, all share the row.
    managers = [
        TokenManager(
            platform=wechat_sim.client,
            sessionmaker=wechat_sim.container.db.sessionmaker,
            appid=wechat_sim.sim.config.appid,
        )
        for _ in range(4)
    ]
    tokens = await asyncio.gather(*(m.get() for m in managers for _ in range(10)))
    assert len(set(tokens)) == 1
    assert wechat_sim.sim.stable_token_requests == 1
    async with wechat_sim.container.db.session() as session:
        row = (await session.execute(select(WeChatAccessToken))).scalar_one()
    assert (row.access_token, row.refresh_count, row.lease_token) == (tokens[0], 1, None)


async def test_refreshed_before_expiry(wechat_sim: Any, clock: FrozenClock) -> None:
    first = await wechat_sim.tokens.get()
    clock.advance(seconds=7200 - 301)
    assert await wechat_sim.tokens.get() == first  # still outside the 300 s margin
    assert wechat_sim.sim.stable_token_requests == 1
    clock.advance(seconds=2)
    second = await wechat_sim.tokens.get()
    assert second != first
    assert wechat_sim.sim.stable_token_requests == 2
    # The old one keeps working during WeChat's five-minute overlap.
    assert wechat_sim.sim.token_error(first) is None


async def test_40001_refreshes_once_for_all_callers(wechat_sim: Any) -> None:
    sim = wechat_sim.sim
    user = sim.add_user("张三", following=True)
    first = await wechat_sim.tokens.get()
    sim.revoke_token(first)

    async def info(token: str) -> Any:
        return await wechat_sim.client.get_user_info(token, user.openid)

    results = await asyncio.gather(*(call_with_token(wechat_sim.tokens, info) for _ in range(20)))
    assert {r.openid for r in results} == {user.openid}
    assert sim.stable_token_requests == 2
    assert await wechat_sim.tokens.get() != first


async def test_token_refused_although_platform_still_hands_it_out(wechat_sim: Any) -> None:
    sim = wechat_sim.sim
    user = sim.add_user("李四", following=True)
    first = await wechat_sim.tokens.get()
    sim.inject("user_info", 40001)

    async def info(token: str) -> Any:
        return await wechat_sim.client.get_user_info(token, user.openid)

    assert (await call_with_token(wechat_sim.tokens, info)).openid == user.openid
    # normal stable_token returned the same token, so the manager forced a new one.
    assert sim.stable_token_requests == 3
    assert await wechat_sim.tokens.get() != first


async def test_failed_refresh_releases_the_lease(wechat_sim: Any) -> None:
    wechat_sim.sim.inject("stable_token", -1)
    with pytest.raises(WeChatUnavailable):
        await wechat_sim.tokens.get()
    assert await wechat_sim.tokens.get()
    assert wechat_sim.sim.stable_token_requests == 2


async def test_bad_secret_is_rejected_terminally(wechat_sim: Any) -> None:
    wechat_sim.sim.config.appsecret = "rotated"
    with pytest.raises(WeChatRejected) as info:
        await wechat_sim.tokens.get()
    assert info.value.errcode == 40125


async def test_js_ticket_is_shared_and_signs_a_config_the_sim_accepts(wechat_sim: Any) -> None:
    import httpx

    from frontdesk.wechat.oa.tokens import jssdk_config

    tickets = wechat_sim.container.services["wechat_js_tickets"]
    url = "http://127.0.0.1:8000/h5/pay?order=9"
    configs = await asyncio.gather(
        *(jssdk_config(tickets, url=url, js_api_list=["chooseWXPay"]) for _ in range(10))
    )
    assert wechat_sim.sim.ticket is not None
    assert wechat_sim.sim.ticket_requests == 1
    assert wechat_sim.sim.stable_token_requests == 1
    config = configs[0]
    assert config["appId"] == wechat_sim.sim.config.appid
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=wechat_sim.sim_app), base_url="http://sim"
    ) as http:
        check = await http.post("/sim/jssdk/check", json={**config, "url": url + "#top"})
    assert check.json() == {"ok": True}
