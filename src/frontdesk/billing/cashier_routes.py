"""The front server's API for the HIS (docs/cashier-api.md): the cashier station's
payment-code payments and refunds, and the per-visit QR code for a paper order sheet.

The HIS signs these calls exactly as we sign ours to it (``web/his_inbound.py``: the
bridge's scheme, key id and secret): the signature is checked on the raw body before it is
parsed, and the nonce is recorded in its own committed step, so a replay is refused even
when the first call failed. Refusals use the bridge's envelope
``{"code", "message", "retryable"}``; a refused request changes nothing (its work runs in
a savepoint that is rolled back).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from frontdesk.billing import cashier
from frontdesk.billing.errors import PaymentNotFound
from frontdesk.billing.schemas import PaymentView, RefundView
from frontdesk.core.clock import now as clock_now
from frontdesk.core.errors import DomainError, Unavailable
from frontdesk.web.deps import ContainerDep, SessionDep
from frontdesk.web.his_inbound import envelope, signed_body

PREFIX = "/front/v1"
router = APIRouter(prefix=PREFIX, include_in_schema=False)

_M = TypeVar("_M", bound=BaseModel)
Id = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class PayRequest(_Strict):
    request_id: Id
    card_no: Annotated[str, StringConstraints(min_length=1, max_length=32)]
    order_ids: Annotated[list[Id], Field(min_length=1, max_length=50)]
    auth_code: Annotated[str, StringConstraints(min_length=1, max_length=32)]
    self_pay_fen: int
    device_id: Annotated[str, StringConstraints(max_length=32)] | None = None
    operator: Annotated[str, StringConstraints(max_length=32)] | None = None


class RefundRequest(_Strict):
    request_id: Id
    card_no: Annotated[str, StringConstraints(min_length=1, max_length=32)]
    out_trade_no: Id
    item_ids: Annotated[list[Id], Field(max_length=200)] = []
    amount_fen: int | None = None
    reason: Annotated[str, StringConstraints(max_length=400)]
    operator: Annotated[str, StringConstraints(max_length=32)] | None = None


class PaperQrRequest(_Strict):
    card_no: Annotated[str, StringConstraints(min_length=1, max_length=32)]
    visit_no: Id


def _refusal(exc: DomainError) -> JSONResponse:
    message = exc.detail if exc.detail and exc.detail != exc.code else exc.code
    return envelope(exc.status, exc.code, message, retryable=isinstance(exc, Unavailable))


def _iso(at: datetime | None) -> str | None:
    return at.isoformat().replace("+00:00", "Z") if at else None


def payment_json(p: PaymentView) -> dict[str, Any]:
    return {
        "out_trade_no": p.out_trade_no,
        "card_no": p.card_no,
        "channel": p.channel,
        "order_ids": list(p.order_ids),
        "total_fen": p.total_fen,
        "insurance_fen": p.insurance_fen,
        "amount_fen": p.amount_fen,
        "refunded_fen": p.refunded_fen,
        "state": p.state,
        "his_state": p.his_state,
        "his_settlement_id": p.his_settlement_id,
        "transaction_id": p.transaction_id,
        "created_at": _iso(p.created_at),
        "paid_at": _iso(p.paid_at),
        "settled_at": _iso(p.settled_at),
    }


def refund_json(r: RefundView, out_trade_no: str) -> dict[str, Any]:
    return {
        "out_refund_no": r.out_refund_no,
        "out_trade_no": out_trade_no,
        "amount_fen": r.amount_fen,
        "item_ids": list(r.item_ids),
        "reason": r.reason_text or r.reason,
        "state": r.state,
        "his_state": r.his_state,
        "created_at": _iso(r.created_at),
        "succeeded_at": _iso(r.succeeded_at),
    }


def _parse(model: type[_M], body: bytes) -> _M | JSONResponse:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return envelope(400, "malformed_json", "the body is not JSON")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return envelope(422, "invalid_request", f"body.{where}: {first['msg']}")


def _actor(request: Request, operator: str | None) -> str:
    key_id = getattr(request.state, "his_key_id", "his")
    return f"his:{key_id}" + (f":{operator}" if operator else "")


def _services(container: Any) -> tuple[Any, Any] | JSONResponse:
    pay = container.services.get("pay")
    if pay is None:
        return envelope(503, "pay_not_configured", "WeChat Pay is not configured", retryable=True)
    return container.services["his"], pay


@router.post("/cashier/payments")
async def cashier_pay(request: Request, container: ContainerDep) -> Response:
    """Charge the patient's payment code for HIS orders (amount = the HIS pre-settlement).

    No request-wide session: ``cashier.window_pay`` records the payment and commits, charges
    the code with no transaction open (WeChat may take ~30 s), then applies the answer in a
    new short transaction."""
    body = await signed_body(request)
    if isinstance(body, JSONResponse):
        return body
    req = _parse(PayRequest, body)
    if isinstance(req, JSONResponse):
        return req
    services = _services(container)
    if isinstance(services, JSONResponse):
        return services
    his, pay = services
    settings = request.app.state.settings
    try:
        done = await cashier.window_pay(
            request.app.state.session_provider,
            his=his,
            pay=pay,
            request_id=req.request_id,
            card_no=req.card_no,
            order_ids=req.order_ids,
            auth_code=req.auth_code,
            self_pay_fen=req.self_pay_fen,
            actor=_actor(request, req.operator),
            now=clock_now(),
            device_id=req.device_id,
            client_ip=request.client.host if request.client else None,
            payment_minutes=int(settings.billing_payment_minutes),
        )
    except DomainError as exc:
        return _refusal(exc)
    status = 202 if done.payment.state == "pending" else 200
    return JSONResponse(
        {
            "request_id": req.request_id,
            "replayed": done.replayed,
            "failure": done.failure,
            "payment": payment_json(done.payment),
        },
        status_code=status,
        headers={"Cache-Control": "no-store"},
    )


@router.get("/cashier/payments/{out_trade_no}")
async def cashier_payment(
    out_trade_no: str, request: Request, session: SessionDep, card_no: str = ""
) -> Response:
    """A payment of the card (``?card_no=``) as it is now: paid, settled, refunded."""
    body = await signed_body(request)
    if isinstance(body, JSONResponse):
        return body
    try:
        view = await cashier.payment_of_card(
            session, card_no=card_no[:32], out_trade_no=out_trade_no[:64]
        )
    except PaymentNotFound as exc:
        return _refusal(exc)
    return JSONResponse({"payment": payment_json(view)}, headers={"Cache-Control": "no-store"})


@router.post("/cashier/refunds")
async def cashier_refund(
    request: Request, session: SessionDep, container: ContainerDep
) -> Response:
    """Refund a payment to its original route: items (the HIS confirms) or an amount."""
    body = await signed_body(request)
    if isinstance(body, JSONResponse):
        return body
    req = _parse(RefundRequest, body)
    if isinstance(req, JSONResponse):
        return req
    try:
        async with session.begin_nested():
            refund, replayed = await cashier.window_refund(
                session,
                his=container.services["his"],
                request_id=req.request_id,
                card_no=req.card_no,
                out_trade_no=req.out_trade_no,
                item_ids=req.item_ids,
                amount_fen=req.amount_fen,
                reason=req.reason,
                actor=_actor(request, req.operator),
                now=clock_now(),
            )
    except DomainError as exc:
        return _refusal(exc)
    return JSONResponse(
        {
            "request_id": req.request_id,
            "replayed": replayed,
            "refund": refund_json(refund, req.out_trade_no),
        },
        headers={"Cache-Control": "no-store"},
    )


@router.post("/paper-qr")
async def paper_qr(request: Request, session: SessionDep, container: ContainerDep) -> Response:
    """The QR code for a visit's pending orders, to print on the order sheet."""
    body = await signed_body(request)
    if isinstance(body, JSONResponse):
        return body
    req = _parse(PaperQrRequest, body)
    if isinstance(req, JSONResponse):
        return req
    settings = request.app.state.settings
    try:
        async with session.begin_nested():
            qr = await cashier.paper_qr(
                session,
                his=container.services["his"],
                pay=container.services.get("pay"),
                card_no=req.card_no,
                visit_no=req.visit_no,
                mode=settings.billing_paper_qr,
                secret=settings.secret_key.get_secret_value(),
                base_url=settings.public_base_url,
                link_hours=int(settings.billing_paper_link_hours),
                actor=_actor(request, None),
                now=clock_now(),
                payment_minutes=int(settings.billing_payment_minutes),
            )
    except DomainError as exc:
        return _refusal(exc)
    return JSONResponse(
        {
            "mode": qr.mode,
            "card_no": qr.card_no,
            "visit_no": qr.visit_no,
            "order_ids": list(qr.order_ids),
            "url": qr.url,
            "expires_at": _iso(qr.expires_at),
            "qr_svg": qr.qr_svg,
            "payment": payment_json(qr.payment) if qr.payment else None,
        },
        headers={"Cache-Control": "no-store"},
    )
