"""Patient pages for payments (缴费) and refunds (退费).

Presentation only: the rules are in ``billing.service``. Every route takes
``PatientScopeDep``; lists are of the active card, and a payment or order of a card the caller
has not bound is "not found", like one that does not exist. Forms carry ``csrf``; a refused
form runs in a savepoint and is shown again with the reason, nothing changed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from frontdesk.billing import service
from frontdesk.billing.errors import PaymentNotFound
from frontdesk.core import audit
from frontdesk.core.clock import now as clock_now
from frontdesk.core.errors import DomainError
from frontdesk.core.money import format_fen
from frontdesk.web.deps import ContainerDep, SessionDep
from frontdesk.web.patient import PatientScopeDep, check_csrf, render

router = APIRouter(prefix="/h5/payments", include_in_schema=False)


def _fmt(request: Request) -> Any:
    tz = request.app.state.settings.tz

    def fmt(at: datetime | None, pattern: str = "%Y-%m-%d %H:%M") -> str:
        return at.astimezone(tz).strftime(pattern) if at else "—"

    return fmt


def _ctx(request: Request, **values: Any) -> dict[str, Any]:
    return {"local": _fmt(request), "yuan": format_fen, **values}


def _ip(request: Request) -> str | None:
    return request.client.host if request.client else None


async def _audit_view(
    request: Request,
    session: Any,
    scope: Any,
    *,
    action: str,
    record_type: str,
    record_id: str | int,
    card_no: str,
    detail: dict[str, Any] | None = None,
) -> None:
    """One audit row per patient view of orders or payments, like every report view.

    Called only after the read succeeded for a card of the caller's, so a refused id (another
    card's, or none) writes nothing.
    """
    card = next((c for c in scope.cards if c.card_no == card_no), None)
    await audit.record(
        session,
        at=clock_now(),
        actor=f"patient:{scope.openid}",
        action=action,
        record_type=record_type,
        record_id=record_id,
        card_id=card.card_id if card is not None else None,
        ip=_ip(request),
        request_id=getattr(request.state, "request_id", None),
        detail={"card_no": card_no, **(detail or {})},
    )


def _payment_minutes(request: Request) -> int:
    return int(request.app.state.settings.billing_payment_minutes)


async def _pending_page(
    request: Request,
    session: Any,
    container: Any,
    scope: Any,
    *,
    selected: list[str],
    error: str | None = None,
    status: int = 200,
    refresh: bool = True,
) -> Response:
    active = scope.active
    if active is None:
        return render(
            request,
            "billing/pending.html",
            _ctx(request, active=None, visits=[], pre=None, selected=[], error=error, stale=False),
            status=status,
            openid=scope.openid,
        )
    stale = False
    if refresh:
        try:
            await service.refresh_orders(
                session, his=container.services["his"], card_no=active.card_no, now=clock_now()
            )
        except DomainError:
            stale = True  # the HIS did not answer: show what we last knew, and say so
    visits = await service.pending_visits(session, card_no=active.card_no)
    await _audit_view(
        request,
        session,
        scope,
        action="billing.pending_view",
        record_type="card",
        record_id=active.card_id,
        card_no=active.card_no,
        detail={"orders": sum(len(v.orders) for v in visits), "selected": selected},
    )
    pre = None
    if selected and error is None:
        try:
            pre = await service.pre_settle(
                session, his=container.services["his"], card_no=active.card_no, order_ids=selected
            )
        except DomainError as exc:
            error, status = exc.code, exc.status
    return render(
        request,
        "billing/pending.html",
        _ctx(
            request,
            active=active,
            visits=visits,
            pre=pre,
            selected=selected,
            error=error,
            stale=stale,
        ),
        status=status,
        openid=scope.openid,
    )


@router.get("")
async def pending(
    request: Request, scope: PatientScopeDep, session: SessionDep, container: ContainerDep
) -> Response:
    """Pending orders of the active card by visit; with ``?order=...`` the HIS's
    pre-settlement of the selection and the pay button."""
    selected = [o[:32] for o in request.query_params.getlist("order")][:50]
    return await _pending_page(request, session, container, scope, selected=selected)


@router.post("")
async def pay(
    request: Request,
    scope: PatientScopeDep,
    session: SessionDep,
    container: ContainerDep,
    csrf: Annotated[str, Form(max_length=64)] = "",
    order: Annotated[list[str] | None, Form(max_length=50)] = None,
) -> Response:
    """Start a JSAPI payment of the selected orders of the active card. The amount is the
    HIS pre-settlement, whatever the form says."""
    check_csrf(request, scope.openid, csrf)
    selected = [o[:64] for o in (order or [])]
    card = scope.active
    if card is None:
        return await _pending_page(
            request,
            session,
            container,
            scope,
            selected=[],
            error="h5_no_card",
            status=409,
            refresh=False,
        )
    pay_service = container.services.get("pay")
    if pay_service is None:
        return await _pending_page(
            request,
            session,
            container,
            scope,
            selected=[],
            error="billing_pay_not_configured",
            status=503,
            refresh=False,
        )
    now = clock_now()
    try:
        async with session.begin_nested():
            view, _placed = await service.start_payment(
                session,
                his=container.services["his"],
                pay=pay_service,
                card_no=card.card_no,
                card_id=card.card_id,
                order_ids=selected,
                channel="JSAPI",
                openid=scope.openid,
                actor=f"patient:{scope.openid}",
                now=now,
                client_ip=_ip(request),
                payment_minutes=_payment_minutes(request),
            )
            await audit.record(
                session,
                at=now,
                actor=f"patient:{scope.openid}",
                action="billing.payment_start",
                record_type="billing_payment",
                record_id=view.payment_id,
                card_id=card.card_id,
                ip=_ip(request),
                detail={"out_trade_no": view.out_trade_no, "amount_fen": view.amount_fen},
            )
    except DomainError as exc:
        return await _pending_page(
            request,
            session,
            container,
            scope,
            selected=[],
            error=exc.code,
            status=exc.status,
            refresh=False,
        )
    return RedirectResponse(f"/h5/payments/{view.payment_id}", status_code=303)


@router.get("/paid")
async def paid_list(request: Request, scope: PatientScopeDep, session: SessionDep) -> Response:
    active = scope.active
    payments = orders = []
    if active is not None:
        payments = [
            p
            for p in await service.payments_of_card(session, card_no=active.card_no)
            if p.state == "paid"
        ]
        orders = await service.paid_orders(session, card_no=active.card_no)
        await _audit_view(
            request,
            session,
            scope,
            action="billing.paid_view",
            record_type="card",
            record_id=active.card_id,
            card_no=active.card_no,
            detail={"payments": len(payments), "orders": len(orders)},
        )
    return render(
        request,
        "billing/paid.html",
        _ctx(request, active=active, payments=payments, orders=orders),
        openid=scope.openid,
    )


@router.get("/refunds")
async def refund_form(
    request: Request, scope: PatientScopeDep, session: SessionDep, container: ContainerDep
) -> Response:
    return await _refund_page(request, session, container, scope)


async def _refund_page(
    request: Request,
    session: Any,
    container: Any,
    scope: Any,
    *,
    error: str | None = None,
    status: int = 200,
    notice: str | None = None,
) -> Response:
    active = scope.active
    items: list[Any] = []
    if active is not None:
        try:
            items = await service.refundable_items(
                session, his=container.services["his"], card_no=active.card_no
            )
            await _audit_view(
                request,
                session,
                scope,
                action="billing.refundable_view",
                record_type="card",
                record_id=active.card_id,
                card_no=active.card_no,
                detail={"items": len(items)},
            )
        except DomainError as exc:
            error, status = error or exc.code, status if error else exc.status
    return render(
        request,
        "billing/refunds.html",
        _ctx(request, active=active, items=items, error=error, notice=notice),
        status=status,
        openid=scope.openid,
    )


@router.post("/refunds")
async def refund_request(
    request: Request,
    scope: PatientScopeDep,
    session: SessionDep,
    container: ContainerDep,
    csrf: Annotated[str, Form(max_length=64)] = "",
    item: Annotated[list[str] | None, Form(max_length=200)] = None,
) -> Response:
    """Ask for a refund of items the HIS lists as refundable (the HIS confirms first)."""
    check_csrf(request, scope.openid, csrf)
    card = scope.active
    if card is None:
        return await _refund_page(
            request, session, container, scope, error="h5_no_card", status=409
        )
    now = clock_now()
    try:
        async with session.begin_nested():
            refund_id = await service.request_item_refund(
                session,
                his=container.services["his"],
                card_no=card.card_no,
                item_ids=[i[:64] for i in (item or [])],
                actor=f"patient:{scope.openid}",
                now=now,
            )
            await audit.record(
                session,
                at=now,
                actor=f"patient:{scope.openid}",
                action="billing.refund_request",
                record_type="billing_refund",
                record_id=refund_id,
                card_id=card.card_id,
                ip=_ip(request),
                detail={"item_ids": list(item or [])},
            )
    except DomainError as exc:
        return await _refund_page(
            request, session, container, scope, error=exc.code, status=exc.status
        )
    return RedirectResponse("/h5/payments/refunds?notice=requested", status_code=303)


@router.get("/orders/{order_id}")
async def order_page(
    request: Request, order_id: str, scope: PatientScopeDep, session: SessionDep
) -> Response:
    detail = await service.order_detail(
        session, card_nos=scope.card_nos, his_order_id=order_id[:64]
    )
    await _audit_view(
        request,
        session,
        scope,
        action="billing.order_view",
        record_type="billing_order",
        record_id=detail.order.his_order_id,
        card_no=detail.order.card_no,
    )
    return render(request, "billing/order.html", _ctx(request, d=detail), openid=scope.openid)


async def _payment(session: Any, scope: Any, payment_id: int) -> Any:
    if not 0 < payment_id < 2**62:
        raise PaymentNotFound
    return await service.payment_detail(session, card_nos=scope.card_nos, payment_id=payment_id)


@router.get("/{payment_id}")
async def payment_page(
    request: Request,
    payment_id: int,
    scope: PatientScopeDep,
    session: SessionDep,
    container: ContainerDep,
) -> Response:
    """The payment: the pay button while it can be paid (JSAPI params for the phone), then
    paid / closed, found by polling our status."""
    detail = await _payment(session, scope, payment_id)
    await _audit_view(
        request,
        session,
        scope,
        action="billing.payment_view",
        record_type="billing_payment",
        record_id=payment_id,
        card_no=detail.payment.card_no,
    )
    params: dict[str, str] = {}
    p = detail.payment
    pay_service = container.services.get("pay")
    if (
        p.state == "pending"
        and p.channel == "JSAPI"
        and pay_service is not None
        and (p.openid == scope.openid)
    ):
        try:
            placed = await service.place_wechat_order(
                session, pay=pay_service, payment_id=p.payment_id, now=clock_now()
            )
            params = placed.pay_params
        except DomainError:
            params = {}
    return render(
        request,
        "billing/payment.html",
        _ctx(request, d=detail, params=params),
        openid=scope.openid,
    )


@router.get("/{payment_id}/status.json")
async def payment_status(payment_id: int, scope: PatientScopeDep, session: SessionDep) -> Response:
    p = (await _payment(session, scope, payment_id)).payment
    return JSONResponse(
        {
            "payment_id": p.payment_id,
            "state": p.state,
            "his_state": p.his_state,
            "amount_fen": p.amount_fen,
            "refunded_fen": p.refunded_fen,
        },
        headers={"Cache-Control": "no-store"},
    )


@router.get("/{payment_id}/receipt")
async def receipt(
    request: Request, payment_id: int, scope: PatientScopeDep, session: SessionDep
) -> Response:
    detail = await _payment(session, scope, payment_id)
    if detail.payment.state != "paid":
        raise PaymentNotFound
    await _audit_view(
        request,
        session,
        scope,
        action="billing.receipt_view",
        record_type="billing_payment",
        record_id=payment_id,
        card_no=detail.payment.card_no,
    )
    return render(request, "billing/receipt.html", _ctx(request, d=detail), openid=scope.openid)
