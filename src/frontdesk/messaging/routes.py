"""Patient pages of messaging: the message board, the notification centre, hospital
information, news and notices; and the public URLs of article images.

Presentation only; the rules are in ``messaging.service``. Every page takes the patient
scope; a thread or photo of another account is "not found".
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import RedirectResponse, Response

from frontdesk.core import ratelimit
from frontdesk.core.clock import now
from frontdesk.core.errors import DomainError, NotFound, Unavailable
from frontdesk.core.ratelimit import Limit
from frontdesk.his.port import HisError
from frontdesk.messaging import media, service
from frontdesk.messaging.errors import ImageTooLarge
from frontdesk.web.deps import ContainerDep, SessionDep
from frontdesk.web.patient import OpenIdDep, PatientScopeDep, check_csrf, render
from frontdesk.wechat.oa import templates as wechat_templates

router = APIRouter(prefix="/h5", include_in_schema=False)
public_router = APIRouter(include_in_schema=False)

# Served images never run as anything else: no sniffing, no script, no plug-ins.
IMAGE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; sandbox",
    "Content-Disposition": "inline",
}


async def read_upload(upload: UploadFile | None, max_bytes: int) -> bytes | None:
    """The uploaded bytes (None if no file was chosen); reads at most one byte past the
    limit, so an oversized file is refused without being held in memory whole."""
    if upload is None or not upload.filename:
        return None
    data = await upload.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ImageTooLarge(max_kb=max_bytes // 1024)
    return data or None


async def _limit_posts(request: Request, openid: str) -> None:
    settings = request.app.state.settings
    # Counted in its own transaction, so a refused post still counts.
    async with request.app.state.session_provider() as limit_session:
        await ratelimit.check(
            limit_session,
            Limit("board.10min", settings.messaging_posts_per_10_minutes, 600),
            openid,
            now=now(),
        )
        await ratelimit.check(
            limit_session,
            Limit("board.day", settings.messaging_posts_per_day, 86_400),
            openid,
            now=now(),
        )


async def _flood_guard(request: Request, openid: OpenIdDep) -> None:
    await _limit_posts(request, openid)


# Declared before the scope in a route's parameters, so the counter's own short transaction
# runs before the request's transaction starts (SQLite allows one writer at a time).
FloodGuard = Annotated[None, Depends(_flood_guard)]


# --------------------------------------------------------------------------- board


async def _board_page(
    request: Request,
    scope: Any,
    session: Any,
    *,
    error: str | None = None,
    status: int = 200,
    values: dict[str, str] | None = None,
    params: dict[str, Any] | None = None,
) -> Response:
    threads = await service.threads_of(session, openid=scope.openid)
    return render(
        request,
        "messaging/board.html",
        {
            "threads": threads,
            "cards": scope.cards,
            "error": error,
            "error_params": params or {},
            "values": values or {},
        },
        status=status,
        openid=scope.openid,
    )


@router.get("/messages")
async def board(request: Request, scope: PatientScopeDep, session: SessionDep) -> Response:
    return await _board_page(request, scope, session)


@router.post("/messages")
async def leave_message(
    request: Request,
    _flood: FloodGuard,
    scope: PatientScopeDep,
    session: SessionDep,
    body: Annotated[str, Form(max_length=4000)] = "",
    card_id: Annotated[str, Form(max_length=20)] = "",
    photo: Annotated[UploadFile | None, File()] = None,
    csrf: Annotated[str, Form()] = "",
) -> Response:
    check_csrf(request, scope.openid, csrf)
    settings = request.app.state.settings
    try:
        async with session.begin_nested():
            image = await read_upload(photo, settings.messaging_image_max_bytes)
            thread = await service.start_thread(
                session,
                scope=scope,
                body=body,
                card_id=int(card_id) if card_id.isdigit() else None,
                image=image,
                max_image_bytes=settings.messaging_image_max_bytes,
                now=now(),
            )
    except DomainError as exc:
        return await _board_page(
            request,
            scope,
            session,
            error=exc.code,
            status=exc.status,
            values={"body": body},
            params=exc.params,
        )
    return RedirectResponse(f"/h5/messages/{thread.id}", status_code=303)


async def _thread_page(
    request: Request,
    scope: Any,
    session: Any,
    thread_id: int,
    *,
    error: str | None = None,
    status: int = 200,
    params: dict[str, Any] | None = None,
) -> Response:
    thread = await service.own_thread(session, openid=scope.openid, thread_id=thread_id)
    posts = await service.posts_of(session, thread_id=thread.id)
    card = next((c for c in scope.cards if c.card_id == thread.card_id), None)
    return render(
        request,
        "messaging/thread.html",
        {
            "thread": thread,
            "posts": posts,
            "card": card,
            "can_rate": thread.rating is None and any(p.author == "staff" for p in posts),
            "error": error,
            "error_params": params or {},
        },
        status=status,
        openid=scope.openid,
    )


@router.get("/messages/{thread_id}")
async def thread_page(
    request: Request, thread_id: int, scope: PatientScopeDep, session: SessionDep
) -> Response:
    return await _thread_page(request, scope, session, thread_id)


@router.post("/messages/{thread_id}")
async def follow_up(
    request: Request,
    thread_id: int,
    _flood: FloodGuard,
    scope: PatientScopeDep,
    session: SessionDep,
    body: Annotated[str, Form(max_length=4000)] = "",
    photo: Annotated[UploadFile | None, File()] = None,
    csrf: Annotated[str, Form()] = "",
) -> Response:
    check_csrf(request, scope.openid, csrf)
    settings = request.app.state.settings
    try:
        async with session.begin_nested():
            image = await read_upload(photo, settings.messaging_image_max_bytes)
            await service.add_patient_post(
                session,
                openid=scope.openid,
                thread_id=thread_id,
                body=body,
                image=image,
                max_image_bytes=settings.messaging_image_max_bytes,
                now=now(),
            )
    except DomainError as exc:
        if exc.status == 404:
            raise
        return await _thread_page(
            request, scope, session, thread_id, error=exc.code, status=exc.status, params=exc.params
        )
    return RedirectResponse(f"/h5/messages/{thread_id}", status_code=303)


@router.post("/messages/{thread_id}/rate")
async def rate(
    request: Request,
    thread_id: int,
    scope: PatientScopeDep,
    session: SessionDep,
    rating: Annotated[int, Form(ge=1, le=5)],
    csrf: Annotated[str, Form()] = "",
) -> Response:
    check_csrf(request, scope.openid, csrf)
    await service.rate(session, openid=scope.openid, thread_id=thread_id, rating=rating, now=now())
    return RedirectResponse(f"/h5/messages/{thread_id}", status_code=303)


@router.get("/photos/{token}")
async def own_photo(token: str, scope: PatientScopeDep, session: SessionDep) -> Response:
    """A photo the patient attached: only its sender sees it here (staff in the console)."""
    image = await media.image_by_token(session, token)
    if image is None or image.purpose != "board" or image.owner_openid != scope.openid:
        return Response(status_code=404)
    return Response(
        image.data,
        media_type=image.content_type,
        headers={**IMAGE_HEADERS, "Cache-Control": "private, max-age=3600"},
    )


# --------------------------------------------------------------------------- notifications


@router.get("/notifications")
async def notifications(request: Request, scope: PatientScopeDep, session: SessionDep) -> Response:
    sent = await wechat_templates.templates_for(session, openid=scope.openid)
    return render(
        request,
        "messaging/notifications.html",
        {
            "messages": sent,
            "preferences": await service.preferences(session, openid=scope.openid),
            "saved": request.query_params.get("saved") == "1",
        },
        openid=scope.openid,
    )


@router.post("/notifications/preferences")
async def save_preferences(
    request: Request, scope: PatientScopeDep, session: SessionDep
) -> Response:
    form = await request.form()
    check_csrf(request, scope.openid, str(form.get("csrf", "")))
    chosen = {kind: form.get(kind) == "1" for kind in wechat_templates.OPTIONAL_KINDS}
    await service.set_preferences(session, openid=scope.openid, chosen=chosen, now=now())
    return RedirectResponse("/h5/notifications?saved=1", status_code=303)


# --------------------------------------------------------------------------- hospital


def _catalog(request: Request) -> service.CatalogCache:
    state = request.app.state
    cache = getattr(state, "messaging_catalog", None)
    if cache is None:
        cache = service.CatalogCache(state.settings.messaging_catalog_cache_seconds)
        state.messaging_catalog = cache
    return cache


@router.get("/hospital")
async def hospital(request: Request, scope: PatientScopeDep, session: SessionDep) -> Response:
    return render(
        request,
        "messaging/hospital.html",
        {"pages": await service.hospital_pages(session)},
        openid=scope.openid,
    )


@router.get("/hospital/departments")
async def departments(
    request: Request, scope: PatientScopeDep, container: ContainerDep
) -> Response:
    try:
        found = await _catalog(request).departments(container.services["his"])
    except HisError as exc:
        raise Unavailable from exc
    return render(
        request, "messaging/departments.html", {"departments": found}, openid=scope.openid
    )


@router.get("/hospital/departments/{department_code}")
async def department(
    request: Request, department_code: str, scope: PatientScopeDep, container: ContainerDep
) -> Response:
    cache, his = _catalog(request), container.services["his"]
    try:
        found = next((d for d in await cache.departments(his) if d.code == department_code), None)
        doctors = await cache.doctors(his, department_code) if found else []
    except HisError as exc:
        raise Unavailable from exc
    if found is None:
        raise NotFound
    return render(
        request,
        "messaging/department.html",
        {"department": found, "doctors": doctors},
        openid=scope.openid,
    )


# --------------------------------------------------------------------------- news


@router.get("/news")
async def news(request: Request, scope: PatientScopeDep, session: SessionDep) -> Response:
    return render(
        request,
        "messaging/news.html",
        {"articles": await service.articles(session, published_only=True)},
        openid=scope.openid,
    )


@router.get("/news/{article_id}")
async def article(
    request: Request, article_id: int, scope: PatientScopeDep, session: SessionDep
) -> Response:
    found = await service.published_article(session, article_id=article_id)
    return render(request, "messaging/article.html", {"article": found}, openid=scope.openid)


@public_router.get("/media/{token}")
async def article_image(token: str, session: SessionDep) -> Response:
    """Images of published articles: public, like the articles themselves."""
    image = await media.image_by_token(session, token)
    if image is None or image.purpose != "article":
        return Response(status_code=404)
    return Response(
        image.data,
        media_type=image.content_type,
        headers={**IMAGE_HEADERS, "Cache-Control": "public, max-age=86400"},
    )
