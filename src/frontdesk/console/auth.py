"""FastAPI dependencies that guard every console page: session, role and CSRF.

``require_role(...)`` is the one gate. It finds the session behind the cookie, refuses a role
that may not use the page (403 and an audit row), and on every state-changing method checks
the form's CSRF token against the session's in constant time (403, audited, nothing changed).

It works in its own short transaction, opened and finished before the route's session:
the denial's audit row must be kept although the request then fails, and the route's
transaction is rolled back on that failure. Put it first among a route's parameters so it
runs before the route's session dependency.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from fastapi import HTTPException, Request

from frontdesk.console import service
from frontdesk.console.errors import CsrfRejected, RoleRefused
from frontdesk.console.models import Role
from frontdesk.console.service import NoSession, Policy, Principal
from frontdesk.core import audit
from frontdesk.core.clock import now as clock_now
from frontdesk.core.settings import Environment, Settings

COOKIE = "fd_console"
LOGIN_CSRF_COOKIE = "fd_console_login"
COOKIE_PATH = "/console"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
ALL_ROLES = frozenset(Role)


def policy(settings: Settings) -> Policy:
    return Policy(
        idle=timedelta(minutes=settings.console_session_idle_minutes),
        absolute=timedelta(hours=settings.console_session_absolute_hours),
        lockout_attempts=settings.console_lockout_attempts,
        lockout=timedelta(minutes=settings.console_lockout_minutes),
    )


def cookie_options(settings: Settings) -> dict[str, Any]:
    """HttpOnly, SameSite=Strict, only under /console, Secure in production."""
    return {
        "path": COOKIE_PATH,
        "httponly": True,
        "samesite": "strict",
        "secure": settings.env is Environment.production,
    }


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def _sign_in_redirect(reason: str) -> HTTPException:
    location = "/console/login" + ("?expired=1" if reason == "expired" else "")
    # Also drop the dead cookie so the browser stops sending it.
    clear = f"{COOKIE}=; Max-Age=0; Path={COOKIE_PATH}; HttpOnly; SameSite=Strict"
    return HTTPException(status_code=303, headers={"Location": location, "Set-Cookie": clear})


async def current_principal(request: Request) -> Principal:
    """The signed-in staff member, or a redirect to the sign-in page (303)."""
    cached = getattr(request.state, "console_principal", None)
    if isinstance(cached, Principal):
        return cached
    settings: Settings = request.app.state.settings
    async with request.app.state.session_provider() as session:
        found = await service.resolve_session(
            session, token=request.cookies.get(COOKIE), now=clock_now(), policy=policy(settings)
        )
    if isinstance(found, NoSession):
        raise _sign_in_redirect(found.reason)
    request.state.console_principal = found
    return found


async def _record_denial(
    request: Request, principal: Principal, *, action: str, reason: str
) -> None:
    async with request.app.state.session_provider() as session:
        await audit.record(
            session,
            at=clock_now(),
            actor=principal.actor,
            action=action,
            record_type="console_page",
            record_id=request.url.path[:128],
            ip=client_ip(request),
            request_id=getattr(request.state, "request_id", None),
            outcome="denied",
            detail={"method": request.method, "role": principal.role.value, "reason": reason},
        )


def require_role(*roles: Role) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency admitting only ``roles`` (and checking CSRF on state-changing methods)."""
    allowed = frozenset(roles)
    if not allowed:
        raise ValueError("require_role needs at least one role")

    async def dependency(request: Request) -> Principal:
        principal = await current_principal(request)
        if principal.role not in allowed:
            await _record_denial(request, principal, action="console.access", reason="role")
            raise RoleRefused()
        if request.method not in SAFE_METHODS:
            form = await request.form()  # Starlette caches it for the route's Form fields
            given = form.get(CSRF_FIELD)
            if not isinstance(given, str) or not service.csrf_matches(principal.csrf_token, given):
                await _record_denial(request, principal, action="console.csrf", reason="csrf")
                raise CsrfRejected()
        return principal

    dependency.allowed_roles = allowed  # type: ignore[attr-defined]  # for the route audit test
    return dependency
