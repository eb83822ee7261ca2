"""Typed WeChat Pay notifications and the small registry domains subscribe with.

The notify route turns a verified, decrypted notification into one of these frozen events and
hands it to every handler registered for its type, inside the request's transaction (the same
transaction that stored it in the inbox), so a handler's failure rolls both back and WeChat Pay
retries. Billing registers its handlers at import time:

    from frontdesk.wechat.pay import events
    events.register(events.PaymentSucceeded, on_payment_succeeded)

Amounts are as WeChat Pay reports them; comparing them with our own orders is the subscriber's
job (billing), which is why they are exposed whole.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession


@dataclass(frozen=True)
class PayEvent:
    """What every notification carries: WeChat's notify id and its event type."""

    notify_id: str
    event_type: str  # TRANSACTION.SUCCESS, REFUND.SUCCESS, ...
    created_at: datetime | None


@dataclass(frozen=True)
class PaymentSucceeded(PayEvent):
    out_trade_no: str
    transaction_id: str
    trade_type: str
    amount_fen: int  # order total
    payer_total_fen: int  # what the patient actually paid (after coupons)
    currency: str
    openid: str | None
    success_at: datetime | None
    attach: str | None
    bank_type: str | None


@dataclass(frozen=True)
class RefundSettled(PayEvent):
    """A refund reached a state (``status``): SUCCESS, CLOSED or ABNORMAL."""

    out_trade_no: str
    transaction_id: str
    out_refund_no: str
    refund_id: str
    status: str
    refund_fen: int
    total_fen: int
    payer_refund_fen: int | None
    user_received_account: str | None
    success_at: datetime | None


@dataclass(frozen=True)
class RefundSucceeded(RefundSettled):
    pass


@dataclass(frozen=True)
class RefundClosed(RefundSettled):
    pass


@dataclass(frozen=True)
class RefundAbnormal(RefundSettled):
    pass


@dataclass(frozen=True)
class OtherPayEvent(PayEvent):
    """An event type we do not model (e.g. ``TRANSACTION.FAIL``): stored, offered as is."""

    resource: dict[str, Any]


E = TypeVar("E", bound=PayEvent)
Handler = Callable[[AsyncSession, Any], Awaitable[None]]

_handlers: dict[type[PayEvent], list[Handler]] = {}


def register(event_type: type[E], handler: Callable[[AsyncSession, E], Awaitable[None]]) -> None:
    """Call ``handler(session, event)`` for every event of ``event_type`` (or a subclass)."""
    bucket = _handlers.setdefault(event_type, [])
    if handler not in bucket:
        bucket.append(handler)


def unregister(event_type: type[PayEvent], handler: Handler) -> None:
    bucket = _handlers.get(event_type, [])
    if handler in bucket:
        bucket.remove(handler)


def handlers_for(event: PayEvent) -> list[Handler]:
    found: list[Handler] = []
    for cls in type(event).__mro__:
        for handler in _handlers.get(cls, []):
            if handler not in found:
                found.append(handler)
    return found


async def dispatch(session: AsyncSession, event: PayEvent) -> int:
    """Run the handlers for ``event``; return how many ran. Exceptions propagate."""
    handlers = handlers_for(event)
    for handler in handlers:
        await handler(session, event)
    return len(handlers)
