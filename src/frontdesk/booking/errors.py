"""Errors of booking, each with a stable code; words for people are in locale/booking.*.json."""

from __future__ import annotations

from frontdesk.core.errors import Conflict, Forbidden, Invalid, NotFound


class SlotUnknown(NotFound):
    code = "booking_slot_not_found"


class BookingNotFound(NotFound):
    code = "booking_not_found"


class SchedulePast(Invalid):
    code = "booking_schedule_past"


class ScheduleNotReleased(Invalid):
    code = "booking_not_released"


class BookingClosed(Invalid):
    """Past the cut-off before the slot's time."""

    code = "booking_closed"


class ScheduleSuspended(Conflict):
    code = "booking_schedule_suspended"


class ScheduleFull(Conflict):
    code = "booking_schedule_full"


class SlotTaken(Conflict):
    code = "booking_slot_taken"


class DuplicateBooking(Conflict):
    """One booking per card per doctor per day."""

    code = "booking_duplicate_day"


class TooManyOpenBookings(Conflict):
    code = "booking_too_many_open"


class TooManyCardsInSession(Conflict):
    """Anti-scalping: too many of this account's cards in one clinic session."""

    code = "booking_too_many_cards_in_session"


class CardNotUsable(Conflict):
    code = "booking_card_not_usable"


class BookingBlocked(Forbidden):
    code = "booking_blocked"


class IdempotencyKeyReused(Invalid):
    code = "booking_idempotency_key_reused"


class IdempotencyKeyInvalid(Invalid):
    code = "booking_idempotency_key_invalid"


class RequestInFlight(Conflict):
    code = "booking_request_in_flight"


class NotCancellable(Conflict):
    code = "booking_not_cancellable"


class CancelDeadlinePassed(Conflict):
    code = "booking_cancel_deadline_passed"


class BlockNotFound(NotFound):
    code = "booking_block_not_found"


class LiftReasonRequired(Invalid):
    code = "booking_lift_reason_required"


class SuspensionScheduleUnknown(NotFound):
    code = "booking_suspension_schedule_not_found"


class SuspensionReasonRequired(Invalid):
    code = "booking_suspension_reason_required"


class SuspensionPending(Conflict):
    """A suspension of this session is already on its way to the HIS."""

    code = "booking_suspension_pending"


class SuspensionNotFound(NotFound):
    code = "booking_suspension_not_found"


class SuspensionNotUnreached(Conflict):
    """Push again only a suspension whose push the outbox gave up on (HIS not reached)."""

    code = "booking_suspension_not_unreached"


class SuspensionCountChanged(Conflict):
    """Bookings changed since staff saw the confirmation: show it again."""

    code = "booking_suspension_count_changed"


class NotAwaitingPayment(Conflict):
    """The booking has no fee to pay now: not a hold, already paid, released or cancelled."""

    code = "booking_not_awaiting_payment"


class HoldExpired(Conflict):
    code = "booking_hold_expired"
