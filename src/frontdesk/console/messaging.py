"""Console pages of messaging: the message-board inbox, saved replies, the hospital
pages editor, and news and notices (editor with preview, publish, push to followers).

Customer service and admins only. Every page takes ``require_role`` first, so the role and
the CSRF token are checked (and a refusal audited) before anything is read or changed.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from frontdesk.console.auth import client_ip, require_role
from frontdesk.console.dashboard import TileValue, register_dashboard_tile
from frontdesk.console.models import Role
from frontdesk.console.nav import register_nav_item
from frontdesk.console.routes import render
from frontdesk.console.service import Principal
from frontdesk.core import audit
from frontdesk.core.clock import now
from frontdesk.core.errors import DomainError
from frontdesk.messaging import media, service
from frontdesk.messaging.errors import ImageRejected
from frontdesk.messaging.routes import IMAGE_HEADERS, read_upload
from frontdesk.web.deps import SessionDep

router = APIRouter(prefix="/console", include_in_schema=False)
Desk = Annotated[Principal, Depends(require_role(Role.customer_service, Role.admin))]
DESK_ROLES = {Role.customer_service, Role.admin}
register_nav_item("/console/messages", "console.nav.messages", DESK_ROLES, order=110)
register_nav_item("/console/articles", "console.nav.articles", DESK_ROLES, order=120)
register_nav_item("/console/hospital", "console.nav.hospital", DESK_ROLES, order=130)


async def _waiting_tile(session: AsyncSession, container: Any) -> TileValue:
    count = await service.waiting_count(session)
    overdue = await service.overdue_count(
        session,
        now=now(),
        target_minutes=container.settings.messaging_reply_target_minutes,
    )
    return TileValue(str(count), "console.messages.overdue_note" if overdue else None)


register_dashboard_tile("messages_waiting", _waiting_tile)


# --------------------------------------------------------------------------- inbox


@router.get("/messages")
async def inbox(
    principal: Desk,
    request: Request,
    session: SessionDep,
    closed: Annotated[str, Query(max_length=1)] = "",
) -> Response:
    target = request.app.state.settings.messaging_reply_target_minutes
    rows = await service.inbox(session, now=now(), target_minutes=target, show_closed=closed == "1")
    return render(
        request,
        "messaging/inbox.html",
        {
            "rows": rows,
            "target": target,
            "overdue": sum(1 for r in rows if r.overdue),
            "show_closed": closed == "1",
        },
        principal=principal,
    )


async def _thread(
    request: Request,
    principal: Principal,
    session: AsyncSession,
    thread_id: int,
    *,
    draft: str = "",
    error: str | None = None,
    status: int = 200,
) -> Response:
    thread = await service.staff_thread(session, thread_id=thread_id)
    return render(
        request,
        "messaging/thread.html",
        {
            "thread": thread,
            "posts": await service.posts_of(session, thread_id=thread.id),
            "templates": await service.reply_templates(session),
            "draft": draft,
            "error": error,
        },
        principal=principal,
        status=status,
    )


@router.get("/messages/{thread_id}")
async def thread_page(
    principal: Desk,
    request: Request,
    thread_id: int,
    session: SessionDep,
    template: Annotated[int | None, Query()] = None,
) -> Response:
    # Reading a patient's message is reading patient data: audited like a card lookup.
    await audit.record(
        session,
        at=now(),
        actor=principal.actor,
        action="messaging.view",
        record_type="board_thread",
        record_id=thread_id,
        ip=client_ip(request),
    )
    draft = ""
    if template is not None:
        chosen = [t for t in await service.reply_templates(session) if t.id == template]
        draft = chosen[0].body if chosen else ""
    return await _thread(request, principal, session, thread_id, draft=draft)


@router.post("/messages/{thread_id}/reply")
async def reply(
    principal: Desk,
    request: Request,
    thread_id: int,
    session: SessionDep,
    body: Annotated[str, Form(max_length=4000)] = "",
) -> Response:
    base = request.app.state.settings.public_base_url.rstrip("/")
    try:
        async with session.begin_nested():
            await service.reply(
                session,
                thread_id=thread_id,
                body=body,
                staff_actor=principal.actor,
                now=now(),
                thread_url=f"{base}/h5/messages/{thread_id}",
            )
    except DomainError as exc:
        if exc.status == 404:
            raise
        return await _thread(
            request, principal, session, thread_id, draft=body, error=exc.code, status=exc.status
        )
    return RedirectResponse(f"/console/messages/{thread_id}", status_code=303)


@router.post("/messages/{thread_id}/assign")
async def assign(
    principal: Desk,
    thread_id: int,
    session: SessionDep,
    to: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    await service.assign(
        session, thread_id=thread_id, to=to or principal.username, staff_actor=principal.actor,
        now=now(),
    )  # fmt: skip
    return RedirectResponse(f"/console/messages/{thread_id}", status_code=303)


@router.post("/messages/{thread_id}/close")
async def close(principal: Desk, thread_id: int, session: SessionDep) -> Response:
    await service.close(session, thread_id=thread_id, staff_actor=principal.actor, now=now())
    return RedirectResponse("/console/messages", status_code=303)


@router.get("/messages/photos/{token}")
async def photo(principal: Desk, token: str, session: SessionDep) -> Response:
    image = await media.image_by_token(session, token)
    if image is None or image.purpose != "board":
        return Response(status_code=404)
    return Response(
        image.data,
        media_type=image.content_type,
        headers={**IMAGE_HEADERS, "Cache-Control": "no-store"},
    )


@router.get("/reply-templates")
async def reply_templates(principal: Desk, request: Request, session: SessionDep) -> Response:
    return render(
        request,
        "messaging/reply_templates.html",
        {"templates": await service.reply_templates(session), "error": None},
        principal=principal,
    )


@router.post("/reply-templates")
async def save_reply_template(
    principal: Desk,
    request: Request,
    session: SessionDep,
    title: Annotated[str, Form(max_length=200)] = "",
    body: Annotated[str, Form(max_length=4000)] = "",
) -> Response:
    try:
        async with session.begin_nested():
            await service.save_reply_template(session, title=title, body=body, now=now())
    except DomainError as exc:
        return render(
            request,
            "messaging/reply_templates.html",
            {"templates": await service.reply_templates(session), "error": exc.code},
            principal=principal,
            status=exc.status,
        )
    return RedirectResponse("/console/reply-templates", status_code=303)


# --------------------------------------------------------------------------- hospital pages


@router.get("/hospital")
async def hospital(principal: Desk, request: Request, session: SessionDep) -> Response:
    return render(
        request,
        "messaging/hospital.html",
        {"pages": await service.hospital_pages(session), "keys": service.PAGE_KEYS, "error": None,
         "saved": request.query_params.get("saved") == "1"},
        principal=principal,
    )  # fmt: skip


@router.post("/hospital")
async def save_hospital(principal: Desk, request: Request, session: SessionDep) -> Response:
    form = await request.form()
    values = {key: str(form.get(key, "")) for key in service.PAGE_KEYS if key in form}
    try:
        async with session.begin_nested():
            await service.save_hospital_pages(
                session, values=values, staff_actor=principal.actor, now=now()
            )
    except DomainError as exc:
        pages = await service.hospital_pages(session)
        return render(
            request,
            "messaging/hospital.html",
            {"pages": {**pages, **values}, "keys": service.PAGE_KEYS, "error": exc.code,
             "saved": False},
            principal=principal,
            status=exc.status,
        )  # fmt: skip
    return RedirectResponse("/console/hospital?saved=1", status_code=303)


# --------------------------------------------------------------------------- articles


@router.get("/articles")
async def articles(principal: Desk, request: Request, session: SessionDep) -> Response:
    return render(
        request,
        "messaging/articles.html",
        {"articles": await service.articles(session, published_only=False)},
        principal=principal,
    )


def _editor(
    request: Request,
    principal: Principal,
    *,
    article: Any,
    values: dict[str, str],
    error: str | None = None,
    status: int = 200,
    image_url: str | None = None,
) -> Response:
    return render(
        request,
        "messaging/article_edit.html",
        {
            "article": article,
            "values": values,
            "error": error,
            "kinds": service.ARTICLE_KINDS,
            "image_url": image_url,
        },
        principal=principal,
        status=status,
    )


def _values(article: Any) -> dict[str, str]:
    return {
        "kind": article.kind,
        "title": article.title,
        "summary": article.summary,
        "body_html": article.body_html,
    }


@router.get("/articles/new")
async def new_article(principal: Desk, request: Request) -> Response:
    return _editor(request, principal, article=None, values={"kind": "news"})


@router.get("/articles/{article_id}")
async def edit_article(
    principal: Desk,
    request: Request,
    article_id: int,
    session: SessionDep,
    image: Annotated[str, Query(max_length=64)] = "",
) -> Response:
    found = await service.staff_article(session, article_id=article_id)
    return _editor(
        request,
        principal,
        article=found,
        values=_values(found),
        image_url=f"/media/{image}" if image else None,
    )


@router.post("/articles")
async def create_article(
    principal: Desk,
    request: Request,
    session: SessionDep,
    kind: Annotated[str, Form(max_length=16)] = "news",
    title: Annotated[str, Form(max_length=400)] = "",
    summary: Annotated[str, Form(max_length=800)] = "",
    body_html: Annotated[str, Form(max_length=100_000)] = "",
) -> Response:
    return await _save(principal, request, session, None, kind, title, summary, body_html)


@router.post("/articles/{article_id}")
async def update_article(
    principal: Desk,
    request: Request,
    article_id: int,
    session: SessionDep,
    kind: Annotated[str, Form(max_length=16)] = "news",
    title: Annotated[str, Form(max_length=400)] = "",
    summary: Annotated[str, Form(max_length=800)] = "",
    body_html: Annotated[str, Form(max_length=100_000)] = "",
) -> Response:
    return await _save(principal, request, session, article_id, kind, title, summary, body_html)


async def _save(
    principal: Principal,
    request: Request,
    session: AsyncSession,
    article_id: int | None,
    kind: str,
    title: str,
    summary: str,
    body_html: str,
) -> Response:
    try:
        async with session.begin_nested():
            saved = await service.save_article(
                session,
                article_id=article_id,
                kind=kind,
                title=title,
                summary=summary,
                body_html=body_html,
                staff_actor=principal.actor,
                now=now(),
            )
    except DomainError as exc:
        if exc.status == 404:
            raise
        existing = (
            await service.staff_article(session, article_id=article_id) if article_id else None
        )
        values = {"kind": kind, "title": title, "summary": summary, "body_html": body_html}
        return _editor(
            request, principal, article=existing, values=values, error=exc.code, status=exc.status
        )
    # Back to the editor, whose preview shows the body exactly as it was stored.
    return RedirectResponse(f"/console/articles/{saved.id}", status_code=303)


@router.post("/articles/{article_id}/images")
async def upload_image(
    principal: Desk,
    request: Request,
    article_id: int,
    session: SessionDep,
    image: Annotated[UploadFile | None, File()] = None,
) -> Response:
    found = await service.staff_article(session, article_id=article_id)
    limit = request.app.state.settings.messaging_image_max_bytes
    try:
        async with session.begin_nested():
            data = await read_upload(image, limit)
            if data is None:
                raise ImageRejected
            stored = await media.store_image(
                session, data=data, purpose="article", max_bytes=limit, now=now()
            )
    except DomainError as exc:
        return _editor(
            request, principal, article=found, values=_values(found), error=exc.code,
            status=exc.status,
        )  # fmt: skip
    return RedirectResponse(f"/console/articles/{article_id}?image={stored.token}", status_code=303)


@router.post("/articles/{article_id}/publish")
async def publish(principal: Desk, article_id: int, session: SessionDep) -> Response:
    await service.publish(session, article_id=article_id, staff_actor=principal.actor, now=now())
    return RedirectResponse(f"/console/articles/{article_id}", status_code=303)


@router.get("/articles/{article_id}/push")
async def push_confirm(
    principal: Desk, request: Request, article_id: int, session: SessionDep
) -> Response:
    found = await service.staff_article(session, article_id=article_id)
    return render(
        request,
        "messaging/push_confirm.html",
        {"article": found, "audience": await service.push_audience(session), "error": None},
        principal=principal,
    )


@router.post("/articles/{article_id}/push")
async def push(
    principal: Desk,
    request: Request,
    article_id: int,
    session: SessionDep,
    confirm_count: Annotated[str, Form(max_length=12)] = "",
) -> Response:
    found = await service.staff_article(session, article_id=article_id)
    audience = await service.push_audience(session)
    # The confirmation carries the count staff saw: if it changed, they confirm again.
    error = None if confirm_count == str(audience) else "console.articles.push_recount"
    if error is None:
        try:
            async with session.begin_nested():
                await service.start_push(
                    session, article_id=article_id, staff_actor=principal.actor, now=now()
                )
        except DomainError as exc:
            error = exc.code
    if error is not None:
        return render(
            request,
            "messaging/push_confirm.html",
            {"article": found, "audience": audience, "error": error},
            principal=principal,
            status=409,
        )
    return RedirectResponse(f"/console/articles/{article_id}", status_code=303)
