"""Payments (缴费) and refunds (退费): the local mirror of the HIS's orders, our payments of
every channel, their link to the HIS orders, refunds, and an append-only event history.

State machines (docs/billing.md has the diagrams):

- ``BillingPayment.state``: ``pending`` (started; a WeChat order may exist) → ``paid`` |
  ``closed`` (expired or cancelled, never paid) | ``failed`` (WeChat says PAYERROR/REVOKED).
  Only ``pending`` moves, by guarded ``UPDATE ... WHERE state = 'pending'``.
- ``BillingPayment.his_state`` (the settlement saga): ``not_needed`` (nothing to settle:
  unpaid) → ``pending`` (paid; settling through the outbox) → ``settled`` | ``failed``
  (the HIS refused for good and did not settle it: the money goes back automatically);
  ``settled`` → ``refunded`` once every order of it was refunded in the HIS.
- ``BillingRefund.state``: ``created`` (number fixed, money reserved on the payment) →
  ``processing`` (WeChat accepted it) → ``success`` | ``closed`` | ``abnormal``; or
  ``created`` → ``refused`` (the HIS refused an item refund: the reservation is released).
- ``BillingRefund.his_state``: ``not_needed`` (the HIS never settled the payment),
  ``pending`` (the HIS must confirm the item refund first), ``refunded``, ``failed``.

``BillingPayment.refunded_fen`` is the sum of every refund not ``refused``/``closed``; it is
raised only by ``UPDATE ... WHERE refunded_fen + :x <= amount_fen`` so concurrent refunds can
never exceed the payment.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from frontdesk.core.models import Base, BigId, UTCDateTime

# --------------------------------------------------------------------------- vocabulary

# Channels are WeChat's trade types (交易类型), as the bill prints them.
JSAPI, NATIVE, MICROPAY = "JSAPI", "NATIVE", "MICROPAY"
CHANNELS = (JSAPI, NATIVE, MICROPAY)

# What a payment pays for.
PURPOSE_ORDERS = "orders"  # outpatient orders (prescriptions, exams, lab tests)
PURPOSE_REGISTRATION = "registration"  # a registration fee (reserved for the booking option)

# Payment states.
PAY_PENDING, PAY_PAID, PAY_CLOSED, PAY_FAILED = "pending", "paid", "closed", "failed"
PAY_FINAL = (PAY_PAID, PAY_CLOSED, PAY_FAILED)

# HIS side of a payment (the settlement saga) and of a refund.
HIS_NOT_NEEDED, HIS_PENDING, HIS_SETTLED, HIS_FAILED, HIS_REFUNDED = (
    "not_needed",
    "pending",
    "settled",
    "failed",
    "refunded",
)

# Refund states.
REF_CREATED, REF_PROCESSING, REF_SUCCESS, REF_CLOSED, REF_ABNORMAL, REF_REFUSED = (
    "created",
    "processing",
    "success",
    "closed",
    "abnormal",
    "refused",
)
REF_FINAL = (REF_SUCCESS, REF_CLOSED, REF_REFUSED)
# Refund states whose money stays reserved on the payment (counted in refunded_fen).
REF_HOLDING = (REF_CREATED, REF_PROCESSING, REF_SUCCESS, REF_ABNORMAL)

# Refund kinds (why the refund exists).
KIND_ITEMS = "items"  # the patient (or staff) refunds items the HIS reports refundable
KIND_AUTO = "auto"  # the saga: the HIS did not settle the payment
KIND_DOUBLE = "double_payment"  # the orders were also paid at the window
KIND_STAFF = "staff"  # a staff refund of money (reconciliation, console)

# Local mirror of HIS orders.
ORDER_UNPAID, ORDER_PAID, ORDER_REFUNDED = "unpaid", "paid", "refunded"
# No longer unpaid in the HIS and not paid through us (withdrawn by the doctor, or paid
# elsewhere before we heard of it): hidden from the pending list.
ORDER_VOID = "void"
ITEM_BILLED, ITEM_PAID, ITEM_REFUNDED = "billed", "paid", "refunded"


class BillingOrder(Base):
    """The HIS's order as last seen (the HIS is the record; this is what the pages list)."""

    __tablename__ = "billing_order"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    his_order_id: Mapped[str] = mapped_column(String(32), nullable=False, unique=True)
    card_no: Mapped[str] = mapped_column(String(32), nullable=False)
    # The HIS visit (就诊) the order belongs to; pages group by it. "" if the HIS has none.
    visit_no: Mapped[str] = mapped_column(String(32), nullable=False, default="")
    kind: Mapped[str] = mapped_column(String(16), nullable=False)  # prescription | exam | lab
    title: Mapped[str] = mapped_column(String(100), nullable=False)
    ordering_department: Mapped[str] = mapped_column(String(64), nullable=False)
    executing_department: Mapped[str] = mapped_column(String(64), nullable=False)
    doctor_name: Mapped[str] = mapped_column(String(32), nullable=False)
    ordered_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    total_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)  # unpaid | paid | refunded
    # wechat | window, once paid; the payment that paid it (ours) if any.
    paid_channel: Mapped[str | None] = mapped_column(String(16), nullable=True)
    payment_id: Mapped[int | None] = mapped_column(BigId, nullable=True, index=True)
    settlement_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # pending | dispensed | sample_taken | exam_done (the HIS's execution state)
    execution_state: Mapped[str] = mapped_column(String(16), nullable=False, default="pending")
    executed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    refreshed_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    # When "payment due" was queued for it (once per order, however often it is refreshed).
    due_notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (Index("ix_billing_order_card_status", "card_no", "status"),)


class BillingOrderItem(Base):
    __tablename__ = "billing_order_item"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    order_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("billing_order.id", ondelete="CASCADE"), nullable=False, index=True
    )
    his_item_id: Mapped[str] = mapped_column(String(32), nullable=False, unique=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    quantity: Mapped[int] = mapped_column(Integer, nullable=False)
    unit: Mapped[str] = mapped_column(String(16), nullable=False)
    unit_price_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)
    amount_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)  # billed | paid | refunded
    # The self-pay share the HIS fixed at settlement (known from its refundable items).
    self_pay_fen: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    refund_id: Mapped[int | None] = mapped_column(BigId, nullable=True)  # our BillingRefund


class BillingPayment(Base):
    """One payment of ours, any channel. ``out_trade_no`` is the merchant number (unique
    forever) and also the HIS ``payment_ref``, so the settlement happens exactly once."""

    __tablename__ = "billing_payment"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    out_trade_no: Mapped[str] = mapped_column(String(32), nullable=False, unique=True)
    channel: Mapped[str] = mapped_column(String(16), nullable=False)  # JSAPI | NATIVE | MICROPAY
    purpose: Mapped[str] = mapped_column(String(16), nullable=False, default=PURPOSE_ORDERS)
    card_no: Mapped[str] = mapped_column(String(32), nullable=False, index=True)
    card_id: Mapped[int | None] = mapped_column(BigId, nullable=True)  # our bound card, if any
    openid: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    visit_no: Mapped[str | None] = mapped_column(String(32), nullable=True)
    description: Mapped[str] = mapped_column(String(128), nullable=False)
    # The HIS pre-settlement the amount came from (never the client's number).
    total_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)
    insurance_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)
    amount_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)  # self-pay, charged
    state: Mapped[str] = mapped_column(String(16), nullable=False, default=PAY_PENDING)
    his_state: Mapped[str] = mapped_column(String(16), nullable=False, default=HIS_NOT_NEEDED)
    his_settlement_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # Why the HIS did not settle (amount_mismatch, order_not_unpaid, retries_exhausted...).
    his_failure_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    refunded_fen: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    refund_seq: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    transaction_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    prepay_id: Mapped[str | None] = mapped_column(String(64), nullable=True)  # JSAPI
    code_url: Mapped[str | None] = mapped_column(String(200), nullable=True)  # NATIVE
    store_id: Mapped[str | None] = mapped_column(String(32), nullable=True)  # MICROPAY window
    device_id: Mapped[str | None] = mapped_column(String(32), nullable=True)  # MICROPAY
    actor: Mapped[str] = mapped_column(String(64), nullable=False)  # patient:<openid> | staff
    # A notify or query that disagreed with us (amount, mchid, appid): kept for finance.
    flagged: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    flag_reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    paid_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    settled_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)

    __table_args__ = (
        Index("ix_billing_payment_state_created", "state", "created_at"),
        Index("ix_billing_payment_paid_at", "paid_at"),
        Index("ix_billing_payment_created_at", "created_at"),
    )


class BillingPaymentOrder(Base):
    """Which HIS orders a payment pays (several at once)."""

    __tablename__ = "billing_payment_order"

    payment_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("billing_payment.id", ondelete="CASCADE"), primary_key=True
    )
    his_order_id: Mapped[str] = mapped_column(String(32), primary_key=True, index=True)
    position: Mapped[int] = mapped_column(Integer, nullable=False)  # order sent to the HIS
    total_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)  # as listed when paid


class BillingRefund(Base):
    """One refund of (part of) a payment. ``out_refund_no`` is fixed at creation
    (``{out_trade_no}R{seq:02d}``) and reused on every retry, with the HIS (``refund_ref``)
    and with WeChat alike."""

    __tablename__ = "billing_refund"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    payment_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("billing_payment.id", ondelete="CASCADE"), nullable=False, index=True
    )
    seq: Mapped[int] = mapped_column(Integer, nullable=False)
    out_refund_no: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    amount_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)
    kind: Mapped[str] = mapped_column(String(24), nullable=False)  # items|auto|double_payment|staff
    # A stable code: patient_request, amount_mismatch, order_not_unpaid, double_payment,
    # settlement_failed, staff; staff refunds add their words in reason_text.
    reason: Mapped[str] = mapped_column(String(64), nullable=False)
    reason_text: Mapped[str | None] = mapped_column(String(200), nullable=True)
    actor: Mapped[str] = mapped_column(String(64), nullable=False)
    item_ids: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)  # HIS items
    state: Mapped[str] = mapped_column(String(16), nullable=False, default=REF_CREATED)
    his_state: Mapped[str] = mapped_column(String(16), nullable=False, default=HIS_NOT_NEEDED)
    his_refund_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    refund_id: Mapped[str | None] = mapped_column(String(64), nullable=True)  # WeChat's
    failure_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    succeeded_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)

    __table_args__ = (
        UniqueConstraint("payment_id", "seq", name="uq_billing_refund_payment_seq"),
        Index("ix_billing_refund_succeeded_at", "succeeded_at"),
        Index("ix_billing_refund_created_at", "created_at"),
    )


class BillingEvent(Base):
    """Append-only history of a payment and its refunds (shown to finance).

    ``idempotency_key`` is unique: a state change writes ``{payment|refund}:{id}:{to_state}``,
    so a transition is recorded (and happens) once however many notifies and queries report
    it; an observation that changed nothing (a duplicate notify, a mismatch) writes its own
    key (``notify:{notify_id}``)."""

    __tablename__ = "billing_event"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    payment_id: Mapped[int] = mapped_column(BigId, nullable=False, index=True)
    refund_id: Mapped[int | None] = mapped_column(BigId, nullable=True, index=True)
    idempotency_key: Mapped[str] = mapped_column(String(160), nullable=False, unique=True)
    kind: Mapped[str] = mapped_column(String(48), nullable=False)  # e.g. payment.paid
    from_state: Mapped[str | None] = mapped_column(String(16), nullable=True)
    to_state: Mapped[str | None] = mapped_column(String(16), nullable=True)
    # notify | query | saga | patient | staff | his_event | system
    source: Mapped[str] = mapped_column(String(16), nullable=False)
    actor: Mapped[str] = mapped_column(String(64), nullable=False)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)


# --------------------------------------------------------------------------- the HIS calling us
# (the cashier API and the paper QR endpoint: billing/cashier.py, docs/cashier-api.md)


class BillingInboundNonce(Base):
    """A nonce of a signed call the HIS made to us, kept so a replay is refused (the
    bridge's signing, mirrored for inbound calls)."""

    __tablename__ = "billing_inbound_nonce"

    key_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, index=True)


class BillingCashierRequest(Base):
    """One cashier-station request by its ``request_id`` (unique forever): a repeat with the
    same body answers from the payment or refund it made; another body is refused."""

    __tablename__ = "billing_cashier_request"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    operation: Mapped[str] = mapped_column(String(16), nullable=False)  # pay | refund
    request_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    card_no: Mapped[str] = mapped_column(String(32), nullable=False)
    payment_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    refund_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    # the refusal code when the request was refused after it was recorded (e.g. the code
    # expired): a repeat gets the same refusal
    refusal: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
