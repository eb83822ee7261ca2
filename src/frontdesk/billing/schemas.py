"""What the billing domain gives out (frozen views) — and the ledger contract with
reconciliation (``LedgerEntry``, docs/billing.md, "The ledger contract")."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any


@dataclass(frozen=True)
class LedgerEntry:
    """One money movement in our ledger, as reconciliation sees it."""

    kind: str  # "payment" | "refund"
    out_trade_no: str  # our merchant number of the payment (for a refund: its payment's)
    out_refund_no: str | None  # our refund number (refunds only)
    transaction_id: str | None  # WeChat's transaction id (None while we do not know it)
    refund_id: str | None  # WeChat's refund id (refunds only, when known)
    trade_type: str  # "JSAPI" | "NATIVE" | "MICROPAY" (WeChat bill's 交易类型 values)
    amount_fen: int  # payment: amount charged; refund: amount refunded (positive)
    # payment: "paid" | "refunded" | "partially_refunded" | "pending"
    # refund: "success" | "processing" | "closed" | "abnormal"
    state: str
    at: datetime | None  # aware UTC: payment success time / refund success time
    card_no: str
    # the reference used with the HIS: payment_ref (= out_trade_no) for payments,
    # refund_ref for refunds
    his_ref: str
    his_state: str  # "settled" | "pending" | "failed" | "refunded" | "not_needed"
    ledger_id: int  # billing's row id (payment id or refund id), for actions


@dataclass(frozen=True)
class ItemView:
    his_item_id: str
    name: str
    quantity: int
    unit: str
    unit_price_fen: int
    amount_fen: int
    status: str  # billed | paid | refunded
    refund_id: int | None


@dataclass(frozen=True)
class OrderView:
    his_order_id: str
    card_no: str
    visit_no: str
    kind: str
    title: str
    ordering_department: str
    executing_department: str
    doctor_name: str
    ordered_at: datetime
    total_fen: int
    status: str  # unpaid | paid | refunded | void
    paid_channel: str | None
    payment_id: int | None
    execution_state: str  # pending | dispensed | sample_taken | exam_done
    executed_at: datetime | None
    items: tuple[ItemView, ...]


@dataclass(frozen=True)
class VisitGroup:
    visit_no: str
    orders: tuple[OrderView, ...]

    @property
    def total_fen(self) -> int:
        return sum(o.total_fen for o in self.orders)


@dataclass(frozen=True)
class PreSettlementView:
    card_no: str
    card_type: str
    order_ids: tuple[str, ...]
    total_fen: int
    insurance_fen: int
    self_pay_fen: int


@dataclass(frozen=True)
class PaymentView:
    payment_id: int
    out_trade_no: str
    channel: str
    purpose: str
    card_no: str
    openid: str | None
    description: str
    total_fen: int
    insurance_fen: int
    amount_fen: int
    refunded_fen: int
    state: str  # pending | paid | closed | failed
    his_state: str  # not_needed | pending | settled | failed | refunded
    his_settlement_id: str | None
    his_failure_code: str | None
    transaction_id: str | None
    flagged: bool
    flag_reason: str | None
    created_at: datetime
    expires_at: datetime
    paid_at: datetime | None
    settled_at: datetime | None
    order_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class RefundView:
    refund_id: int
    payment_id: int
    out_refund_no: str
    amount_fen: int
    kind: str
    reason: str
    reason_text: str | None
    actor: str
    item_ids: tuple[str, ...]
    state: str  # created | processing | success | closed | abnormal | refused
    his_state: str
    wechat_refund_id: str | None
    created_at: datetime
    succeeded_at: datetime | None


@dataclass(frozen=True)
class EventView:
    event_id: int
    payment_id: int
    refund_id: int | None
    kind: str
    from_state: str | None
    to_state: str | None
    source: str
    actor: str
    detail: dict[str, Any]
    at: datetime


@dataclass(frozen=True)
class PaymentDetail:
    payment: PaymentView
    orders: tuple[OrderView, ...]
    refunds: tuple[RefundView, ...]


@dataclass(frozen=True)
class OrderDetail:
    order: OrderView
    payments: tuple[PaymentView, ...]
    refunds: tuple[RefundView, ...]


@dataclass(frozen=True)
class RefundableView:
    """An item the HIS lists as refundable that was paid through one of our payments."""

    his_item_id: str
    his_order_id: str
    name: str
    quantity: int
    amount_fen: int
    self_pay_fen: int
    payment_id: int
    out_trade_no: str


@dataclass(frozen=True)
class PlacedOrder:
    """What placing a payment with WeChat gave: JSAPI pay params for the phone, a Native
    ``code_url`` for a QR code, or (MICROPAY) the payment's state after charging the code."""

    payment_id: int
    channel: str
    pay_params: dict[str, str] = field(default_factory=dict)
    code_url: str | None = None
    state: str = "pending"


@dataclass(frozen=True)
class DayTotals:
    """A hospital day's money: payments paid that day and refunds that succeeded that day
    (the console dashboard's tiles)."""

    day: date
    payments: int
    paid_fen: int
    refunds: int
    refunded_fen: int
