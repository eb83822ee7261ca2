"""Console pages of the Official Account: keyword auto-replies, the custom menu (saved,
then pushed to WeChat), and the delivery view of every template message with retry."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import RedirectResponse, Response

from frontdesk.console.auth import require_role
from frontdesk.console.models import Role
from frontdesk.console.nav import register_nav_item
from frontdesk.console.routes import render
from frontdesk.console.service import Principal
from frontdesk.core import audit
from frontdesk.core.clock import now
from frontdesk.core.errors import DomainError
from frontdesk.web.deps import ContainerDep, SessionDep
from frontdesk.wechat.oa import admin, menu, service, templates
from frontdesk.wechat.oa.port import WeChatError

router = APIRouter(prefix="/console/wechat", include_in_schema=False)
Desk = Annotated[Principal, Depends(require_role(Role.customer_service, Role.admin))]
DESK_ROLES = {Role.customer_service, Role.admin}
register_nav_item("/console/wechat/keywords", "console.nav.keywords", DESK_ROLES, order=140)
register_nav_item("/console/wechat/menu", "console.nav.menu", DESK_ROLES, order=150)
register_nav_item("/console/wechat/deliveries", "console.nav.deliveries", DESK_ROLES, order=160)
STATES = ("queued", "sent", "delivered", "failed")


@router.get("/keywords")
async def keywords(principal: Desk, request: Request, session: SessionDep) -> Response:
    return render(
        request,
        "wechat/keywords.html",
        {"rows": await admin.keyword_replies(session), "error": None},
        principal=principal,
    )


@router.post("/keywords")
async def save_keyword(
    principal: Desk,
    request: Request,
    session: SessionDep,
    keyword: Annotated[str, Form(max_length=200)] = "",
    reply: Annotated[str, Form(max_length=2000)] = "",
    match: Annotated[str, Form(max_length=16)] = "exact",
    enabled: Annotated[str, Form(max_length=1)] = "",
    priority: Annotated[int, Form(ge=0, le=10_000)] = 100,
) -> Response:
    try:
        async with session.begin_nested():
            if not reply.strip():
                raise admin.MenuInvalid(reason="reply")
            await service.save_keyword_reply(
                session,
                keyword=keyword,
                reply=reply.strip(),
                match=match,
                enabled=enabled == "1",
                priority=priority,
                now=now(),
            )
            await audit.record(
                session,
                at=now(),
                actor=principal.actor,
                action="wechat.keyword",
                record_type="keyword_reply",
                record_id=keyword.strip()[:64],
            )
    except DomainError as exc:
        return render(
            request,
            "wechat/keywords.html",
            {"rows": await admin.keyword_replies(session), "error": exc.code},
            principal=principal,
            status=exc.status,
        )
    return RedirectResponse("/console/wechat/keywords", status_code=303)


def _menu_page(
    request: Request,
    principal: Principal,
    text: str,
    *,
    error: str | None = None,
    notice: str | None = None,
    status: int = 200,
) -> Response:
    return render(
        request,
        "wechat/menu.html",
        {"text": text, "error": error, "notice": notice},
        principal=principal,
        status=status,
    )


@router.get("/menu")
async def menu_page(
    principal: Desk,
    request: Request,
    session: SessionDep,
    notice: Annotated[str, Query(max_length=16)] = "",
) -> Response:
    saved = await admin.saved_menu(session)
    current = saved.menu if saved else request.app.state.settings.wechat_menu
    text = json.dumps(current, ensure_ascii=False, indent=2)
    return _menu_page(request, principal, text, notice=notice or None)


@router.post("/menu")
async def save_menu(
    principal: Desk,
    request: Request,
    session: SessionDep,
    container: ContainerDep,
    menu_json: Annotated[str, Form(max_length=20_000)] = "",
    push: Annotated[str, Form(max_length=1)] = "",
) -> Response:
    try:
        parsed = admin.parse_menu(menu_json)
    except DomainError as exc:
        return _menu_page(request, principal, menu_json, error=exc.code, status=exc.status)
    # Push before this request's transaction starts: the shared access token has its own
    # short transactions, and no database lock should wait on WeChat.
    push_error: str | None = None
    if push == "1":
        try:
            await menu.push_menu(
                settings=container.settings,
                platform=container.services["wechat"],
                tokens=container.services["wechat_tokens"],
                menu=parsed,
            )
        except WeChatError as exc:
            push_error = str(getattr(exc, "errcode", "") or "")
    row = await admin.save_menu(session, menu=parsed, staff_actor=principal.actor, now=now())
    if push == "1" and push_error is None:
        row.pushed_at = now()
    await audit.record(
        session,
        at=now(),
        actor=principal.actor,
        action="wechat.menu",
        record_type="account_menu",
        record_id=row.id,
        detail={"push": push == "1", "push_error": push_error},
    )
    if push_error is not None:
        # The menu stays saved; staff see why WeChat refused it and may push again.
        return _menu_page(
            request, principal, menu_json, error="wechat_menu_push_failed", status=502,
            notice=push_error,
        )  # fmt: skip
    notice = "pushed" if push == "1" else "saved"
    return RedirectResponse(f"/console/wechat/menu?notice={notice}", status_code=303)


@router.get("/deliveries")
async def deliveries(
    principal: Desk,
    request: Request,
    session: SessionDep,
    state: Annotated[str, Query(max_length=16)] = "",
) -> Response:
    chosen = state if state in STATES else ""
    return render(
        request,
        "wechat/deliveries.html",
        {
            "rows": await templates.deliveries(session, state=chosen or None),
            "state": chosen,
            "states": STATES,
        },
        principal=principal,
    )


@router.post("/deliveries/{template_message_id}/retry")
async def retry(principal: Desk, template_message_id: int, session: SessionDep) -> Response:
    retried = await templates.retry_failed(session, template_message_id=template_message_id)
    if retried:
        await audit.record(
            session,
            at=now(),
            actor=principal.actor,
            action="wechat.template_retry",
            record_type="template_message",
            record_id=template_message_id,
        )
    return RedirectResponse("/console/wechat/deliveries?state=failed", status_code=303)
