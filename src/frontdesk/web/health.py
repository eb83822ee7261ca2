"""Liveness (process up) and readiness (database reachable, migrations current)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from frontdesk.core import migrate
from frontdesk.core.database import READ_ONLY

router = APIRouter(tags=["health"])
log = logging.getLogger("frontdesk.health")


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    container = request.app.state.container
    checks: dict[str, str] = {}
    try:
        ro = container.db.engine.execution_options(**{READ_ONLY: True})
        async with ro.connect() as conn:
            await conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        log.warning("readiness: database unreachable: %s", exc)
        checks["database"] = "unreachable"
    if checks["database"] == "ok":
        try:
            current = await migrate.is_current(container.db.engine)
            checks["migrations"] = "ok" if current else "pending"
        except Exception as exc:
            log.warning("readiness: cannot read migration state: %s", exc)
            checks["migrations"] = "unknown"
    ok = all(value == "ok" for value in checks.values())
    return JSONResponse(
        {"status": "ok" if ok else "unavailable", "checks": checks}, status_code=200 if ok else 503
    )
