"""The HIS's own reason for a clinic suspension (停诊 entered at the HIS): the demo HIS's
``schedule.suspended`` event carries it (optional in the protocol); it is kept on the
schedule, shown on the scheduling office's page and given to the patients (cut to the
template field's 20 characters). Without one, the usual wording is used."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from frontdesk.booking.models import Booking
from frontdesk.catalog.models import Schedule
from frontdesk.core.i18n import translate
from frontdesk.core.worker import Worker
from frontdesk.wechat.oa.models import TemplateMessage
from tests.booking.helpers import sync
from tests.booking.pages import book_via_page, count, deliver_his_events, his_op

# 23 characters: the patients' notice gets the first 20.
LONG_REASON = "王主任临时外出参加省级专家会诊，本次门诊停诊"


async def _booked_pair(env: Any, world: Any) -> None:
    for phone, slot in ((world["alice"], world["slots"][0]), (world["bob"], world["slots"][1])):
        assert (await book_via_page(phone, slot)).status_code == 303
    await Worker(env.container).drain()
    assert await count(env, Booking, Booking.his_state == "registered") == 2


async def _seen(env: Any, sched_id: int) -> dict[str, Any]:
    async with env.container.db.session() as s:
        local = (await s.execute(select(Schedule).where(Schedule.id == sched_id))).scalar_one()
        notices = list(
            (
                await s.execute(
                    select(TemplateMessage)
                    .where(TemplateMessage.kind == "clinic_suspended")
                    .order_by(TemplateMessage.id)
                )
            ).scalars()
        )
        bookings = sorted((await s.execute(select(Booking.id, Booking.status))).all())
    return {
        "schedule": (local.status, local.suspension_reason),
        "reasons": [n.data.get("thing3") for n in notices],
        "told": sorted(n.openid for n in notices),
        "bookings": bookings,
    }


async def _his_event(env: Any, after: str) -> dict[str, Any]:
    page = await env.container.services["his"].events(after=after or None, limit=100)
    [event] = [e for e in page.events if e.type == "schedule.suspended"]
    return dict(event.data)


async def test_the_his_reason_is_kept_shown_and_told(
    env: Any, world: Any, his_sim: Any, office: Any
) -> None:
    client, _csrf, _actor = office
    sched = world["sched"]
    await _booked_pair(env, world)
    cursor = await deliver_his_events(env, "")
    await his_op(
        his_sim, f"/operator/schedules/{sched.his_schedule_id}/suspend", {"reason": LONG_REASON}
    )
    assert (await _his_event(env, cursor))["reason"] == LONG_REASON

    await deliver_his_events(env, cursor)
    seen = await _seen(env, sched.id)
    assert seen["schedule"] == ("suspended", LONG_REASON)
    assert [status for _id, status in seen["bookings"]] == ["cancelled_by_hospital"] * 2
    assert seen["reasons"] == [LONG_REASON[:20]] * 2
    assert len(set(seen["told"])) == 2
    page = await client.get(f"/console/booking/schedules/{sched.id}")
    assert 'data-suspended="yes"' in page.text
    assert f"<span data-his-reason>{LONG_REASON}</span>" in page.text

    # the same event delivered again changes nothing and tells nobody twice
    await deliver_his_events(env, cursor)
    assert await _seen(env, sched.id) == seen


async def test_no_his_reason_uses_the_usual_wording(
    env: Any, world: Any, his_sim: Any, office: Any
) -> None:
    client, _csrf, _actor = office
    sched = world["sched"]
    await _booked_pair(env, world)
    cursor = await deliver_his_events(env, "")
    await his_op(his_sim, f"/operator/schedules/{sched.his_schedule_id}/suspend", {"reason": " "})
    assert "reason" not in await _his_event(env, cursor)  # optional: absent when none given

    await deliver_his_events(env, cursor)
    seen = await _seen(env, sched.id)
    assert seen["schedule"] == ("suspended", None)
    assert [status for _id, status in seen["bookings"]] == ["cancelled_by_hospital"] * 2
    usual = translate("msg_reason_suspended")
    assert usual == "医生停诊，未收费"
    assert seen["reasons"] == [usual] * 2
    page = await client.get(f"/console/booking/schedules/{sched.id}")
    assert 'data-suspended="yes"' in page.text and "data-his-reason" not in page.text


async def test_the_reason_arriving_after_the_sync_is_kept_without_telling_again(
    env: Any, world: Any, his_sim: Any, office: Any
) -> None:
    """The catalog sync sees the suspension first (its schedule list has no reason): the
    patients are told in the usual words; the event then brings the reason for the page,
    and nobody is told twice."""
    client, _csrf, _actor = office
    sched = world["sched"]
    await _booked_pair(env, world)
    cursor = await deliver_his_events(env, "")
    path = f"/operator/schedules/{sched.his_schedule_id}/suspend"
    await his_op(his_sim, path, {"reason": "停电"})
    async with env.container.db.session() as s:
        result = await sync(s, env.container.services["his"])
    assert result.suspended == (sched.id,)
    await Worker(env.container).drain()
    usual = translate("msg_reason_suspended")
    first = await _seen(env, sched.id)
    assert first["schedule"] == ("suspended", None)
    assert first["reasons"] == [usual] * 2

    await deliver_his_events(env, cursor)
    then = await _seen(env, sched.id)
    assert then == {**first, "schedule": ("suspended", "停电")}
    page = await client.get(f"/console/booking/schedules/{sched.id}")
    assert "<span data-his-reason>停电</span>" in page.text
