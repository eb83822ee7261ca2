"""Booking jobs and HIS event handlers. Each takes ids, reloads rows and is safe to run twice.

HIS calls are made before the job's own session runs a statement (rows are read in a short
session of their own first), so no database transaction waits on the HIS.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from frontdesk.booking import service
from frontdesk.booking.models import BOOKED, HIS_PENDING, HIS_REGISTERED, SUSPENSION_PENDING
from frontdesk.booking.schemas import BookingPolicy
from frontdesk.core import outbox, scheduler
from frontdesk.core.clock import get_clock
from frontdesk.his import events
from frontdesk.his.port import AppointmentStatus, HisGateway, HisRejected, HisUnavailable

log = logging.getLogger("frontdesk.booking")

REMIND_JOB = "booking.remind"
SWEEP_JOB = "booking.sweep_no_shows"
CANCEL_SUSPENDED_JOB = "booking.cancel_suspended"

scheduler.recurring(REMIND_JOB, "daily 19:00")  # the evening before the visit
scheduler.recurring(SWEEP_JOB, "daily 00:30")  # just after the visit day ended


def _policy(ctx: Any) -> BookingPolicy:
    return BookingPolicy.from_settings(ctx.container.settings)


@outbox.job(service.REGISTER_JOB, max_attempts=12, timeout_seconds=60)
async def register(ctx: outbox.JobContext, *, booking_id: int, **_: Any) -> None:
    """Register a booking in the HIS (idempotent on its booking_ref). A refusal cancels the
    booking, gives the slot back and tells the patient; an outage retries with backoff."""
    his: HisGateway = ctx.container.services["his"]
    async with ctx.container.db.session() as read:
        b = await service.pending_registration(read, booking_id)
    if b is None or b.his_state != HIS_PENDING:
        return
    if b.status != BOOKED:
        await service.skip_registration(ctx.session, booking_id=booking_id)
        return
    try:
        appt = await his.register_appointment(
            schedule_id=b.his_schedule_id,
            sequence_no=b.sequence_no,
            card_no=b.card_no,
            booking_ref=b.booking_ref,
        )
    except HisUnavailable as exc:
        raise outbox.RetryLater(f"HIS unavailable: {exc.code}") from exc
    except HisRejected as exc:
        if exc.code == "slot_taken" and await service.slot_has_pending_his_cancel(
            ctx.session, slot_id=b.slot_id, but=b.id
        ):
            # The previous holder's cancellation has not reached the HIS yet: wait for it.
            raise outbox.RetryLater("slot still held in the HIS", delay_seconds=5) from exc
        await service.refused_by_his(ctx.session, booking_id=booking_id, code=exc.code, now=ctx.now)
        return
    await service.registered(
        ctx.session, booking_id=booking_id, appointment_id=appt.appointment_id, now=ctx.now
    )


@outbox.job(service.CANCEL_IN_HIS_JOB, max_attempts=12, timeout_seconds=60)
async def cancel_in_his(ctx: outbox.JobContext, *, booking_id: int, **_: Any) -> None:
    """Cancel a patient-cancelled booking in the HIS once it is registered there."""
    his: HisGateway = ctx.container.services["his"]
    async with ctx.container.db.session() as read:
        b = await service.pending_registration(read, booking_id)
    if b is None:
        return
    if b.his_state == HIS_PENDING:
        raise outbox.RetryLater("registration still pending", delay_seconds=5)
    if b.his_state != HIS_REGISTERED or not b.his_appointment_id:
        return
    try:
        await his.cancel_appointment(appointment_id=b.his_appointment_id, reason="patient")
    except HisUnavailable as exc:
        raise outbox.RetryLater(f"HIS unavailable: {exc.code}") from exc
    except HisRejected as exc:
        if exc.code != "appointment_not_cancellable":
            raise outbox.PermanentFailure(f"HIS refused the cancellation: {exc.code}") from exc
        # Already not booked in the HIS (cancelled there, or checked in): nothing to undo.
    await service.cancelled_in_his(ctx.session, booking_id=booking_id)


@outbox.job(service.SUSPEND_JOB, max_attempts=12, timeout_seconds=60)
async def suspend_in_his(ctx: outbox.JobContext, *, suspension_id: int, **_: Any) -> None:
    """Push a suspension entered in the console to the HIS (idempotent on its request_ref).
    Accepted (or already suspended there) → the local effect; refused → the code is kept for
    the page and nothing else changes; an outage retries with backoff."""
    his: HisGateway = ctx.container.services["his"]
    async with ctx.container.db.session() as read:
        row = await service.suspension_to_push(read, suspension_id)
    if row is None or row.state != SUSPENSION_PENDING:
        return
    try:
        await his.suspend_schedule(
            schedule_id=row.his_schedule_id, reason=row.reason, request_ref=row.request_ref
        )
    except HisUnavailable as exc:
        raise outbox.RetryLater(f"HIS unavailable: {exc.code}") from exc
    except HisRejected as exc:
        if exc.code != "schedule_suspended":
            await service.suspension_refused(
                ctx.session, suspension_id=suspension_id, code=exc.code, now=ctx.now
            )
            return
        # Suspended at the HIS already (entered there meanwhile): the end state we asked for.
    await service.suspension_accepted(ctx.session, suspension_id=suspension_id, now=ctx.now)


@outbox.job(CANCEL_SUSPENDED_JOB, max_attempts=8)
async def cancel_suspended(ctx: outbox.JobContext, *, schedule_id: int, **_: Any) -> None:
    """A suspension found by the catalog sync (the event feed's safety net)."""
    await service.cancel_for_suspension(ctx.session, schedule_id=schedule_id, now=ctx.now)


@outbox.job(REMIND_JOB, max_attempts=3, timeout_seconds=300)
async def remind(ctx: outbox.JobContext, **_: Any) -> None:
    """Remind every patient booked for tomorrow, once each."""
    tomorrow = get_clock().local_date_of(ctx.now) + timedelta(days=1)
    for booking_id in await service.due_for_reminder(ctx.session, on_date=tomorrow):
        await service.remind(ctx.session, booking_id=booking_id, now=ctx.now)


@outbox.job(SWEEP_JOB, max_attempts=3, timeout_seconds=600)
async def sweep_no_shows(ctx: outbox.JobContext, **_: Any) -> None:
    """End of day: a registered booking still 'booked' after its day is asked about in the
    HIS; checked in there → checked in here, otherwise a no-show (the credit rule applies).
    An HIS outage leaves the booking for the next run."""
    his: HisGateway = ctx.container.services["his"]
    today = get_clock().local_date_of(ctx.now)
    async with ctx.container.db.session() as read:
        due = await service.unfinished_before(read, day=today)
    outcomes: list[tuple[str, str]] = []
    for _id, ref, appointment_id in due:
        try:
            appt = await his.appointment(appointment_id)
        except HisUnavailable:
            log.warning("no-show sweep: HIS unavailable; %s left for the next run", ref)
            continue
        except HisRejected:
            outcomes.append((ref, "no_show"))
            continue
        outcomes.append(
            (ref, "checked_in" if appt.status == AppointmentStatus.checked_in else "no_show")
        )
    policy = _policy(ctx)
    for ref, outcome in outcomes:
        if outcome == "checked_in":
            await service.record_check_in(ctx.session, booking_ref=ref, now=ctx.now)
        else:
            await service.record_no_show(ctx.session, booking_ref=ref, policy=policy, now=ctx.now)


# --------------------------------------------------------------------------- HIS events


def _text(ctx: events.EventContext, key: str) -> str | None:
    value = ctx.event.data.get(key)
    return value if isinstance(value, str) and value else None


@events.on("schedule.suspended")
async def on_schedule_suspended(ctx: events.EventContext) -> None:
    """Entered at the HIS, or the echo of our console's own request (``request_ref``): the
    same path either way, and a second time changes nothing. The event's ``reason`` is
    optional: kept and told to the patients when given, the usual wording otherwise."""
    his_schedule_id = _text(ctx, "schedule_id")
    if his_schedule_id is None:
        return
    await service.apply_suspension(
        ctx.session,
        his_schedule_id=his_schedule_id,
        request_ref=_text(ctx, "request_ref"),
        now=ctx.now,
        reason=_text(ctx, "reason"),
    )


@events.on("appointment.checked_in")
async def on_checked_in(ctx: events.EventContext) -> None:
    ref = _text(ctx, "booking_ref")
    if ref is not None:
        await service.record_check_in(ctx.session, booking_ref=ref, now=ctx.now)


@events.on("appointment.no_show")
async def on_no_show(ctx: events.EventContext) -> None:
    ref = _text(ctx, "booking_ref")
    if ref is None:
        return
    policy = (
        BookingPolicy.from_settings(ctx.container.settings) if ctx.container else BookingPolicy()
    )
    await service.record_no_show(ctx.session, booking_ref=ref, policy=policy, now=ctx.now)


@outbox.job(service.EXPIRE_HOLD_JOB, max_attempts=12, timeout_seconds=60)
async def expire_hold(ctx: outbox.JobContext, *, booking_id: int, **_: Any) -> None:
    """At a hold's end: release it if still unpaid (slot back, WeChat order closed)."""
    await service.expire_hold(ctx.session, booking_id=booking_id, now=ctx.now)


@outbox.job(service.FEE_PAID_JOB, max_attempts=40, timeout_seconds=60)
async def fee_paid(ctx: outbox.JobContext, *, payment_id: int, **_: Any) -> None:
    """A registration fee was paid: confirm (or take again, or refund) its booking."""
    await service.fee_paid(ctx.session, payment_id=payment_id, policy=_policy(ctx), now=ctx.now)
