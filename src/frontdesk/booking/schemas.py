"""What booking takes in and gives out."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

IDEMPOTENCY_KEY_PATTERN = r"^[A-Za-z0-9_\-]{8,64}$"


class BookRequest(BaseModel):
    """The body of a booking request (JSON API; the H5 form builds the same)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    card_id: int = Field(ge=1, le=2**62)
    slot_id: int = Field(ge=1, le=2**62)

    def fingerprint(self) -> str:
        """A hash of the body: the same key with a different body is refused."""
        canonical = json.dumps(self.model_dump(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class BookingPolicy:
    release_days: int = 7
    release_time: time = time(7, 0)
    cutoff: timedelta = timedelta(minutes=30)
    cancel_deadline_hour: int = 24
    max_open_per_card: int = 3
    max_cards_per_session: int = 2
    no_show_limit: int = 3
    no_show_window_days: int = 90
    block_days: int = 90
    fee_mode: str = "at_check_in"  # or "at_booking": pay the fee within a hold
    hold: timedelta = timedelta(minutes=15)

    @property
    def pay_at_booking(self) -> bool:
        return self.fee_mode == "at_booking"

    @classmethod
    def from_settings(cls, settings: Any) -> BookingPolicy:
        hh, mm = (int(x) for x in settings.booking_release_time.split(":"))
        return cls(
            release_days=settings.booking_release_days,
            release_time=time(hh, mm),
            cutoff=timedelta(minutes=settings.booking_cutoff_minutes),
            cancel_deadline_hour=settings.booking_cancel_deadline_hour,
            max_open_per_card=settings.booking_max_open_per_card,
            max_cards_per_session=settings.booking_max_cards_per_session,
            no_show_limit=settings.booking_no_show_limit,
            no_show_window_days=settings.booking_no_show_window_days,
            block_days=settings.booking_block_days,
            fee_mode=settings.booking_fee_mode,
            hold=timedelta(minutes=settings.booking_hold_minutes),
        )


@dataclass(frozen=True)
class BookingView:
    booking_id: int
    booking_ref: str
    card_id: int
    card_no: str
    schedule_id: int
    doctor_code: str
    department_code: str
    on_date: date
    period: str
    level: str
    fee_fen: int
    sequence_no: int
    starts_at: datetime
    ends_at: datetime
    status: str
    his_state: str
    created_at: datetime
    cancel_deadline_at: datetime
    cancellable: bool
    # Why it cannot be cancelled (a message code), when it cannot.
    not_cancellable_reason: str | None
    # at_booking fee mode: the hold's end (status "held"), the fee's payment and its state.
    hold_expires_at: datetime | None = None
    fee_payment_id: int | None = None
    fee_state: str | None = None


@dataclass(frozen=True)
class CreditStatus:
    card_id: int
    no_shows: int  # counted towards the rule (since the last block)
    limit: int
    window_days: int
    block_days: int
    blocked_until_at: datetime | None
    block_id: int | None

    @property
    def blocked(self) -> bool:
        return self.blocked_until_at is not None


@dataclass(frozen=True)
class BlockView:
    block_id: int
    card_id: int
    card_no_masked: str
    no_shows: int
    blocked_at: datetime
    blocked_until_at: datetime
    lifted_at: datetime | None
    lifted_by: str | None
    lift_reason: str | None


@dataclass(frozen=True)
class SuspensionView:
    """A clinic suspension entered in the console, for the scheduling office's page."""

    suspension_id: int
    request_ref: str
    schedule_id: int
    reason: str
    requested_by: str
    requested_at: datetime
    booked_at_request: int
    state: str  # pending | done | refused
    refusal_code: str | None
    finished_at: datetime | None
    # Pending, and its push job dead: the HIS was not reached; staff may push it again.
    his_unreached: bool = False
