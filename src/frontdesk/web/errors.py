"""One error shape for the whole app: JSON for APIs and callbacks, a page for browsers."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from frontdesk.core.errors import DomainError, TooManyRequests
from frontdesk.core.i18n import pick_locale, translate

log = logging.getLogger("frontdesk.web")

_STATUS_CODES = {
    400: "malformed_request",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "body_too_large",
    422: "invalid",
    429: "too_many_requests",
    503: "unavailable",
}


def request_locale(request: Request) -> str:
    return pick_locale(
        request.headers.get("accept-language"),
        request.query_params.get("lang") or request.cookies.get("lang"),
    )


def wants_html(request: Request) -> bool:
    path = request.url.path
    if path.startswith(("/api/", "/wechat/", "/his/", "/healthz", "/readyz")):
        return False
    return "text/html" in request.headers.get("accept", "")


def error_response(
    request: Request,
    *,
    status: int,
    code: str,
    fields: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
    **params: Any,
) -> Response:
    locale = request_locale(request)
    message = translate(code, locale, **params)
    request_id = getattr(request.state, "request_id", None)
    if wants_html(request):
        templates = request.app.state.templates
        page: Response = templates.TemplateResponse(
            request,
            "error.html",
            {
                "status": status,
                "code": code,
                "message": message,
                "request_id": request_id,
                "locale": locale,
                "t": lambda key: translate(key, locale),
            },
            status_code=status,
            headers=headers,
        )
        return page
    body: dict[str, Any] = {"code": code, "message": message, "request_id": request_id}
    if fields:
        body["fields"] = fields
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def _domain(request: Request, exc: DomainError) -> Response:
        headers = None
        if isinstance(exc, TooManyRequests):
            headers = {"Retry-After": str(exc.retry_after)}
        return error_response(
            request, status=exc.status, code=exc.code, headers=headers, **exc.params
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        fields = [
            {
                "loc": [str(p) for p in err.get("loc", ())],
                "type": err.get("type"),
                "msg": err.get("msg"),
            }
            for err in exc.errors()
        ]
        return error_response(request, status=422, code="invalid", fields=fields)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        code = (
            exc.detail
            if isinstance(exc.detail, str) and exc.detail.islower() and " " not in exc.detail
            else _STATUS_CODES.get(exc.status_code, "error")
        )
        return error_response(
            request, status=exc.status_code, code=code, headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(request, status=500, code="internal_error")
