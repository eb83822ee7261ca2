"""The ASGI app factory: ``create_app(settings)`` wires middleware, routers and errors."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy.ext.asyncio import AsyncSession

from frontdesk import __version__
from frontdesk.container import Container, build_container
from frontdesk.core.settings import Environment, Settings
from frontdesk.web import health, home, patient
from frontdesk.web.errors import install_error_handlers
from frontdesk.web.middleware import (
    BodyLimitMiddleware,
    HotEndpoint,
    HotRouteMiddleware,
    InFlightLimitMiddleware,
    RequestIdMiddleware,
    SecurityHeadersMiddleware,
)

WEB_DIR = Path(__file__).resolve().parent

SessionProvider = Callable[[], AbstractAsyncContextManager[AsyncSession]]


def create_app(
    settings: Settings,
    *,
    container: Container | None = None,
    session_provider: SessionProvider | None = None,
) -> FastAPI:
    """Build the web app. Tests pass a container pointed at the simulators and, to roll a
    test back, a session provider bound to the test's transaction."""
    owned = container is None
    container = container or build_container(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        if owned:
            await container.aclose()

    production = settings.env is Environment.production
    app = FastAPI(
        title="Frontdesk",
        version=__version__,
        lifespan=lifespan,
        docs_url=None if production else "/api/docs",
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    app.state.settings = settings
    app.state.container = container
    app.state.session_provider = session_provider or container.db.session
    app.state.templates = Jinja2Templates(directory=str(WEB_DIR / "templates"))
    # Entries on the front page ({"href", "label"}); the demo adds the simulators' pages.
    app.state.home_links = [{"href": "/api/docs", "label": "API (OpenAPI)"}]

    install_error_handlers(app)
    patient.install(app)
    app.mount("/static", StaticFiles(directory=str(WEB_DIR / "static")), name="static")
    app.include_router(health.router)
    app.include_router(home.router)
    for router in _domain_routers():
        app.include_router(router)

    frame_ancestors = (
        (settings.wechat_sim_phone_origin,)
        if settings.simulators_enabled and settings.wechat_sim_phone_origin and not production
        else ()
    )
    # Innermost: the booking attempt of the release-time rush, served before routing.
    app.add_middleware(HotRouteMiddleware, endpoints=_hot_endpoints())
    app.add_middleware(SecurityHeadersMiddleware, hsts=production, frame_ancestors=frame_ancestors)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestIdMiddleware)
    # Outermost: booking attempts over the in-flight cap are shed before anything else runs.
    app.add_middleware(
        InFlightLimitMiddleware,
        prefixes=("/api/patient/booking/bookings", "/h5/booking/slots/"),
        limit=lambda: settings.booking_max_in_flight,
    )
    return app


def _hot_endpoints() -> dict[tuple[str, str], HotEndpoint]:
    """Endpoints served before routing (``HotRouteMiddleware``); each is also a routed
    route (the same function), so the OpenAPI schema and the scope checks see it."""
    from frontdesk.booking import routes as booking_routes

    return {("POST", booking_routes.BOOK_API_PATH): booking_routes.book_attempt}


def _domain_routers() -> list[Any]:
    """Routers of each domain's presentation; later issues add theirs here."""
    from frontdesk.accounts import routes as accounts_routes
    from frontdesk.billing import cashier_routes as billing_cashier_routes
    from frontdesk.billing import paper_routes as billing_paper_routes
    from frontdesk.billing import routes as billing_routes
    from frontdesk.booking import console_routes as booking_console_routes
    from frontdesk.booking import routes as booking_routes
    from frontdesk.console import billing as billing_console
    from frontdesk.console import cashier as cashier_console
    from frontdesk.console import messaging as messaging_console
    from frontdesk.console import wechat_oa as wechat_console
    from frontdesk.console.patients import router as console_patients_router
    from frontdesk.console.reconciliation import router as console_reconciliation_router
    from frontdesk.console.routes import router as console_router
    from frontdesk.messaging import routes as messaging_routes
    from frontdesk.reports import routes as reports_routes
    from frontdesk.wechat.oa import callback_routes as wechat_callback
    from frontdesk.wechat.oa import oauth_routes as wechat_oauth
    from frontdesk.wechat.pay.notify_routes import router as wechatpay_notify_router

    return [
        wechat_callback.router,
        wechat_oauth.router,
        wechatpay_notify_router,
        accounts_routes.router,
        booking_routes.router,
        booking_routes.api,
        booking_console_routes.router,
        console_router,
        console_patients_router,
        messaging_routes.router,
        messaging_routes.public_router,
        messaging_console.router,
        wechat_console.router,
        reports_routes.router,
        console_reconciliation_router,
        billing_routes.router,
        billing_cashier_routes.router,
        billing_paper_routes.router,
        cashier_console.router,
        billing_console.router,
    ]
