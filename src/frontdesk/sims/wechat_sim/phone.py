"""The phone page: a person plays a patient in the browser.

Pick or create a virtual patient, follow the account, use its menu, chat (each message is a
real signed callback to the front server), receive template messages as cards, and open the
hospital's H5 pages in the phone frame, signed in through the simulator's OAuth page.
The pay sheet and the payment code belong to the Pay part of the simulator: the page leaves
a hook for them (``#pay-hook`` and ``window.wxsim.hooks``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, Field

from frontdesk.sims.wechat_sim.platform import Delivery, SimPlatform

HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
router = APIRouter(prefix="/phone")
USER_COOKIE = "wxsim_openid"


def _sim(request: Request) -> SimPlatform:
    platform: SimPlatform = request.app.state.platform
    return platform


class NewUser(BaseModel):
    nickname: str = Field(min_length=1, max_length=20)


class UserAction(BaseModel):
    openid: str = Field(min_length=1, max_length=64)


class SendText(UserAction):
    text: str = Field(min_length=1, max_length=600)


class Click(UserAction):
    key: str = Field(min_length=1, max_length=128)


class View(UserAction):
    url: str = Field(min_length=1, max_length=1000)


class Scan(UserAction):
    scene: str = Field(min_length=1, max_length=64)


def _user_json(sim: SimPlatform, openid: str) -> dict[str, Any]:
    user = sim.users[openid]
    return {"openid": user.openid, "nickname": user.nickname, "following": user.following}


def _delivery_json(delivery: Delivery) -> dict[str, Any]:
    return {
        "ok": delivery.ok,
        "outcome": delivery.outcome,
        "attempts": delivery.attempts,
        "statuses": delivery.statuses,
    }


def _known(sim: SimPlatform, openid: str) -> JSONResponse | None:
    if openid not in sim.users:
        return JSONResponse({"error": "unknown user"}, status_code=404)
    return None


@router.get("", response_class=HTMLResponse)
async def phone_page(request: Request) -> HTMLResponse:
    sim = _sim(request)
    response: HTMLResponse = templates.TemplateResponse(
        request,
        "phone.html",
        {
            "account": sim.config.original_id,
            "front": sim.config.front_base_url,
            "sms": sim.config.sms_inbox_base or "",
        },
    )
    return response


@router.get("/api/state")
async def state(request: Request, openid: str | None = None) -> JSONResponse:
    sim = _sim(request)
    current = openid if openid in sim.users else None
    chat = [
        {"sender": e.sender, "kind": e.kind, "text": e.text, "at": int(e.at), "card": e.card}
        for e in (sim.chat(current) if current else [])
    ]
    return JSONResponse(
        {
            "users": [_user_json(sim, u) for u in sim.users],
            "user": _user_json(sim, current) if current else None,
            "chat": chat,
            "menu": sim.menu,
            "front": sim.config.front_base_url,
        }
    )


@router.post("/api/users")
async def create_user(request: Request, body: NewUser) -> JSONResponse:
    sim = _sim(request)
    user = sim.add_user(body.nickname.strip())
    return JSONResponse(_user_json(sim, user.openid), status_code=201)


@router.post("/api/select", response_model=None)
async def select_user(request: Request, body: UserAction) -> Response:
    """Hold the phone as this user: the OAuth page reads the cookie to know who consents."""
    sim = _sim(request)
    if (missing := _known(sim, body.openid)) is not None:
        return missing
    response = JSONResponse(_user_json(sim, body.openid))
    response.set_cookie(USER_COOKIE, body.openid, httponly=True, samesite="lax")
    return response


@router.post("/api/follow", response_model=None)
async def follow(request: Request, body: UserAction) -> Response:
    sim = _sim(request)
    if (missing := _known(sim, body.openid)) is not None:
        return missing
    return JSONResponse(_delivery_json(await sim.user_follows(body.openid)))


@router.post("/api/unfollow", response_model=None)
async def unfollow(request: Request, body: UserAction) -> Response:
    sim = _sim(request)
    if (missing := _known(sim, body.openid)) is not None:
        return missing
    return JSONResponse(_delivery_json(await sim.user_unfollows(body.openid)))


@router.post("/api/send", response_model=None)
async def send(request: Request, body: SendText) -> Response:
    sim = _sim(request)
    if (missing := _known(sim, body.openid)) is not None:
        return missing
    if not sim.users[body.openid].following:
        return JSONResponse({"error": "follow the account first"}, status_code=409)
    return JSONResponse(_delivery_json(await sim.user_sends_text(body.openid, body.text)))


@router.post("/api/click", response_model=None)
async def click(request: Request, body: Click) -> Response:
    sim = _sim(request)
    if (missing := _known(sim, body.openid)) is not None:
        return missing
    return JSONResponse(_delivery_json(await sim.user_clicks(body.openid, key=body.key)))


@router.post("/api/view", response_model=None)
async def view(request: Request, body: View) -> Response:
    """A view button: WeChat reports the VIEW event, then opens the page in its browser.
    The page is entered through the front server's OAuth start so the user is signed in."""
    sim = _sim(request)
    if (missing := _known(sim, body.openid)) is not None:
        return missing
    delivery = await sim.user_clicks(body.openid, url=body.url)
    parts = urlsplit(body.url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    front = sim.config.front_base_url.rstrip("/")
    frame = f"{front}/wechat/oauth/start?next={quote(path, safe='')}"
    return JSONResponse({**_delivery_json(delivery), "frame": frame})


@router.post("/api/scan", response_model=None)
async def scan(request: Request, body: Scan) -> Response:
    sim = _sim(request)
    if (missing := _known(sim, body.openid)) is not None:
        return missing
    return JSONResponse(_delivery_json(await sim.user_scans(body.openid, body.scene)))
