"""Console pages of payments (缴费) for finance and cashiers: search by merchant number,
WeChat transaction id, card or date; a payment's detail with its orders, refunds and the
append-only event history; a refund to the original route with a reason.

``require_role`` first on every route. Viewing a payment and starting a refund are written
to the audit log in the same transaction; a refused refund (amount, reason, more than is
left) runs in a savepoint and shows the form again with the reason, nothing changed.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from frontdesk.billing import cashier as window
from frontdesk.billing import errors as billing_errors
from frontdesk.billing import service as billing
from frontdesk.console.auth import client_ip, require_role
from frontdesk.console.dashboard import TileValue, register_dashboard_tile
from frontdesk.console.models import Role
from frontdesk.console.nav import register_nav_item
from frontdesk.console.routes import render
from frontdesk.console.service import Principal
from frontdesk.core import audit
from frontdesk.core.clock import get_clock, now
from frontdesk.core.errors import DomainError
from frontdesk.core.money import MoneyError, format_fen, parse_yuan
from frontdesk.web.deps import SessionDep

router = APIRouter(prefix="/console", include_in_schema=False)
MONEY_ROLES = {Role.cashier, Role.finance, Role.admin}
Money = Annotated[Principal, Depends(require_role(*MONEY_ROLES))]
register_nav_item("/console/payments", "console.nav.payments", MONEY_ROLES, order=310)


async def _payments_tile(session: AsyncSession, container: Any) -> TileValue:
    """Payments paid today (the hospital date): how many, and how much."""
    totals = await billing.day_totals(session, day=get_clock().today())
    return TileValue(f"{totals.payments} · {format_fen(totals.paid_fen)}")


async def _refunds_tile(session: AsyncSession, container: Any) -> TileValue:
    """Refunds that succeeded today (the hospital date): how many, and how much."""
    totals = await billing.day_totals(session, day=get_clock().today())
    return TileValue(f"{totals.refunds} · {format_fen(totals.refunded_fen)}")


register_dashboard_tile("payments_today", _payments_tile)
register_dashboard_tile("refunds_today", _refunds_tile)


def _day_range(day: date) -> tuple[datetime, datetime]:
    """The hospital day as an aware UTC interval."""
    tz = get_clock().tz
    start = datetime.combine(day, time.min, tzinfo=tz)
    return start, start + timedelta(days=1)


@router.get("/payments")
async def payments_page(
    principal: Money,
    request: Request,
    session: SessionDep,
    q: Annotated[str, Query(max_length=64)] = "",
    by: Annotated[str, Query(max_length=16)] = "out_trade_no",
    day: Annotated[str, Query(max_length=10)] = "",
) -> Response:
    """Search: ``by`` is out_trade_no, transaction_id or card_no; ``day`` a hospital date."""
    text = q.strip()
    error = None
    rows: list[Any] | None = None
    criteria: dict[str, Any] = {}
    if text:
        if by not in ("out_trade_no", "transaction_id", "card_no"):
            by = "out_trade_no"
        criteria[by] = text
    if day:
        try:
            criteria["start_at"], criteria["end_at"] = _day_range(date.fromisoformat(day))
        except ValueError:
            error = "console.payments.bad_date"
    if criteria and error is None:
        rows = await billing.search_payments(session, limit=200, **criteria)
        await audit.record(
            session,
            at=now(),
            actor=principal.actor,
            action="billing.payment_search",
            record_type="billing_payment",
            record_id="search",
            ip=client_ip(request),
            detail={"by": by if text else None, "q": text, "day": day, "found": len(rows)},
        )
    return render(
        request,
        "billing/payments.html",
        {"q": text, "by": by, "day": day, "rows": rows, "error": error, "yuan": format_fen},
        principal=principal,
        status=422 if error else 200,
    )


async def _detail(
    request: Request,
    principal: Principal,
    session: AsyncSession,
    payment_id: int,
    *,
    error: str | None = None,
    status: int = 200,
    notice: str | None = None,
    amount: str = "",
    reason: str = "",
) -> Response:
    if not 0 < payment_id < 2**62:
        raise billing_errors.PaymentNotFound
    detail = await window.staff_payment_detail(session, payment_id=payment_id)
    events = await billing.payment_events(session, payment_id=payment_id)
    await audit.record(
        session,
        at=now(),
        actor=principal.actor,
        action="billing.payment_view",
        record_type="billing_payment",
        record_id=payment_id,
        ip=client_ip(request),
    )
    return render(
        request,
        "billing/payment_detail.html",
        {
            "d": detail,
            "events": events,
            "error": error,
            "notice": notice,
            "amount": amount,
            "reason": reason,
            "left_fen": detail.payment.amount_fen - detail.payment.refunded_fen,
            "yuan": format_fen,
        },
        principal=principal,
        status=status,
    )


@router.get("/payments/{payment_id}")
async def payment_page(
    principal: Money,
    request: Request,
    payment_id: int,
    session: SessionDep,
    notice: Annotated[str, Query(max_length=16)] = "",
) -> Response:
    return await _detail(
        request, principal, session, payment_id, notice="refund_started" if notice else None
    )


@router.post("/payments/{payment_id}/refund")
async def refund(
    principal: Money,
    request: Request,
    payment_id: int,
    session: SessionDep,
    amount: Annotated[str, Form(max_length=20)],
    reason: Annotated[str, Form(max_length=400)] = "",
) -> Response:
    """Refund money of a paid payment to its original route (amount in yuan, e.g. 12.50)."""
    try:
        async with session.begin_nested():
            try:
                fen = parse_yuan(amount)
            except MoneyError as exc:
                raise billing_errors.AmountInvalid(str(exc)) from exc
            refund_id = await window.staff_refund(
                session,
                payment_id=payment_id,
                amount_fen=fen,
                reason=reason,
                actor=principal.actor,
                now=now(),
            )
            await audit.record(
                session,
                at=now(),
                actor=principal.actor,
                action="billing.refund_start",
                record_type="billing_refund",
                record_id=refund_id,
                ip=client_ip(request),
                detail={"payment_id": payment_id, "amount_fen": fen, "reason": reason.strip()},
            )
    except billing_errors.PaymentNotFound:
        raise
    except DomainError as exc:
        return await _detail(
            request,
            principal,
            session,
            payment_id,
            error=exc.code,
            status=exc.status,
            amount=amount,
            reason=reason,
        )
    return RedirectResponse(f"/console/payments/{payment_id}?notice=refund", status_code=303)
