"""The patient's side of the QR code on a paper order sheet: ``/h5/pay/v/<token>``.

The token (``billing.cashier.make_paper_token``) names a card and a visit and expires. The
page needs sign-in (``PatientScopeDep``), and shows the visit's pending orders only to an
account that bound that card; any other account gets a page asking it to bind the card
first, with nothing of the orders. A forged, altered or expired token is "not found".
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from frontdesk.billing import cashier, service
from frontdesk.billing.errors import PaperLinkInvalid
from frontdesk.core import audit
from frontdesk.core.clock import now as clock_now
from frontdesk.core.errors import DomainError
from frontdesk.core.money import format_fen
from frontdesk.web.deps import ContainerDep, SessionDep
from frontdesk.web.patient import PatientScopeDep, check_csrf, render

router = APIRouter(prefix="/h5/pay", include_in_schema=False)


def _card_of(request: Request, scope: Any, token: str) -> tuple[Any, str, str]:
    settings = request.app.state.settings
    card_no, visit_no = cashier.read_paper_token(
        secret=settings.secret_key.get_secret_value(), token=token[:400], now=clock_now()
    )
    card = next((c for c in scope.cards if c.card_no == card_no), None)
    return card, card_no, visit_no


def _masked(card_no: str) -> str:
    return f"{card_no[:2]}****{card_no[-4:]}" if len(card_no) > 6 else "****"


async def _page(
    request: Request,
    session: Any,
    container: Any,
    scope: Any,
    token: str,
    *,
    error: str | None = None,
    status: int = 200,
) -> Response:
    try:
        card, card_no, visit_no = _card_of(request, scope, token)
    except PaperLinkInvalid:
        return render(
            request,
            "billing/paper.html",
            {"state": "invalid", "yuan": format_fen},
            status=404,
            openid=scope.openid,
        )
    if card is None or not card.usable:
        return render(
            request,
            "billing/paper.html",
            {"state": "unbound", "card_masked": _masked(card_no), "yuan": format_fen},
            status=403,
            openid=scope.openid,
        )
    stale = False
    try:
        await service.refresh_orders(
            session, his=container.services["his"], card_no=card_no, now=clock_now()
        )
    except DomainError:
        stale = True
    orders = await cashier.visit_orders(session, card_no=card_no, visit_no=visit_no)
    pre = None
    if orders and error is None:
        try:
            pre = await service.pre_settle(
                session,
                his=container.services["his"],
                card_no=card_no,
                order_ids=[o.his_order_id for o in orders],
            )
        except DomainError as exc:
            error, status = exc.code, exc.status
    await audit.record(
        session,
        at=clock_now(),
        actor=f"patient:{scope.openid}",
        action="billing.paper_link_view",
        record_type="billing_visit",
        record_id=visit_no,
        card_id=card.card_id,
        ip=request.client.host if request.client else None,
    )
    return render(
        request,
        "billing/paper.html",
        {
            "state": "orders",
            "card": card,
            "visit_no": visit_no,
            "orders": orders,
            "pre": pre,
            "token": token,
            "error": error,
            "stale": stale,
            "yuan": format_fen,
        },
        status=status,
        openid=scope.openid,
    )


@router.get("/v/{token}")
async def paper_link(
    token: str,
    request: Request,
    scope: PatientScopeDep,
    session: SessionDep,
    container: ContainerDep,
) -> Response:
    """The visit's pending orders and the HIS pre-settlement, for the card's own accounts."""
    return await _page(request, session, container, scope, token)


@router.post("/v/{token}")
async def paper_pay(
    token: str,
    request: Request,
    scope: PatientScopeDep,
    session: SessionDep,
    container: ContainerDep,
    csrf: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    """Start a JSAPI payment of the visit's pending orders (amount: the HIS pre-settlement)."""
    check_csrf(request, scope.openid, csrf)
    try:
        card, card_no, visit_no = _card_of(request, scope, token)
    except PaperLinkInvalid:
        return await _page(request, session, container, scope, token)
    if card is None or not card.usable:
        return await _page(request, session, container, scope, token)
    pay = container.services.get("pay")
    if pay is None:
        return await _page(
            request,
            session,
            container,
            scope,
            token,
            error="billing_pay_not_configured",
            status=503,
        )
    now = clock_now()
    try:
        async with session.begin_nested():
            orders = await cashier.visit_orders(session, card_no=card_no, visit_no=visit_no)
            view, _placed = await service.start_payment(
                session,
                his=container.services["his"],
                pay=pay,
                card_no=card_no,
                card_id=card.card_id,
                order_ids=[o.his_order_id for o in orders],
                channel="JSAPI",
                openid=scope.openid,
                actor=f"patient:{scope.openid}",
                now=now,
                client_ip=request.client.host if request.client else None,
                payment_minutes=int(request.app.state.settings.billing_payment_minutes),
            )
            await audit.record(
                session,
                at=now,
                actor=f"patient:{scope.openid}",
                action="billing.payment_start",
                record_type="billing_payment",
                record_id=view.payment_id,
                card_id=card.card_id,
                ip=request.client.host if request.client else None,
                detail={"out_trade_no": view.out_trade_no, "visit_no": visit_no, "paper": True},
            )
    except DomainError as exc:
        return await _page(
            request, session, container, scope, token, error=exc.code, status=exc.status
        )
    return RedirectResponse(f"/h5/payments/{view.payment_id}", status_code=303)
