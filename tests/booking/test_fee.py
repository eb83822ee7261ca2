"""The registration fee paid when booking (issue 8, ``booking_fee_mode = at_booking``), end to
end through the real pages, the worker, billing, the WeChat Pay simulator and the demo HIS:
the hold, paying within it, the hold expiring unpaid, a payment arriving after the hold
expired (slot still free: booked; slot taken: refunded once), refunds on cancel and on a
clinic suspension, the idempotent retry, and the refusals that change nothing."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from frontdesk.billing import jobs as _billing_jobs  # noqa: F401 - registers handlers
from frontdesk.billing import models as bm
from frontdesk.booking import service as booking_service
from frontdesk.booking.models import Booking
from frontdesk.booking.schemas import BookingPolicy
from frontdesk.catalog.models import Slot
from frontdesk.core import outbox
from frontdesk.core.clock import FrozenClock
from frontdesk.core.worker import Worker
from frontdesk.wechat.oa.models import TemplateMessage
from tests.accounts.test_pages import csrf_of
from tests.billing.helpers import pay_params, payment_id_of, wire
from tests.booking.pages import book_via_page, count, deliver_his_events, his_op

HOLD = timedelta(minutes=15)


@pytest.fixture
def env(wechat_sim: Any, his_gateway: Any, sms_sender: Any, pay_sim: Any) -> Any:
    """The booking world with WeChat Pay wired and the hospital taking the fee at booking."""
    env = wire(wechat_sim, his_gateway, sms_sender, pay_sim)
    settings = env.container.settings.model_copy(update={"booking_fee_mode": "at_booking"})
    env.container.settings = settings
    env.front_app.state.settings = settings
    return env


async def _booking(env: Any, booking_id: int) -> Booking:
    async with env.container.db.session() as s:
        row = await s.get(Booking, booking_id)
        assert isinstance(row, Booking)
        return row


async def _payment(env: Any, payment_id: int) -> bm.BillingPayment:
    async with env.container.db.session() as s:
        row = await s.get(bm.BillingPayment, payment_id)
        assert isinstance(row, bm.BillingPayment)
        return row


async def _refunds(env: Any) -> list[bm.BillingRefund]:
    async with env.container.db.session() as s:
        return list(
            (await s.execute(select(bm.BillingRefund).order_by(bm.BillingRefund.id))).scalars()
        )


async def _refunds_done(env: Any, pay_sim: Any, clock: FrozenClock) -> None:
    """WeChat finishes the refunds it accepted and notifies us."""
    await Worker(env.container).drain()
    clock.advance(seconds=10)
    await pay_sim.sim.deliver_due()
    await Worker(env.container).drain()


async def _slot_holder(env: Any, slot_id: int) -> int | None:
    async with env.container.db.session() as s:
        slot = await s.get(Slot, slot_id)
        assert slot is not None
        holder: int | None = slot.booking_id
        return holder


async def _hold(client: httpx.AsyncClient, slot_id: int) -> int:
    """Book in at_booking mode: a hold, and its page is the pay step."""
    done = await book_via_page(client, slot_id)
    assert done.status_code == 303, done.text
    found = re.fullmatch(r"/h5/booking/appointments/(\d+)\?notice=held", done.headers["location"])
    assert found is not None, done.headers["location"]
    return int(found.group(1))


async def _start_pay(client: httpx.AsyncClient, booking_id: int) -> tuple[int, dict[str, str]]:
    page = await client.get(f"/h5/booking/appointments/{booking_id}")
    assert page.status_code == 200
    started = await client.post(
        f"/h5/booking/appointments/{booking_id}/pay", data={"csrf": csrf_of(page)}
    )
    payment_id = payment_id_of(started)
    pay_page = await client.get(f"/h5/payments/{payment_id}")
    assert pay_page.status_code == 200
    return payment_id, pay_params(pay_page)


async def test_pay_within_the_hold_books_and_registers(
    env: Any, world: Any, pay_sim: Any, his_sim: Any, clock: FrozenClock
) -> None:
    alice, sched, slot_id = world["alice"], world["sched"], world["slots"][0]
    confirm = await alice.get(f"/h5/booking/slots/{slot_id}/confirm")
    assert 'data-testid="fee-mode"' in confirm.text and "15分钟内在线支付" in confirm.text

    booking_id = await _hold(alice, slot_id)
    b = await _booking(env, booking_id)
    assert (b.status, b.fee_state, b.hold_expires_at) == ("held", "pending", clock.now() + HOLD)
    assert await _slot_holder(env, slot_id) == booking_id
    until = (clock.now() + HOLD).astimezone(clock.tz).strftime("%H:%M")
    mine = await alice.get("/h5/booking/appointments")
    assert f"待支付（请在{until}前完成）" in mine.text
    # nothing is sent to the HIS for an unpaid hold
    assert await Worker(env.container).drain() == 0
    assert (await _booking(env, booking_id)).his_state == "pending"

    payment_id, params = await _start_pay(alice, booking_id)
    p = await _payment(env, payment_id)
    assert (p.purpose, p.amount_fen, p.channel, p.expires_at) == (
        "registration",
        sched.fee_fen,
        "JSAPI",
        clock.now() + HOLD,
    )
    # asking again gives the same payment (same prepay)
    again, params_again = await _start_pay(alice, booking_id)
    assert (again, params_again["package"]) == (payment_id, params["package"])

    clock.advance(minutes=5)
    order = pay_sim.sim.confirm_jsapi(params)
    pay_sim.sim.pay(order, openid=b.openid)
    await pay_sim.sim.deliver_due()
    await Worker(env.container).drain()
    b = await _booking(env, booking_id)
    assert (b.status, b.fee_state, b.his_state) == ("booked", "paid", "registered")
    p = await _payment(env, payment_id)
    assert (p.state, p.his_state, p.refunded_fen) == ("paid", "not_needed", 0)
    assert await count(env, TemplateMessage, TemplateMessage.kind == "booking_made") == 1
    appt = await env.container.services["his"].appointment(b.his_appointment_id)
    assert appt.status.value == "booked"
    # the release job at the hold's end changes nothing any more
    clock.advance(minutes=11)
    await Worker(env.container).drain()
    assert (await _booking(env, booking_id)).status == "booked"
    assert await _slot_holder(env, slot_id) == booking_id
    assert await _refunds(env) == []
    page = await alice.get(f"/h5/booking/appointments/{booking_id}")
    assert "已在线支付" in page.text


async def test_unpaid_hold_expires_slot_back_order_closed(
    env: Any, world: Any, pay_sim: Any, clock: FrozenClock
) -> None:
    alice, slot_id = world["alice"], world["slots"][0]
    booking_id = await _hold(alice, slot_id)
    payment_id, _params = await _start_pay(alice, booking_id)
    clock.advance(minutes=14)
    await Worker(env.container).drain()
    assert (await _booking(env, booking_id)).status == "held"  # not yet
    clock.advance(minutes=1, seconds=1)
    await Worker(env.container).drain()
    b = await _booking(env, booking_id)
    assert (b.status, b.active_day_key, b.his_state, b.fee_state) == (
        "hold_expired",
        None,
        "skipped",
        "pending",
    )
    assert await _slot_holder(env, slot_id) is None
    p = await _payment(env, payment_id)
    assert p.state == "closed"
    order = pay_sim.sim.get_order(p.out_trade_no)
    assert order.state == "CLOSED"
    # paying an expired hold is refused, nothing written
    page = await alice.get(f"/h5/booking/appointments/{booking_id}")
    assert 'data-testid="pay-fee"' not in page.text
    before = await count(env, bm.BillingPayment)
    form = await alice.get(f"/h5/booking/slots/{world['slots'][1]}/confirm")
    refused = await alice.post(
        f"/h5/booking/appointments/{booking_id}/pay", data={"csrf": csrf_of(form)}
    )
    assert refused.status_code == 409
    assert await count(env, bm.BillingPayment) == before
    # the slot is bookable again by someone else
    bob_id = await _hold(world["bob"], slot_id)
    assert await _slot_holder(env, slot_id) == bob_id


async def _pay_late(
    env: Any, pay_sim: Any, clock: FrozenClock, booking_id: int, params: dict[str, str]
) -> None:
    """The patient pays in the last second of the hold, but the notify is lost and the
    release job runs first (directly, as the worker would, without the close query yet)."""
    b = await _booking(env, booking_id)
    clock.advance(minutes=14, seconds=59)
    order = pay_sim.sim.confirm_jsapi(params)
    pay_sim.sim.pay(order, openid=b.openid)
    clock.advance(seconds=2)
    async with env.container.db.session() as s:
        assert await booking_service.expire_hold(s, booking_id=booking_id, now=clock.now())
        await s.commit()
    assert (await _booking(env, booking_id)).status == "hold_expired"


async def test_late_payment_with_the_slot_free_becomes_the_booking(
    env: Any, world: Any, pay_sim: Any, clock: FrozenClock
) -> None:
    alice, slot_id = world["alice"], world["slots"][0]
    booking_id = await _hold(alice, slot_id)
    payment_id, params = await _start_pay(alice, booking_id)
    await _pay_late(env, pay_sim, clock, booking_id, params)
    assert await _slot_holder(env, slot_id) is None
    await Worker(env.container).drain()  # the close query finds it paid
    await pay_sim.sim.deliver_due()  # and the notify, late, changes nothing more
    await Worker(env.container).drain()
    b = await _booking(env, booking_id)
    assert (b.status, b.fee_state, b.his_state) == ("booked", "paid", "registered")
    assert b.active_day_key is not None
    assert await _slot_holder(env, slot_id) == booking_id
    assert (await _payment(env, payment_id)).state == "paid"
    assert await _refunds(env) == []


async def test_late_payment_with_the_slot_taken_is_refunded_once(
    env: Any, world: Any, pay_sim: Any, clock: FrozenClock
) -> None:
    alice, bob, slot_id = world["alice"], world["bob"], world["slots"][0]
    booking_id = await _hold(alice, slot_id)
    payment_id, params = await _start_pay(alice, booking_id)
    await _pay_late(env, pay_sim, clock, booking_id, params)
    bob_id = await _hold(bob, slot_id)  # the released slot goes to bob
    await Worker(env.container).drain()
    await pay_sim.sim.deliver_due()
    await Worker(env.container).drain()
    b = await _booking(env, booking_id)
    assert (b.status, b.fee_state) == ("hold_expired", "refunded")
    assert await _slot_holder(env, slot_id) == bob_id
    await _refunds_done(env, pay_sim, clock)
    refunds = await _refunds(env)
    assert [(r.payment_id, r.amount_fen, r.reason, r.state) for r in refunds] == [
        (payment_id, b.fee_fen, "hold_expired_slot_taken", "success")
    ]
    p = await _payment(env, payment_id)
    assert (p.state, p.refunded_fen) == ("paid", b.fee_fen)
    told = await count(
        env,
        TemplateMessage,
        TemplateMessage.kind == "booking_cancelled",
        TemplateMessage.openid == b.openid,
    )
    assert told == 1
    # the job again (a lease expired, a duplicate notify): nothing more
    async with env.container.db.session() as s:
        assert (
            await booking_service.fee_paid(
                s, payment_id=payment_id, policy=BookingPolicy(), now=clock.now()
            )
            == "none"
        )
        await s.commit()
    await Worker(env.container).drain()
    assert len(await _refunds(env)) == 1


async def test_cancelling_a_paid_booking_refunds_the_fee(
    env: Any, world: Any, pay_sim: Any, clock: FrozenClock
) -> None:
    alice, slot_id = world["alice"], world["slots"][0]
    booking_id = await _hold(alice, slot_id)
    payment_id, params = await _start_pay(alice, booking_id)
    b = await _booking(env, booking_id)
    order = pay_sim.sim.confirm_jsapi(params)
    pay_sim.sim.pay(order, openid=b.openid)
    await pay_sim.sim.deliver_due()
    await Worker(env.container).drain()
    assert (await _booking(env, booking_id)).status == "booked"
    page = await alice.get(f"/h5/booking/appointments/{booking_id}")
    done = await alice.post(
        f"/h5/booking/appointments/{booking_id}/cancel", data={"csrf": csrf_of(page)}
    )
    assert done.status_code == 303
    await Worker(env.container).drain()
    await pay_sim.sim.deliver_due()
    await Worker(env.container).drain()
    b = await _booking(env, booking_id)
    assert (b.status, b.fee_state, b.his_state) == ("cancelled", "refunded", "cancelled")
    await _refunds_done(env, pay_sim, clock)
    refunds = await _refunds(env)
    assert [(r.payment_id, r.amount_fen, r.reason, r.state) for r in refunds] == [
        (payment_id, b.fee_fen, "booking_cancelled", "success")
    ]


async def test_suspension_refunds_the_fee_without_penalty(
    env: Any, world: Any, pay_sim: Any, his_sim: Any, clock: FrozenClock
) -> None:
    alice, bob, sched = world["alice"], world["bob"], world["sched"]
    paid_id = await _hold(alice, world["slots"][0])
    payment_id, params = await _start_pay(alice, paid_id)
    b = await _booking(env, paid_id)
    order = pay_sim.sim.confirm_jsapi(params)
    pay_sim.sim.pay(order, openid=b.openid)
    await pay_sim.sim.deliver_due()
    held_id = await _hold(bob, world["slots"][1])  # bob's hold, started but unpaid
    bob_payment, _ = await _start_pay(bob, held_id)
    await Worker(env.container).drain()
    cursor = await deliver_his_events(env, "")
    await his_op(his_sim, f"/operator/schedules/{sched.his_schedule_id}/suspend", {})
    await deliver_his_events(env, cursor)
    await Worker(env.container).drain()
    await pay_sim.sim.deliver_due()
    await Worker(env.container).drain()
    paid, held = await _booking(env, paid_id), await _booking(env, held_id)
    assert (paid.status, paid.fee_state) == ("cancelled_by_hospital", "refunded")
    assert (held.status, held.fee_state, held.his_state) == (
        "cancelled_by_hospital",
        "pending",
        "skipped",
    )
    await _refunds_done(env, pay_sim, clock)
    refunds = await _refunds(env)
    assert [(r.payment_id, r.amount_fen, r.reason, r.state) for r in refunds] == [
        (payment_id, paid.fee_fen, "clinic_suspended", "success")
    ]
    assert (await _payment(env, bob_payment)).state == "closed"
    # no penalty: no no-show, no block
    listing = (await alice.get("/api/patient/booking/bookings")).json()["bookings"]
    assert [x["status"] for x in listing] == ["cancelled_by_hospital"]


async def test_retry_returns_the_same_hold(env: Any, world: Any, clock: FrozenClock) -> None:
    alice, slot_id = world["alice"], world["slots"][0]
    confirm = await alice.get(f"/h5/booking/slots/{slot_id}/confirm")
    card = re.search(r'name="card_id" value="(\d+)"', confirm.text)
    assert card is not None
    key = uuid.uuid4().hex
    body = {"card_id": int(card.group(1)), "slot_id": slot_id}
    first = await alice.post(
        "/api/patient/booking/bookings", json=body, headers={"Idempotency-Key": key}
    )
    assert first.status_code == 201, first.text
    assert first.json()["status"] == "held"
    assert first.json()["hold_expires_at"] == (clock.now() + HOLD).isoformat()
    clock.advance(seconds=40)
    again = await alice.post(
        "/api/patient/booking/bookings", json=body, headers={"Idempotency-Key": key}
    )
    assert again.status_code == 200
    assert again.json() == first.json()
    assert await count(env, Booking) == 1


async def test_bad_input_is_refused_and_changes_nothing(
    env: Any, world: Any, pay_sim: Any, clock: FrozenClock
) -> None:
    alice, bob, slot_id = world["alice"], world["bob"], world["slots"][0]
    booking_id = await _hold(alice, slot_id)

    async def nothing_written() -> tuple[int, int]:
        return await count(env, bm.BillingPayment), await count(env, outbox.OutboxJob)

    before = await nothing_written()
    # someone else's hold: "not found", on the page and the API
    page = await bob.get(f"/h5/booking/slots/{world['slots'][1]}/confirm")
    other = await bob.post(
        f"/h5/booking/appointments/{booking_id}/pay", data={"csrf": csrf_of(page)}
    )
    assert other.status_code == 404
    api_other = await bob.post(f"/api/patient/booking/bookings/{booking_id}/pay", json={})
    assert api_other.status_code == 404
    assert await nothing_written() == before
    # an amount from the client is ignored: the payment is the schedule's fee
    started = await alice.post(
        f"/api/patient/booking/bookings/{booking_id}/pay",
        json={"amount_fen": 1, "fee_fen": 1},
    )
    assert started.status_code == 200, started.text
    p = await _payment(env, started.json()["payment_id"])
    assert p.amount_fen == world["sched"].fee_fen != 1
    # a cancelled hold cannot be paid; its WeChat order is closed
    page = await alice.get(f"/h5/booking/appointments/{booking_id}")
    assert (
        await alice.post(
            f"/h5/booking/appointments/{booking_id}/cancel", data={"csrf": csrf_of(page)}
        )
    ).status_code == 303
    await Worker(env.container).drain()
    assert (await _payment(env, p.id)).state == "closed"
    before = await nothing_written()
    refused = await alice.post(f"/api/patient/booking/bookings/{booking_id}/pay", json={})
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "booking_not_awaiting_payment"
    assert await nothing_written() == before
    b = await _booking(env, booking_id)
    assert (b.status, b.fee_state, b.his_state) == ("cancelled", "pending", "skipped")
    assert await _slot_holder(env, slot_id) is None
    # a booking made at check-in mode has nothing to pay online
    settings = env.container.settings.model_copy(update={"booking_fee_mode": "at_check_in"})
    env.container.settings = env.front_app.state.settings = settings
    done = await book_via_page(alice, world["slots"][1])
    plain_id = int(done.headers["location"].split("/")[-1].split("?")[0])
    assert (await _booking(env, plain_id)).fee_state is None
    before = await nothing_written()
    plain = await alice.post(f"/api/patient/booking/bookings/{plain_id}/pay", json={})
    assert plain.status_code == 409
    assert await nothing_written() == before


async def test_at_check_in_mode_books_at_once_and_says_so(
    env: Any, world: Any, clock: FrozenClock
) -> None:
    settings = env.container.settings.model_copy(update={"booking_fee_mode": "at_check_in"})
    env.container.settings = env.front_app.state.settings = settings
    alice, slot_id = world["alice"], world["slots"][0]
    confirm = await alice.get(f"/h5/booking/slots/{slot_id}/confirm")
    assert "就诊当天到窗口签到时缴纳" in confirm.text
    done = await book_via_page(alice, slot_id)
    assert done.headers["location"].endswith("?notice=booked")
    b = await _booking(env, int(done.headers["location"].split("/")[-1].split("?")[0]))
    assert (b.status, b.fee_state, b.hold_expires_at, b.fee_payment_id) == (
        "booked",
        None,
        None,
        None,
    )
    page = await alice.get(f"/h5/booking/appointments/{b.id}")
    assert "就诊当天到窗口签到时缴纳" in page.text
    assert await count(env, bm.BillingPayment) == 0
