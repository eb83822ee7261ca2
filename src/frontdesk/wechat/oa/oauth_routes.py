"""snsapi_base sign-in for the H5 pages (wechat.md §2.1, §2.2).

``/wechat/oauth/start?next=/h5/...`` sends the phone to WeChat's consent URL (parameters in
WeChat's exact order, ``#wechat_redirect`` last). ``state`` is ``[0-9a-f]`` only (WeChat
allows ``[a-zA-Z0-9]``, ≤128 bytes): issue time + nonce + HMAC. The ``next`` path travels in
a short-lived signed cookie bound to the nonce. ``/wechat/oauth/callback`` checks the state
and the cookie, spends the nonce once (inbox row), exchanges the code once, and puts the
openid in a signed, HttpOnly, SameSite=Lax cookie; then redirects to a clean URL so a page
refresh cannot re-use the code (WeChat would answer 40163).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from typing import Annotated
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from itsdangerous import BadSignature, SignatureExpired, TimestampSigner, URLSafeTimedSerializer

from frontdesk.core import inbox
from frontdesk.core.clock import now as clock_now
from frontdesk.core.i18n import translate
from frontdesk.core.settings import Environment, Settings
from frontdesk.web.deps import ContainerDep, SessionDep
from frontdesk.web.errors import request_locale
from frontdesk.wechat.oa.port import WeChatPlatform, WeChatRejected, WeChatUnavailable

log = logging.getLogger("frontdesk.wechat.oauth")

router = APIRouter(tags=["wechat"])

SESSION_COOKIE = "fd_wx_session"
PENDING_COOKIE = "fd_wx_oauth"
STATE_MAX_AGE_SECONDS = 600
_STATE = re.compile(r"^([0-9]{10})([0-9a-f]{16})([0-9a-f]{24})$")


def _secret(settings: Settings) -> bytes:
    return settings.secret_key.get_secret_value().encode("utf-8")


def _state_mac(settings: Settings, issued: str, nonce: str) -> str:
    message = f"wechat-oauth-state|{settings.wechat_appid}|{issued}|{nonce}".encode()
    return hmac.new(_secret(settings), message, hashlib.sha256).hexdigest()[:24]


def _pending_serializer(settings: Settings) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(_secret(settings), salt="wechat-oauth-pending")


def _session_signer(settings: Settings) -> TimestampSigner:
    return TimestampSigner(_secret(settings), salt="wechat-openid-session")


def safe_next(value: str | None, *, public_base_url: str) -> str | None:
    """``value`` as a same-origin path, or None when it points anywhere else."""
    if not value:
        return "/"
    if any(ch in value for ch in "\\\r\n\t\x00") or len(value) > 1000:
        return None
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        base = urlsplit(public_base_url)
        if (parts.scheme, parts.netloc) != (base.scheme, base.netloc):
            return None
    path = parts.path or "/"
    # "//host" and "/\\host" are protocol-relative: another site.
    if not path.startswith("/") or path.startswith("//"):
        return None
    return path + (f"?{parts.query}" if parts.query else "")


def _page(request: Request, *, status: int, title_code: str, message_code: str) -> HTMLResponse:
    locale = request_locale(request)
    templates = request.app.state.templates
    response: HTMLResponse = templates.TemplateResponse(
        request,
        "error.html",
        {
            "status": status,
            "code": message_code,
            "message": translate(message_code, locale),
            "request_id": getattr(request.state, "request_id", None),
            "locale": locale,
            "t": lambda key: translate(title_code if key == "error_title" else key, locale),
        },
        status_code=status,
    )
    return response


def authorize_url(settings: Settings, *, state: str) -> str:
    redirect_uri = settings.public_base_url.rstrip("/") + "/wechat/oauth/callback"
    # WeChat matches this URL strictly: keep the parameter order and the fragment.
    return (
        f"{settings.wechat_oauth_authorize_url}?appid={settings.wechat_appid}"
        f"&redirect_uri={quote(redirect_uri, safe='')}&response_type=code"
        f"&scope=snsapi_base&state={state}#wechat_redirect"
    )


@router.get("/wechat/oauth/start", response_model=None)
async def start(request: Request, next: str | None = None) -> Response:
    settings: Settings = request.app.state.settings
    target = safe_next(next, public_base_url=settings.public_base_url)
    if target is None:
        log.warning("oauth start refused: next is not same-origin")
        return _page(request, status=400, title_code="error_title", message_code="invalid")
    issued = f"{int(clock_now().timestamp()):010d}"
    nonce = secrets.token_hex(8)
    state = issued + nonce + _state_mac(settings, issued, nonce)
    response = RedirectResponse(authorize_url(settings, state=state), status_code=302)
    response.set_cookie(
        PENDING_COOKIE,
        _pending_serializer(settings).dumps({"n": nonce, "next": target}),
        max_age=STATE_MAX_AGE_SECONDS,
        httponly=True,
        samesite="lax",
        secure=settings.env is Environment.production,
        path="/wechat/oauth",
    )
    return response


@router.get("/wechat/oauth/callback", response_model=None)
async def callback(
    request: Request,
    session: SessionDep,
    container: ContainerDep,
    code: str | None = None,
    state: str | None = None,
) -> Response:
    settings: Settings = request.app.state.settings
    if not code:
        return _page(
            request,
            status=400,
            title_code="wechat_open_in_wechat_title",
            message_code="wechat_open_in_wechat",
        )
    expired = _page(
        request, status=400, title_code="error_title", message_code="wechat_login_expired"
    )
    match = _STATE.match(state or "")
    if match is None:
        log.warning("oauth callback refused: malformed state")
        return expired
    issued, nonce, mac = match.groups()
    if not hmac.compare_digest(mac, _state_mac(settings, issued, nonce)):
        log.warning("oauth callback refused: state signature")
        return expired
    if abs(clock_now().timestamp() - int(issued)) > STATE_MAX_AGE_SECONDS:
        log.warning("oauth callback refused: state too old")
        return expired
    try:
        pending = _pending_serializer(settings).loads(
            request.cookies.get(PENDING_COOKIE, ""), max_age=STATE_MAX_AGE_SECONDS
        )
    except BadSignature:
        log.warning("oauth callback refused: pending cookie missing or tampered")
        return expired
    if not isinstance(pending, dict) or not hmac.compare_digest(str(pending.get("n")), nonce):
        log.warning("oauth callback refused: cookie is for another state")
        return expired
    if not await inbox.receive(
        session, source="wechat_oauth_state", external_id=nonce, at=clock_now()
    ):
        log.warning("oauth callback refused: state already used")
        return expired
    platform: WeChatPlatform = container.services["wechat"]
    try:
        identity = await platform.exchange_oauth_code(code)
    except WeChatRejected as exc:
        log.warning("oauth code refused by WeChat: errcode %s", exc.errcode)
        return _page(
            request, status=400, title_code="error_title", message_code="wechat_oauth_failed"
        )
    except WeChatUnavailable:
        return _page(request, status=503, title_code="error_title", message_code="unavailable")
    if identity.is_snapshot_user:
        return _page(
            request,
            status=400,
            title_code="wechat_open_in_wechat_title",
            message_code="wechat_open_in_wechat",
        )
    target = safe_next(str(pending.get("next")), public_base_url=settings.public_base_url)
    response = RedirectResponse(target or "/", status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        _session_signer(settings).sign(identity.openid).decode("ascii"),
        max_age=settings.wechat_session_max_age_seconds,
        httponly=True,
        samesite="lax",
        secure=settings.env is Environment.production,
        path="/",
    )
    response.delete_cookie(PENDING_COOKIE, path="/wechat/oauth")
    return response


def openid_from_cookie(settings: Settings, value: str | None) -> str | None:
    """The openid of a valid session cookie; None when missing, expired or tampered."""
    if not value:
        return None
    try:
        raw = _session_signer(settings).unsign(
            value, max_age=settings.wechat_session_max_age_seconds
        )
    except (SignatureExpired, BadSignature):
        return None
    return raw.decode("utf-8")


_OPENID_OF_REQUEST = "frontdesk.openid"


def current_openid(request: Request) -> str | None:
    """Dependency for H5 pages: the signed-in WeChat user, or None (signed out).

    The cookie's signature is checked once per request (the answer is kept in the ASGI
    scope): the booking gate and the scope both ask, and each check is an HMAC."""
    scope = request.scope
    if _OPENID_OF_REQUEST in scope:
        cached: str | None = scope[_OPENID_OF_REQUEST]
        return cached
    openid = openid_from_cookie(request.app.state.settings, request.cookies.get(SESSION_COOKIE))
    scope[_OPENID_OF_REQUEST] = openid
    return openid


CurrentOpenId = Annotated[str | None, Depends(current_openid)]


def signed_in_openid(request: Request) -> str:
    """Dependency for H5 pages that need a patient: the openid, or a redirect through
    WeChat sign-in that comes back to this same page."""
    openid = current_openid(request)
    if openid is not None:
        return openid
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    raise HTTPException(
        status_code=303,
        detail="sign_in_required",
        headers={"Location": f"/wechat/oauth/start?next={quote(here, safe='')}"},
    )


SignedInOpenId = Annotated[str, Depends(signed_in_openid)]
