"""Helpers for tests that talk to the demo HIS directly (raw signed requests, snapshots)."""

from __future__ import annotations

import json
from typing import Any

import httpx
from sqlalchemy import func, select

from frontdesk.core.clock import now as clock_now
from frontdesk.his import signing
from frontdesk.sims.his_sim import models as m
from frontdesk.sims.his_sim.app import sim_state

KEY_ID = "test-key"


def client_for(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://his-sim")


async def signed(
    client: httpx.AsyncClient,
    secret: str,
    method: str,
    path: str,
    *,
    query: str = "",
    body: Any = None,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
    unix_time: int | None = None,
    nonce: str | None = None,
    key_id: str = KEY_ID,
) -> httpx.Response:
    """Send a correctly signed request (unless the caller overrides a header)."""
    payload = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
    signed_headers = signing.signed_headers(
        key_id=key_id,
        secret=secret,
        method=method,
        path=path,
        query=query,
        body=payload,
        unix_time=unix_time if unix_time is not None else int(clock_now().timestamp()),
        nonce=nonce,
    ).as_dict()
    signed_headers["Content-Type"] = "application/json"
    signed_headers.update(headers or {})
    url = path + (f"?{query}" if query else "")
    return await client.request(method, url, content=payload, headers=signed_headers)


async def snapshot(app: Any) -> dict[str, Any]:
    """Every business table's row count plus the order and item states: what a refused
    request must leave unchanged (nonces are left out: spending one is the point)."""
    state = sim_state(app)
    tables = [
        m.appointment,
        m.order,
        m.order_item,
        m.settlement,
        m.refund,
        m.report,
        m.event,
        m.idempotency,
        m.slot,
        m.schedule,
    ]
    async with state.sessionmaker() as session:
        counts: dict[str, Any] = {
            t.name.removeprefix("his_"): (
                await session.execute(select(func.count()).select_from(t))
            ).scalar_one()
            for t in tables
        }
        counts["order_states"] = sorted(
            (r.id, r.status) for r in await session.execute(select(m.order.c.id, m.order.c.status))
        )
        counts["item_states"] = sorted(
            (r.id, r.status)
            for r in await session.execute(select(m.order_item.c.id, m.order_item.c.status))
        )
        counts["taken_slots"] = (
            await session.execute(
                select(func.count()).select_from(m.slot).where(m.slot.c.appointment_id.is_not(None))
            )
        ).scalar_one()
    return counts


async def card_holder(app: Any, card_no: str) -> tuple[str, str, str, str]:
    """(name, id_number, phone, card_type) of a seeded card, read from the sim's own DB."""
    state = sim_state(app)
    async with state.sessionmaker() as session:
        row = (
            await session.execute(
                select(
                    m.patient.c.name, m.patient.c.id_number, m.patient.c.phone, m.card.c.card_type
                )
                .join(m.card, m.card.c.patient_id == m.patient.c.id)
                .where(m.card.c.card_no == card_no)
            )
        ).one()
    return row.name, row.id_number, row.phone, row.card_type
