"""The staff console's pages, mounted under ``/console``.

Every page takes ``require_role(...)`` as its FIRST parameter (see ``console.auth``): the
role and CSRF checks then run, and their refusals are audited, before the route's own
transaction starts. Pages are plain server-rendered HTML with one stylesheet; the app's CSP
forbids inline scripts and styles, so there are none.
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

import segno
from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import FileResponse, RedirectResponse, Response, StreamingResponse
from fastapi.templating import Jinja2Templates
from markupsafe import Markup

from frontdesk.console import auditlog, dashboard, health, service
from frontdesk.console import integrations as _integrations  # noqa: F401 - registers panels
from frontdesk.console.auth import (
    ALL_ROLES,
    COOKIE,
    COOKIE_PATH,
    LOGIN_CSRF_COOKIE,
    client_ip,
    cookie_options,
    policy,
    require_role,
)
from frontdesk.console.errors import BadStaffInput, CsrfRejected, NotDeadLetter, UsernameTaken
from frontdesk.console.models import Role
from frontdesk.console.nav import items_for, register_nav_item
from frontdesk.console.service import Principal
from frontdesk.core import audit, outbox
from frontdesk.core.clock import get_clock
from frontdesk.core.clock import now as clock_now
from frontdesk.core.i18n import LOCALES, translate
from frontdesk.core.settings import Settings
from frontdesk.web.deps import ContainerDep, SessionDep
from frontdesk.web.errors import request_locale

HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
STATIC_FILES = {"console.css": ("text/css", HERE / "static" / "console.css")}
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{20,64}$")

router = APIRouter(prefix="/console", include_in_schema=False)

AnyStaff = Annotated[Principal, Depends(require_role(*ALL_ROLES))]
Admin = Annotated[Principal, Depends(require_role(Role.admin))]
AuditReader = Annotated[Principal, Depends(require_role(Role.auditor, Role.admin))]

register_nav_item("/console/", "console.nav.dashboard", ALL_ROLES, order=0)
register_nav_item("/console/audit", "console.nav.audit", {Role.auditor, Role.admin}, order=900)
register_nav_item("/console/health", "console.nav.health", {Role.admin}, order=910)
register_nav_item("/console/staff", "console.nav.staff", {Role.admin}, order=920)


def render(
    request: Request,
    name: str,
    context: dict[str, Any],
    *,
    principal: Principal | None = None,
    status: int = 200,
) -> Response:
    locale = request_locale(request)
    clock = get_clock()

    def t(key: str, **params: Any) -> str:
        return translate(key, locale, **params)

    base: dict[str, Any] = {
        "locale": locale,
        "other_locales": [code for code in LOCALES if code != locale],
        "t": t,
        "principal": principal,
        "nav": items_for(principal.role) if principal else [],
        "csrf_token": principal.csrf_token if principal else "",
        "path": request.url.path,
        "now": clock_now(),
        "localtime": lambda value: auditlog.local_time(value, clock),
    }
    response = templates.TemplateResponse(request, name, {**base, **context}, status_code=status)
    # Staff pages show personal data and one-time secrets: never keep them in a cache.
    response.headers["Cache-Control"] = "no-store"
    return response


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


# --------------------------------------------------------------------------- static, locale


@router.get("/static/{name}")
async def static_file(name: str) -> Response:
    entry = STATIC_FILES.get(name)
    if entry is None:
        return Response(status_code=404)
    media_type, path = entry
    return FileResponse(
        path, media_type=media_type, headers={"Cache-Control": "public, max-age=3600"}
    )


@router.get("/lang/{code}")
async def choose_language(code: str) -> Response:
    response = RedirectResponse("/console/", status_code=303)
    if code in LOCALES:
        response.set_cookie("lang", code, path="/", samesite="lax", max_age=365 * 86400)
    return response


# --------------------------------------------------------------------------- sign-in


@router.get("/login")
async def login_page(request: Request) -> Response:
    return _login_response(request, error=None, status=200)


def _login_response(request: Request, *, error: str | None, status: int) -> Response:
    token = request.cookies.get(LOGIN_CSRF_COOKIE) or ""
    if not _TOKEN_RE.match(token):
        token = secrets.token_urlsafe(32)
    response = render(
        request,
        "login.html",
        {
            "login_csrf": token,
            "error": error,
            "expired": request.query_params.get("expired") == "1",
        },
        status=status,
    )
    response.set_cookie(LOGIN_CSRF_COOKIE, token, **cookie_options(_settings(request)))
    return response


@router.post("/login")
async def login(
    request: Request,
    session: SessionDep,
    username: Annotated[str, Form(max_length=256)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    code: Annotated[str, Form(max_length=32)] = "",
    csrf_token: Annotated[str, Form(max_length=256)] = "",
) -> Response:
    # Before a session exists the CSRF token is a double-submit: the form must echo the
    # value of a SameSite=Strict cookie that another site can neither read nor send.
    if not service.csrf_matches(request.cookies.get(LOGIN_CSRF_COOKIE) or "", csrf_token):
        raise CsrfRejected()
    result = await service.sign_in(
        session,
        username=username.strip(),
        password=password,
        code=code,
        now=clock_now(),
        policy=policy(_settings(request)),
        ip=client_ip(request),
        user_agent=request.headers.get("user-agent"),
    )
    if isinstance(result, service.Refused):
        key = "console.login.locked" if result.reason == "locked" else "console.login.failed"
        return _login_response(request, error=key, status=401)
    response = RedirectResponse("/console/", status_code=303)
    response.set_cookie(COOKIE, result.token, **cookie_options(_settings(request)))
    response.delete_cookie(LOGIN_CSRF_COOKIE, path=COOKIE_PATH)
    return response


@router.post("/logout")
async def logout(principal: AnyStaff, request: Request, session: SessionDep) -> Response:
    await service.sign_out(session, principal=principal, now=clock_now(), ip=client_ip(request))
    return _signed_out()


@router.post("/logout-all")
async def logout_all(principal: AnyStaff, request: Request, session: SessionDep) -> Response:
    await service.sign_out(
        session, principal=principal, now=clock_now(), everywhere=True, ip=client_ip(request)
    )
    return _signed_out()


def _signed_out() -> Response:
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(COOKIE, path=COOKIE_PATH)
    return response


# --------------------------------------------------------------------------- dashboard


@router.get("/")
async def dashboard_page(
    principal: AnyStaff, request: Request, session: SessionDep, container: ContainerDep
) -> Response:
    tiles = await dashboard.collect(session, container, principal.role)
    return render(
        request,
        "dashboard.html",
        {"tiles": tiles, "today": get_clock().today().isoformat()},
        principal=principal,
    )


# --------------------------------------------------------------------------- staff admin


@router.get("/staff")
async def staff_page(
    principal: Admin,
    request: Request,
    session: SessionDep,
    q: Annotated[str, Query(max_length=64)] = "",
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> Response:
    return await _staff_list(request, session, principal, q=q, page=page)


async def _staff_list(
    request: Request,
    session: Any,
    principal: Principal,
    *,
    q: str = "",
    page: int = 1,
    error: str | None = None,
    field: str | None = None,
    status: int = 200,
    form: dict[str, str] | None = None,
) -> Response:
    found = await service.list_staff(session, search=q, page=page)
    return render(
        request,
        "staff.html",
        {
            "result": found,
            "q": q,
            "roles": list(Role),
            "error": error,
            "field": field,
            "form": form or {},
            "prev_url": _with_page("/console/staff", {"q": q}, page - 1) if page > 1 else None,
            "next_url": _with_page("/console/staff", {"q": q}, page + 1)
            if found.has_next
            else None,
        },
        principal=principal,
        status=status,
    )


def _with_page(path: str, params: dict[str, str], page: int) -> str:
    query = {k: v for k, v in params.items() if v}
    query["page"] = str(page)
    return f"{path}?{urlencode(query)}"


@router.post("/staff")
async def create_staff(
    principal: Admin,
    request: Request,
    session: SessionDep,
    username: Annotated[str, Form(max_length=64)] = "",
    display_name: Annotated[str, Form(max_length=128)] = "",
    role: Annotated[str, Form(max_length=32)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
) -> Response:
    try:
        created = await service.create_staff(
            session,
            username=username.strip(),
            display_name=display_name,
            role=role,
            password=password,
            now=clock_now(),
            actor=principal.actor,
            ip=client_ip(request),
        )
    except (BadStaffInput, UsernameTaken) as exc:
        return await _staff_list(
            request,
            session,
            principal,
            error=exc.code,
            field=exc.params.get("field"),
            status=exc.status,
            form={"username": username, "display_name": display_name, "role": role},
        )
    return _enrolment(request, principal, created)


def _enrolment(request: Request, principal: Principal, created: service.NewStaff) -> Response:
    uri = service.totp_uri(
        secret=created.totp_secret,
        username=created.staff.username,
        issuer=_settings(request).console_totp_issuer,
    )
    # segno draws the QR code as SVG paths with fill/stroke attributes (no style attributes,
    # so the CSP holds); it is our own markup, safe to embed.
    svg = segno.make(uri, error="m").svg_inline(
        scale=5, svgclass="qr", lineclass=None, title="TOTP"
    )
    return render(
        request,
        "enrol.html",
        {
            "staff": created.staff,
            "qr_svg": Markup(svg),  # noqa: S704 - generated by segno
            "uri": uri,
            "secret": created.totp_secret,
        },
        principal=principal,
    )


@router.post("/staff/{staff_id}/disable")
async def disable_staff(
    principal: Admin, request: Request, session: SessionDep, staff_id: int
) -> Response:
    if staff_id == principal.staff_id:
        # An admin locking themselves out could leave the hospital with no admin at all.
        raise BadStaffInput(field="staff_id")
    await service.set_disabled(
        session,
        staff_id=staff_id,
        disabled=True,
        now=clock_now(),
        actor=principal.actor,
        ip=client_ip(request),
    )
    return RedirectResponse("/console/staff", status_code=303)


@router.post("/staff/{staff_id}/enable")
async def enable_staff(
    principal: Admin, request: Request, session: SessionDep, staff_id: int
) -> Response:
    await service.set_disabled(
        session,
        staff_id=staff_id,
        disabled=False,
        now=clock_now(),
        actor=principal.actor,
        ip=client_ip(request),
    )
    return RedirectResponse("/console/staff", status_code=303)


@router.post("/staff/{staff_id}/reset-totp")
async def reset_staff_totp(
    principal: Admin, request: Request, session: SessionDep, staff_id: int
) -> Response:
    created = await service.reset_totp(
        session, staff_id=staff_id, now=clock_now(), actor=principal.actor, ip=client_ip(request)
    )
    return _enrolment(request, principal, created)


# --------------------------------------------------------------------------- audit log


AuditQuery = Annotated[str, Query(max_length=128)]


@router.get("/audit")
async def audit_page(
    principal: AuditReader,
    request: Request,
    session: SessionDep,
    actor: AuditQuery = "",
    card_id: AuditQuery = "",
    action: AuditQuery = "",
    date_from: AuditQuery = "",
    date_to: AuditQuery = "",
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
) -> Response:
    filters = auditlog.parse_filters(
        actor=actor, card_id=card_id, action=action, date_from=date_from, date_to=date_to
    )
    clock = get_clock()
    found = await auditlog.search(session, filters, clock=clock, page=page)
    params = filters.as_query()
    return render(
        request,
        "audit.html",
        {
            "filters": filters,
            "result": found,
            "names": await auditlog.staff_names(session, found.items),
            "export_url": "/console/audit.csv" + (f"?{urlencode(params)}" if params else ""),
            "prev_url": _with_page("/console/audit", params, page - 1) if page > 1 else None,
            "next_url": _with_page("/console/audit", params, page + 1) if found.has_next else None,
        },
        principal=principal,
    )


@router.get("/audit.csv")
async def audit_export(
    principal: AuditReader,
    request: Request,
    actor: AuditQuery = "",
    card_id: AuditQuery = "",
    action: AuditQuery = "",
    date_from: AuditQuery = "",
    date_to: AuditQuery = "",
) -> Response:
    filters = auditlog.parse_filters(
        actor=actor, card_id=card_id, action=action, date_from=date_from, date_to=date_to
    )
    clock = get_clock()
    provider = request.app.state.session_provider
    # The export is recorded (and committed) before the first byte goes out; the rows are
    # then read in short transactions of their own while the response streams.
    async with provider() as session:
        await audit.record(
            session,
            at=clock_now(),
            actor=principal.actor,
            action="audit.export",
            record_type="audit_log",
            record_id="csv",
            ip=client_ip(request),
            request_id=getattr(request.state, "request_id", None),
            detail={"filters": filters.as_query()},
        )
    stamp = clock.local_now().strftime("%Y%m%d-%H%M%S")
    return StreamingResponse(
        auditlog.export_csv(provider, filters, clock=clock),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="audit-{stamp}.csv"',
            "Cache-Control": "no-store",
        },
    )


# --------------------------------------------------------------------------- health


@router.get("/health")
async def health_page(
    principal: Admin, request: Request, session: SessionDep, container: ContainerDep
) -> Response:
    counts = await outbox.counts_by_status(session)
    dead = await outbox.dead_letters(session, limit=50)
    panels = await health.collect(session, container)
    return render(
        request,
        "health.html",
        {"counts": counts, "dead": dead, "panels": panels},
        principal=principal,
    )


@router.post("/health/outbox/{job_id}/retry")
async def retry_dead_letter(
    principal: Admin, request: Request, session: SessionDep, job_id: int
) -> Response:
    if not await outbox.retry_dead(session, job_id):
        raise NotDeadLetter(job_id=job_id)
    await audit.record(
        session,
        at=clock_now(),
        actor=principal.actor,
        action="outbox.retry",
        record_type="outbox_job",
        record_id=job_id,
        ip=client_ip(request),
        request_id=getattr(request.state, "request_id", None),
    )
    return RedirectResponse("/console/health", status_code=303)
