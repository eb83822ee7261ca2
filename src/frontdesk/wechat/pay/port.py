"""The ``WeChatPay`` port: what the rest of Frontdesk may ask of WeChat Pay, in our words.

Amounts are integer fen; times are aware UTC. Two error families, and only two:

- ``PayUnavailable`` — WeChat Pay is down, slow, or answered with a retryable code; the outcome
  of a write is *unknown*: retry with the same merchant numbers, or query.
- ``PayRejected`` — a terminal answer; ``code`` is ours (stable, for the domains), and
  ``vendor_code`` is WeChat's (for logs and staff).

The real adapter is ``client.HttpWeChatPay``; the simulator in ``sims/wechat_sim/pay.py`` is
its HTTP counterpart.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import BinaryIO, Protocol

from frontdesk.core.errors import DomainError, Unavailable
from frontdesk.wechat.pay.events import PayEvent


class TradeState(StrEnum):
    SUCCESS = "SUCCESS"
    REFUND = "REFUND"
    NOTPAY = "NOTPAY"
    CLOSED = "CLOSED"
    REVOKED = "REVOKED"
    USERPAYING = "USERPAYING"
    PAYERROR = "PAYERROR"
    ACCEPT = "ACCEPT"


class RefundStatus(StrEnum):
    SUCCESS = "SUCCESS"
    CLOSED = "CLOSED"
    PROCESSING = "PROCESSING"
    ABNORMAL = "ABNORMAL"


class BillType(StrEnum):
    ALL = "ALL"
    SUCCESS = "SUCCESS"
    REFUND = "REFUND"


@dataclass(frozen=True)
class JsapiOrder:
    out_trade_no: str
    description: str
    amount_fen: int
    openid: str
    attach: str | None = None
    expires_at: datetime | None = None
    notify_url: str | None = None  # None: the configured one
    payer_client_ip: str | None = None


@dataclass(frozen=True)
class NativeOrder:
    out_trade_no: str
    description: str
    amount_fen: int
    attach: str | None = None
    expires_at: datetime | None = None
    notify_url: str | None = None


@dataclass(frozen=True)
class CodePayOrder:
    """A payment-code (付款码) payment at the cashier's window."""

    out_trade_no: str
    description: str
    amount_fen: int
    auth_code: str
    store_id: str  # our store / window number (``scene_info.store_info.out_id``)
    device_id: str | None = None
    payer_client_ip: str = "127.0.0.1"
    attach: str | None = None


@dataclass(frozen=True)
class JsapiPayParams:
    """The ``getBrandWCPayRequest`` parameters for the H5 page (all strings)."""

    app_id: str
    time_stamp: str
    nonce_str: str
    package: str
    sign_type: str
    pay_sign: str

    def as_bridge_dict(self) -> dict[str, str]:
        return {
            "appId": self.app_id,
            "timeStamp": self.time_stamp,
            "nonceStr": self.nonce_str,
            "package": self.package,
            "signType": self.sign_type,
            "paySign": self.pay_sign,
        }


@dataclass(frozen=True)
class Payment:
    """A WeChat Pay transaction as WeChat Pay sees it."""

    out_trade_no: str
    state: TradeState
    state_desc: str
    amount_fen: int
    transaction_id: str | None = None
    trade_type: str | None = None
    payer_total_fen: int | None = None
    openid: str | None = None
    success_at: datetime | None = None
    attach: str | None = None
    bank_type: str | None = None

    @property
    def paid(self) -> bool:
        return self.state in (TradeState.SUCCESS, TradeState.REFUND)


@dataclass(frozen=True)
class RefundRequest:
    out_trade_no: str
    out_refund_no: str  # fixed once; reuse it on every retry (never a new one)
    refund_fen: int
    total_fen: int  # the original order total
    reason: str | None = None
    notify_url: str | None = None


@dataclass(frozen=True)
class Refund:
    out_refund_no: str
    refund_id: str
    out_trade_no: str
    transaction_id: str
    status: RefundStatus
    refund_fen: int
    total_fen: int
    payer_refund_fen: int | None = None
    channel: str | None = None
    user_received_account: str | None = None
    success_at: datetime | None = None
    created_at: datetime | None = None


@dataclass(frozen=True)
class BillDownload:
    """A bill streamed to a file: the SHA-1 (checked) and size of its uncompressed bytes."""

    sha1: str
    size_bytes: int


class PayUnavailable(Unavailable):
    """Retry later (same merchant numbers) or query: the outcome is not known."""

    code = "pay_unavailable"

    def __init__(self, detail: str | None = None, *, vendor_code: str | None = None) -> None:
        super().__init__(detail, vendor_code=vendor_code)
        self.vendor_code = vendor_code


class PayRejected(DomainError):
    """WeChat Pay refused, for good. ``reason`` is our code; ``vendor_code`` is theirs."""

    code = "pay_rejected"
    status = 409

    def __init__(
        self, reason: str, *, vendor_code: str | None = None, detail: str | None = None
    ) -> None:
        super().__init__(detail or reason, reason=reason, vendor_code=vendor_code)
        self.reason = reason
        self.vendor_code = vendor_code


class NotificationRejected(DomainError):
    """A notification that must not be trusted (forged, stale, altered, not ours, malformed)."""

    code = "pay_notification_rejected"
    status = 400

    def __init__(self, reason: str, detail: str | None = None, *, status: int = 400) -> None:
        super().__init__(detail or reason, reason=reason)
        self.reason = reason
        self.http_status = status


class WeChatPay(Protocol):
    """WeChat Pay API v3 for one merchant (mchid) and one app (appid)."""

    async def create_jsapi_order(self, order: JsapiOrder) -> str:
        """Place a JSAPI order; return its ``prepay_id`` (valid ~2 hours)."""
        ...

    def jsapi_pay_params(self, prepay_id: str) -> JsapiPayParams:
        """Sign the parameters the H5 page passes to ``getBrandWCPayRequest``."""
        ...

    async def create_native_order(self, order: NativeOrder) -> str:
        """Place a Native order; return its ``code_url`` (to render as a QR code)."""
        ...

    async def pay_by_code(self, order: CodePayOrder) -> Payment:
        """Charge a scanned payment code.

        Returns the paid ``Payment``. While the patient enters a password (USERPAYING) it
        queries until paid or a terminal failure; if still unpaid at the deadline it reverses
        the order and raises ``PayRejected("payment_cancelled")``. Raises ``PayUnavailable``
        only when neither the payment nor the reverse could be confirmed.
        """
        ...

    async def query_order(self, out_trade_no: str) -> Payment:
        """The order's current state; ``PayRejected("order_not_found")`` if WeChat has none."""
        ...

    async def close_order(self, out_trade_no: str) -> None:
        """Close an unpaid order so it can never be paid."""
        ...

    async def refund(self, request: RefundRequest) -> Refund:
        """Ask for a refund (accepted ≠ done: watch ``status`` or the refund notification)."""
        ...

    async def query_refund(self, out_refund_no: str) -> Refund: ...

    async def download_trade_bill(self, bill_date: date, bill_type: BillType = BillType.ALL) -> str:
        """The day's trade bill as raw CSV text, its SHA-1 checked; parsing is not done here."""
        ...

    async def stream_trade_bill(
        self, bill_date: date, dest: BinaryIO, bill_type: BillType = BillType.ALL
    ) -> BillDownload:
        """Stream the day's bill, uncompressed and SHA-1 checked, into ``dest`` (for bills too
        large to hold in memory). Not published yet: ``PayRejected("no_statement")``."""
        ...

    async def parse_notification(self, headers: Mapping[str, str], body: bytes) -> PayEvent:
        """Verify (on the raw body), decrypt and type a notification, or raise
        ``NotificationRejected`` with the reason."""
        ...

    async def aclose(self) -> None: ...
