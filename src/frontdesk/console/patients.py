"""Console page for customer service: an account's bound cards (masked), unbinding on a
patient's request with a reason, and whether the SMS step of binding is on."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import RedirectResponse, Response

from frontdesk.accounts import service as accounts
from frontdesk.accounts.errors import CardNotFound
from frontdesk.console.auth import client_ip, require_role
from frontdesk.console.models import Role
from frontdesk.console.nav import register_nav_item
from frontdesk.console.routes import render
from frontdesk.console.service import Principal
from frontdesk.core.clock import now
from frontdesk.web.deps import SessionDep

router = APIRouter(prefix="/console", include_in_schema=False)
Desk = Annotated[Principal, Depends(require_role(Role.customer_service, Role.admin))]
register_nav_item(
    "/console/patients", "console.nav.patients", {Role.customer_service, Role.admin}, order=100
)


@router.get("/patients")
async def patients_page(
    principal: Desk,
    request: Request,
    session: SessionDep,
    q: Annotated[str, Query(max_length=64)] = "",
    notice: Annotated[str, Query(max_length=32)] = "",
) -> Response:
    results = None
    if q.strip():
        results = await accounts.staff_lookup(
            session, staff_actor=principal.actor, query=q, now=now(), ip=client_ip(request)
        )
    settings = request.app.state.settings
    return render(
        request,
        "patients.html",
        {
            "q": q,
            "results": results,
            "sms_enabled": settings.accounts_sms_enabled,
            "notice": notice,
        },
        principal=principal,
    )


@router.post("/patients/unbind")
async def unbind(
    principal: Desk,
    request: Request,
    session: SessionDep,
    openid: Annotated[str, Form(max_length=64)],
    card_id: Annotated[int, Form(ge=1)],
    reason: Annotated[str, Form(min_length=2, max_length=200)],
    q: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    try:
        await accounts.staff_unbind(
            session,
            staff_actor=principal.actor,
            openid=openid,
            card_id=card_id,
            reason=reason.strip(),
            now=now(),
            ip=client_ip(request),
        )
    except CardNotFound:
        return render(
            request,
            "patients.html",
            {
                "q": q,
                "results": None,
                "error": "card_not_found",
                "sms_enabled": request.app.state.settings.accounts_sms_enabled,
                "notice": "",
            },
            principal=principal,
            status=404,
        )
    return RedirectResponse(f"/console/patients?notice=unbound&q={q}", status_code=303)
