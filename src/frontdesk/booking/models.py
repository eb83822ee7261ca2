"""Appointments (挂号) made through the WeChat pool, their idempotent requests, and credit
blocks for no-shows (违约)."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, Date, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from frontdesk.core.models import Base, BigId, UTCDateTime

BOOKED = "booked"
CHECKED_IN = "checked_in"
NO_SHOW = "no_show"
CANCELLED = "cancelled"
CANCELLED_BY_HOSPITAL = "cancelled_by_hospital"  # clinic suspension: no penalty
REFUSED_BY_HIS = "refused_by_his"  # the HIS would not register it: slot went back
# Registration fee paid when booking (``booking_fee_mode = at_booking``): the slot is HELD
# until the fee is paid; an unpaid hold is released when it expires.
HELD = "held"
HOLD_EXPIRED = "hold_expired"

# fee_state: the registration fee paid online (at_booking mode); NULL at check-in mode.
FEE_PENDING, FEE_PAID, FEE_REFUNDED = "pending", "paid", "refunded"

# his_state: where the HIS registration stands.
HIS_PENDING, HIS_REGISTERED, HIS_REFUSED, HIS_SKIPPED, HIS_CANCELLED = (
    "pending",
    "registered",
    "refused",
    "skipped",
    "cancelled",
)


class Booking(Base):
    __tablename__ = "booking"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # Our reference, unique forever: the HIS write is idempotent on it.
    booking_ref: Mapped[str] = mapped_column(String(32), nullable=False, unique=True)
    openid: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    card_id: Mapped[int] = mapped_column(BigId, nullable=False, index=True)
    card_no: Mapped[str] = mapped_column(String(32), nullable=False)
    slot_id: Mapped[int] = mapped_column(BigId, nullable=False, index=True)
    schedule_id: Mapped[int] = mapped_column(BigId, nullable=False, index=True)
    his_schedule_id: Mapped[str] = mapped_column(String(64), nullable=False)
    doctor_code: Mapped[str] = mapped_column(String(32), nullable=False)
    department_code: Mapped[str] = mapped_column(String(32), nullable=False)
    on_date: Mapped[date] = mapped_column(Date, nullable=False)
    period: Mapped[str] = mapped_column(String(8), nullable=False)
    level: Mapped[str] = mapped_column(String(32), nullable=False)
    fee_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)
    sequence_no: Mapped[int] = mapped_column(Integer, nullable=False)
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    status: Mapped[str] = mapped_column(String(24), nullable=False)
    # "card:doctor:date" while the booking holds that day (booked, checked in, no-show);
    # NULL once cancelled. Unique, so one card gets one booking per doctor per day even
    # when two requests race (NULLs never collide, on SQLite and PostgreSQL alike).
    active_day_key: Mapped[str | None] = mapped_column(String(120), nullable=True, unique=True)
    his_state: Mapped[str] = mapped_column(String(16), nullable=False, default=HIS_PENDING)
    his_appointment_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    his_refusal_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    cancel_reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    checked_in_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    no_show_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    reminded_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # at_booking fee mode only (NULL otherwise): the hold's end, billing's payment of the
    # fee, and where the fee stands (pending, paid, refunded).
    hold_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    fee_payment_id: Mapped[int | None] = mapped_column(
        BigId, nullable=True, unique=True, index=True
    )
    fee_state: Mapped[str | None] = mapped_column(String(16), nullable=True)

    __table_args__ = (
        Index("ix_booking_card_status", "card_id", "status"),
        Index("ix_booking_on_date_status", "on_date", "status"),
    )


class BookingRequest(Base):
    """One idempotency key of one account: the first request's body hash and its outcome.

    ``state``: ``in_flight`` (claimed, not finished), ``done`` (``booking_id``), or
    ``refused`` (``error_code``). The same key with another body is refused (422)."""

    __tablename__ = "booking_request"

    openid: Mapped[str] = mapped_column(String(64), primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    booking_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)


class CreditBlock(Base):
    """A booking block for a card after too many no-shows; staff may lift it with a reason."""

    __tablename__ = "credit_block"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    card_id: Mapped[int] = mapped_column(BigId, nullable=False, index=True)
    card_no: Mapped[str] = mapped_column(String(32), nullable=False)
    no_shows: Mapped[int] = mapped_column(Integer, nullable=False)
    blocked_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    blocked_until_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    lifted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    lifted_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lift_reason: Mapped[str | None] = mapped_column(Text, nullable=True)


# ScheduleSuspension.state
SUSPENSION_PENDING, SUSPENSION_DONE, SUSPENSION_REFUSED = "pending", "done", "refused"


class ScheduleSuspension(Base):
    """A clinic suspension (停诊) the scheduling office entered in the console: pushed to the
    HIS through the outbox (idempotent on ``request_ref``); only once the HIS has accepted it
    are the session's bookings cancelled here. A refusal keeps its code for the page."""

    __tablename__ = "schedule_suspension"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # Our reference, unique forever: the HIS write is idempotent on it, and the HIS's
    # schedule.suspended event carries it back.
    request_ref: Mapped[str] = mapped_column(String(32), nullable=False, unique=True)
    schedule_id: Mapped[int] = mapped_column(BigId, nullable=False, index=True)
    his_schedule_id: Mapped[str] = mapped_column(String(64), nullable=False)
    reason: Mapped[str] = mapped_column(String(200), nullable=False)
    requested_by: Mapped[str] = mapped_column(String(64), nullable=False)
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    # Patients booked when staff confirmed (what the confirmation showed them).
    booked_at_request: Mapped[int] = mapped_column(Integer, nullable=False)
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    refusal_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # "pending:<schedule_id>" while the request waits for the HIS, NULL afterwards: unique,
    # so two staff confirming at once push one suspension, not two.
    pending_key: Mapped[str | None] = mapped_column(String(48), nullable=True, unique=True)
