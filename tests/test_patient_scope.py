"""Patient data is reached only through the one scope (``web.patient.patient_scope``).

- Every patient route (``/h5`` and ``/api/patient``) depends on the signed-in identity, and
  every route that takes a card or record id in its path depends on the full scope.
- Presentation code never reads a domain's tables itself (no ``models``/``repository``
  imports), so it cannot bypass the scope.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from frontdesk.web.app import _domain_routers
from frontdesk.web.patient import patient_scope, signed_in_openid

SRC = Path(__file__).resolve().parents[1] / "src" / "frontdesk"
PATIENT_PREFIXES = ("/h5", "/api/patient")


def _calls(dependant: Dependant) -> set[Any]:
    found = {dependant.call}
    for sub in dependant.dependencies:
        found |= _calls(sub)
    return found


def _all_routes(app: Any) -> list[Any]:
    """The app's own routes plus every domain router's (FastAPI keeps included routers as
    opaque entries, so we read the routers the app factory includes)."""
    routes = list(app.router.routes)
    for router in _domain_routers():
        routes.extend(router.routes)
    return routes


def _patient_routes(app: Any) -> list[APIRoute]:
    return [
        r
        for r in _all_routes(app)
        if isinstance(r, APIRoute) and r.path.startswith(PATIENT_PREFIXES)
    ]


def test_every_patient_route_needs_the_signed_in_identity(app: Any) -> None:
    routes = _patient_routes(app)
    assert len(routes) >= 10  # the checker sees the pages
    missing = [
        r.path for r in routes if not ({patient_scope, signed_in_openid} & _calls(r.dependant))
    ]
    assert missing == []


def test_routes_with_an_id_in_the_path_use_the_scope(app: Any) -> None:
    missing = [
        r.path
        for r in _patient_routes(app)
        if "_id}" in r.path
        and "challenge_id" not in r.path
        and patient_scope not in _calls(r.dependant)
    ]
    assert missing == []


def _presentation_modules() -> list[Path]:
    return [
        p
        for p in SRC.rglob("*.py")
        if p.stem == "routes" or p.stem.endswith("_routes") or p.parent.name == "web"
    ]


def test_presentation_never_reads_tables_directly() -> None:
    offences = []
    for path in _presentation_modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
                own = "frontdesk." + path.relative_to(SRC).parts[0] + "."
                for name in names:
                    if (
                        name.split(".")[-1] in {"models", "repository"}
                        and name.startswith("frontdesk.")
                        and ".core." not in name
                        and not name.startswith(own)  # a domain's own pages may use its types
                    ):
                        offences.append(f"{path.relative_to(SRC)} imports {name}")
    assert offences == []


def test_the_checker_finds_a_route_without_the_scope(app: Any) -> None:
    async def leaky(card_id: int) -> dict[str, int]:
        return {"card_id": card_id}

    app.add_api_route("/h5/leaky/{card_id}", leaky)
    leaky_routes = [r for r in _patient_routes(app) if r.path == "/h5/leaky/{card_id}"]
    assert leaky_routes
    assert not ({patient_scope, signed_in_openid} & _calls(leaky_routes[0].dependant))
