"""``HotRouteMiddleware``: an endpoint served before routing answers exactly as a routed one
would (the app's exception handlers, the other middleware's headers), only for its own
method and path; and the app serves the booking attempt through it."""

from __future__ import annotations

import ast
import inspect
import textwrap
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute

from frontdesk.core.errors import Conflict, TooManyRequests
from frontdesk.web.errors import install_error_handlers
from frontdesk.web.middleware import HotRouteMiddleware, RequestIdMiddleware


class _Calls:
    hot = 0
    routed = 0


def _app(endpoint: Any) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/hot")
    async def routed() -> dict[str, str]:
        _Calls.routed += 1
        return {"by": "router"}

    @app.get("/hot")
    async def routed_get() -> dict[str, str]:
        return {"by": "router"}

    app.add_middleware(HotRouteMiddleware, endpoints={("POST", "/hot"): endpoint})
    app.add_middleware(RequestIdMiddleware)
    return app


async def _post(app: FastAPI, path: str = "/hot", method: str = "POST") -> httpx.Response:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
        base_url="http://testserver",
    ) as client:
        return await client.request(method, path)


async def test_the_hot_endpoint_answers_its_own_method_and_path_only() -> None:
    async def hot(_request: Request) -> Response:
        _Calls.hot += 1
        return JSONResponse({"by": "hot"}, status_code=201)

    app = _app(hot)
    _Calls.hot = _Calls.routed = 0
    answer = await _post(app)
    assert (answer.status_code, answer.json()) == (201, {"by": "hot"})
    assert answer.headers["x-request-id"]  # the outer middleware still applies
    assert (_Calls.hot, _Calls.routed) == (1, 0)
    assert (await _post(app, method="GET")).json() == {"by": "router"}
    assert (await _post(app, path="/hot/")).status_code in {307, 404}
    assert _Calls.hot == 1


@pytest.mark.parametrize(
    ("raised", "status", "code"),
    [(Conflict(), 409, "conflict"), (TooManyRequests(retry_after=7), 429, "too_many_requests")],
)
async def test_a_raised_domain_error_gets_the_apps_own_answer(
    raised: Exception, status: int, code: str
) -> None:
    async def hot(_request: Request) -> Response:
        raise raised

    answer = await _post(_app(hot))
    assert answer.status_code == status
    assert answer.json()["error"]["code"] == code
    if status == 429:
        assert answer.headers["Retry-After"] == "7"


async def test_an_unexpected_error_is_a_500_without_details() -> None:
    async def hot(_request: Request) -> Response:
        raise RuntimeError("secret detail 320102199001011234")

    answer = await _post(_app(hot))
    assert answer.status_code == 500
    assert "320102199001011234" not in answer.text


def test_the_booking_attempt_is_served_hot_and_is_also_a_routed_scoped_route(app: Any) -> None:
    from frontdesk.booking import routes as booking_routes
    from frontdesk.web.app import _hot_endpoints
    from frontdesk.web.patient import patient_scope

    hot = _hot_endpoints()
    assert hot == {("POST", booking_routes.BOOK_API_PATH): booking_routes.book_attempt}
    # The routed route (OpenAPI, scope checks) runs the same function.
    routed = [
        r
        for r in booking_routes.api.routes
        if isinstance(r, APIRoute)
        and r.path == booking_routes.BOOK_API_PATH
        and "POST" in (r.methods or set())
    ]
    assert len(routed) == 1
    assert "book_attempt" in inspect.getsource(routed[0].endpoint)
    # The hot endpoint reads the caller's scope through the one function that decides it.
    tree = ast.parse(textwrap.dedent(inspect.getsource(booking_routes.book_attempt)))
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    called = {c.func.id for c in calls if isinstance(c.func, ast.Name)}
    assert patient_scope.__name__ in called
    assert "/api/patient/booking/bookings" in app.openapi()["paths"]
