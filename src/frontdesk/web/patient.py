"""The patient side of the web app: who is signed in, and the one place their data is scoped.

Every H5 page and patient API takes ``PatientScopeDep``: the caller's WeChat identity (from
the OAuth session cookie) and the cards bound to it, decided by ``accounts.service.scope_for``.
A page that needs a card asks ``scope.card(card_id)`` or ``scope.require_active()``; an id
that is not bound to the caller is "not found". ``tests/test_patient_scope.py`` checks that
every ``/h5`` and ``/api/patient`` route depends on it.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from frontdesk.accounts import service as accounts
from frontdesk.accounts.schemas import PatientScope
from frontdesk.core.errors import DomainError, Forbidden
from frontdesk.core.i18n import translate
from frontdesk.web.deps import SessionDep
from frontdesk.web.errors import error_response, request_locale, wants_html
from frontdesk.wechat.oa.oauth_routes import current_openid

LARGE_TEXT_COOKIE = "fd_large_text"
LANG_COOKIE = "lang"


class SignInRequired(DomainError):
    code = "sign_in_required"
    status = 401


class CsrfRejected(Forbidden):
    code = "csrf_rejected"


def signed_in_openid(request: Request) -> str:
    openid = current_openid(request)
    if openid is None:
        raise SignInRequired
    return openid


async def patient_scope(request: Request, session: SessionDep) -> PatientScope:
    openid = signed_in_openid(request)
    scope = await accounts.scope_for(session, openid=openid)
    request.state.patient_scope = scope
    return scope


PatientScopeDep = Annotated[PatientScope, Depends(patient_scope)]
OpenIdDep = Annotated[str, Depends(signed_in_openid)]


# --------------------------------------------------------------------------- CSRF


def csrf_token(request: Request, openid: str) -> str:
    secret = request.app.state.settings.secret_key.get_secret_value().encode()
    return hmac.new(secret, f"h5-csrf|{openid}".encode(), hashlib.sha256).hexdigest()[:32]


def check_csrf(request: Request, openid: str, token: str | None) -> None:
    """Refuse a state-changing form without this account's token (nothing is changed)."""
    if not token or not hmac.compare_digest(token, csrf_token(request, openid)):
        raise CsrfRejected


# --------------------------------------------------------------------------- rendering


def render(
    request: Request,
    template: str,
    context: dict[str, Any] | None = None,
    *,
    status: int = 200,
    openid: str | None = None,
) -> Response:
    locale = request_locale(request)
    settings = request.app.state.settings
    page: Response = request.app.state.templates.TemplateResponse(
        request,
        template,
        {
            "hospital": settings.hospital_name,
            "locale": locale,
            "large_text": request.cookies.get(LARGE_TEXT_COOKIE) == "1",
            "t": lambda key, **kw: translate(key, locale, **kw),
            "csrf": csrf_token(request, openid) if openid else "",
            **(context or {}),
        },
        status_code=status,
        headers={"Cache-Control": "no-store"},
    )
    return page


def install(app: FastAPI) -> None:
    @app.exception_handler(SignInRequired)
    async def _sign_in(request: Request, exc: SignInRequired) -> Response:
        if wants_html(request) or request.url.path.startswith("/h5"):
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(
                f"/wechat/oauth/start?next={quote(target, safe='')}", status_code=303
            )
        return JSONResponse(
            {"error": {"code": exc.code, "message": translate(exc.code, request_locale(request))}},
            status_code=401,
        )

    @app.exception_handler(CsrfRejected)
    async def _csrf(request: Request, exc: CsrfRejected) -> Response:
        return error_response(request, status=403, code=exc.code)
