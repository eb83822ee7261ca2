"""The window (收费窗口): payment-code payments and refunds to the original route, for the
HIS cashier station (the cashier API, ``cashier_routes.py``) and for the console's cashier
page; and the QR code printed on a paper order sheet (``paper_qr``).

Everything here builds on ``billing.service``: a window payment is a ``MICROPAY`` payment
whose amount is the HIS pre-settlement, charged with ``service.charge_code`` outside any
open transaction (the adapter polls while the patient types a password and reverses the
order at its deadline; see ``window_pay``), and settled in the HIS by the same saga as a
WeChat payment. A refund is a ``start_refund`` (an amount) or a ``request_item_refund``
(items the HIS confirms first), back to the payment it came from.

Cashier requests are idempotent on the station's ``request_id``: a repeat with the same
body answers from the payment or refund the first made (its state now); another body is
refused (``RequestIdReused``). The inbound signature (the bridge's scheme, mirrored) is
checked by ``web/his_inbound.py`` before anything is read; its nonces are kept here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import segno
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from frontdesk.billing import errors, service
from frontdesk.billing import models as m
from frontdesk.billing import repository as repo
from frontdesk.billing.schemas import OrderView, PaymentDetail, PaymentView, RefundView
from frontdesk.core.clock import now as clock_now
from frontdesk.core.money import MoneyError, check_fen
from frontdesk.core.sql import insert_ignoring_conflict
from frontdesk.his.port import HisGateway
from frontdesk.wechat.pay.port import WeChatPay

AUTH_CODE = re.compile(r"^1[0-5]\d{16}$")  # WeChat's payment code (付款码): 18 digits
REQUEST_ID = re.compile(r"^[A-Za-z0-9_.:-]{6,64}$")
CARD_NO = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
REASON_WINDOW = "window"  # billing_reason_window: refunded at the window
NONCE_KEEP = timedelta(seconds=600)  # twice the signing window of docs/his-bridge.md


# --------------------------------------------------------------------------- inbound nonces


async def record_inbound_nonce(
    session: AsyncSession, *, key_id: str, nonce: str, now: datetime
) -> bool:
    """Record the nonce of a correctly signed call the HIS made to us (the bridge's scheme,
    checked by ``web/his_inbound.py``); False if it was seen before (a replay). Nonces
    older than twice the 300-second window are dropped: they can never pass again."""
    stmt = insert_ignoring_conflict(
        session,
        m.BillingInboundNonce.__table__,
        {"key_id": key_id, "nonce": nonce, "seen_at": now},
        conflict_columns=["key_id", "nonce"],
    )
    fresh = bool((await session.execute(stmt)).rowcount)  # type: ignore[attr-defined]
    if fresh:
        await session.execute(
            delete(m.BillingInboundNonce).where(m.BillingInboundNonce.seen_at < now - NONCE_KEEP)
        )
    return fresh


# --------------------------------------------------------------------------- requests


def _digest(operation: str, body: Mapping[str, Any]) -> str:
    canonical = json.dumps([operation, dict(body)], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


async def _claim_request(
    session: AsyncSession,
    *,
    request_id: str,
    operation: str,
    card_no: str,
    body: Mapping[str, Any],
    now: datetime,
) -> m.BillingCashierRequest | None:
    """Claim ``request_id`` for this request: None if it is new (now ours), else the first
    request with it (``RequestIdReused`` if that one had another body)."""
    if not REQUEST_ID.fullmatch(request_id):
        raise errors.SelectionInvalid("request_id: 6-64 of [A-Za-z0-9_.:-]")
    digest = _digest(operation, body)
    stmt = insert_ignoring_conflict(
        session,
        m.BillingCashierRequest.__table__,
        {
            "request_id": request_id,
            "operation": operation,
            "request_hash": digest,
            "card_no": card_no[:32],
            "created_at": now,
        },
        conflict_columns=["request_id"],
    )
    if (await session.execute(stmt)).rowcount:  # type: ignore[attr-defined]
        return None
    first = await session.scalar(
        select(m.BillingCashierRequest).where(m.BillingCashierRequest.request_id == request_id)
    )
    assert first is not None
    if first.request_hash != digest or first.operation != operation:
        raise errors.RequestIdReused
    return first


async def _note_request(session: AsyncSession, request_id: str, **values: Any) -> None:
    await session.execute(
        update(m.BillingCashierRequest)
        .where(m.BillingCashierRequest.request_id == request_id)
        .values(**values)
    )


@dataclass(frozen=True)
class WindowPayment:
    """The outcome of a window payment: the payment as it is now, and (when WeChat refused
    the code) why."""

    payment: PaymentView
    failure: str | None = None
    replayed: bool = False


async def _payment_view(session: AsyncSession, payment_id: int) -> PaymentView:
    row = await repo.payment(session, payment_id)
    if row is None:
        raise errors.PaymentNotFound
    detail = await service.payment_detail(session, card_nos=[row.card_no], payment_id=payment_id)
    return detail.payment


async def payment_of_card(session: AsyncSession, *, card_no: str, out_trade_no: str) -> PaymentView:
    """A payment by merchant number if it is this card's (``PaymentNotFound`` otherwise)."""
    row = await repo.payment_by_trade_no(session, out_trade_no)
    if row is None or row.card_no != card_no:
        raise errors.PaymentNotFound
    return await _payment_view(session, row.id)


async def staff_payment_detail(session: AsyncSession, *, payment_id: int) -> PaymentDetail:
    """Any payment with its orders and refunds (console: finance and cashiers)."""
    row = await repo.payment(session, payment_id)
    if row is None:
        raise errors.PaymentNotFound
    return await service.payment_detail(session, card_nos=[row.card_no], payment_id=payment_id)


def check_auth_code(auth_code: str) -> str:
    code = auth_code.strip()
    if not AUTH_CODE.fullmatch(code):
        raise errors.AuthCodeInvalid
    return code


def check_amount(value: object) -> int:
    """A positive whole number of fen within bounds (never yuan, never a float)."""
    try:
        return check_fen(value, allow_zero=False)
    except MoneyError as exc:
        raise errors.AmountInvalid(str(exc)) from exc


SessionFactory = Callable[[], AbstractAsyncContextManager[AsyncSession]]
AfterPay = Callable[[AsyncSession, WindowPayment], Awaitable[None]]


async def window_pay(
    sessions: SessionFactory,
    *,
    his: HisGateway,
    pay: WeChatPay,
    request_id: str,
    card_no: str,
    order_ids: Sequence[str],
    auth_code: str,
    self_pay_fen: int,
    actor: str,
    now: datetime,
    device_id: str | None = None,
    client_ip: str | None = None,
    payment_minutes: int = service.DEFAULT_PAYMENT_MINUTES,
    after: AfterPay | None = None,
) -> WindowPayment:
    """Charge the patient's payment code for these unpaid orders of the card.

    Three steps, each ``sessions()`` a short transaction of its own (committed when its
    block ends, rolled back if it raises), because WeChat may take ~30 s to answer (the
    adapter polls while the patient types a password) and no write transaction may stay
    open that long (on SQLite it would block every writer):

    1. record the payment (and the station's ``request_id``) and commit;
    2. charge the code with no transaction open;
    3. apply WeChat's answer and commit — a refusal too, so the payment stays ``failed``
       with ``failure`` set. If WeChat did not answer the payment stays pending (the query
       job finds out what happened; a repeat of ``request_id`` tells the station).

    The amount is the HIS pre-settlement's self-pay share; ``self_pay_fen`` (what the
    cashier showed the patient) must equal it (``AmountMismatch``). A refusal in step 1
    raises and changes nothing. ``after`` runs in the last transaction with the outcome
    (the console's audit record)."""
    async with sessions() as session:
        first = await _record_window_payment(
            session,
            his=his,
            request_id=request_id,
            card_no=card_no,
            order_ids=order_ids,
            auth_code=auth_code,
            self_pay_fen=self_pay_fen,
            actor=actor,
            now=now,
            device_id=device_id,
            client_ip=client_ip,
            payment_minutes=payment_minutes,
        )
        if isinstance(first, WindowPayment):  # a repeat of the request: no new charge
            if after is not None:
                await after(session, first)
            return first
    outcome = await service.charge_code(pay, first) if first is not None else None
    async with sessions() as session:
        failure: str | None = None
        if outcome is not None:
            try:
                await service.apply_code_outcome(session, outcome=outcome, now=clock_now())
            except errors.PayRefused as exc:
                failure = str(exc.params.get("reason") or exc.detail or exc.code)[:64]
                await _note_request(session, request_id, refusal=failure)
            except errors.BillingUnavailable:
                pass  # WeChat did not answer: pending; the query job finds out
        payment_id = await session.scalar(
            select(m.BillingCashierRequest.payment_id).where(
                m.BillingCashierRequest.request_id == request_id
            )
        )
        assert payment_id is not None
        done = WindowPayment(payment=await _payment_view(session, payment_id), failure=failure)
        if after is not None:
            await after(session, done)
        return done


async def _record_window_payment(
    session: AsyncSession,
    *,
    his: HisGateway,
    request_id: str,
    card_no: str,
    order_ids: Sequence[str],
    auth_code: str,
    self_pay_fen: int,
    actor: str,
    now: datetime,
    device_id: str | None,
    client_ip: str | None,
    payment_minutes: int,
) -> WindowPayment | service.CodeCharge | None:
    """Step 1 of ``window_pay``: the answer to a repeated request, or the charge to make
    (None if the new payment is somehow no longer pending)."""
    code = check_auth_code(auth_code)
    amount = check_amount(self_pay_fen)
    if not CARD_NO.fullmatch(card_no):
        raise errors.OrderNotFound
    ids = service._check_ids(order_ids, limit=service.MAX_ORDERS)
    body = {"card_no": card_no, "order_ids": ids, "auth_code": code, "self_pay_fen": amount}
    first = await _claim_request(
        session, request_id=request_id, operation="pay", card_no=card_no, body=body, now=now
    )
    if first is not None:
        if first.payment_id is None:
            raise errors.RequestIdReused("the first request with this id made no payment")
        return WindowPayment(
            payment=await _payment_view(session, first.payment_id),
            failure=first.refusal,
            replayed=True,
        )
    await service.refresh_orders(session, his=his, card_no=card_no, now=now)
    pre = await service.pre_settle(session, his=his, card_no=card_no, order_ids=ids)
    if pre.self_pay_fen != amount:
        raise errors.AmountMismatch(
            f"the self-pay share is {pre.self_pay_fen} fen", expected_fen=pre.self_pay_fen
        )
    view = await service.create_payment(
        session,
        his=his,
        card_no=card_no,
        order_ids=ids,
        channel=m.MICROPAY,
        actor=actor,
        now=now,
        device_id=device_id,
        payment_minutes=payment_minutes,
    )
    if view.amount_fen != amount:  # the HIS changed its mind between the two calls
        raise errors.AmountMismatch(expected_fen=view.amount_fen)
    await _note_request(session, request_id, payment_id=view.payment_id)
    return await service.prepare_code_charge(
        session, payment_id=view.payment_id, auth_code=code, client_ip=client_ip
    )


async def window_refund(
    session: AsyncSession,
    *,
    his: HisGateway,
    request_id: str,
    card_no: str,
    out_trade_no: str,
    item_ids: Sequence[str] = (),
    amount_fen: int | None = None,
    reason: str,
    actor: str,
    now: datetime,
) -> tuple[RefundView, bool]:
    """Refund a payment of the card to its original route: ``item_ids`` (items the HIS
    lists as refundable; the HIS confirms first) or ``amount_fen`` (money only), never
    both. Returns the refund and whether this was a repeat of ``request_id``. A payment
    that is not this card's is ``PaymentNotFound``, like one that does not exist."""
    text = " ".join(reason.split())
    if not 2 <= len(text) <= 200:
        raise errors.ReasonRequired
    if bool(item_ids) == (amount_fen is not None):
        raise errors.RefundTargetInvalid
    amount = check_amount(amount_fen) if amount_fen is not None else None
    ids = service._check_ids(item_ids, limit=service.MAX_ITEMS) if item_ids else []
    body = {
        "card_no": card_no,
        "out_trade_no": out_trade_no,
        "item_ids": ids,
        "amount_fen": amount,
        "reason": text,
    }
    first = await _claim_request(
        session, request_id=request_id, operation="refund", card_no=card_no, body=body, now=now
    )
    if first is not None:
        if first.refund_id is None:
            raise errors.RequestIdReused("the first request with this id made no refund")
        return await refund_view(session, first.refund_id), True
    payment = await repo.payment_by_trade_no(session, out_trade_no[:64])
    if payment is None or payment.card_no != card_no:
        raise errors.PaymentNotFound
    if ids:
        refund_id = await service.request_item_refund(
            session,
            his=his,
            card_no=card_no,
            item_ids=ids,
            actor=actor,
            now=now,
            reason=REASON_WINDOW,
            reason_text=text,
        )
        made = await repo.refund(session, refund_id)
        if made is None or made.payment_id != payment.id:
            raise errors.ItemsNotRefundable("the items were not paid by this payment")
    else:
        assert amount is not None
        refund_id = await service.start_refund(
            session,
            payment_id=payment.id,
            amount_fen=amount,
            kind=m.KIND_STAFF,
            reason=REASON_WINDOW,
            reason_text=text,
            actor=actor,
            now=now,
        )
    await _note_request(session, request_id, payment_id=payment.id, refund_id=refund_id)
    return await refund_view(session, refund_id), False


async def refund_view(session: AsyncSession, refund_id: int) -> RefundView:
    row = await repo.refund(session, refund_id)
    if row is None:
        raise errors.RefundNotFound
    payment = await repo.payment(session, row.payment_id)
    assert payment is not None
    detail = await service.payment_detail(
        session, card_nos=[payment.card_no], payment_id=payment.id
    )
    return next(r for r in detail.refunds if r.refund_id == refund_id)


async def staff_refund(
    session: AsyncSession,
    *,
    payment_id: int,
    amount_fen: object,
    reason: str,
    actor: str,
    now: datetime,
) -> int:
    """A console refund of money of a paid payment, to its original route, with a reason."""
    text = " ".join(reason.split())
    if not 2 <= len(text) <= 200:
        raise errors.ReasonRequired
    amount = check_amount(amount_fen)
    return await service.start_refund(
        session,
        payment_id=payment_id,
        amount_fen=amount,
        kind=m.KIND_STAFF,
        reason="staff",
        reason_text=text,
        actor=actor,
        now=now,
    )


# --------------------------------------------------------------------------- paper QR codes


@dataclass(frozen=True)
class PaperQr:
    """What the HIS prints on the order sheet: ``url`` (what the QR code holds), the QR
    code as SVG, and for a Native-pay code the payment it charges."""

    mode: str  # link | native
    card_no: str
    visit_no: str
    url: str
    expires_at: datetime
    qr_svg: str
    order_ids: tuple[str, ...]
    payment: PaymentView | None = None


def _paper_key(secret: str) -> bytes:
    return hmac.new(secret.encode(), b"frontdesk.billing.paper-link.v1", hashlib.sha256).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_paper_token(*, secret: str, card_no: str, visit_no: str, expires_at: datetime) -> str:
    """``<payload>.<mac>``: the card, the visit and the expiry, signed with a key derived
    from the server's secret (so no other token of ours can pass for one)."""
    payload = _b64(
        json.dumps(
            {"c": card_no, "v": visit_no, "e": int(expires_at.timestamp())},
            separators=(",", ":"),
        ).encode()
    )
    mac = _b64(hmac.new(_paper_key(secret), payload.encode(), hashlib.sha256).digest())
    return f"{payload}.{mac}"


def read_paper_token(*, secret: str, token: str, now: datetime) -> tuple[str, str]:
    """(card_no, visit_no) of a valid, unexpired token; ``PaperLinkInvalid`` otherwise."""
    payload, _, mac = token.partition(".")
    if not payload or not mac or len(token) > 400:
        raise errors.PaperLinkInvalid
    expected = _b64(hmac.new(_paper_key(secret), payload.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(expected, mac):
        raise errors.PaperLinkInvalid
    try:
        data = json.loads(_unb64(payload))
        card_no, visit_no, expiry = str(data["c"]), str(data["v"]), int(data["e"])
    except (ValueError, KeyError, TypeError) as exc:
        raise errors.PaperLinkInvalid from exc
    if now.timestamp() >= expiry:
        raise errors.PaperLinkInvalid("expired")
    return card_no, visit_no


def qr_svg(data: str) -> str:
    """The QR code of ``data`` as an SVG document (error correction M, 4-module border)."""
    return str(segno.make(data, error="m", micro=False).svg_inline(scale=4, border=4))


async def visit_orders(session: AsyncSession, *, card_no: str, visit_no: str) -> list[OrderView]:
    """The card's unpaid orders (mirror) written in this HIS visit."""
    for group in await service.pending_visits(session, card_no=card_no):
        if group.visit_no == visit_no:
            return list(group.orders)
    return []


async def paper_qr(
    session: AsyncSession,
    *,
    his: HisGateway,
    pay: WeChatPay | None,
    card_no: str,
    visit_no: str,
    mode: str,
    secret: str,
    base_url: str,
    link_hours: int,
    actor: str,
    now: datetime,
    payment_minutes: int = service.DEFAULT_PAYMENT_MINUTES,
) -> PaperQr:
    """The QR code for a visit's pending orders. ``link``: a signed link (card + visit,
    expiring) to ``/h5/pay/v/<token>``, which after sign-in shows those orders to an
    account that bound the card. ``native``: a Native-pay payment of the visit's orders,
    its ``code_url`` in the QR code (confirmed by notify/query like any payment).
    ``OrderNotFound`` if the visit has no unpaid orders for this card."""
    if not CARD_NO.fullmatch(card_no) or not service.HIS_ID.fullmatch(visit_no):
        raise errors.OrderNotFound
    await service.refresh_orders(session, his=his, card_no=card_no, now=now)
    orders = await visit_orders(session, card_no=card_no, visit_no=visit_no)
    if not orders:
        raise errors.OrderNotFound("no unpaid orders in this visit")
    order_ids = tuple(o.his_order_id for o in orders)
    if mode == "native":
        if pay is None:
            raise errors.BillingUnavailable("WeChat Pay is not configured")
        view, placed = await service.start_payment(
            session,
            his=his,
            pay=pay,
            card_no=card_no,
            order_ids=order_ids,
            channel=m.NATIVE,
            actor=actor,
            now=now,
            payment_minutes=payment_minutes,
        )
        assert placed.code_url is not None
        return PaperQr(
            mode="native",
            card_no=card_no,
            visit_no=visit_no,
            url=placed.code_url,
            expires_at=view.expires_at,
            qr_svg=qr_svg(placed.code_url),
            order_ids=order_ids,
            payment=view,
        )
    if mode != "link":
        raise errors.ChannelInvalid(f"unknown paper QR mode {mode!r}")
    expires_at = now + timedelta(hours=link_hours)
    token = make_paper_token(
        secret=secret, card_no=card_no, visit_no=visit_no, expires_at=expires_at
    )
    url = f"{base_url.rstrip('/')}/h5/pay/v/{token}"
    return PaperQr(
        mode="link",
        card_no=card_no,
        visit_no=visit_no,
        url=url,
        expires_at=expires_at,
        qr_svg=qr_svg(url),
        order_ids=order_ids,
    )
