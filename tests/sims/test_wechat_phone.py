"""The phone page drives real callbacks into our app and OAuth through the sim's consent."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx

from frontdesk.wechat.oa.menu import push_menu
from frontdesk.wechat.oa.oauth_routes import SESSION_COOKIE, openid_from_cookie


def phone(env: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=env.sim_app), base_url="http://127.0.0.1:8102"
    )


async def test_patient_follows_chats_and_opens_an_h5_page_signed_in(wechat_sim: Any) -> None:
    await push_menu(
        settings=wechat_sim.container.settings, platform=wechat_sim.client, tokens=wechat_sim.tokens
    )
    async with phone(wechat_sim) as p:
        page = await p.get("/phone")
        assert page.status_code == 200
        assert "/phone/static/phone.js" in page.text
        assert (await p.get("/phone/static/phone.js")).status_code == 200
        user = (await p.post("/phone/api/users", json={"nickname": "张三"})).json()
        openid = user["openid"]
        refused = await p.post("/phone/api/send", json={"openid": openid, "text": "hi"})
        assert refused.status_code == 409
        assert (await p.post("/phone/api/select", json={"openid": openid})).status_code == 200
        assert (await p.post("/phone/api/follow", json={"openid": openid})).json()["ok"]
        sent = await p.post("/phone/api/send", json={"openid": openid, "text": "明天几点开门"})
        assert sent.json()["ok"] is True
        state = (await p.get("/phone/api/state", params={"openid": openid})).json()
        assert state["user"] == {"openid": openid, "nickname": "张三", "following": True}
        assert [m["sender"] for m in state["chat"]] == ["account", "user", "account"]
        assert state["chat"][0]["text"].startswith("欢迎关注")
        assert state["menu"]["button"][0]["name"] == "预约挂号"
        view = (
            await p.post(
                "/phone/api/view",
                json={"openid": openid, "url": "http://127.0.0.1:8000/h5/cards?x=1"},
            )
        ).json()
        assert view["frame"] == ("http://testserver/wechat/oauth/start?next=%2Fh5%2Fcards%3Fx%3D1")
        # The frame: our OAuth start → sim consent (knows the phone's user by its cookie)
        start = await wechat_sim.front.get(
            urlsplit(view["frame"]).path + "?" + urlsplit(view["frame"]).query
        )
        consent = await p.get(start.headers["location"].split("#")[0])
        assert consent.status_code == 302
        back = urlsplit(consent.headers["location"])
        signed_in = await wechat_sim.front.get(f"{back.path}?{back.query}")
    assert signed_in.status_code == 303
    assert signed_in.headers["location"] == "/h5/cards?x=1"
    cookie = wechat_sim.front.cookies[SESSION_COOKIE]
    assert openid_from_cookie(wechat_sim.container.settings, cookie) == openid


async def test_unknown_user_and_bad_bodies_are_refused(wechat_sim: Any) -> None:
    async with phone(wechat_sim) as p:
        assert (await p.post("/phone/api/follow", json={"openid": "nobody"})).status_code == 404
        assert (await p.post("/phone/api/users", json={"nickname": ""})).status_code == 422
    assert wechat_sim.sim.users == {}


async def test_front_pages_may_be_framed_by_the_phone_only(wechat_sim: Any) -> None:
    response = await wechat_sim.front.get("/healthz")
    csp = response.headers["content-security-policy"]
    assert "frame-ancestors 'self' http://127.0.0.1:8102;" in csp
    assert "x-frame-options" not in response.headers
