"""The front page of a Frontdesk server: what runs here and where to go."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from frontdesk.web.errors import request_locale

router = APIRouter(include_in_schema=False)


@router.get("/", response_class=HTMLResponse)
async def index(request: Request) -> HTMLResponse:
    settings = request.app.state.settings
    page: HTMLResponse = request.app.state.templates.TemplateResponse(
        request,
        "home.html",
        {
            "hospital": settings.hospital_name,
            "locale": request_locale(request),
            "links": request.app.state.home_links,
        },
    )
    return page
