"""End to end: a phone signs in through the WeChat simulator, binds a demo-HIS card, browses
the synced catalog, books, is registered in the HIS by the worker, cancels; a clinic
suspension and the HIS's check-in and no-show events reach the bookings; every message goes
through the template queue."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from frontdesk.booking import jobs as _booking_jobs  # noqa: F401 - registers handlers
from frontdesk.booking.models import Booking, BookingRequest
from frontdesk.catalog import jobs as _catalog_jobs  # noqa: F401
from frontdesk.catalog.models import Slot
from frontdesk.core.clock import FrozenClock
from frontdesk.core.worker import Worker
from frontdesk.wechat.oa.models import TemplateMessage
from tests.accounts.test_pages import csrf_of
from tests.booking.pages import (
    book_via_page,
    count,
    deliver_his_events,
    his_op,
    sent_to_wechat,
)


async def test_browse_book_register_and_cancel(env: Any, world: Any, his_sim: Any) -> None:
    alice, sched = world["alice"], world["sched"]
    home = await alice.get("/h5/booking")
    assert home.status_code == 200 and "全科医学科" in home.text
    assert "近90天爽约 0 次" in home.text  # the credit rule shown before trying
    doctors = await alice.get(f"/h5/booking/departments/{sched.department_code}")
    assert f'data-doctor="{sched.doctor_code}"' in doctors.text
    schedule = await alice.get(f"/h5/booking/doctors/{sched.doctor_code}")
    assert f'href="/h5/booking/schedules/{sched.id}"' in schedule.text
    slots_page = await alice.get(f"/h5/booking/schedules/{sched.id}")
    slot_id = world["slots"][0]
    assert f"/h5/booking/slots/{slot_id}/confirm" in slots_page.text
    confirm = await alice.get(f"/h5/booking/slots/{slot_id}/confirm")
    fee = f"¥{sched.fee_fen // 100}.{sched.fee_fen % 100:02d}"
    assert fee in confirm.text

    done = await book_via_page(alice, slot_id)
    assert done.status_code == 303
    booking_url = done.headers["location"].split("?")[0]
    booked = await alice.get(booking_url)
    assert 'data-status="booked"' in booked.text and "取消预约" in booked.text

    # the worker registers it in the HIS and tells the patient
    assert await Worker(env.container).drain() >= 1
    async with env.container.db.session() as s:
        b = (await s.execute(select(Booking))).scalar_one()
    assert (b.his_state, b.his_appointment_id is not None) == ("registered", True)
    assert await count(env, TemplateMessage, TemplateMessage.kind == "booking_made") == 1
    # ...and WeChat took it: the keywords of the booking template, the visit in local time
    [made] = await sent_to_wechat(env, "booking_made")
    local = b.starts_at.astimezone(env.container.settings.tz)
    assert set(made["data"]) == {"thing1", "time2", "thing3", "character_string4"}
    assert made["data"]["time2"] == f"{local:%Y-%m-%d %H:%M}"
    assert made["data"]["character_string4"] == b.booking_ref
    assert f"{b.sequence_no}号" in made["data"]["thing3"] and fee in made["data"]["thing3"]
    assert made["truncated"] == []

    # cancel: the slot returns, the HIS is told, the patient is told
    page = await alice.get(booking_url)
    cancelled = await alice.post(f"{booking_url}/cancel", data={"csrf": csrf_of(page)})
    assert cancelled.status_code == 303
    assert await count(env, Slot, Slot.id == slot_id, Slot.booking_id.is_(None)) == 1
    await Worker(env.container).drain()
    async with env.container.db.session() as s:
        b = (await s.execute(select(Booking))).scalar_one()
    assert (b.status, b.his_state) == ("cancelled", "cancelled")
    appt = await env.container.services["his"].appointment(b.his_appointment_id)
    assert appt.status.value == "cancelled"
    assert await count(env, TemplateMessage, TemplateMessage.kind == "booking_cancelled") == 1
    [told] = await sent_to_wechat(env, "booking_cancelled")
    assert told["data"]["thing3"] == "您已取消" and told["data"]["time2"] == made["data"]["time2"]
    # cancelling twice is refused and changes nothing
    again = await alice.post(f"{booking_url}/cancel", data={"csrf": csrf_of(page)})
    assert again.status_code == 409
    assert await count(env, TemplateMessage, TemplateMessage.kind == "booking_cancelled") == 1


async def test_api_idempotency_key(env: Any, world: Any) -> None:
    alice = world["alice"]
    listing = (await alice.get("/api/patient/booking/bookings")).json()
    assert listing == {"bookings": []}
    cards = re.findall(
        r'name="card_id" value="(\d+)"',
        (await alice.get(f"/h5/booking/slots/{world['slots'][0]}/confirm")).text,
    )
    card_id = int(cards[0])
    key = uuid.uuid4().hex
    body = {"card_id": card_id, "slot_id": world["slots"][0]}
    first = await alice.post(
        "/api/patient/booking/bookings", json=body, headers={"Idempotency-Key": key}
    )
    assert first.status_code == 201, first.text
    replay = await alice.post(
        "/api/patient/booking/bookings", json=body, headers={"Idempotency-Key": key}
    )
    assert (replay.status_code, replay.json()) == (200, first.json())
    other = await alice.post(
        "/api/patient/booking/bookings",
        json={**body, "slot_id": world["slots"][1]},
        headers={"Idempotency-Key": key},
    )
    assert other.status_code == 422
    assert other.json()["error"]["code"] == "booking_idempotency_key_reused"
    assert await count(env, Booking) == 1
    # a key still in flight (claimed by a request that has not finished) is 409
    async with env.container.db.session() as s:
        s.add(
            BookingRequest(
                openid=(await s.execute(select(Booking.openid))).scalar_one(),
                idempotency_key="inflight-key-1",
                request_hash=_hash(body, 1, world),
                state="in_flight",
                created_at=env.container.clock.now(),
                updated_at=env.container.clock.now(),
            )
        )
    busy = await alice.post(
        "/api/patient/booking/bookings",
        json={**body, "slot_id": world["slots"][1]},
        headers={"Idempotency-Key": "inflight-key-1"},
    )
    assert busy.status_code == 409 and busy.json()["error"]["code"] == "booking_request_in_flight"
    assert await count(env, Booking) == 1
    # no key, a malformed key, a bad body: refused, nothing written
    for headers, payload in (
        ({}, body),
        ({"Idempotency-Key": "x"}, body),
        ({"Idempotency-Key": uuid.uuid4().hex}, {"card_id": "1"}),
        ({"Idempotency-Key": uuid.uuid4().hex}, {**body, "extra": 1}),
    ):
        r = await alice.post("/api/patient/booking/bookings", json=payload, headers=headers)
        assert r.status_code == 422, (headers, payload, r.text)
    assert await count(env, Booking) == 1


def _hash(body: dict[str, int], n: int, world: Any) -> str:
    from frontdesk.booking.schemas import BookRequest

    return BookRequest(card_id=body["card_id"], slot_id=world["slots"][n]).fingerprint()


async def test_his_refusal_cancels_and_gives_the_slot_back(
    env: Any, world: Any, his_sim: Any
) -> None:
    alice, sched = world["alice"], world["sched"]
    slot_id = world["slots"][0]
    assert (await book_via_page(alice, slot_id)).status_code == 303
    # the hospital suspends the clinic before our registration reaches it
    await his_op(his_sim, f"/operator/schedules/{sched.his_schedule_id}/suspend", {})
    await Worker(env.container).drain()
    async with env.container.db.session() as s:
        b = (await s.execute(select(Booking))).scalar_one()
    assert (b.status, b.his_state, b.his_refusal_code) == (
        "refused_by_his",
        "refused",
        "schedule_suspended",
    )
    assert await count(env, Slot, Slot.id == slot_id, Slot.booking_id.is_(None)) == 1
    assert await count(env, TemplateMessage, TemplateMessage.kind == "booking_cancelled") == 1
    [told] = await sent_to_wechat(env, "booking_cancelled")
    assert told["data"]["thing3"] == "医生停诊"


async def test_suspension_event_cancels_bookings_and_offers_a_rebook(
    env: Any, world: Any, his_sim: Any
) -> None:
    alice, bob, sched = world["alice"], world["bob"], world["sched"]
    for client, slot in ((alice, world["slots"][0]), (bob, world["slots"][1])):
        assert (await book_via_page(client, slot)).status_code == 303
    await Worker(env.container).drain()  # registered in the HIS
    cursor = await deliver_his_events(env, "")
    await his_op(his_sim, f"/operator/schedules/{sched.his_schedule_id}/suspend", {})
    await deliver_his_events(env, cursor)
    async with env.container.db.session() as s:
        rows = (await s.execute(select(Booking.status))).scalars().all()
    assert sorted(rows) == ["cancelled_by_hospital"] * 2
    async with env.container.db.session() as s:
        urls = (
            (
                await s.execute(
                    select(TemplateMessage.url).where(TemplateMessage.kind == "clinic_suspended")
                )
            )
            .scalars()
            .all()
        )
    assert len(urls) == 2 and all(f"/h5/booking/doctors/{sched.doctor_code}" in u for u in urls)
    told = await sent_to_wechat(env, "clinic_suspended")
    assert [t["data"]["thing3"] for t in told] == ["医生临时停诊"] * 2  # the HIS's reason
    page = await alice.get(f"/h5/booking/doctors/{sched.doctor_code}")
    assert 'data-state="suspended"' in page.text
    # and no penalty
    listing = (await alice.get("/api/patient/booking/bookings")).json()["bookings"]
    assert [b["status"] for b in listing] == ["cancelled_by_hospital"]


async def test_check_in_and_no_show_events(
    env: Any, world: Any, his_sim: Any, clock: FrozenClock
) -> None:
    alice, bob = world["alice"], world["bob"]
    assert (await book_via_page(alice, world["slots"][0])).status_code == 303
    assert (await book_via_page(bob, world["slots"][1])).status_code == 303
    await Worker(env.container).drain()
    cursor = await deliver_his_events(env, "")
    async with env.container.db.session() as s:
        rows = {b.openid: b for b in (await s.execute(select(Booking))).scalars()}
    alice_booking = next(b for b in rows.values() if b.slot_id == world["slots"][0])
    await his_op(his_sim, f"/operator/appointments/{alice_booking.his_appointment_id}/check-in")
    await his_op(his_sim, "/operator/end-of-day", {"on_date": world["sched"].on_date.isoformat()})
    await deliver_his_events(env, cursor)
    async with env.container.db.session() as s:
        got = {b.slot_id: b.status for b in (await s.execute(select(Booking))).scalars()}
    assert got == {world["slots"][0]: "checked_in", world["slots"][1]: "no_show"}
    assert await count(env, TemplateMessage, TemplateMessage.kind == "booking_made") == 2


async def test_reminder_the_evening_before(env: Any, world: Any, clock: FrozenClock) -> None:
    from frontdesk.booking import jobs

    alice, sched = world["alice"], world["sched"]
    assert (await book_via_page(alice, world["slots"][0])).status_code == 303
    clock.set(clock.at_local(sched.on_date - timedelta(days=1), __import__("datetime").time(19)))
    from frontdesk.core import outbox

    for _ in range(2):  # twice: one reminder only
        async with env.container.db.session() as s:
            await outbox.enqueue(s, jobs.REMIND_JOB)
        await Worker(env.container).drain()
    assert await count(env, TemplateMessage, TemplateMessage.kind == "visit_reminder") == 1
    [reminder] = await sent_to_wechat(env, "visit_reminder")
    assert set(reminder["data"]) == {"thing1", "time2", "thing3"}
    assert "请带就诊卡" in reminder["data"]["thing3"]
