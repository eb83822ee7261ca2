"""Pure ASGI middleware: request ids, body size limit, security headers, load shedding and
the hot endpoints served before routing."""

from __future__ import annotations

import html
import json
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from frontdesk.core.i18n import pick_locale, translate
from frontdesk.core.logging import request_id_var

_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class RequestIdMiddleware:
    """Takes a safe ``X-Request-ID`` from the proxy or makes one; echoes it back."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        rid = incoming if _SAFE_ID.match(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        token = request_id_var.set(rid)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)


class BodyLimitMiddleware:
    """Refuses bodies over ``max_bytes`` with 413 before any handler reads them whole.

    Checks ``Content-Length`` up front and counts streamed chunks for chunked uploads.
    """

    def __init__(
        self, app: ASGIApp, *, max_bytes: int, overrides: dict[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.overrides = overrides or {}

    def _limit_for(self, path: str) -> int:
        for prefix, limit in self.overrides.items():
            if path.startswith(prefix):
                return limit
        return self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit_for(scope.get("path", ""))
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > limit
            except ValueError:
                too_big = True
            if too_big:
                await _send_413(scope, send)
                return
        received = 0
        refused = False

        async def limited_receive() -> Message:
            # Frameworks turn errors raised while reading the body into their own 400, so
            # instead of raising we answer 413 ourselves and tell the app the client left.
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    await _send_413(scope, send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not refused:
                await send(message)

        await self.app(scope, limited_receive, guarded_send)


async def _send_413(scope: Scope, send: Send) -> None:
    headers = dict(scope["headers"])
    locale = pick_locale(headers.get(b"accept-language", b"").decode("latin-1"))
    body = json.dumps(
        {"error": {"code": "body_too_large", "message": translate("body_too_large", locale)}},
        ensure_ascii=False,
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"SAMEORIGIN"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        b"frame-ancestors 'self'; base-uri 'self'; form-action 'self'",
    ),
]


class SecurityHeadersMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        hsts: bool = False,
        skip_csp_prefixes: tuple[str, ...] = (),
        frame_ancestors: tuple[str, ...] = (),
    ) -> None:
        self.app = app
        self.hsts = hsts
        self.skip_csp_prefixes = skip_csp_prefixes
        self.headers = SECURITY_HEADERS
        if frame_ancestors:
            # Let these origins frame our pages (the WeChat simulator's phone, in dev only):
            # X-Frame-Options cannot name another origin, so CSP frame-ancestors does it.
            extra = " ".join(frame_ancestors).encode()
            self.headers = [
                (k, v.replace(b"frame-ancestors 'self'", b"frame-ancestors 'self' " + extra))
                for k, v in SECURITY_HEADERS
                if k != b"x-frame-options"
            ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        skip_csp = scope.get("path", "").startswith(self.skip_csp_prefixes)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra: list[Any] = [
                    (k, v)
                    for k, v in self.headers
                    if k not in present and not (skip_csp and k == b"content-security-policy")
                ]
                if self.hsts:
                    extra.append((b"strict-transport-security", b"max-age=31536000"))
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)


class InFlightLimitMiddleware:
    """Load shedding before any routing: at most ``limit()`` requests matching
    ``prefixes``/``methods`` run at once in this process; one more is answered at once with
    503 ``code`` and ``Retry-After`` instead of queueing behind the CPU and the database
    pool. Answering here costs a fraction of a routed request, so the process keeps
    answering quickly even when offered many times what it can serve, and it recovers as
    soon as the load drops (nothing is queued)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        prefixes: tuple[str, ...],
        limit: Any,
        methods: frozenset[str] = frozenset({"POST"}),
        code: str = "busy",
        retry_after_seconds: int = 1,
    ) -> None:
        self.app = app
        self.prefixes = prefixes
        self.limit = limit  # a callable, so tests and settings can change it at run time
        self.methods = methods
        self.code = code
        self.retry_after = str(retry_after_seconds).encode()
        self.in_flight = 0
        self.shed = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope.get("method") not in self.methods
            or not scope.get("path", "").startswith(self.prefixes)
        ):
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit():
            self.shed += 1
            await self._busy(scope, send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1

    async def _busy(self, scope: Scope, send: Send) -> None:
        headers = dict(scope["headers"])
        locale = pick_locale(headers.get(b"accept-language", b"").decode("latin-1"))
        message = translate(self.code, locale)
        if scope.get("path", "").startswith("/api/"):
            body = json.dumps(
                {"error": {"code": self.code, "message": message}}, ensure_ascii=False
            ).encode()
            kind = b"application/json; charset=utf-8"
        else:
            body = (
                f'<!doctype html><meta charset="utf-8"><title>{html.escape(message)}</title>'
                f"<p>{html.escape(message)}</p>"
            ).encode()
            kind = b"text/html; charset=utf-8"
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [
                    (b"content-type", kind),
                    (b"content-length", str(len(body)).encode()),
                    (b"retry-after", self.retry_after),
                    (b"cache-control", b"no-store"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


HotEndpoint = Callable[[Request], Awaitable[Response]]


class HotRouteMiddleware:
    """Serves a few hot endpoints before routing, inside the other middleware (request id,
    body limit, security headers and the in-flight cap all apply).

    At the booking release time a routed request spends more of the CPU on FastAPI's
    per-request dependency solving and on matching the included routers than on the
    booking itself (see bench/results/booking_rush.md). An endpoint here is a plain
    ``async def endpoint(request) -> Response`` keyed by (method, exact path); it reads its
    own scope through the same functions as the routed pages. An exception it raises gets
    the app's own exception handler for that class (the same answer a routed request
    gets); one without a specific handler goes on up to the app's 500 handler."""

    def __init__(self, app: ASGIApp, *, endpoints: dict[tuple[str, str], HotEndpoint]) -> None:
        self.app = app
        self.endpoints = endpoints

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = (
            self.endpoints.get((scope.get("method", ""), scope.get("path", "")))
            if scope["type"] == "http"
            else None
        )
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive, send)
        try:
            response = await endpoint(request)
        except Exception as exc:
            handler = _handler_for(scope["app"], exc)
            if handler is None:
                raise
            response = await handler(request, exc)
        await response(scope, receive, send)


def _handler_for(app: Any, exc: Exception) -> Any:
    """The app's exception handler for the nearest class of ``exc`` (as Starlette's
    ExceptionMiddleware looks it up), leaving ``Exception`` itself to the 500 handler."""
    handlers = getattr(app, "exception_handlers", {})
    for cls in type(exc).__mro__:
        if cls is Exception:
            return None
        if cls in handlers:
            return handlers[cls]
    return None
