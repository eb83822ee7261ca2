"""Test helpers for cards: real patients of the demo HIS, and codes from the SMS sim."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import select

from frontdesk.sims.his_sim import models as m
from frontdesk.sims.his_sim.app import sim_state


@dataclass(frozen=True)
class SimPatient:
    card_no: str
    name: str
    id_last4: str
    phone: str
    card_type: str


async def sim_patients(
    his_sim: Any, *, count: int = 12, card_type: str | None = None
) -> list[SimPatient]:
    state = sim_state(his_sim)
    stmt = (
        select(
            m.card.c.card_no,
            m.card.c.card_type,
            m.patient.c.name,
            m.patient.c.id_number,
            m.patient.c.phone,
        )
        .join(m.patient, m.patient.c.id == m.card.c.patient_id)
        .order_by(m.card.c.card_no)
        .limit(count)
    )
    if card_type is not None:
        stmt = stmt.where(m.card.c.card_type == card_type)
    async with state.engine.connect() as conn:
        rows = (await conn.execute(stmt)).all()
    return [
        SimPatient(
            card_no=r.card_no,
            name=r.name,
            id_last4=r.id_number[-4:],
            phone=r.phone,
            card_type=r.card_type,
        )
        for r in rows
    ]


async def last_code(sms_sim: Any, phone: str) -> str:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sms_sim), base_url="http://sms-sim"
    ) as c:
        messages = (await c.get("/sim/inbox", params={"phone": phone})).json()
    assert messages, f"no SMS reached {phone}"
    found = re.search(r"验证码为([0-9]{6})", messages[-1]["text"])
    assert found is not None
    return found.group(1)


async def inbox_size(sms_sim: Any, phone: str) -> int:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sms_sim), base_url="http://sms-sim"
    ) as c:
        return len((await c.get("/sim/inbox", params={"phone": phone})).json())
