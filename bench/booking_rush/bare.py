"""Baseline: a bare FastAPI + asyncpg endpoint doing only the booking SQL (guarded UPDATE of
the slot + INSERT of the booking, one transaction) on scratch tables bench_slot/bench_booking.
Run: BENCH_DSN=postgresql://... uvicorn bench.booking_rush.bare:app"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

POOL: dict[str, Any] = {}


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    POOL["pool"] = await asyncpg.create_pool(
        os.environ["BENCH_DSN"], min_size=8, max_size=int(os.environ.get("BENCH_POOL", "8"))
    )
    yield
    await POOL["pool"].close()


app = FastAPI(lifespan=lifespan)


@app.post("/book")
async def book(request: Request) -> JSONResponse:
    body = await request.json()
    async with POOL["pool"].acquire() as conn, conn.transaction():
        booking_id = await conn.fetchval(
            "INSERT INTO bench_booking (slot_id, card_id) VALUES ($1, $2) RETURNING id",
            body["slot_id"],
            body["card_id"],
        )
        done = await conn.execute(
            "UPDATE bench_slot SET booking_id = $1 WHERE id = $2 AND booking_id IS NULL",
            booking_id,
            body["slot_id"],
        )
        if done != "UPDATE 1":
            raise _Taken
    return JSONResponse({"booking_id": booking_id}, status_code=201)


class _Taken(Exception):
    pass


@app.exception_handler(_Taken)
async def _taken(_request: Request, _exc: _Taken) -> JSONResponse:
    return JSONResponse({"error": "taken"}, status_code=409)
