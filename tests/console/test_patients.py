"""Customer service looks up an account's cards (masked) and unbinds on request, audited."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from frontdesk.accounts import service as accounts
from frontdesk.accounts.models import CardBinding
from frontdesk.accounts.schemas import BindRequest, Relationship
from frontdesk.console.models import Role
from frontdesk.core.clock import FrozenClock
from tests.accounts.helpers import sim_patients
from tests.console.conftest import audit_rows, create_staff, sign_in

OPENID = "o-patient-000000000000001"


async def _bound_account(
    db: AsyncSession, clock: FrozenClock, his_gateway: Any, his_sim: Any
) -> list[Any]:
    patients = await sim_patients(his_sim, count=2)
    await accounts.accept_notice(db, openid=OPENID, version="v1", now=clock.now())
    for p in patients:
        await accounts.start_binding(
            db,
            his=his_gateway,
            sms=None,
            openid=OPENID,
            request=BindRequest(
                card_no=p.card_no,
                holder_name=p.name,
                id_or_phone_last4=p.id_last4,
                relationship=Relationship.self_,
            ),
            policy=accounts.BindingPolicy(sms_enabled=False),
            secret="s",
            now=clock.now(),
        )
    return patients


async def test_lookup_by_openid_or_card_shows_masked_cards_and_is_audited(
    client: httpx.AsyncClient,
    db: AsyncSession,
    clock: FrozenClock,
    his_gateway: Any,
    his_sim: Any,
) -> None:
    patients = await _bound_account(db, clock, his_gateway, his_sim)
    desk = await create_staff(db, clock, username="cs1", role=Role.customer_service)
    await sign_in(client, clock, desk)
    for q in (OPENID, patients[0].card_no):
        page = await client.get("/console/patients", params={"q": q})
        assert page.status_code == 200
        assert OPENID in page.text
        for p in patients:
            assert p.card_no in page.text
            assert p.name not in page.text
    assert "绑卡短信验证：已开启" in page.text
    lookups = await audit_rows(db, action="card.lookup")
    assert [(r.actor, r.record_type) for r in lookups] == [
        (f"staff:{desk.id}", "account"),
        (f"staff:{desk.id}", "card"),
    ]


async def test_unbind_on_request_needs_a_reason_and_is_audited(
    client: httpx.AsyncClient,
    db: AsyncSession,
    clock: FrozenClock,
    his_gateway: Any,
    his_sim: Any,
) -> None:
    await _bound_account(db, clock, his_gateway, his_sim)
    card_id = (
        (await db.execute(select(CardBinding.card_id).order_by(CardBinding.id))).scalars().first()
    )
    desk = await create_staff(db, clock, username="cs2", role=Role.customer_service)
    csrf = await sign_in(client, clock, desk)
    form = {"csrf_token": csrf, "openid": OPENID, "card_id": str(card_id), "q": OPENID}
    missing = await client.post("/console/patients/unbind", data=form)
    assert missing.status_code == 422
    forged = await client.post(
        "/console/patients/unbind", data={**form, "csrf_token": "x" * 40, "reason": "本人来电"}
    )
    assert forged.status_code == 403
    unknown = await client.post(
        "/console/patients/unbind", data={**form, "card_id": "999999", "reason": "本人来电"}
    )
    assert unknown.status_code == 404
    scope = await accounts.scope_for(db, openid=OPENID)
    assert len(scope.cards) == 2
    done = await client.post("/console/patients/unbind", data={**form, "reason": "本人来电要求"})
    assert done.status_code == 303
    scope = await accounts.scope_for(db, openid=OPENID)
    assert [c.card_id for c in scope.cards] != [] and card_id not in scope.card_ids
    [row] = await audit_rows(db, action="card.staff_unbind")
    assert (row.actor, row.card_id, row.detail["reason"]) == (
        f"staff:{desk.id}",
        card_id,
        "本人来电要求",
    )


async def test_other_roles_are_refused(
    client: httpx.AsyncClient, db: AsyncSession, clock: FrozenClock
) -> None:
    cashier = await create_staff(db, clock, username="cash", role=Role.cashier)
    await sign_in(client, clock, cashier)
    assert (await client.get("/console/patients", params={"q": OPENID})).status_code == 403
    assert await audit_rows(db, action="card.lookup") == []
