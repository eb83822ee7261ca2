"""A suspension the HIS was never reached with (停诊 not delivered): when the demo HIS stays
unreachable through every attempt of the push job, the console shows the suspension as "HIS
not reached" (not as one still being retried) with a push-again button. Pushing again re-runs
the same job with the same request_ref, so the HIS (idempotent on it) suspends once and the
patients are told once, even when an earlier push had in fact landed. Anything else is
refused with nothing changed."""

from __future__ import annotations

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
from tests.booking.pages import book_via_page, count, deliver_his_events, sign_in_staff
from tests.console.conftest import create_staff

JOB = "booking.suspend_in_his"
REASON = "医生外出 会诊"


async def _booked_pair(env: Any, world: Any) -> None:
    for phone, slot in ((world["alice"], world["slots"][0]), (world["bob"], world["slots"][1])):
        assert (await book_via_page(phone, slot)).status_code == 303
    await Worker(env.container).drain()
    assert await count(env, Booking, Booking.his_state == "registered") == 2


async def _confirm(client: httpx.AsyncClient, csrf: str, schedule_id: int) -> None:
    done = await client.post(
        f"/console/booking/schedules/{schedule_id}/suspend",
        data={"csrf_token": csrf, "reason": REASON, "booked": "2", "confirm": "1"},
    )
    assert done.status_code == 303, done.text


async def _faults(his_sim: Any, on: bool) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=his_sim), base_url="http://his-sim"
    ) as staff:
        if on:
            r = await staff.put(
                "/operator/faults", json={"mode": "error", "path_contains": "/suspend"}
            )
        else:
            r = await staff.delete("/operator/faults")
        assert r.status_code == 200


async def _job(env: Any) -> OutboxJob:
    async with env.container.db.session() as s:
        job: OutboxJob = (
            await s.execute(select(OutboxJob).where(OutboxJob.name == JOB))
        ).scalar_one()
    return job


async def _spend_attempts(env: Any, clock: FrozenClock) -> OutboxJob:
    """Run the worker, and again at each retry's time, until the outbox gives up."""
    for _ in range(30):
        await Worker(env.container).drain()
        job = await _job(env)
        if job.status != "queued":
            return job
        clock.advance(seconds=(job.run_after_at - clock.now()).total_seconds() + 1)
    raise AssertionError("the outbox never gave up")


async def _state(env: Any) -> dict[str, Any]:
    """Everything a refused push-again must leave as it was."""
    async with env.container.db.session() as s:
        return {
            "bookings": sorted((await s.execute(select(Booking.id, Booking.status))).all()),
            "schedules": sorted(
                (
                    await s.execute(
                        select(Schedule.id, Schedule.status, Schedule.suspension_reason)
                    )
                ).all()
            ),
            "suspensions": sorted(
                (
                    await s.execute(
                        select(
                            ScheduleSuspension.id,
                            ScheduleSuspension.state,
                            ScheduleSuspension.request_ref,
                            ScheduleSuspension.pending_key,
                        )
                    )
                ).all()
            ),
            "jobs": sorted(
                (
                    await s.execute(
                        select(
                            OutboxJob.id,
                            OutboxJob.status,
                            OutboxJob.attempts,
                            OutboxJob.run_after_at,
                        ).where(OutboxJob.name == JOB)
                    )
                ).all()
            ),
            "messages": (await s.execute(select(func.count(TemplateMessage.id)))).scalar_one(),
            "audit": (await s.execute(select(func.count(AuditEntry.id)))).scalar_one(),
        }


async def _his_status(env: Any, sched: Schedule) -> str:
    his = env.container.services["his"]
    found = [
        s
        for s in await his.schedules(start=sched.on_date, end=sched.on_date)
        if s.schedule_id == sched.his_schedule_id
    ]
    assert len(found) == 1
    return str(found[0].status.value)


async def _his_suspended_events(env: Any, his_schedule_id: str) -> int:
    his = env.container.services["his"]
    found, cursor = 0, None
    while True:
        page = await his.events(after=cursor, limit=500)
        found += sum(
            1
            for e in page.events
            if e.type == "schedule.suspended" and e.data.get("schedule_id") == his_schedule_id
        )
        if not page.has_more:
            return found
        cursor = page.next_cursor


async def _push(client: httpx.AsyncClient, csrf: str | None, suspension_id: int) -> Any:
    data = {"csrf_token": csrf} if csrf is not None else {}
    return await client.post(f"/console/booking/suspensions/{suspension_id}/push", data=data)


async def _unreached(
    env: Any, world: Any, his_sim: Any, office: Any, clock: FrozenClock
) -> tuple[ScheduleSuspension, str]:
    """Two patients booked, a suspension confirmed while the HIS refuses every suspend call,
    and the push job's attempts spent. Returns the row and the HIS event cursor from before."""
    client, csrf, _actor = office
    sched = world["sched"]
    await _booked_pair(env, world)
    cursor = await deliver_his_events(env, "")
    await _faults(his_sim, True)
    await _confirm(client, csrf, sched.id)
    job = await _spend_attempts(env, clock)
    assert (job.status, job.attempts, job.max_attempts) == ("dead", 12, 12)
    assert "HIS unavailable" in (job.last_error or "")
    async with env.container.db.session() as s:
        row = (await s.execute(select(ScheduleSuspension))).scalar_one()
    assert (row.state, row.pending_key) == ("pending", f"pending:{sched.id}")
    return row, cursor


async def test_unreached_his_is_shown_and_pushed_again_once(
    env: Any, world: Any, his_sim: Any, office: Any, clock: FrozenClock
) -> None:
    client, csrf, actor = office
    sched = world["sched"]
    await _booked_pair(env, world)
    cursor = await deliver_his_events(env, "")
    await _faults(his_sim, True)
    await _confirm(client, csrf, sched.id)

    # one failed attempt: still being retried, shown as pending, and not to be pushed again
    await Worker(env.container).drain()
    assert ((await _job(env)).status, (await _job(env)).attempts) == ("queued", 1)
    page = await client.get(f"/console/booking/schedules/{sched.id}")
    assert 'data-suspension-state="pending"' in page.text
    assert 'data-testid="push-again"' not in page.text
    async with env.container.db.session() as s:
        row = (await s.execute(select(ScheduleSuspension))).scalar_one()
    before = await _state(env)
    early = await _push(client, csrf, row.id)
    assert early.headers["location"] == (
        f"/console/booking/schedules/{sched.id}?error=booking_suspension_not_unreached"
    )
    assert await _state(env) == before

    # every attempt spent: "HIS not reached", nothing cancelled, the button is offered
    job = await _spend_attempts(env, clock)
    assert (job.status, job.attempts) == ("dead", 12)
    assert await count(env, ScheduleSuspension, ScheduleSuspension.state == "pending") == 1
    assert await count(env, Booking, Booking.status == "booked") == 2
    assert await count(env, TemplateMessage, TemplateMessage.kind == "clinic_suspended") == 0
    assert await _his_status(env, sched) == "open"
    page = await client.get(f"/console/booking/schedules/{sched.id}")
    assert f'data-suspension="{row.id}" data-suspension-state="his_unreached"' in page.text
    assert 'data-testid="push-again"' in page.text
    assert f'action="/console/booking/suspensions/{row.id}/push"' in page.text
    assert 'data-testid="suspend-form"' not in page.text  # push again, not a second request
    assert "HIS not reached" in page.text or "未送达 HIS" in page.text

    # the HIS is back; staff push again: the same job row, fresh attempts, audited
    await _faults(his_sim, False)
    pushed = await _push(client, csrf, row.id)
    assert pushed.status_code == 303
    assert pushed.headers["location"] == (
        f"/console/booking/schedules/{sched.id}?notice=suspension_pushed_again"
    )
    job = await _job(env)
    assert (job.id, job.status, job.attempts) == (before["jobs"][0][0], "queued", 0)
    assert job.payload == {"suspension_id": row.id}
    async with env.container.db.session() as s:
        [entry] = (
            await s.execute(
                select(AuditEntry).where(AuditEntry.action == "booking.suspension_pushed_again")
            )
        ).scalars()
    assert (entry.actor, entry.record_type, entry.record_id) == (actor, "schedule", str(sched.id))
    assert entry.detail == {"suspension_id": row.id, "request_ref": row.request_ref}
    shown = await client.get(pushed.headers["location"])
    assert 'data-notice="suspension_pushed_again"' in shown.text
    assert 'data-suspension-state="pending"' in shown.text
    assert 'data-testid="push-again"' not in shown.text

    # a second press before the worker ran: refused, nothing changed
    queued = await _state(env)
    again = await _push(client, csrf, row.id)
    assert again.headers["location"] == (
        f"/console/booking/schedules/{sched.id}?error=booking_suspension_not_unreached"
    )
    assert await _state(env) == queued

    # the worker pushes it: the HIS suspends, the bookings are cancelled, patients told once
    await Worker(env.container).drain()
    assert ((await _job(env)).status, (await _job(env)).attempts) == ("done", 1)
    assert await _his_status(env, sched) == "suspended"
    async with env.container.db.session() as s:
        row = (await s.execute(select(ScheduleSuspension))).scalar_one()
        local = (await s.execute(select(Schedule).where(Schedule.id == sched.id))).scalar_one()
        notices = list(
            (
                await s.execute(
                    select(TemplateMessage).where(TemplateMessage.kind == "clinic_suspended")
                )
            ).scalars()
        )
    assert (row.state, row.pending_key, row.refusal_code) == ("done", None, None)
    assert (local.status, local.suspension_reason) == ("suspended", REASON)
    assert await count(env, Booking, Booking.status == "cancelled_by_hospital") == 2
    assert len(notices) == 2 and len({n.openid for n in notices}) == 2
    assert [n.data["thing3"] for n in notices] == [REASON, REASON]
    assert await _his_suspended_events(env, sched.his_schedule_id) == 1
    page = await client.get(f"/console/booking/schedules/{sched.id}")
    assert 'data-suspension-state="done"' in page.text
    assert 'data-testid="push-again"' not in page.text

    # the echo changes nothing; pushing a done suspension again is refused, nothing changed
    settled = await _state(env)
    await deliver_his_events(env, cursor)
    assert await _state(env) == settled
    done_again = await _push(client, csrf, row.id)
    assert done_again.headers["location"] == (
        f"/console/booking/schedules/{sched.id}?error=booking_suspension_not_unreached"
    )
    assert await _state(env) == settled
    assert await count(env, TemplateMessage, TemplateMessage.kind == "clinic_suspended") == 2


async def test_a_push_that_had_landed_is_not_doubled(
    env: Any, world: Any, his_sim: Any, office: Any, clock: FrozenClock
) -> None:
    """The HIS did take the request at some point but its answer never came back (and its
    event is not delivered yet): pushing again sends the same request_ref, the HIS does not
    suspend a second time, and the local effect happens once."""
    client, csrf, _actor = office
    sched = world["sched"]
    row, cursor = await _unreached(env, world, his_sim, office, clock)
    await _faults(his_sim, False)
    his = env.container.services["his"]
    await his.suspend_schedule(
        schedule_id=row.his_schedule_id, reason=row.reason, request_ref=row.request_ref
    )
    assert await _his_suspended_events(env, sched.his_schedule_id) == 1
    assert (await _push(client, csrf, row.id)).status_code == 303
    await Worker(env.container).drain()
    assert (await _job(env)).status == "done"
    assert await _his_suspended_events(env, sched.his_schedule_id) == 1
    assert await count(env, ScheduleSuspension, ScheduleSuspension.state == "done") == 1
    assert await count(env, Booking, Booking.status == "cancelled_by_hospital") == 2
    assert await count(env, TemplateMessage, TemplateMessage.kind == "clinic_suspended") == 2
    settled = await _state(env)
    await deliver_his_events(env, cursor)  # the echo, delivered late
    assert await _state(env) == settled


async def test_push_again_bad_input_changes_nothing(
    env: Any, world: Any, his_sim: Any, office: Any, clock: FrozenClock
) -> None:
    client, csrf, _actor = office
    sched = world["sched"]
    row, _cursor = await _unreached(env, world, his_sim, office, clock)
    await _faults(his_sim, False)
    before = await _state(env)

    # an unknown id
    unknown = await _push(client, csrf, 999_999)
    assert unknown.status_code == 303
    assert unknown.headers["location"] == "/console/booking?error=booking_suspension_not_found"
    assert await _state(env) == before
    # a non-numeric id
    assert (
        await client.post("/console/booking/suspensions/x/push", data={"csrf_token": csrf})
    ).status_code == 422
    assert await _state(env) == before

    def same_but_audit(after: dict[str, Any]) -> bool:
        return {k: v for k, v in after.items() if k != "audit"} == {
            k: v for k, v in before.items() if k != "audit"
        }

    # no CSRF token, or a wrong one: refused (the denial itself is audited), nothing else
    for token in (None, "not-the-token"):
        r = await _push(client, token, row.id)
        assert r.status_code == 403
        assert same_but_audit(await _state(env))

    # a role that may not suspend may not push again either
    async with env.container.db.session() as s:
        cashier = await create_staff(s, clock, username="cash2", role=Role.cashier)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=env.front_app), base_url="http://testserver"
    ) as other:
        other_csrf = await sign_in_staff(other, clock, cashier)
        r = await _push(other, other_csrf, row.id)
        assert r.status_code == 403
    assert same_but_audit(await _state(env))
    assert await count(env, AuditEntry, AuditEntry.action == "booking.suspension_pushed_again") == 0

    # still "HIS not reached", and the right person can push it
    page = await client.get(f"/console/booking/schedules/{sched.id}")
    assert 'data-suspension-state="his_unreached"' in page.text
    assert (await _push(client, csrf, row.id)).status_code == 303
    await Worker(env.container).drain()
    assert await count(env, Booking, Booking.status == "cancelled_by_hospital") == 2
