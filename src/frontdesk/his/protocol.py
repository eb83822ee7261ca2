"""The wire format of the HIS bridge protocol, version 1.

The JSON objects the protocol exchanges have exactly the fields of the port's dataclasses
(``frontdesk.his.port``), so those dataclasses are the response shapes; this module adds the
request bodies, the list and report wrappers, the error envelope and the operation table.
The client parses every response with these adapters in strict JSON mode (an integer field
given as a string or a float is a malformed response), ignoring unknown fields.
The demo HIS uses the same models, which is where ``docs/his-bridge.openapi.json`` comes from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from frontdesk.his.port import (
    REPORT_BATCH_MAX,
    Appointment,
    CardVerification,
    Department,
    Doctor,
    EventPage,
    ExamReport,
    LabReport,
    Order,
    OrderExecution,
    PreSettlement,
    Refund,
    RefundableItem,
    ReportKind,
    ReportSummary,
    Schedule,
    Settlement,
    SettlementRecord,
    SlotPool,
)

VERSION = "v1"
PREFIX = f"/his/{VERSION}"
MAX_BODY_BYTES = 64 * 1024

T = TypeVar("T")

_ID = r"^[A-Za-z0-9_-]{1,32}$"
_REF = r"^[A-Za-z0-9_-]{6,64}$"


class ErrorEnvelope(BaseModel):
    """Every refusal, from any operation, has this shape."""

    code: str
    message: str
    retryable: bool


class Items(BaseModel, Generic[T]):
    items: list[T]


class ReportEnvelope(BaseModel):
    kind: ReportKind
    lab: LabReport | None = None
    exam: ExamReport | None = None


class _Request(BaseModel):
    # Strict: "100" is not 100, 1.0 is not 1. Unknown fields are ignored (forward
    # compatibility); missing required ones are refused.
    model_config = ConfigDict(strict=True, extra="ignore")


class VerifyCardRequest(_Request):
    card_no: str = Field(pattern=r"^[0-9A-Za-z]{4,20}$")
    holder_name: str = Field(min_length=1, max_length=32)
    id_or_phone_last4: str = Field(pattern=r"^[0-9]{3}[0-9Xx]$")


class RegisterAppointmentRequest(_Request):
    schedule_id: str = Field(pattern=_ID)
    sequence_no: int = Field(ge=1, le=10_000)
    card_no: str = Field(pattern=r"^[0-9A-Za-z]{4,20}$")
    booking_ref: str = Field(pattern=_REF)


class CancelAppointmentRequest(_Request):
    reason: str = Field(default="", max_length=200)


class SuspendScheduleRequest(_Request):
    reason: str = Field(min_length=1, max_length=200)
    request_ref: str = Field(pattern=_REF)


class PreSettleRequest(_Request):
    card_no: str = Field(pattern=r"^[0-9A-Za-z]{4,20}$")
    order_ids: list[str] = Field(min_length=1, max_length=50)


class SettleRequest(_Request):
    card_no: str = Field(pattern=r"^[0-9A-Za-z]{4,20}$")
    order_ids: list[str] = Field(min_length=1, max_length=50)
    payment_ref: str = Field(pattern=_REF)
    self_pay_fen: int = Field(ge=0, le=10_000_000_000)


class ReportBatchRequest(_Request):
    report_ids: list[Annotated[str, Field(pattern=_ID)]] = Field(
        min_length=1, max_length=REPORT_BATCH_MAX
    )


class RefundRequest(_Request):
    card_no: str = Field(pattern=r"^[0-9A-Za-z]{4,20}$")
    item_ids: list[str] = Field(min_length=1, max_length=200)
    refund_ref: str = Field(pattern=_REF)


@dataclass(frozen=True)
class Operation:
    """One allowed operation: the gatekeeper's allowlist is this table."""

    name: str
    method: str
    path: str  # with {placeholders}
    write: bool


OPERATIONS: tuple[Operation, ...] = (
    Operation("departments", "GET", f"{PREFIX}/departments", False),
    Operation("doctors", "GET", f"{PREFIX}/doctors", False),
    Operation("schedules", "GET", f"{PREFIX}/schedules", False),
    Operation("slot_pool", "GET", f"{PREFIX}/schedules/{{schedule_id}}/slots", False),
    Operation("verify_card", "POST", f"{PREFIX}/cards/verify", False),
    Operation("register_appointment", "POST", f"{PREFIX}/appointments", True),
    Operation(
        "cancel_appointment", "POST", f"{PREFIX}/appointments/{{appointment_id}}/cancel", True
    ),
    Operation("appointment", "GET", f"{PREFIX}/appointments/{{appointment_id}}", False),
    Operation("suspend_schedule", "POST", f"{PREFIX}/schedules/{{schedule_id}}/suspend", True),
    Operation("unpaid_orders", "GET", f"{PREFIX}/orders", False),
    Operation("pre_settle", "POST", f"{PREFIX}/orders/pre-settle", False),
    Operation("settle", "POST", f"{PREFIX}/settlements", True),
    Operation("settlement", "GET", f"{PREFIX}/settlements/{{payment_ref}}", False),
    Operation("refundable_items", "GET", f"{PREFIX}/refundable-items", False),
    Operation("refund", "POST", f"{PREFIX}/refunds", True),
    Operation("execution_status", "GET", f"{PREFIX}/orders/{{order_id}}/execution", False),
    Operation("reports", "GET", f"{PREFIX}/reports", False),
    Operation("report", "GET", f"{PREFIX}/reports/{{report_id}}", False),
    Operation("report_bodies", "POST", f"{PREFIX}/reports/batch", False),
    Operation("day_settlements", "GET", f"{PREFIX}/settlements", False),
    Operation("events", "GET", f"{PREFIX}/events", False),
)


# Adapters that parse a response body (bytes) into the port's values, strictly.
def adapter(kind: Any) -> TypeAdapter[Any]:
    return TypeAdapter(kind)


RESPONSE_ADAPTERS: dict[str, TypeAdapter[Any]] = {
    "departments": adapter(Items[Department]),
    "doctors": adapter(Items[Doctor]),
    "schedules": adapter(Items[Schedule]),
    "slot_pool": adapter(SlotPool),
    "verify_card": adapter(CardVerification),
    "register_appointment": adapter(Appointment),
    "cancel_appointment": adapter(Appointment),
    "appointment": adapter(Appointment),
    "suspend_schedule": adapter(Schedule),
    "unpaid_orders": adapter(Items[Order]),
    "pre_settle": adapter(PreSettlement),
    "settle": adapter(Settlement),
    "settlement": adapter(Settlement),
    "refundable_items": adapter(Items[RefundableItem]),
    "refund": adapter(Refund),
    "execution_status": adapter(OrderExecution),
    "reports": adapter(Items[ReportSummary]),
    "report": adapter(ReportEnvelope),
    "report_bodies": adapter(Items[ReportEnvelope]),
    "day_settlements": adapter(Items[SettlementRecord]),
    "events": adapter(EventPage),
    "error": adapter(ErrorEnvelope),
}
