"""Schemathesis over the app's OpenAPI schema: generated and mutated requests to every
JSON operation never produce a server error."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup

from frontdesk.container import build_container
from frontdesk.core import migrate
from frontdesk.core.settings import Settings
from frontdesk.web.app import create_app


def _app() -> Any:
    """The app on its own migrated SQLite file (the fuzzer calls it from its own thread)."""
    path = Path(tempfile.mkdtemp(prefix="frontdesk-fuzz-")) / "fuzz.db"
    settings = Settings(
        _env_file=None, env="test", database_url=f"sqlite+aiosqlite:///{path}", secret_key="f" * 40
    )

    async def migrated() -> None:
        container = build_container(settings)
        await migrate.upgrade(container.db.engine)
        await container.aclose()

    asyncio.run(migrated())
    return create_app(settings)


schema = schemathesis.openapi.from_asgi("/api/openapi.json", _app())


@schema.parametrize()
@hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_operation_answers_with_a_server_error(case: Any) -> None:
    response = case.call()
    case.validate_response(response, checks=[not_a_server_error])


def test_the_check_catches_a_server_error() -> None:
    """Proof the fuzz test can fail: a crash raises out of the call, and an answered 500
    fails the check."""
    broken = FastAPI()

    @broken.get("/api/boom")
    async def boom(n: int) -> dict[str, int]:
        raise RuntimeError(f"bug {n}")

    @broken.get("/api/five-hundred")
    async def five_hundred(n: int) -> JSONResponse:
        return JSONResponse({"n": n}, status_code=500)

    schema_ = schemathesis.openapi.from_asgi("/openapi.json", broken)
    with pytest.raises(RuntimeError, match="bug 1"):
        schema_["/api/boom"]["GET"].Case(query={"n": 1}).call()
    case = schema_["/api/five-hundred"]["GET"].Case(query={"n": 1})
    response = case.call()
    assert response.status_code == 500
    with pytest.raises(FailureGroup) as failure:
        case.validate_response(response, checks=[not_a_server_error])
    assert [type(e).__name__ for e in failure.value.exceptions] == ["ServerError"]
