"""Page-level helpers for booking tests: signed-in phones and staff, the HIS event feed,
the HIS operator, and booking through the confirm page."""

from __future__ import annotations

import re
from typing import Any

import httpx
from sqlalchemy import func, select

from frontdesk.core.clock import FrozenClock
from frontdesk.his import events
from tests.accounts.helpers import SimPatient
from tests.accounts.test_pages import accept, bind, csrf_of
from tests.wechat.test_oauth import sign_in


async def phone(env: Any, name: str, sms_sim: Any, patients: list[SimPatient]) -> httpx.AsyncClient:
    """A signed-in phone with its own cookie jar and the given cards bound."""
    user = env.sim.add_user(name)
    assert (await env.sim.user_follows(user.openid)).ok  # followers get template messages
    env.front.cookies.clear()
    await sign_in(env, user.openid, next_url="/h5/")
    await accept(env.front)
    for p in patients:
        done = await bind(env.front, sms_sim, p)
        assert done.status_code == 303, done.text
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=env.front_app), base_url="http://testserver"
    )
    client.cookies.update(env.front.cookies)
    env.front.cookies.clear()
    return client


async def deliver_his_events(env: Any, cursor: str) -> str:
    """What the HIS poller does with one page: every handler, in one committed transaction."""
    his = env.container.services["his"]
    page = await his.events(after=cursor or None, limit=100)
    async with env.container.db.session() as s:
        for ev in page.events:
            ctx = events.EventContext(
                session=s, event=ev, now=env.container.clock.now(), container=env.container
            )
            for handler in events.handlers_for(ev.type):
                await handler(ctx)
    return str(page.next_cursor)


async def his_op(his_sim: Any, path: str, body: dict[str, Any] | None = None) -> Any:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=his_sim), base_url="http://his-sim"
    ) as c:
        r = await c.post(path, json=body or {})
        assert r.status_code == 200, r.text
        return r.json()


async def count(env: Any, model: Any, *where: Any) -> int:
    async with env.container.db.session() as s:
        return int(
            (await s.execute(select(func.count()).select_from(model).where(*where))).scalar_one()
        )


async def book_via_page(client: httpx.AsyncClient, slot_id: int) -> httpx.Response:
    page = await client.get(f"/h5/booking/slots/{slot_id}/confirm")
    assert page.status_code == 200, page.text
    key = re.search(r'name="idempotency_key" value="([^"]+)"', page.text)
    assert key is not None
    card = re.search(r'name="card_id" value="(\d+)"', page.text)
    assert card is not None
    return await client.post(
        f"/h5/booking/slots/{slot_id}",
        data={"csrf": csrf_of(page), "idempotency_key": key.group(1), "card_id": card.group(1)},
    )


async def sign_in_staff(client: httpx.AsyncClient, clock: FrozenClock, staff: Any) -> str:
    """Sign a console user in (password and TOTP); returns the console's CSRF token."""
    from frontdesk.console import service as console_service
    from tests.console.conftest import PASSWORD, csrf_from, post_login

    done = await post_login(
        client,
        username=staff.username,
        password=PASSWORD,
        code=console_service.totp_code(staff.secret, clock.now()),
    )
    assert done.status_code == 303, done.text
    return csrf_from((await client.get("/console/")).text)


async def sent_to_wechat(env: Any, kind: str) -> list[dict[str, Any]]:
    """What the WeChat simulator accepted of this message kind, after the worker sent the
    queue. Fails if any queued message of the kind was refused (a keyword the template does
    not have is errcode 47003) or is still unsent."""
    from frontdesk.core.worker import Worker
    from frontdesk.wechat.oa.models import TEMPLATE_DELIVERED, TEMPLATE_SENT, TemplateMessage

    await Worker(env.container).drain()
    async with env.container.db.session() as s:
        rows = (
            (await s.execute(select(TemplateMessage).where(TemplateMessage.kind == kind)))
            .scalars()
            .all()
        )
    assert rows, f"no {kind} message queued"
    unsent = [
        (r.state, r.errcode, r.last_error)
        for r in rows
        if r.state
        not in {
            TEMPLATE_SENT,
            TEMPLATE_DELIVERED,
        }
    ]
    assert unsent == [], unsent
    template_id = env.container.settings.wechat_template_ids[kind]
    sent = [t for t in env.sim.sent_templates if t["template_id"] == template_id]
    assert len(sent) == len(rows)
    return sent
