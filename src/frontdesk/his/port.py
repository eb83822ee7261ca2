"""The HIS bridge port: everything the front server knows of the hospital comes through it.

``HisGateway`` is the one way domains reach the hospital's systems (HIS, LIS, PACS). Values
are frozen dataclasses in our vocabulary; money is integer fen; instants are aware UTC and
calendar dates are the hospital's dates. Two error families:

- ``HisUnavailable``: the HIS is down, slow, or answered something we cannot read. Retrying
  later may succeed (writes are retried with the same idempotency key, so nothing happens
  twice).
- ``HisRejected``: the HIS understood and refused (card not found, slot taken, amount
  changed...). Retrying will not help; ``code`` is stable and is what domains match on.

The real adapter is ``frontdesk.his.bridge.HttpHisGateway``; the protocol it speaks is
documented in ``docs/his-bridge.md``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Protocol, runtime_checkable

# --------------------------------------------------------------------------- errors


# Reports read at once by ``HisGateway.report_bodies``.
REPORT_BATCH_MAX = 100


class HisError(Exception):
    """Base of the two HIS error families."""

    code: str = "his_error"
    retryable: bool = False

    def __init__(self, code: str, message: str = "", *, operation: str = "") -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message
        self.operation = operation


class HisUnavailable(HisError):
    """The HIS could not answer (down, timed out, overloaded, unreadable reply): retry later."""

    retryable = True


class HisRejected(HisError):
    """The HIS refused the request for a reason that retrying cannot change.

    Stable codes (docs/his-bridge.md, section 4), e.g. ``not_found``, ``card_not_found``,
    ``card_mismatch``, ``schedule_suspended``, ``slot_taken``, ``slot_not_found``,
    ``booking_ref_used``, ``appointment_not_cancellable``, ``order_not_unpaid``,
    ``amount_mismatch``, ``already_settled``, ``not_refundable``, ``refund_ref_used``,
    ``invalid_request``, ``idempotency_key_reused``, ``schedule_past``, ``schedule_started``;
    and configuration faults such as
    ``signature_invalid``, ``timestamp_out_of_window``, ``nonce_reused``, ``unknown_key``.
    """

    retryable = False


# --------------------------------------------------------------------------- vocabulary


class CardType(StrEnum):
    self_pay = "self_pay"  # 自费
    city_insurance = "city_insurance"  # 市医保
    provincial_insurance = "provincial_insurance"  # 省医保
    city_cadre = "city_cadre"  # 市干保


class Period(StrEnum):
    am = "am"
    pm = "pm"


class RegistrationLevel(StrEnum):
    ordinary = "ordinary"  # 普通号
    expert = "expert"  # 专家号
    special_needs = "special_needs"  # 特需号


class ScheduleStatus(StrEnum):
    open = "open"
    suspended = "suspended"  # 停诊


class AppointmentStatus(StrEnum):
    booked = "booked"
    checked_in = "checked_in"
    no_show = "no_show"  # 违约
    cancelled = "cancelled"
    cancelled_by_suspension = "cancelled_by_suspension"


class OrderKind(StrEnum):
    prescription = "prescription"
    exam = "exam"
    lab = "lab"


class OrderStatus(StrEnum):
    unpaid = "unpaid"
    paid = "paid"
    refunded = "refunded"  # every item refunded


class ItemStatus(StrEnum):
    billed = "billed"
    paid = "paid"
    refunded = "refunded"


class ExecutionState(StrEnum):
    pending = "pending"
    dispensed = "dispensed"  # prescription
    sample_taken = "sample_taken"  # lab
    exam_done = "exam_done"  # exam


class ReportKind(StrEnum):
    lab = "lab"
    exam = "exam"


class AbnormalFlag(StrEnum):
    normal = "normal"
    high = "high"
    low = "low"
    abnormal = "abnormal"  # qualitative result outside the reference (e.g. positive)


class SettlementChannel(StrEnum):
    wechat = "wechat"
    window = "window"


# --------------------------------------------------------------------------- catalog


@dataclass(frozen=True)
class Department:
    code: str
    name: str
    intro: str


@dataclass(frozen=True)
class Doctor:
    code: str
    name: str
    department_code: str
    title: str
    specialty: str
    intro: str
    photo_url: str


@dataclass(frozen=True)
class Schedule:
    """One clinic session (排班): a doctor, a date, a half day, a level and its fee."""

    schedule_id: str
    doctor_code: str
    department_code: str
    on_date: date
    period: Period
    level: RegistrationLevel
    fee_fen: int
    status: ScheduleStatus
    wechat_quota: int


@dataclass(frozen=True)
class Slot:
    """A numbered slot (号源) of the WeChat pool with its time window."""

    sequence_no: int
    starts_at: datetime
    ends_at: datetime
    available: bool


@dataclass(frozen=True)
class SlotPool:
    schedule_id: str
    version: int  # grows whenever the HIS changes the pool
    slots: tuple[Slot, ...]


# --------------------------------------------------------------------------- cards


@dataclass(frozen=True)
class CardVerification:
    """A card the HIS confirmed for binding; holder details are masked by the HIS."""

    card_no: str
    card_type: CardType
    holder_name_masked: str
    id_number_masked: str
    phone_masked: str
    # The whole number the HIS holds, only so the front server can send the one-time binding
    # code to it: never stored, shown or logged. Empty when the HIS has no mobile number.
    sms_phone: str = ""


# --------------------------------------------------------------------------- appointments


@dataclass(frozen=True)
class Appointment:
    appointment_id: str
    schedule_id: str
    sequence_no: int
    card_no: str
    booking_ref: str
    status: AppointmentStatus
    registered_at: datetime


# --------------------------------------------------------------------------- orders


@dataclass(frozen=True)
class OrderItem:
    item_id: str
    name: str
    quantity: int
    unit: str
    unit_price_fen: int
    amount_fen: int
    status: ItemStatus


@dataclass(frozen=True)
class Order:
    order_id: str
    card_no: str
    kind: OrderKind
    title: str
    ordering_department: str
    executing_department: str
    doctor_name: str
    created_at: datetime
    total_fen: int
    status: OrderStatus
    items: tuple[OrderItem, ...]
    # The HIS visit (就诊) the order was written in; orders of one visit are paid together.
    # "" when the HIS has no visit number for it.
    visit_no: str = ""


@dataclass(frozen=True)
class PreSettlement:
    """What the HIS would charge now for these orders, by the card's type."""

    card_no: str
    card_type: CardType
    order_ids: tuple[str, ...]
    total_fen: int
    insurance_fen: int
    self_pay_fen: int


@dataclass(frozen=True)
class Settlement:
    settlement_id: str
    payment_ref: str
    card_no: str
    order_ids: tuple[str, ...]
    total_fen: int
    insurance_fen: int
    self_pay_fen: int
    channel: SettlementChannel
    settled_at: datetime


@dataclass(frozen=True)
class RefundableItem:
    item_id: str
    order_id: str
    name: str
    quantity: int
    amount_fen: int
    self_pay_fen: int  # what goes back to the patient if refunded
    settlement_id: str
    payment_ref: str


@dataclass(frozen=True)
class Refund:
    refund_id: str
    refund_ref: str
    card_no: str
    item_ids: tuple[str, ...]
    amount_fen: int  # self-pay money returned
    channel: SettlementChannel
    refunded_at: datetime


@dataclass(frozen=True)
class OrderExecution:
    order_id: str
    state: ExecutionState
    executed_at: datetime | None


# --------------------------------------------------------------------------- reports


@dataclass(frozen=True)
class ReportSummary:
    report_id: str
    card_no: str
    kind: ReportKind
    title: str
    department: str
    reviewed_at: datetime
    has_abnormal: bool


@dataclass(frozen=True)
class LabItem:
    code: str
    name: str
    result: str  # as printed: "5.6", "阴性", "<20"
    unit: str
    reference_range: str
    abnormal: AbnormalFlag
    critical: bool


@dataclass(frozen=True)
class LabReport:
    report_id: str
    card_no: str
    title: str
    specimen: str
    requesting_department: str
    clinical_diagnosis: str
    tester: str
    reviewer: str
    sampled_at: datetime
    reported_at: datetime
    reviewed_at: datetime
    items: tuple[LabItem, ...]
    # When the laboratory received the specimen (optional: not every LIS records it).
    received_at: datetime | None = None


@dataclass(frozen=True)
class ExamReport:
    report_id: str
    card_no: str
    title: str
    modality: str  # CT, MR, US, DR
    body_part: str
    method: str
    findings: str
    impression: str
    requesting_department: str
    reporting_doctor: str
    reviewing_doctor: str
    examined_at: datetime
    reported_at: datetime
    reviewed_at: datetime


# --------------------------------------------------------------------------- settlements


@dataclass(frozen=True)
class SettlementRecord:
    """One WeChat-channel payment or refund the HIS booked on a day (reconciliation)."""

    kind: str  # "payment" | "refund"
    reference: str  # payment_ref or refund_ref
    his_id: str  # settlement_id or refund_id
    card_no: str
    amount_fen: int  # self-pay money
    at: datetime


# --------------------------------------------------------------------------- events


class EventType(StrEnum):
    schedule_suspended = "schedule.suspended"
    slot_pool_changed = "slot_pool.changed"
    order_created = "order.created"
    order_executed = "order.executed"
    report_reviewed = "report.reviewed"
    appointment_checked_in = "appointment.checked_in"
    appointment_no_show = "appointment.no_show"
    window_paid = "window.paid"
    window_refunded = "window.refunded"
    card_voided = "card.voided"  # the HIS cancelled the card
    card_merged = "card.merged"  # the HIS merged the card into another (data: merged_into)


@dataclass(frozen=True)
class HisEvent:
    """One change inside the hospital. ``event_id`` is unique forever; ``cursor`` orders."""

    event_id: str
    cursor: str
    type: str  # an EventType value; unknown types may appear and are skipped by consumers
    occurred_at: datetime
    data: Mapping[str, str | int | bool | None] = field(default_factory=dict)


@dataclass(frozen=True)
class EventPage:
    events: tuple[HisEvent, ...]
    next_cursor: str  # pass as ``after`` next time (equals ``after`` when nothing is new)
    has_more: bool


# --------------------------------------------------------------------------- the port


@runtime_checkable
class HisGateway(Protocol):
    """The hospital, as the front server sees it.

    Reads may be retried freely. Writes take a business reference that is unique forever
    (``booking_ref``, ``payment_ref``, ``refund_ref``); the adapter derives the idempotency
    key from it, so repeating a write after a timeout or a crash returns the first result and
    does nothing twice.
    """

    # catalog
    async def departments(self) -> list[Department]: ...

    async def doctors(self, *, department_code: str | None = None) -> list[Doctor]: ...

    async def schedules(
        self, *, start: date, end: date, department_code: str | None = None
    ) -> list[Schedule]:
        """Schedules with ``start <= on_date <= end`` (hospital dates)."""
        ...

    async def slot_pool(self, schedule_id: str) -> SlotPool: ...

    # cards
    async def verify_card(
        self, *, card_no: str, holder_name: str, id_or_phone_last4: str
    ) -> CardVerification:
        """Confirm a card for binding. Refused with ``card_not_found`` or ``card_mismatch``
        (the HIS does not say which of name / last 4 was wrong)."""
        ...

    # appointments
    async def register_appointment(
        self, *, schedule_id: str, sequence_no: int, card_no: str, booking_ref: str
    ) -> Appointment: ...

    async def cancel_appointment(self, *, appointment_id: str, reason: str) -> Appointment: ...

    async def appointment(self, appointment_id: str) -> Appointment: ...

    async def suspend_schedule(
        self, *, schedule_id: str, reason: str, request_ref: str
    ) -> Schedule:
        """Suspend a clinic session (停诊) entered by the scheduling office, exactly once per
        ``request_ref``: the HIS cancels its appointments (``cancelled_by_suspension``), closes
        the pool and emits ``schedule.suspended`` (with ``request_ref``). Refused with
        ``not_found``, ``schedule_suspended`` (already), ``schedule_past`` or
        ``schedule_started`` (patients already seen)."""
        ...

    # orders
    async def unpaid_orders(self, *, card_no: str) -> list[Order]: ...

    async def pre_settle(self, *, card_no: str, order_ids: list[str]) -> PreSettlement: ...

    async def settle(
        self, *, card_no: str, order_ids: list[str], payment_ref: str, self_pay_fen: int
    ) -> Settlement:
        """Settle the orders against a WeChat payment exactly once.

        ``self_pay_fen`` is what the patient paid; the HIS refuses with ``amount_mismatch``
        if its pre-settlement differs, and with ``order_not_unpaid`` if an order was already
        paid (e.g. at the window)."""
        ...

    async def settlement(self, payment_ref: str) -> Settlement | None:
        """The settlement made against ``payment_ref`` (any time, any channel), or None if
        the HIS never settled it: after failed or unknown ``settle`` calls, the way to ask
        "did you settle this?" before returning the money."""
        ...

    async def refundable_items(self, *, card_no: str) -> list[RefundableItem]: ...

    async def refund(self, *, card_no: str, item_ids: list[str], refund_ref: str) -> Refund: ...

    async def execution_status(self, order_id: str) -> OrderExecution: ...

    # reports
    async def reports(self, *, card_no: str, since: date) -> list[ReportSummary]:
        """Reviewed reports of a card with ``reviewed_at`` on or after ``since``."""
        ...

    async def report(self, report_id: str) -> LabReport | ExamReport: ...

    async def report_bodies(self, report_ids: Sequence[str]) -> list[LabReport | ExamReport]:
        """Read up to ``REPORT_BATCH_MAX`` reviewed reports in one call (a trend needs
        hundreds). Ids the HIS does not know, or has not reviewed, are left out."""
        ...

    # reconciliation
    async def day_settlements(self, on_date: date) -> list[SettlementRecord]:
        """WeChat-channel payments and refunds booked on a hospital date."""
        ...

    # event feed
    async def events(self, *, after: str | None, limit: int = 100) -> EventPage:
        """Events strictly after the cursor ``after`` (None: from the beginning), in order."""
        ...
