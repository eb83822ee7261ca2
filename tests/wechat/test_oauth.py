"""snsapi_base sign-in through the simulator's consent page, and every way it refuses."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi import FastAPI

from frontdesk.core.clock import FrozenClock
from frontdesk.wechat.oa.oauth_routes import (
    SESSION_COOKIE,
    CurrentOpenId,
    SignedInOpenId,
    openid_from_cookie,
    safe_next,
)
from frontdesk.wechat.oa.port import WeChatRejected


def add_whoami(app: FastAPI) -> None:
    async def whoami(openid: CurrentOpenId) -> dict[str, str | None]:
        return {"openid": openid}

    app.add_api_route("/h5/whoami", whoami)


async def sign_in(
    env: Any, openid: str, *, next_url: str = "/h5/whoami"
) -> tuple[httpx.Response, str]:
    """Phone opens /wechat/oauth/start; WeChat (the sim) consents; back to our callback."""
    start = await env.front.get("/wechat/oauth/start", params={"next": next_url})
    assert start.status_code == 302
    location = start.headers["location"]
    assert location.endswith("#wechat_redirect")
    query = parse_qs(urlsplit(location).query)
    assert list(parse_qs(urlsplit(location).query)) == [
        "appid",
        "redirect_uri",
        "response_type",
        "scope",
        "state",
    ]
    assert query["scope"] == ["snsapi_base"]
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=env.sim_app), base_url="http://sim"
    ) as phone:
        consent = await phone.get(
            urlsplit(location).path,
            params={**{k: v[0] for k, v in query.items()}, "as_openid": openid},
        )
    assert consent.status_code == 302
    back = urlsplit(consent.headers["location"])
    callback_url = f"{back.path}?{back.query}"
    return await env.front.get(callback_url), callback_url


async def test_sign_in_sets_a_signed_session_and_redirects_to_next(wechat_sim: Any) -> None:
    add_whoami(wechat_sim.front_app)
    user = wechat_sim.sim.add_user("王五", following=True)
    response, _ = await sign_in(wechat_sim, user.openid, next_url="/h5/whoami?tab=1")
    assert response.status_code == 303
    assert response.headers["location"] == "/h5/whoami?tab=1"
    cookie = response.headers["set-cookie"]
    assert "httponly" in cookie.lower()
    assert "samesite=lax" in cookie.lower()
    me = await wechat_sim.front.get("/h5/whoami")
    assert me.json() == {"openid": user.openid}


async def test_callback_url_replayed_is_refused(wechat_sim: Any) -> None:
    user = wechat_sim.sim.add_user("赵六")
    first, callback_url = await sign_in(wechat_sim, user.openid)
    assert first.status_code == 303
    wechat_sim.front.cookies.clear()
    again = await wechat_sim.front.get(callback_url)
    assert again.status_code == 400
    assert SESSION_COOKIE not in again.cookies


async def test_without_a_code_the_page_says_open_in_wechat(wechat_sim: Any) -> None:
    response = await wechat_sim.front.get("/wechat/oauth/callback", headers={"accept": "text/html"})
    assert response.status_code == 400
    assert "请在微信中打开" in response.text
    assert SESSION_COOKIE not in response.cookies


async def test_tampered_state_is_refused(wechat_sim: Any) -> None:
    add_whoami(wechat_sim.front_app)
    start = await wechat_sim.front.get("/wechat/oauth/start", params={"next": "/h5/whoami"})
    state = parse_qs(urlsplit(start.headers["location"]).query)["state"][0]
    forged = state[:-1] + ("0" if state[-1] != "0" else "1")
    code = wechat_sim.sim.issue_code(wechat_sim.sim.add_user("钱七").openid)
    response = await wechat_sim.front.get(
        "/wechat/oauth/callback", params={"code": code, "state": forged}
    )
    assert response.status_code == 400
    assert (await wechat_sim.front.get("/h5/whoami")).json() == {"openid": None}
    # The code was not spent: WeChat never saw it.
    assert wechat_sim.sim.codes[code][2] is False


async def test_tampered_or_expired_session_cookie_is_signed_out(
    wechat_sim: Any, clock: FrozenClock
) -> None:
    add_whoami(wechat_sim.front_app)
    user = wechat_sim.sim.add_user("孙八")
    await sign_in(wechat_sim, user.openid)
    value = wechat_sim.front.cookies[SESSION_COOKIE]
    settings = wechat_sim.container.settings
    assert openid_from_cookie(settings, value) == user.openid
    other = "oSOMEONEELSE000000000000000"
    assert openid_from_cookie(settings, other + value[len(user.openid) :]) is None
    wechat_sim.front.cookies.set(SESSION_COOKIE, value[:-2] + "xx")
    assert (await wechat_sim.front.get("/h5/whoami")).json() == {"openid": None}


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/steal",
        "//evil.example/x",
        "/\\evil.example",
        "javascript:alert(1)",
        "http://127.0.0.1:9999/h5",
    ],
)
async def test_next_must_be_same_origin(wechat_sim: Any, target: str) -> None:
    response = await wechat_sim.front.get("/wechat/oauth/start", params={"next": target})
    assert response.status_code == 400
    assert "location" not in response.headers


def test_safe_next_keeps_same_origin_paths() -> None:
    base = "http://127.0.0.1:8000"
    assert safe_next("/h5/cards?x=1", public_base_url=base) == "/h5/cards?x=1"
    assert safe_next("http://127.0.0.1:8000/h5", public_base_url=base) == "/h5"
    assert safe_next(None, public_base_url=base) == "/"


async def test_code_is_single_use_and_expires(wechat_sim: Any, clock: FrozenClock) -> None:
    user = wechat_sim.sim.add_user("周九")
    code = wechat_sim.sim.issue_code(user.openid)
    identity = await wechat_sim.client.exchange_oauth_code(code)
    assert (identity.openid, identity.scope) == (user.openid, "snsapi_base")
    with pytest.raises(WeChatRejected) as used:
        await wechat_sim.client.exchange_oauth_code(code)
    assert used.value.errcode == 40163
    late = wechat_sim.sim.issue_code(user.openid)
    clock.advance(seconds=301)
    with pytest.raises(WeChatRejected) as expired:
        await wechat_sim.client.exchange_oauth_code(late)
    assert expired.value.errcode == 40029


async def test_signed_out_page_goes_through_sign_in_and_back(wechat_sim: Any) -> None:
    async def mine(openid: SignedInOpenId) -> dict[str, str]:
        return {"openid": openid}

    wechat_sim.front_app.add_api_route("/h5/mine", mine)
    first = await wechat_sim.front.get("/h5/mine?tab=2")
    assert first.status_code == 303
    assert first.headers["location"] == "/wechat/oauth/start?next=%2Fh5%2Fmine%3Ftab%3D2"
    user = wechat_sim.sim.add_user("吴十")
    signed_in, _ = await sign_in(wechat_sim, user.openid, next_url="/h5/mine?tab=2")
    assert signed_in.headers["location"] == "/h5/mine?tab=2"
    assert (await wechat_sim.front.get("/h5/mine?tab=2")).json() == {"openid": user.openid}
