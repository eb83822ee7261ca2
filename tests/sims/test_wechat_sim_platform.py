"""The simulated platform: token rules, callback pushes in all modes, timeouts and retries,
menu, JS-SDK ticket."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse
from sqlalchemy import func, select

from frontdesk.container import Container
from frontdesk.core.clock import FrozenClock
from frontdesk.core.inbox import InboxMessage
from frontdesk.sims.wechat_sim.app import create_sim_app
from frontdesk.sims.wechat_sim.platform import SERVICE_UNAVAILABLE, SimConfig
from frontdesk.wechat.oa.crypto import jssdk_signature
from frontdesk.wechat.oa.menu import push_menu, render_menu
from frontdesk.wechat.oa.port import WeChatUnavailable
from tests.sims.wechat_env import build_wechat_env


def sim_http(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sim")


async def test_token_overlap_five_minutes(wechat_sim: Any, clock: FrozenClock) -> None:
    first = await wechat_sim.client.fetch_access_token()
    second = await wechat_sim.client.fetch_access_token()
    assert first.token != second.token
    assert wechat_sim.sim.token_error(first.token) is None
    clock.advance(seconds=301)
    assert wechat_sim.sim.token_error(first.token) == (42001, "access_token expired")
    assert wechat_sim.sim.token_error(second.token) is None
    assert wechat_sim.sim.token_error("made-up")[0] == 40001


async def test_stable_token_same_while_valid_and_force_refresh_limits(
    wechat_sim: Any, clock: FrozenClock
) -> None:
    a = await wechat_sim.client.fetch_stable_token()
    b = await wechat_sim.client.fetch_stable_token()
    assert a.token == b.token
    forced = await wechat_sim.client.fetch_stable_token(force_refresh=True)
    assert forced.token != a.token
    with pytest.raises(WeChatUnavailable) as info:
        await wechat_sim.client.fetch_stable_token(force_refresh=True)
    assert info.value.errcode == 45011  # 30 s apart: a quota, so "retry later"
    clock.advance(seconds=31)
    assert (await wechat_sim.client.fetch_stable_token(force_refresh=True)).token != forced.token


@pytest.mark.parametrize("mode", ["plaintext", "compatible", "safe"])
async def test_chat_round_trip_in_each_mode(
    container: Container, clock: FrozenClock, mode: str
) -> None:
    container.settings = container.settings.model_copy(update={"wechat_callback_mode": mode})
    env = build_wechat_env(container, clock)
    try:
        user = env.sim.add_user("张三")
        follow = await env.sim.user_follows(user.openid, scene="lobby")
        assert follow.ok
        assert follow.reply is not None
        assert follow.reply["Content"].startswith("欢迎关注")
        said = await env.sim.user_sends_text(user.openid, "你好")
        assert said.ok
        assert said.reply is not None
        assert said.reply["ToUserName"] == user.openid
        assert said.reply["FromUserName"] == env.sim.config.original_id
        assert [(e.sender, e.text) for e in env.sim.chat(user.openid)][-2:] == [
            ("user", "你好"),
            ("account", said.reply["Content"]),
        ]
    finally:
        await env.aclose()


async def test_slow_front_server_gets_three_deliveries_then_user_sees_failure(
    clock: FrozenClock,
) -> None:
    calls: list[str] = []
    slow = FastAPI()

    @slow.post("/wechat/callback")
    async def _slow(request: Request) -> PlainTextResponse:
        calls.append(request.query_params["nonce"])
        await asyncio.sleep(0.3)
        return PlainTextResponse("success")

    app = create_sim_app(
        SimConfig(callback_url="http://front/wechat/callback", callback_timeout_seconds=0.1),
        callback_transport=httpx.ASGITransport(app=slow),
    )
    sim = app.state.platform
    try:
        user = sim.add_user("慢")
        delivery = await sim.user_sends_text(user.openid, "在吗")
    finally:
        await sim.aclose()
    assert (delivery.ok, delivery.attempts, delivery.outcome) == (False, 3, SERVICE_UNAVAILABLE)
    assert delivery.statuses == ["timeout", "timeout", "timeout"]
    assert len(set(calls)) == 1  # the same request, re-sent
    assert sim.chat(user.openid)[-1].text == SERVICE_UNAVAILABLE


async def test_re_delivery_is_answered_once_by_our_server(wechat_sim: Any) -> None:
    user = wechat_sim.sim.add_user("重")
    fields = {
        "ToUserName": "gh",
        "FromUserName": user.openid,
        "CreateTime": int(wechat_sim.sim.clock()),
        "MsgType": "text",
        "Content": "重复",
        "MsgId": 123456789,
    }
    first = await wechat_sim.sim.push(fields)
    second = await wechat_sim.sim.push(fields)
    assert first.reply == second.reply
    async with wechat_sim.container.db.session() as session:
        count = (await session.execute(select(func.count()).select_from(InboxMessage))).scalar_one()
    assert count == 1


async def test_menu_pushed_from_settings(wechat_sim: Any) -> None:
    sent = await push_menu(
        settings=wechat_sim.container.settings, platform=wechat_sim.client, tokens=wechat_sim.tokens
    )
    assert wechat_sim.sim.menu == sent == render_menu(wechat_sim.container.settings)
    assert sent["button"][0]["url"] == "http://127.0.0.1:8000/h5/booking"
    async with sim_http(wechat_sim.sim_app) as http:
        token = await wechat_sim.tokens.get()
        got = await http.get("/cgi-bin/menu/get", params={"access_token": token})
        assert got.json() == {"menu": sent}
        bad = await http.post(
            "/cgi-bin/menu/create",
            params={"access_token": token},
            json={"button": [{"type": "view", "name": "x", "url": "ftp:x"}]},
        )
        assert bad.json()["errcode"] == 40016
    assert wechat_sim.sim.menu == sent


async def test_js_ticket_and_signature_check(wechat_sim: Any) -> None:
    token = await wechat_sim.tokens.get()
    ticket = await wechat_sim.client.get_js_ticket(token)
    url = "http://127.0.0.1:8000/h5/pay?order=1"
    signature = jssdk_signature(jsapi_ticket=ticket.ticket, noncestr="abc", timestamp=1, url=url)
    async with sim_http(wechat_sim.sim_app) as http:
        ok = await http.post(
            "/sim/jssdk/check",
            json={"url": url, "nonceStr": "abc", "timestamp": 1, "signature": signature},
        )
        bad = await http.post(
            "/sim/jssdk/check",
            json={"url": url + "&x=2", "nonceStr": "abc", "timestamp": 1, "signature": signature},
        )
    assert ok.json() == {"ok": True}
    assert bad.json() == {"ok": False}


async def test_template_send_checks(wechat_sim: Any) -> None:
    token = await wechat_sim.tokens.get()
    sim = wechat_sim.sim
    fan = sim.add_user("粉丝", following=True)
    stranger = sim.add_user("路人")

    async def send(body: dict[str, Any]) -> dict[str, Any]:
        async with sim_http(wechat_sim.sim_app) as http:
            response = await http.post(
                "/cgi-bin/message/template/send", params={"access_token": token}, json=body
            )
        result: dict[str, Any] = response.json()
        return result

    good = {
        "touser": fan.openid,
        "template_id": "TPL_REPORT_READY",
        "data": {"thing1": {"value": "血常规"}},
        "client_msg_id": "c1",
    }
    first = await send(good)
    assert first["errcode"] == 0
    assert (await send(good))["msgid"] == first["msgid"]  # client_msg_id dedupe
    assert len(sim.sent_templates) == 1
    assert (await send({**good, "touser": stranger.openid}))["errcode"] == 43004
    assert (await send({**good, "touser": "o-unknown"}))["errcode"] == 40003
    assert (await send({**good, "template_id": "NOPE"}))["errcode"] == 40037
    assert (await send({**good, "data": {"nokey": {"value": "x"}}}))["errcode"] == 47003
    assert len(sim.sent_templates) == 1


async def test_concurrent_re_deliveries_act_once(wechat_sim: Any) -> None:
    from frontdesk.wechat.oa.models import WeChatTextMessage

    user = wechat_sim.sim.add_user("并发", following=True)
    fields = {
        "ToUserName": "gh",
        "FromUserName": user.openid,
        "CreateTime": int(wechat_sim.sim.clock()),
        "MsgType": "text",
        "Content": "同时到达",
        "MsgId": 987654321,
    }
    deliveries = await asyncio.gather(*(wechat_sim.sim.push(fields) for _ in range(10)))
    assert all(d.ok for d in deliveries)
    assert {d.reply["Content"] if d.reply else None for d in deliveries} == {
        "您的留言已收到，已转到留言板，工作人员会尽快回复。"
    }
    async with wechat_sim.container.db.session() as session:
        texts = (
            await session.execute(select(func.count()).select_from(WeChatTextMessage))
        ).scalar_one()
        inbox = (await session.execute(select(func.count()).select_from(InboxMessage))).scalar_one()
    assert (texts, inbox) == (1, 1)


async def test_fault_injection_endpoint(wechat_sim: Any) -> None:
    async with sim_http(wechat_sim.sim_app) as http:
        ok = await http.post("/sim/inject", json={"operation": "stable_token", "errcode": -1})
        bad = await http.post("/sim/inject", json={"operation": "nuke", "errcode": -1})
    assert ok.status_code == 200
    assert bad.status_code == 422
    with pytest.raises(WeChatUnavailable) as info:
        await wechat_sim.client.fetch_stable_token()
    assert info.value.errcode == -1
    assert (await wechat_sim.client.fetch_stable_token()).token


async def test_authorize_page_without_a_phone_user_lists_users_escaped(wechat_sim: Any) -> None:
    wechat_sim.sim.add_user("<script>x</script>")
    async with sim_http(wechat_sim.sim_app) as http:
        page = await http.get(
            "/connect/oauth2/authorize",
            params={
                "appid": wechat_sim.sim.config.appid,
                "redirect_uri": "http://testserver/cb",
                "response_type": "code",
                "scope": "snsapi_base",
                "state": "s",
            },
        )
        wrong = await http.get(
            "/connect/oauth2/authorize",
            params={
                "appid": "wxother",
                "redirect_uri": "http://testserver/cb",
                "response_type": "code",
                "scope": "snsapi_base",
                "state": "s",
            },
        )
    assert page.status_code == 200
    assert "<script>x" not in page.text
    assert "&lt;script&gt;x" in page.text
    assert wrong.status_code == 400
    assert wechat_sim.sim.codes == {}
