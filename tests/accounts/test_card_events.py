"""Cards the HIS voids or merges reach our pages through the event feed."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from frontdesk.accounts import jobs as _jobs  # noqa: F401 - registers the event handlers
from frontdesk.accounts import service
from frontdesk.accounts.errors import CardNotVerified
from frontdesk.accounts.schemas import BindRequest, Relationship
from frontdesk.container import Container
from frontdesk.core import outbox
from frontdesk.core.clock import FrozenClock
from frontdesk.core.worker import Worker
from frontdesk.his.jobs import POLL_JOB
from tests.accounts.helpers import sim_patients

OPENID = "o-events-00000000000000001"
POLICY = service.BindingPolicy(sms_enabled=False)


async def _operator(his_sim: Any, path: str, body: dict[str, str] | None = None) -> Any:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=his_sim), base_url="http://his-sim"
    ) as c:
        return await c.post(f"/operator{path}", json=body or {})


async def test_voided_and_merged_cards_are_shown_as_such(
    his_container: Container, his_sim: Any, clock: FrozenClock
) -> None:
    a, b, c = await sim_patients(his_sim, count=3)
    async with his_container.db.session() as s:
        await service.accept_notice(s, openid=OPENID, version="v1", now=clock.now())
        for p in (a, b):
            await service.start_binding(
                s,
                his=his_container.services["his"],
                sms=None,
                openid=OPENID,
                request=BindRequest(
                    card_no=p.card_no,
                    holder_name=p.name,
                    id_or_phone_last4=p.id_last4,
                    relationship=Relationship.self_,
                ),
                policy=POLICY,
                secret="s",
                now=clock.now(),
            )
    assert (await _operator(his_sim, f"/cards/{a.card_no}/void")).status_code == 200
    merged = await _operator(his_sim, f"/cards/{b.card_no}/merge", {"into": c.card_no})
    assert merged.status_code == 200
    again = await _operator(his_sim, f"/cards/{a.card_no}/void")
    assert again.status_code == 409
    async with his_container.db.session() as s:
        await outbox.enqueue(s, POLL_JOB)
    await Worker(his_container).drain()
    async with his_container.db.session() as s:
        scope = await service.scope_for(s, openid=OPENID)
    status = {card.card_no: (card.status, card.usable) for card in scope.cards}
    assert status == {a.card_no: ("invalid", False), b.card_no: ("merged", False)}
    # The HIS no longer confirms a voided card for binding.
    async with his_container.db.session() as s:
        await service.accept_notice(
            s, openid="o-other-000000000000000002", version="v1", now=clock.now()
        )
        with pytest.raises(CardNotVerified):
            await service.start_binding(
                s,
                his=his_container.services["his"],
                sms=None,
                openid="o-other-000000000000000002",
                request=BindRequest(
                    card_no=a.card_no,
                    holder_name=a.name,
                    id_or_phone_last4=a.id_last4,
                    relationship=Relationship.self_,
                ),
                policy=POLICY,
                secret="s",
                now=clock.now(),
            )
