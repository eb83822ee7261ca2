"""Console cashier page (收费窗口) for hospitals whose window is not wired to the HIS
cashier station: pick a card, see its pending orders by visit, take the HIS
pre-settlement, then scan the patient's payment code (or show a Native-pay QR code where
the hospital prefers it). The work is ``billing.cashier`` — the same as the cashier API.

Cashiers and admins. ``require_role`` comes first; every read of a card's orders and every
payment is audited. The pay form carries a one-time ``request_id`` so a double submit
charges once.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import Response
from sqlalchemy.ext.asyncio import AsyncSession

from frontdesk.billing import cashier as window
from frontdesk.billing import errors as billing_errors
from frontdesk.billing import service as billing
from frontdesk.console.auth import client_ip, require_role
from frontdesk.console.models import Role
from frontdesk.console.nav import register_nav_item
from frontdesk.console.routes import render
from frontdesk.console.service import Principal
from frontdesk.core import audit
from frontdesk.core.clock import now
from frontdesk.core.errors import DomainError
from frontdesk.core.money import format_fen
from frontdesk.web.deps import ContainerDep, SessionDep

router = APIRouter(prefix="/console", include_in_schema=False)
CASHIER_ROLES = {Role.cashier, Role.admin}
Cashier = Annotated[Principal, Depends(require_role(*CASHIER_ROLES))]
register_nav_item("/console/cashier", "console.nav.cashier", CASHIER_ROLES, order=300)


async def _page(
    request: Request,
    principal: Principal,
    session: AsyncSession,
    container: Any,
    *,
    card_no: str,
    selected: list[str],
    error: str | None = None,
    status: int = 200,
    result: Any = None,
    native: Any = None,
) -> Response:
    visits: list[Any] = []
    pre = None
    stale = False
    card_no = card_no.strip()
    if card_no and window.CARD_NO.fullmatch(card_no):
        try:
            await billing.refresh_orders(
                session, his=container.services["his"], card_no=card_no, now=now()
            )
        except DomainError as exc:
            stale = exc.code == "billing_unavailable"
            if not stale and error is None:
                error, status = exc.code, exc.status
        visits = await billing.pending_visits(session, card_no=card_no)
        await audit.record(
            session,
            at=now(),
            actor=principal.actor,
            action="billing.cashier_card_view",
            record_type="card_no",
            record_id=card_no,
            ip=client_ip(request),
        )
        if selected and error is None and result is None and native is None:
            try:
                pre = await billing.pre_settle(
                    session, his=container.services["his"], card_no=card_no, order_ids=selected
                )
            except DomainError as exc:
                error, status = exc.code, exc.status
    elif card_no:
        error, status = "billing_order_not_found", 404
    return render(
        request,
        "billing/cashier.html",
        {
            "card_no": card_no,
            "visits": visits,
            "selected": selected,
            "pre": pre,
            "stale": stale,
            "error": error,
            "result": result,
            "native": native,
            "request_id": f"C-{secrets.token_hex(12)}",
            "yuan": format_fen,
            "native_offered": request.app.state.settings.billing_paper_qr == "native",
        },
        principal=principal,
        status=status,
    )


@router.get("/cashier")
async def cashier_page(
    principal: Cashier,
    request: Request,
    session: SessionDep,
    container: ContainerDep,
    card_no: Annotated[str, Query(max_length=32)] = "",
    order: Annotated[list[str] | None, Query(max_length=50)] = None,
) -> Response:
    return await _page(
        request,
        principal,
        session,
        container,
        card_no=card_no,
        selected=[o[:32] for o in (order or [])][:50],
    )


@router.post("/cashier/pay")
async def cashier_pay(
    principal: Cashier,
    request: Request,
    container: ContainerDep,
    card_no: Annotated[str, Form(max_length=32)],
    request_id: Annotated[str, Form(max_length=64)],
    auth_code: Annotated[str, Form(max_length=32)],
    self_pay_fen: Annotated[str, Form(max_length=16)],
    order: Annotated[list[str] | None, Form(max_length=50)] = None,
) -> Response:
    """Charge the payment code for the selected orders (the amount shown must still be the
    HIS's pre-settlement). No request-wide session while WeChat is asked (it may take ~30
    s): ``window_pay`` commits the payment, charges outside any transaction, then applies
    the answer and writes the audit record in a new short transaction; the page is
    rendered in a session of its own afterwards."""
    selected = [o[:32] for o in (order or [])]
    sessions = request.app.state.session_provider
    pay = container.services.get("pay")
    error: tuple[str, int] | None = None
    done: window.WindowPayment | None = None
    if pay is None:
        error = ("billing_pay_not_configured", 503)
    else:

        async def audited(session: AsyncSession, outcome: window.WindowPayment) -> None:
            await audit.record(
                session,
                at=now(),
                actor=principal.actor,
                action="billing.cashier_pay",
                record_type="billing_payment",
                record_id=outcome.payment.payment_id,
                ip=client_ip(request),
                detail={
                    "out_trade_no": outcome.payment.out_trade_no,
                    "amount_fen": outcome.payment.amount_fen,
                    "state": outcome.payment.state,
                    "failure": outcome.failure,
                    "replayed": outcome.replayed,
                },
            )

        try:
            if not self_pay_fen.isdigit():
                raise billing_errors.AmountInvalid
            done = await window.window_pay(
                sessions,
                his=container.services["his"],
                pay=pay,
                request_id=request_id,
                card_no=card_no.strip(),
                order_ids=selected,
                auth_code=auth_code,
                self_pay_fen=int(self_pay_fen),
                actor=principal.actor,
                now=now(),
                device_id="console",
                client_ip=client_ip(request),
                payment_minutes=int(request.app.state.settings.billing_payment_minutes),
                after=audited,
            )
        except DomainError as exc:
            error = (exc.code, exc.status)
    async with sessions() as session:
        if error is not None:
            return await _page(
                request,
                principal,
                session,
                container,
                card_no=card_no,
                selected=selected,
                error=error[0],
                status=error[1],
            )
        return await _page(
            request, principal, session, container, card_no=card_no, selected=[], result=done
        )


@router.post("/cashier/native")
async def cashier_native(
    principal: Cashier,
    request: Request,
    session: SessionDep,
    container: ContainerDep,
    card_no: Annotated[str, Form(max_length=32)],
    order: Annotated[list[str] | None, Form(max_length=50)] = None,
) -> Response:
    """A Native-pay QR code for the selected orders: the patient scans it in WeChat; the
    payment is confirmed by notify or query like any other."""
    selected = [o[:32] for o in (order or [])]
    pay = container.services.get("pay")
    try:
        if pay is None:
            raise billing_errors.BillingUnavailable("WeChat Pay is not configured")
        async with session.begin_nested():
            view, placed = await billing.start_payment(
                session,
                his=container.services["his"],
                pay=pay,
                card_no=card_no.strip(),
                order_ids=selected,
                channel="NATIVE",
                actor=principal.actor,
                now=now(),
                device_id="console",
                payment_minutes=int(request.app.state.settings.billing_payment_minutes),
            )
            await audit.record(
                session,
                at=now(),
                actor=principal.actor,
                action="billing.cashier_native",
                record_type="billing_payment",
                record_id=view.payment_id,
                ip=client_ip(request),
                detail={"out_trade_no": view.out_trade_no, "amount_fen": view.amount_fen},
            )
    except DomainError as exc:
        return await _page(
            request,
            principal,
            session,
            container,
            card_no=card_no,
            selected=selected,
            error=exc.code,
            status=exc.status,
        )
    assert placed.code_url is not None
    native = {"payment": view, "svg": window.qr_svg(placed.code_url)}
    return await _page(
        request, principal, session, container, card_no=card_no, selected=[], native=native
    )
