"""The scheduling office's clinic-suspension entry (停诊): staff pick a session, give a
reason and confirm against the number of patients booked; the suspension is pushed to the
demo HIS through the outbox and the real adapter; once accepted, the same path as the HIS's
``schedule.suspended`` event cancels the bookings without penalty, closes the pool and tells
each patient once. The event's echo changes nothing; an outage is retried; a refusal is
shown and changes nothing; the wrong role and bad input are refused with nothing changed."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import func, select

from frontdesk.booking.models import Booking, ScheduleSuspension
from frontdesk.catalog.models import Schedule
from frontdesk.console.models import Role
from frontdesk.core.audit import AuditEntry
from frontdesk.core.clock import FrozenClock
from frontdesk.core.outbox import OutboxJob
from frontdesk.core.worker import Worker
from frontdesk.wechat.oa.models import TemplateMessage
from tests.booking.pages import book_via_page, count, deliver_his_events, his_op, sign_in_staff
from tests.console.conftest import create_staff

JOB = "booking.suspend_in_his"


async def _booked_pair(env: Any, world: Any) -> None:
    """Alice and Bob book the world's session; the worker registers both in the HIS."""
    for phone, slot in ((world["alice"], world["slots"][0]), (world["bob"], world["slots"][1])):
        assert (await book_via_page(phone, slot)).status_code == 303
    await Worker(env.container).drain()
    assert await count(env, Booking, Booking.his_state == "registered") == 2


async def _confirm_page(
    client: httpx.AsyncClient, csrf: str, schedule_id: int, reason: str
) -> httpx.Response:
    return await client.post(
        f"/console/booking/schedules/{schedule_id}/suspend",
        data={"csrf_token": csrf, "reason": reason},
    )


async def _confirm(
    client: httpx.AsyncClient, csrf: str, schedule_id: int, reason: str, booked: int
) -> httpx.Response:
    return await client.post(
        f"/console/booking/schedules/{schedule_id}/suspend",
        data={"csrf_token": csrf, "reason": reason, "booked": str(booked), "confirm": "1"},
    )


async def _state(env: Any) -> dict[str, Any]:
    """Everything a refused or repeated suspension must leave as it was."""
    async with env.container.db.session() as s:
        return {
            "bookings": sorted((await s.execute(select(Booking.id, Booking.status))).all()),
            "schedules": sorted((await s.execute(select(Schedule.id, Schedule.status))).all()),
            "suspensions": sorted(
                (await s.execute(select(ScheduleSuspension.id, ScheduleSuspension.state))).all()
            ),
            "jobs": (
                await s.execute(select(func.count()).where(OutboxJob.name == JOB))
            ).scalar_one(),
            "messages": (await s.execute(select(func.count(TemplateMessage.id)))).scalar_one(),
            "audit": (await s.execute(select(func.count(AuditEntry.id)))).scalar_one(),
        }


async def _his_schedule(env: Any, his_schedule_id: str, on_date: Any) -> Any:
    his = env.container.services["his"]
    found = [
        s
        for s in await his.schedules(start=on_date, end=on_date)
        if s.schedule_id == his_schedule_id
    ]
    assert len(found) == 1
    return found[0]


async def test_staff_suspend_a_session_through_the_his(
    env: Any, world: Any, his_sim: Any, office: Any
) -> None:
    client, csrf, actor = office
    sched = world["sched"]
    await _booked_pair(env, world)
    cursor = await deliver_his_events(env, "")

    page = await client.get(f"/console/booking/schedules/{sched.id}")
    assert 'data-testid="suspend-form"' in page.text and 'data-suspended="no"' in page.text
    # step 1: the confirmation shows how many patients will be told; nothing changes yet
    before = await _state(env)
    confirm = await _confirm_page(client, csrf, sched.id, "  医生外出  会诊 ")
    assert confirm.status_code == 200
    assert 'data-booked="2"' in confirm.text and 'value="医生外出 会诊"' in confirm.text
    assert await _state(env) == before

    # step 2: confirmed; recorded, audited, queued, but nothing cancelled until the HIS agrees
    done = await _confirm(client, csrf, sched.id, "医生外出 会诊", 2)
    assert done.headers["location"] == (
        f"/console/booking/schedules/{sched.id}?notice=suspension_requested"
    )
    async with env.container.db.session() as s:
        row = (await s.execute(select(ScheduleSuspension))).scalar_one()
        audit = (
            await s.execute(
                select(AuditEntry).where(AuditEntry.action == "booking.suspension_requested")
            )
        ).scalar_one()
    assert (row.state, row.reason, row.requested_by, row.booked_at_request) == (
        "pending",
        "医生外出 会诊",
        actor,
        2,
    )
    assert (audit.actor, audit.record_id, audit.detail["reason"]) == (
        actor,
        str(sched.id),
        "医生外出 会诊",
    )
    assert await count(env, Booking, Booking.status == "booked") == 2
    pending = await client.get(f"/console/booking/schedules/{sched.id}")
    assert 'data-suspension-state="pending"' in pending.text
    assert 'data-testid="suspend-form"' not in pending.text  # no second request meanwhile

    # the worker pushes it: the HIS suspends, and the local effect follows
    await Worker(env.container).drain()
    his_sched = await _his_schedule(env, sched.his_schedule_id, sched.on_date)
    assert his_sched.status.value == "suspended"
    pool = await env.container.services["his"].slot_pool(sched.his_schedule_id)
    assert not any(s.available for s in pool.slots)
    async with env.container.db.session() as s:
        bookings = list((await s.execute(select(Booking))).scalars())
        row = (await s.execute(select(ScheduleSuspension))).scalar_one()
        local = (await s.execute(select(Schedule).where(Schedule.id == sched.id))).scalar_one()
    assert sorted(b.status for b in bookings) == ["cancelled_by_hospital"] * 2
    assert row.state == "done" and row.pending_key is None
    assert local.status == "suspended"
    for b in bookings:
        appt = await env.container.services["his"].appointment(b.his_appointment_id)
        assert appt.status.value == "cancelled_by_suspension"
    notices = await count(env, TemplateMessage, TemplateMessage.kind == "clinic_suspended")
    assert notices == 2
    # the pool is closed to patients
    slots_page = await world["alice"].get(f"/h5/booking/schedules/{sched.id}")
    assert f"/h5/booking/slots/{world['slots'][2]}/confirm" not in slots_page.text
    refused = await book_via_page(world["alice"], world["slots"][2])
    assert refused.status_code == 409 and "停诊" in refused.text
    assert await count(env, Booking) == 2
    listing = (await world["alice"].get("/api/patient/booking/bookings")).json()["bookings"]
    assert [b["status"] for b in listing] == ["cancelled_by_hospital"]  # no penalty
    shown = await client.get(f"/console/booking/schedules/{sched.id}")
    assert 'data-suspended="yes"' in shown.text and 'data-suspension-state="done"' in shown.text
    assert "医生外出 会诊" in shown.text and actor in shown.text

    # the echo of our own suspension through the event feed changes nothing
    settled = await _state(env)
    await deliver_his_events(env, cursor)
    assert await _state(env) == settled
    assert await count(env, TemplateMessage, TemplateMessage.kind == "clinic_suspended") == 2


async def test_the_echo_arriving_before_the_job_finishes_applies_once(
    env: Any, world: Any, his_sim: Any, office: Any
) -> None:
    """The HIS accepted, but its event is delivered before our job records the answer (a
    crash after the HIS call): the event applies the effect and finishes our request; the
    job's rerun then changes nothing."""
    client, csrf, _actor = office
    sched = world["sched"]
    await _booked_pair(env, world)
    cursor = await deliver_his_events(env, "")
    assert (await _confirm(client, csrf, sched.id, "停电", 2)).status_code == 303
    async with env.container.db.session() as s:
        row = (await s.execute(select(ScheduleSuspension))).scalar_one()
    his = env.container.services["his"]
    await his.suspend_schedule(
        schedule_id=row.his_schedule_id, reason=row.reason, request_ref=row.request_ref
    )
    await deliver_his_events(env, cursor)
    assert await count(env, ScheduleSuspension, ScheduleSuspension.state == "done") == 1
    assert await count(env, Booking, Booking.status == "cancelled_by_hospital") == 2
    after_echo = await _state(env)
    await Worker(env.container).drain()  # the job: already done, does nothing
    assert await _state(env) == after_echo
    assert await count(env, TemplateMessage, TemplateMessage.kind == "clinic_suspended") == 2


async def test_suspended_at_the_his_meanwhile_counts_as_done(
    env: Any, world: Any, his_sim: Any, office: Any
) -> None:
    """Someone suspends the session at the HIS while our request waits: the HIS answers
    ``schedule_suspended``, which is the end state asked for; the effect happens once."""
    client, csrf, _actor = office
    sched = world["sched"]
    await _booked_pair(env, world)
    cursor = await deliver_his_events(env, "")
    assert (await _confirm(client, csrf, sched.id, "医生病假", 2)).status_code == 303
    await his_op(his_sim, f"/operator/schedules/{sched.his_schedule_id}/suspend", {})
    await Worker(env.container).drain()
    assert await count(env, ScheduleSuspension, ScheduleSuspension.state == "done") == 1
    assert await count(env, Booking, Booking.status == "cancelled_by_hospital") == 2
    settled = await _state(env)
    await deliver_his_events(env, cursor)  # the HIS's own event (no request_ref of ours)
    assert await _state(env) == settled
    assert await count(env, TemplateMessage, TemplateMessage.kind == "clinic_suspended") == 2


async def test_his_down_is_retried_then_succeeds(
    env: Any, world: Any, his_sim: Any, office: Any, clock: FrozenClock
) -> None:
    client, csrf, _actor = office
    sched = world["sched"]
    await _booked_pair(env, world)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=his_sim), base_url="http://his-sim"
    ) as staff:
        await staff.put("/operator/faults", json={"mode": "error", "path_contains": "/suspend"})
        assert (await _confirm(client, csrf, sched.id, "设备检修", 2)).status_code == 303
        await Worker(env.container).drain()
        async with env.container.db.session() as s:
            job = (await s.execute(select(OutboxJob).where(OutboxJob.name == JOB))).scalar_one()
        assert (job.status, job.attempts) == ("queued", 1)
        assert "HIS unavailable" in (job.last_error or "")
        assert await count(env, ScheduleSuspension, ScheduleSuspension.state == "pending") == 1
        assert await count(env, Booking, Booking.status == "booked") == 2
        assert await count(env, Schedule, Schedule.status == "suspended") == 0
        await staff.delete("/operator/faults")
    clock.advance(seconds=3600)
    await Worker(env.container).drain()
    async with env.container.db.session() as s:
        job = (await s.execute(select(OutboxJob).where(OutboxJob.name == JOB))).scalar_one()
    assert (job.status, job.attempts) == ("done", 2)
    assert await count(env, ScheduleSuspension, ScheduleSuspension.state == "done") == 1
    assert await count(env, Booking, Booking.status == "cancelled_by_hospital") == 2
    his_sched = await _his_schedule(env, sched.his_schedule_id, sched.on_date)
    assert his_sched.status.value == "suspended"


async def test_his_refusal_is_shown_and_changes_nothing(
    env: Any, world: Any, his_sim: Any, office: Any
) -> None:
    client, csrf, _actor = office
    sched = world["sched"]
    await _booked_pair(env, world)
    async with env.container.db.session() as s:
        first = (await s.execute(select(Booking).order_by(Booking.id))).scalars().first()
    assert first is not None
    # a patient of the session was already seen at the HIS (the event not yet delivered)
    await his_op(his_sim, f"/operator/appointments/{first.his_appointment_id}/check-in")
    assert (await _confirm(client, csrf, sched.id, "医生请假", 2)).status_code == 303
    before = await _state(env)
    await Worker(env.container).drain()
    after = await _state(env)
    assert after["bookings"] == before["bookings"] and after["schedules"] == before["schedules"]
    assert after["messages"] == before["messages"]
    async with env.container.db.session() as s:
        row = (await s.execute(select(ScheduleSuspension))).scalar_one()
    assert (row.state, row.refusal_code, row.pending_key) == ("refused", "schedule_started", None)
    his_sched = await _his_schedule(env, sched.his_schedule_id, sched.on_date)
    assert his_sched.status.value == "open"
    page = await client.get(f"/console/booking/schedules/{sched.id}")
    assert 'data-suspension-state="refused"' in page.text
    assert 'data-refusal="schedule_started"' in page.text
    assert (
        "Patients of this session were already checked in" in page.text
        or "已有患者签到" in page.text
    )
    # staff may try again (the form is back)
    assert 'data-testid="suspend-form"' in page.text


async def test_other_roles_are_refused(env: Any, world: Any, clock: FrozenClock) -> None:
    sched = world["sched"]
    async with env.container.db.session() as s:
        cashier = await create_staff(s, clock, username="cash1", role=Role.cashier)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=env.front_app), base_url="http://testserver"
    ) as client:
        csrf = await sign_in_staff(client, clock, cashier)
        before = await _state(env)
        assert (await client.get(f"/console/booking/schedules/{sched.id}")).status_code == 403
        for data in (
            {"csrf_token": csrf, "reason": "x"},
            {"csrf_token": csrf, "reason": "x", "booked": "0", "confirm": "1"},
        ):
            r = await client.post(f"/console/booking/schedules/{sched.id}/suspend", data=data)
            assert r.status_code == 403
        after = await _state(env)
    # the refusals themselves are audited (as access denials); nothing else changed
    assert after["audit"] > before["audit"]
    assert {k: v for k, v in after.items() if k != "audit"} == {
        k: v for k, v in before.items() if k != "audit"
    }
    assert await count(env, AuditEntry, AuditEntry.action == "booking.suspension_requested") == 0


async def test_bad_input_is_refused_with_nothing_changed(
    env: Any, world: Any, his_sim: Any, office: Any, clock: FrozenClock
) -> None:
    client, csrf, _actor = office
    sched = world["sched"]
    await _booked_pair(env, world)
    async with env.container.db.session() as s:
        today = clock.today()
        past = (
            await s.execute(
                select(Schedule).where(Schedule.on_date < today).order_by(Schedule.id).limit(1)
            )
        ).scalar_one_or_none()
        if past is None:  # the catalog is synced from today on: make yesterday's session
            past = Schedule(
                **{
                    c.name: getattr(sched, c.name)
                    for c in Schedule.__table__.columns
                    if c.name not in {"id", "his_schedule_id", "on_date"}
                },
                his_schedule_id="SPAST",
                on_date=today - timedelta(days=1),
            )
            s.add(past)
            await s.flush()
        past_id = past.id
    before = await _state(env)
    base = f"/console/booking/schedules/{sched.id}?error="
    cases = [
        (
            await _confirm_page(client, csrf, 999_999, "停诊"),
            "/console/booking?error=booking_suspension_schedule_not_found",
        ),
        (
            await _confirm(client, csrf, 999_999, "停诊", 0),
            "/console/booking?error=booking_suspension_schedule_not_found",
        ),
        (
            await _confirm_page(client, csrf, sched.id, "   "),
            base + "booking_suspension_reason_required",
        ),
        (
            await _confirm(client, csrf, sched.id, "", 2),
            base + "booking_suspension_reason_required",
        ),
        (
            await _confirm(client, csrf, sched.id, "长" * 201, 2),
            base + "booking_suspension_reason_required",
        ),
        (
            await _confirm_page(client, csrf, past_id, "停诊"),
            f"/console/booking/schedules/{past_id}?error=booking_schedule_past",
        ),
        (
            await _confirm(client, csrf, past_id, "停诊", 0),
            f"/console/booking/schedules/{past_id}?error=booking_schedule_past",
        ),
    ]
    for response, location in cases:
        assert response.status_code == 303, response.text
        assert response.headers["location"] == location
    # the count changed since the confirmation: shown again, nothing recorded
    stale = await _confirm(client, csrf, sched.id, "停诊", 1)
    assert stale.status_code == 200
    assert 'data-error="booking_suspension_count_changed"' in stale.text
    assert 'data-booked="2"' in stale.text
    # a form field of the wrong type
    wrong = await client.post(
        f"/console/booking/schedules/{sched.id}/suspend",
        data={"csrf_token": csrf, "reason": "停诊", "booked": "two", "confirm": "1"},
    )
    assert wrong.status_code in {400, 422}
    assert await _state(env) == before
    shown = await client.get(base + "booking_suspension_reason_required")
    assert 'data-error="booking_suspension_reason_required"' in shown.text

    # a session already suspended, and one whose suspension is on its way, are refused too
    assert (await _confirm(client, csrf, sched.id, "停诊", 2)).status_code == 303
    again = await _confirm(client, csrf, sched.id, "停诊", 2)
    assert again.headers["location"] == base + "booking_suspension_pending"
    assert await count(env, ScheduleSuspension) == 1
    await Worker(env.container).drain()
    once_more = await _confirm_page(client, csrf, sched.id, "停诊")
    assert once_more.headers["location"] == base + "booking_schedule_suspended"
    assert await count(env, ScheduleSuspension) == 1
