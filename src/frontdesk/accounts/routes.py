"""Patient pages for cards: the H5 home, the privacy notice, binding, switching, unbinding.

Presentation only: every rule is in ``accounts.service``. Forms post back to the same
page; a refusal re-renders the form with the reason and changes nothing (each service call
runs in a savepoint that is rolled back on refusal).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from frontdesk.accounts import service
from frontdesk.accounts.schemas import BindRequest, BoundCard, ConfirmRequest, Relationship
from frontdesk.core import ratelimit
from frontdesk.core.clock import now
from frontdesk.core.errors import DomainError
from frontdesk.core.ratelimit import Limit
from frontdesk.web.deps import ContainerDep, SessionDep
from frontdesk.web.patient import OpenIdDep, PatientScopeDep, check_csrf, render

router = APIRouter(prefix="/h5", include_in_schema=False)

CARD_TYPE_KEYS = {
    "self_pay": "card_type_self_pay",
    "city_insurance": "card_type_city_insurance",
    "provincial_insurance": "card_type_provincial_insurance",
    "city_cadre": "card_type_city_cadre",
}

# Home entries; a feature adds its entry when it exists (None: shown as "coming soon").
HOME_ENTRIES: list[dict[str, Any]] = [
    {"key": "entry_booking", "href": "/h5/booking"},
    {"key": "entry_payments", "href": "/h5/payments"},
    {"key": "entry_reports", "href": "/h5/reports"},
    {"key": "entry_messages", "href": "/h5/messages"},
    {"key": "entry_hospital", "href": "/h5/hospital"},
    {"key": "entry_cards", "href": "/h5/cards"},
]


def _policy(settings: Any) -> service.BindingPolicy:
    return service.BindingPolicy(
        max_cards=settings.accounts_max_cards,
        sms_enabled=settings.accounts_sms_enabled,
        code_ttl=timedelta(seconds=settings.accounts_code_ttl_seconds),
        max_code_attempts=settings.accounts_max_code_attempts,
    )


def _ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def _card_view(card: BoundCard) -> dict[str, Any]:
    return {"card": card, "type_key": CARD_TYPE_KEYS.get(card.card_type, "card_type_unknown")}


@router.get("/")
async def home(request: Request, scope: PatientScopeDep, session: SessionDep) -> Response:
    consented = await service.consent_version(session, openid=scope.openid)
    active = scope.active
    return render(
        request,
        "h5/home.html",
        {
            "active": _card_view(active) if active else None,
            "consented": consented is not None,
            "entries": HOME_ENTRIES,
        },
        openid=scope.openid,
    )


# --------------------------------------------------------------------------- consent


@router.get("/consent")
async def consent_page(request: Request, openid: OpenIdDep, session: SessionDep) -> Response:
    settings = request.app.state.settings
    version = await service.consent_version(session, openid=openid)
    return render(
        request,
        "accounts/consent.html",
        {
            "version": settings.accounts_privacy_notice_version,
            "accepted": version is not None,
            "next": request.query_params.get("next", ""),
        },
        openid=openid,
    )


@router.post("/consent")
async def accept_consent(
    request: Request, openid: OpenIdDep, session: SessionDep, csrf: Annotated[str, Form()] = ""
) -> Response:
    check_csrf(request, openid, csrf)
    settings = request.app.state.settings
    await service.accept_notice(
        session,
        openid=openid,
        version=settings.accounts_privacy_notice_version,
        now=now(),
        ip=_ip(request),
    )
    return RedirectResponse("/h5/cards/bind", status_code=303)


@router.get("/consent/withdraw")
async def withdraw_page(request: Request, openid: OpenIdDep) -> Response:
    return render(request, "accounts/withdraw.html", {}, openid=openid)


@router.post("/consent/withdraw")
async def withdraw(
    request: Request, openid: OpenIdDep, session: SessionDep, csrf: Annotated[str, Form()] = ""
) -> Response:
    check_csrf(request, openid, csrf)
    await service.withdraw_consent(session, openid=openid, now=now(), ip=_ip(request))
    return RedirectResponse("/h5/", status_code=303)


# --------------------------------------------------------------------------- cards


@router.get("/cards")
async def cards(request: Request, scope: PatientScopeDep) -> Response:
    settings = request.app.state.settings
    return render(
        request,
        "accounts/cards.html",
        {
            "cards": [_card_view(c) for c in scope.cards],
            "max_cards": settings.accounts_max_cards,
            "sms_enabled": settings.accounts_sms_enabled,
            "notice": request.query_params.get("notice", ""),
        },
        openid=scope.openid,
    )


@router.post("/cards/{card_id}/activate")
async def activate(
    request: Request,
    card_id: int,
    scope: PatientScopeDep,
    session: SessionDep,
    csrf: Annotated[str, Form()] = "",
) -> Response:
    check_csrf(request, scope.openid, csrf)
    await service.set_active(session, openid=scope.openid, card_id=card_id)
    return RedirectResponse("/h5/cards", status_code=303)


@router.get("/cards/{card_id}/unbind")
async def unbind_page(request: Request, card_id: int, scope: PatientScopeDep) -> Response:
    return render(
        request, "accounts/unbind.html", _card_view(scope.card(card_id)), openid=scope.openid
    )


@router.post("/cards/{card_id}/unbind")
async def unbind(
    request: Request,
    card_id: int,
    scope: PatientScopeDep,
    session: SessionDep,
    csrf: Annotated[str, Form()] = "",
) -> Response:
    check_csrf(request, scope.openid, csrf)
    await service.unbind(session, openid=scope.openid, card_id=card_id, now=now(), ip=_ip(request))
    return RedirectResponse("/h5/cards?notice=unbound", status_code=303)


# --------------------------------------------------------------------------- binding


def _bind_form(
    request: Request,
    openid: str,
    *,
    values: dict[str, str] | None = None,
    error: str | None = None,
    status: int = 200,
    **params: Any,
) -> Response:
    return render(
        request,
        "accounts/bind.html",
        {
            "values": values or {},
            "error": error,
            "error_params": params,
            "relationships": [r.value for r in Relationship],
        },
        status=status,
        openid=openid,
    )


@router.get("/cards/bind")
async def bind_page(request: Request, scope: PatientScopeDep, session: SessionDep) -> Response:
    if await service.consent_version(session, openid=scope.openid) is None:
        return RedirectResponse("/h5/consent", status_code=303)
    return _bind_form(request, scope.openid)


@router.post("/cards/bind")
async def bind(
    request: Request,
    openid: OpenIdDep,
    session: SessionDep,
    container: ContainerDep,
    card_no: Annotated[str, Form(max_length=64)] = "",
    holder_name: Annotated[str, Form(max_length=64)] = "",
    id_or_phone_last4: Annotated[str, Form(max_length=16)] = "",
    relationship: Annotated[str, Form(max_length=16)] = "",
    csrf: Annotated[str, Form()] = "",
) -> Response:
    check_csrf(request, openid, csrf)
    values = {"card_no": card_no, "holder_name": holder_name, "relationship": relationship}
    try:
        data = BindRequest(
            card_no=card_no,
            holder_name=holder_name,
            id_or_phone_last4=id_or_phone_last4,
            relationship=relationship,
        )
    except ValidationError as exc:
        fields = sorted({str(e["loc"][0]) for e in exc.errors() if e.get("loc")})
        return _bind_form(
            request,
            openid,
            values=values,
            error="bind_form_invalid",
            status=422,
            fields=",".join(fields),
        )
    settings = request.app.state.settings
    # Attempts are counted in their own transaction, so a refused attempt still counts.
    async with request.app.state.session_provider() as limit_session:
        await ratelimit.check(
            limit_session,
            Limit("bind.account", settings.accounts_bind_attempts_per_hour, 3600),
            openid,
            now=now(),
        )
        await ratelimit.check(
            limit_session,
            Limit("bind.card", settings.accounts_bind_attempts_per_card_per_hour, 3600),
            data.card_no,
            now=now(),
        )
    try:
        async with session.begin_nested():
            started = await service.start_binding(
                session,
                his=container.services["his"],
                sms=container.services.get("sms"),
                openid=openid,
                request=data,
                policy=_policy(settings),
                secret=settings.secret_key.get_secret_value(),
                now=now(),
                ip=_ip(request),
            )
    except DomainError as exc:
        if exc.code == "consent_required":
            return RedirectResponse("/h5/consent", status_code=303)
        return _bind_form(
            request, openid, values=values, error=exc.code, status=exc.status, **exc.params
        )
    if started.challenge_id is None:
        return RedirectResponse("/h5/cards?notice=bound", status_code=303)
    return RedirectResponse(f"/h5/cards/bind/{started.challenge_id}", status_code=303)


def _code_form(
    request: Request,
    openid: str,
    challenge_id: str,
    *,
    error: str | None = None,
    status: int = 200,
    **params: Any,
) -> Response:
    return render(
        request,
        "accounts/code.html",
        {
            "challenge_id": challenge_id,
            "error": error,
            "error_params": params,
        },
        status=status,
        openid=openid,
    )


@router.get("/cards/bind/{challenge_id}")
async def code_page(request: Request, challenge_id: str, openid: OpenIdDep) -> Response:
    return _code_form(request, openid, challenge_id)


@router.post("/cards/bind/{challenge_id}")
async def confirm(
    request: Request,
    challenge_id: str,
    openid: OpenIdDep,
    session: SessionDep,
    code: Annotated[str, Form(max_length=16)] = "",
    csrf: Annotated[str, Form()] = "",
) -> Response:
    check_csrf(request, openid, csrf)
    try:
        data = ConfirmRequest(code=code)
    except ValidationError:
        return _code_form(request, openid, challenge_id, error="code_format", status=422)
    settings = request.app.state.settings
    try:
        async with session.begin_nested():
            result = await service.confirm_binding(
                session,
                openid=openid,
                challenge_id=challenge_id,
                code=data.code,
                policy=_policy(settings),
                secret=settings.secret_key.get_secret_value(),
                now=now(),
                ip=_ip(request),
            )
    except DomainError as exc:
        return _code_form(
            request, openid, challenge_id, error=exc.code, status=exc.status, **exc.params
        )
    if isinstance(result, service.CodeRefused):
        # Returned normally: the used-up attempt is committed with the request.
        return _code_form(
            request,
            openid,
            challenge_id,
            error="code_wrong",
            status=422,
            attempts_left=result.attempts_left,
        )
    return RedirectResponse("/h5/cards?notice=bound", status_code=303)


# --------------------------------------------------------------------------- settings


@router.get("/settings")
async def settings_page(request: Request, openid: OpenIdDep) -> Response:
    return render(request, "h5/settings.html", {}, openid=openid)


@router.post("/settings")
async def save_settings(
    request: Request,
    openid: OpenIdDep,
    large_text: Annotated[str, Form(max_length=4)] = "",
    lang: Annotated[str, Form(max_length=8)] = "zh-CN",
    csrf: Annotated[str, Form()] = "",
) -> Response:
    check_csrf(request, openid, csrf)
    response = RedirectResponse("/h5/settings", status_code=303)
    year = 365 * 24 * 3600
    response.set_cookie(
        "fd_large_text",
        "1" if large_text == "1" else "0",
        max_age=year,
        httponly=True,
        samesite="lax",
        path="/",
    )
    response.set_cookie(
        "lang",
        lang if lang in {"zh-CN", "en"} else "zh-CN",
        max_age=year,
        httponly=True,
        samesite="lax",
        path="/",
    )
    return response
