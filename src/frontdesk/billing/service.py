"""Payments and refunds: the rules (docs/billing.md).

- The amount of a payment is always the HIS's pre-settlement of the selected orders, never a
  number from the client.
- Payment state moves only from ``pending`` (guarded ``UPDATE``), and every move writes one
  ``billing_event`` with a unique key: notify and query converge on ``apply_trade`` /
  ``apply_refund``, so a transition happens once however often it is reported.
- A paid payment is settled in the HIS by the saga (``settle_payment``, run by the outbox):
  retried while the HIS is unavailable, then the HIS is asked whether it settled
  (``his.settlement(payment_ref)``), and only if it did not is the money returned.
- Refunds have a number fixed at creation and reserve their amount on the payment in one
  guarded statement, so the sum of refunds never exceeds the payment.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import update as sa_update
from sqlalchemy.ext.asyncio import AsyncSession

from frontdesk.accounts import service as accounts
from frontdesk.billing import errors
from frontdesk.billing import models as m
from frontdesk.billing import repository as repo
from frontdesk.billing.schemas import (
    DayTotals,
    EventView,
    ItemView,
    LedgerEntry,
    OrderDetail,
    OrderView,
    PaymentDetail,
    PaymentView,
    PlacedOrder,
    PreSettlementView,
    RefundableView,
    RefundView,
    VisitGroup,
)
from frontdesk.core import outbox
from frontdesk.core.clock import get_clock
from frontdesk.core.clock import now as clock_now
from frontdesk.core.i18n import translate
from frontdesk.core.ids import merchant_number
from frontdesk.core.money import MoneyError, check_fen, format_fen
from frontdesk.his.port import HisGateway, HisRejected, HisUnavailable, SettlementChannel
from frontdesk.his.port import Refund as HisRefund
from frontdesk.wechat.oa.templates import queue_template
from frontdesk.wechat.pay import events as pay_events
from frontdesk.wechat.pay.port import (
    CodePayOrder,
    JsapiOrder,
    NativeOrder,
    Payment,
    PayRejected,
    PayUnavailable,
    Refund,
    RefundRequest,
    RefundStatus,
    TradeState,
    WeChatPay,
)

log = logging.getLogger("frontdesk.billing")

QUERY_PAYMENT_JOB = "billing.query_payment"
SETTLE_JOB = "billing.settle"
# The job (handled by booking) that a paid registration fee starts instead of the saga.
REGISTRATION_PAID_JOB = "booking.fee_paid"
KIND_REGISTRATION = "registration"  # refund kind: a registration fee given back
HIS_REFUND_JOB = "billing.his_refund"
REFUND_JOB = "billing.refund"
QUERY_REFUND_JOB = "billing.query_refund"
REFRESH_JOB = "billing.refresh_card"
EXECUTION_JOB = "billing.refresh_execution"

HIS_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
MAX_ORDERS = 50
MAX_ITEMS = 200
DEFAULT_PAYMENT_MINUTES = 15
SETTLE_BACKOFF = (5, 15, 60, 120, 300, 600)
QUERY_BACKOFF = (5, 10, 20, 30, 60, 60, 120)

# HIS refusal codes of a settlement → the refund's reason and kind.
_DOUBLE = "order_not_unpaid"


def _his_call_failed(exc: HisUnavailable) -> errors.BillingUnavailable:
    return errors.BillingUnavailable(f"HIS: {exc.code}")


# --------------------------------------------------------------------------- views


def _item_view(i: m.BillingOrderItem) -> ItemView:
    return ItemView(
        his_item_id=i.his_item_id,
        name=i.name,
        quantity=i.quantity,
        unit=i.unit,
        unit_price_fen=i.unit_price_fen,
        amount_fen=i.amount_fen,
        status=i.status,
        refund_id=i.refund_id,
    )


def _order_view(o: m.BillingOrder, items: Sequence[m.BillingOrderItem]) -> OrderView:
    return OrderView(
        his_order_id=o.his_order_id,
        card_no=o.card_no,
        visit_no=o.visit_no,
        kind=o.kind,
        title=o.title,
        ordering_department=o.ordering_department,
        executing_department=o.executing_department,
        doctor_name=o.doctor_name,
        ordered_at=o.ordered_at,
        total_fen=o.total_fen,
        status=o.status,
        paid_channel=o.paid_channel,
        payment_id=o.payment_id,
        execution_state=o.execution_state,
        executed_at=o.executed_at,
        items=tuple(_item_view(i) for i in items),
    )


def _payment_view(p: m.BillingPayment, order_ids: Sequence[str] = ()) -> PaymentView:
    return PaymentView(
        payment_id=p.id,
        out_trade_no=p.out_trade_no,
        channel=p.channel,
        purpose=p.purpose,
        card_no=p.card_no,
        openid=p.openid,
        description=p.description,
        total_fen=p.total_fen,
        insurance_fen=p.insurance_fen,
        amount_fen=p.amount_fen,
        refunded_fen=p.refunded_fen,
        state=p.state,
        his_state=p.his_state,
        his_settlement_id=p.his_settlement_id,
        his_failure_code=p.his_failure_code,
        transaction_id=p.transaction_id,
        flagged=p.flagged,
        flag_reason=p.flag_reason,
        created_at=p.created_at,
        expires_at=p.expires_at,
        paid_at=p.paid_at,
        settled_at=p.settled_at,
        order_ids=tuple(order_ids),
    )


def _refund_view(r: m.BillingRefund) -> RefundView:
    return RefundView(
        refund_id=r.id,
        payment_id=r.payment_id,
        out_refund_no=r.out_refund_no,
        amount_fen=r.amount_fen,
        kind=r.kind,
        reason=r.reason,
        reason_text=r.reason_text,
        actor=r.actor,
        item_ids=tuple(r.item_ids or ()),
        state=r.state,
        his_state=r.his_state,
        wechat_refund_id=r.refund_id,
        created_at=r.created_at,
        succeeded_at=r.succeeded_at,
    )


def _check_ids(ids: Sequence[str], *, limit: int) -> list[str]:
    out = [str(i) for i in ids]
    if not out:
        raise errors.NothingSelected
    if len(out) > limit or len(set(out)) != len(out) or not all(HIS_ID.fullmatch(i) for i in out):
        raise errors.SelectionInvalid
    return out


# --------------------------------------------------------------------------- orders


async def refresh_orders(
    session: AsyncSession, *, his: HisGateway, card_no: str, now: datetime
) -> int:
    """Bring the card's unpaid orders from the HIS into the mirror; orders we listed as
    unpaid that the HIS no longer lists become ``void`` (withdrawn or paid elsewhere).
    Returns how many unpaid orders the HIS listed. ``BillingUnavailable`` if it did not
    answer (the mirror is left as it was)."""
    try:
        orders = await his.unpaid_orders(card_no=card_no)
    except HisUnavailable as exc:
        raise _his_call_failed(exc) from exc
    except HisRejected as exc:
        raise errors.OrderNotFound(exc.code) from exc
    for o in orders:
        values = {
            "card_no": o.card_no,
            "visit_no": o.visit_no or "",
            "kind": o.kind.value if hasattr(o.kind, "value") else str(o.kind),
            "title": o.title[:100],
            "ordering_department": o.ordering_department[:64],
            "executing_department": o.executing_department[:64],
            "doctor_name": o.doctor_name[:32],
            "ordered_at": o.created_at,
            "total_fen": o.total_fen,
            "refreshed_at": now,
        }
        inserted = await repo.insert_order(
            session,
            {
                "his_order_id": o.order_id,
                "status": m.ORDER_UNPAID,
                "execution_state": "pending",
                **values,
            },
        )
        row = await repo.order_by_his_id(session, o.order_id)
        assert row is not None
        if not inserted:
            # Still unpaid in the HIS: its details may have changed (the doctor edited it).
            await repo.update_unpaid_order(
                session, o.order_id, {**values, "status": m.ORDER_UNPAID}
            )
        for item in o.items:
            await repo.insert_item(
                session,
                {
                    "order_id": row.id,
                    "his_item_id": item.item_id,
                    "name": item.name[:100],
                    "quantity": item.quantity,
                    "unit": item.unit[:16],
                    "unit_price_fen": item.unit_price_fen,
                    "amount_fen": item.amount_fen,
                    "status": m.ITEM_BILLED,
                },
            )
    await repo.void_missing_unpaid(session, card_no, [o.order_id for o in orders], now)
    await session.flush()
    return len(orders)


async def _order_views(session: AsyncSession, rows: Sequence[m.BillingOrder]) -> list[OrderView]:
    items = await repo.items_of_orders(session, [o.id for o in rows])
    return [_order_view(o, items.get(o.id, [])) for o in rows]


async def pending_visits(session: AsyncSession, *, card_no: str) -> list[VisitGroup]:
    """The card's unpaid orders (from the mirror), grouped by HIS visit, newest visit first."""
    rows = await repo.orders_of_card(session, card_no, [m.ORDER_UNPAID])
    groups: dict[str, list[OrderView]] = {}
    for view in await _order_views(session, rows):
        groups.setdefault(view.visit_no, []).append(view)
    out = [
        VisitGroup(
            visit_no=k, orders=tuple(sorted(v, key=lambda o: (o.ordered_at, o.his_order_id)))
        )
        for k, v in groups.items()
    ]
    return sorted(out, key=lambda g: max(o.ordered_at for o in g.orders), reverse=True)


async def paid_orders(session: AsyncSession, *, card_no: str) -> list[OrderView]:
    rows = await repo.orders_of_card(session, card_no, [m.ORDER_PAID, m.ORDER_REFUNDED])
    return await _order_views(session, rows)


async def order_detail(
    session: AsyncSession, *, card_nos: Collection[str], his_order_id: str
) -> OrderDetail:
    """A (paid) order of one of these cards with its payments, refunds and execution;
    ``OrderNotFound`` if it is not theirs (the same answer as for one that does not exist)."""
    row = (
        await repo.order_by_his_id(session, his_order_id)
        if HIS_ID.fullmatch(his_order_id)
        else None
    )
    if row is None or row.card_no not in card_nos:
        raise errors.OrderNotFound
    card_no = row.card_no
    [view] = await _order_views(session, [row])
    payments = [
        p for p in await repo.payments_of_orders(session, [his_order_id]) if p.card_no == card_no
    ]
    refunds = await repo.refunds_of_payments(session, [p.id for p in payments])
    return OrderDetail(
        order=view,
        payments=tuple(_payment_view(p) for p in payments),
        refunds=tuple(_refund_view(r) for r in refunds),
    )


async def pre_settle(
    session: AsyncSession, *, his: HisGateway, card_no: str, order_ids: Sequence[str]
) -> PreSettlementView:
    """The HIS's pre-settlement of these orders of the card (the amount a payment charges)."""
    ids = _check_ids(order_ids, limit=MAX_ORDERS)
    mirror = {o.his_order_id: o for o in await repo.orders_by_his_ids(session, ids)}
    if any(i not in mirror for i in ids):
        # Not heard of yet (the event feed is behind): ask the HIS for the card's orders.
        await refresh_orders(session, his=his, card_no=card_no, now=clock_now())
        mirror = {o.his_order_id: o for o in await repo.orders_by_his_ids(session, ids)}
    for order_id in ids:
        row = mirror.get(order_id)
        if row is None or row.card_no != card_no:
            raise errors.OrderNotFound
        if row.status != m.ORDER_UNPAID:
            raise errors.OrdersNotPayable
    try:
        pre = await his.pre_settle(card_no=card_no, order_ids=ids)
    except HisUnavailable as exc:
        raise _his_call_failed(exc) from exc
    except HisRejected as exc:
        if exc.code == "not_found":
            raise errors.OrderNotFound(exc.code) from exc
        raise errors.OrdersNotPayable(exc.code) from exc
    return PreSettlementView(
        card_no=pre.card_no,
        card_type=str(pre.card_type.value if hasattr(pre.card_type, "value") else pre.card_type),
        order_ids=tuple(pre.order_ids),
        total_fen=pre.total_fen,
        insurance_fen=pre.insurance_fen,
        self_pay_fen=pre.self_pay_fen,
    )


# --------------------------------------------------------------------------- payments


async def create_payment(
    session: AsyncSession,
    *,
    his: HisGateway,
    card_no: str,
    order_ids: Sequence[str],
    channel: str,
    actor: str,
    now: datetime,
    openid: str | None = None,
    card_id: int | None = None,
    store_id: str | None = None,
    device_id: str | None = None,
    description: str | None = None,
    payment_minutes: int = DEFAULT_PAYMENT_MINUTES,
) -> PaymentView:
    """Start a payment of these orders of the card: the amount is the HIS pre-settlement's
    self-pay share. Writes the payment, its orders, a history row and the query job that
    watches it until final. Nothing is sent to WeChat here (``place_wechat_order``)."""
    if channel not in m.CHANNELS:
        raise errors.ChannelInvalid
    if channel == m.JSAPI and not openid:
        raise errors.ChannelInvalid("JSAPI needs the payer's openid")
    pre = await pre_settle(session, his=his, card_no=card_no, order_ids=order_ids)
    for earlier in await repo.payments_of_orders(session, pre.order_ids):
        if earlier.state == m.PAY_PAID and earlier.his_state == m.HIS_PENDING:
            # Paid a moment ago and settling: a second payment would only be refunded.
            raise errors.OrdersNotPayable("paid, settling")
    try:
        amount = check_fen(pre.self_pay_fen, allow_zero=False)
        check_fen(pre.total_fen)
    except MoneyError as exc:
        raise errors.NothingToPay if pre.self_pay_fen == 0 else errors.AmountInvalid() from exc
    mirror = {o.his_order_id: o for o in await repo.orders_by_his_ids(session, pre.order_ids)}
    titles = [mirror[i].title for i in pre.order_ids if i in mirror]
    text = description or (f"{titles[0]}" + (f" 等{len(titles)}项" if len(titles) > 1 else ""))
    row = m.BillingPayment(
        out_trade_no=merchant_number("P", at=now),
        channel=channel,
        purpose=m.PURPOSE_ORDERS,
        card_no=card_no,
        card_id=card_id,
        openid=openid,
        visit_no=next((mirror[i].visit_no for i in pre.order_ids if i in mirror), None) or None,
        description=text[:120],
        total_fen=pre.total_fen,
        insurance_fen=pre.insurance_fen,
        amount_fen=amount,
        state=m.PAY_PENDING,
        his_state=m.HIS_NOT_NEEDED,
        refunded_fen=0,
        refund_seq=0,
        store_id=store_id,
        device_id=device_id,
        actor=actor[:64],
        flagged=False,
        created_at=now,
        expires_at=now + timedelta(minutes=payment_minutes),
        updated_at=now,
    )
    session.add(row)
    await session.flush()
    for position, order_id in enumerate(pre.order_ids):
        session.add(
            m.BillingPaymentOrder(
                payment_id=row.id,
                his_order_id=order_id,
                position=position,
                total_fen=mirror[order_id].total_fen if order_id in mirror else 0,
            )
        )
    await repo.record_event(
        session,
        payment_id=row.id,
        key=f"payment:{row.id}:pending",
        kind="payment.created",
        source="patient" if actor.startswith("patient:") else "staff",
        actor=actor,
        at=now,
        to_state=m.PAY_PENDING,
        detail={
            "channel": channel,
            "amount_fen": amount,
            "total_fen": pre.total_fen,
            "insurance_fen": pre.insurance_fen,
            "order_ids": list(pre.order_ids),
        },
    )
    await outbox.enqueue(
        session,
        QUERY_PAYMENT_JOB,
        payment_id=row.id,
        run_after=now + timedelta(seconds=QUERY_BACKOFF[0]),
        dedupe_key=f"{QUERY_PAYMENT_JOB}:{row.id}",
        max_attempts=60,
    )
    await session.flush()
    return _payment_view(row, pre.order_ids)


async def create_registration_payment(
    session: AsyncSession,
    *,
    card_no: str,
    card_id: int,
    openid: str,
    amount_fen: int,
    description: str,
    expires_at: datetime,
    now: datetime,
) -> PaymentView:
    """Start the JSAPI payment of a registration fee (booking's ``at_booking`` mode). The
    amount is the schedule's fee as booking recorded it (never the client's); it expires
    with the hold. No HIS order is linked and none is settled: when paid, the
    ``booking.fee_paid`` job confirms the booking (whose HIS registration then carries the
    booking reference; the fee is in billing's ledger with purpose ``registration``)."""
    try:
        amount = check_fen(amount_fen, allow_zero=False)
    except MoneyError as exc:
        raise errors.AmountInvalid(str(exc)) from exc
    actor = f"patient:{openid}"[:64]
    row = m.BillingPayment(
        out_trade_no=merchant_number("G", at=now),
        channel=m.JSAPI,
        purpose=m.PURPOSE_REGISTRATION,
        card_no=card_no,
        card_id=card_id,
        openid=openid,
        visit_no=None,
        description=description[:120],
        total_fen=amount,
        insurance_fen=0,
        amount_fen=amount,
        state=m.PAY_PENDING,
        his_state=m.HIS_NOT_NEEDED,
        refunded_fen=0,
        refund_seq=0,
        actor=actor,
        flagged=False,
        created_at=now,
        expires_at=expires_at,
        updated_at=now,
    )
    session.add(row)
    await session.flush()
    await repo.record_event(
        session,
        payment_id=row.id,
        key=f"payment:{row.id}:pending",
        kind="payment.created",
        source="patient",
        actor=actor,
        at=now,
        to_state=m.PAY_PENDING,
        detail={"channel": m.JSAPI, "amount_fen": amount, "purpose": m.PURPOSE_REGISTRATION},
    )
    await outbox.enqueue(
        session,
        QUERY_PAYMENT_JOB,
        payment_id=row.id,
        run_after=now + timedelta(seconds=QUERY_BACKOFF[0]),
        dedupe_key=f"{QUERY_PAYMENT_JOB}:{row.id}",
        max_attempts=60,
    )
    await session.flush()
    return _payment_view(row)


async def close_payment_soon(session: AsyncSession, *, payment_id: int, now: datetime) -> None:
    """Queue a query that closes the WeChat order of a payment nobody should pay any more
    (a released or cancelled hold); a payment that went through anyway is applied as paid."""
    await outbox.enqueue(
        session,
        QUERY_PAYMENT_JOB,
        payment_id=payment_id,
        close=True,
        dedupe_key=f"{QUERY_PAYMENT_JOB}:{payment_id}:close",
        max_attempts=60,
    )


async def place_wechat_order(
    session: AsyncSession,
    *,
    pay: WeChatPay,
    payment_id: int,
    now: datetime,
    client_ip: str | None = None,
    auth_code: str | None = None,
) -> PlacedOrder:
    """Place the payment with WeChat Pay by its channel. JSAPI: the pay params for the
    phone; NATIVE: the ``code_url``; MICROPAY: charge ``auth_code`` now and apply the
    outcome (as a notify would). ``BillingUnavailable`` if WeChat did not answer (the query
    job finds out what happened)."""
    row = await repo.payment(session, payment_id)
    if row is None:
        raise errors.PaymentNotFound
    if row.state != m.PAY_PENDING:
        return PlacedOrder(payment_id=row.id, channel=row.channel, state=row.state)
    try:
        if row.channel == m.JSAPI:
            if row.prepay_id is None:
                assert row.openid is not None
                row.prepay_id = await pay.create_jsapi_order(
                    JsapiOrder(
                        out_trade_no=row.out_trade_no,
                        description=row.description,
                        amount_fen=row.amount_fen,
                        openid=row.openid,
                        attach=f"payment:{row.id}",
                        expires_at=row.expires_at,
                        payer_client_ip=client_ip,
                    )
                )
                row.updated_at = now
                await session.flush()
            params = pay.jsapi_pay_params(row.prepay_id).as_bridge_dict()
            return PlacedOrder(payment_id=row.id, channel=row.channel, pay_params=params)
        if row.channel == m.NATIVE:
            if row.code_url is None:
                row.code_url = await pay.create_native_order(
                    NativeOrder(
                        out_trade_no=row.out_trade_no,
                        description=row.description,
                        amount_fen=row.amount_fen,
                        attach=f"payment:{row.id}",
                        expires_at=row.expires_at,
                    )
                )
                row.updated_at = now
                await session.flush()
            return PlacedOrder(payment_id=row.id, channel=row.channel, code_url=row.code_url)
    except PayUnavailable as exc:
        raise errors.BillingUnavailable(f"WeChat Pay: {exc.vendor_code}") from exc
    except PayRejected as exc:
        raise errors.PayRefused(exc.reason, reason=exc.reason) from exc
    if not auth_code:
        raise errors.ChannelInvalid("MICROPAY needs the payment code")
    # MICROPAY in one transaction (callers holding a request open use the three steps
    # below instead: the adapter may poll for ~30 s while the patient types a password).
    charge = code_charge(row, auth_code=auth_code, client_ip=client_ip)
    outcome = await charge_code(pay, charge)
    state = await apply_code_outcome(session, outcome=outcome, now=now)
    return PlacedOrder(payment_id=row.id, channel=row.channel, state=state)


@dataclass(frozen=True)
class CodeCharge:
    """A payment-code charge to make with WeChat, outside any open transaction."""

    payment_id: int
    order: CodePayOrder


@dataclass(frozen=True)
class CodeOutcome:
    """What WeChat said of a payment-code charge: paid (``trade``), refused for good
    (``rejected``), or no answer (``unavailable``: the query job finds out)."""

    payment_id: int
    trade: Payment | None = None
    rejected: PayRejected | None = None
    unavailable: PayUnavailable | None = None


def code_charge(
    row: m.BillingPayment, *, auth_code: str, client_ip: str | None = None
) -> CodeCharge:
    if row.channel != m.MICROPAY:
        raise errors.ChannelInvalid("only MICROPAY payments charge a payment code")
    return CodeCharge(
        payment_id=row.id,
        order=CodePayOrder(
            out_trade_no=row.out_trade_no,
            description=row.description,
            amount_fen=row.amount_fen,
            auth_code=auth_code,
            store_id=row.store_id or "window",
            device_id=row.device_id,
            payer_client_ip=client_ip or "127.0.0.1",
            attach=f"payment:{row.id}",
        ),
    )


async def prepare_code_charge(
    session: AsyncSession, *, payment_id: int, auth_code: str, client_ip: str | None = None
) -> CodeCharge | None:
    """Step 1 of a window payment after ``create_payment`` (then commit): the charge to
    make, or None if the payment is no longer pending."""
    row = await repo.payment(session, payment_id)
    if row is None:
        raise errors.PaymentNotFound
    if row.state != m.PAY_PENDING:
        return None
    return code_charge(row, auth_code=auth_code, client_ip=client_ip)


async def charge_code(pay: WeChatPay, charge: CodeCharge) -> CodeOutcome:
    """Step 2: charge the code. No session: the adapter polls WeChat while the patient
    types a password and reverses the order at its deadline, which can take ~30 s, and
    no database transaction may be held open that long."""
    try:
        trade = await pay.pay_by_code(charge.order)
    except PayUnavailable as exc:
        return CodeOutcome(payment_id=charge.payment_id, unavailable=exc)
    except PayRejected as exc:
        return CodeOutcome(payment_id=charge.payment_id, rejected=exc)
    return CodeOutcome(payment_id=charge.payment_id, trade=trade)


async def apply_code_outcome(session: AsyncSession, *, outcome: CodeOutcome, now: datetime) -> str:
    """Step 3, in a new short transaction: apply the outcome (as a notify would) and return
    the payment's state. A refusal moves a still-pending payment to ``failed`` and then
    raises ``PayRefused`` — the caller catches it and commits, so ``failed`` is kept. No
    answer raises ``BillingUnavailable`` and changes nothing."""
    row = await repo.payment(session, outcome.payment_id)
    if row is None:
        raise errors.PaymentNotFound
    if outcome.unavailable is not None:
        raise errors.BillingUnavailable(
            f"WeChat Pay: {outcome.unavailable.vendor_code}"
        ) from outcome.unavailable
    if outcome.rejected is not None:
        exc = outcome.rejected
        await _finish_unpaid(
            session,
            row,
            to_state=m.PAY_FAILED,
            source="micropay",
            now=now,
            detail={"reason": exc.reason, "vendor_code": exc.vendor_code},
        )
        raise errors.PayRefused(exc.reason, reason=exc.reason) from exc
    assert outcome.trade is not None
    await apply_trade(
        session,
        payment_id=row.id,
        observed=outcome.trade,
        source="micropay",
        now=now,
        actor=row.actor,
    )
    fresh = await repo.payment(session, row.id)
    assert fresh is not None
    return fresh.state


async def start_payment(
    session: AsyncSession,
    *,
    his: HisGateway,
    pay: WeChatPay,
    card_no: str,
    order_ids: Sequence[str],
    channel: str,
    actor: str,
    now: datetime,
    **options: Any,
) -> tuple[PaymentView, PlacedOrder]:
    """``create_payment`` then ``place_wechat_order`` (JSAPI pages; NATIVE QR codes)."""
    place = {k: options.pop(k) for k in ("client_ip", "auth_code") if k in options}
    view = await create_payment(
        session,
        his=his,
        card_no=card_no,
        order_ids=order_ids,
        channel=channel,
        actor=actor,
        now=now,
        **options,
    )
    placed = await place_wechat_order(
        session, pay=pay, payment_id=view.payment_id, now=now, **place
    )
    return view, placed


async def payment_detail(
    session: AsyncSession, *, card_nos: Collection[str], payment_id: int
) -> PaymentDetail:
    """One payment of one of these cards with its orders and refunds; ``PaymentNotFound`` if
    it is not theirs (the same answer as for one that does not exist)."""
    row = await repo.payment(session, payment_id)
    if row is None or row.card_no not in card_nos:
        raise errors.PaymentNotFound
    order_ids = await repo.order_ids_of_payment(session, row.id)
    orders = await repo.orders_by_his_ids(session, order_ids)
    by_id = {o.his_order_id: o for o in orders}
    views = await _order_views(session, [by_id[i] for i in order_ids if i in by_id])
    refunds = await repo.refunds_of_payments(session, [row.id])
    return PaymentDetail(
        payment=_payment_view(row, order_ids),
        orders=tuple(views),
        refunds=tuple(_refund_view(r) for r in refunds),
    )


async def payments_of_card(session: AsyncSession, *, card_no: str) -> list[PaymentView]:
    return [_payment_view(p) for p in await repo.payments_of_card(session, card_no)]


async def search_payments(
    session: AsyncSession,
    *,
    out_trade_no: str | None = None,
    transaction_id: str | None = None,
    card_no: str | None = None,
    start_at: datetime | None = None,
    end_at: datetime | None = None,
    limit: int = 100,
) -> list[PaymentView]:
    """Payments by merchant number, WeChat transaction id, card or creation time (staff)."""
    rows = await repo.search_payments(
        session,
        out_trade_no=out_trade_no,
        transaction_id=transaction_id,
        card_no=card_no,
        start_at=start_at,
        end_at=end_at,
        limit=limit,
    )
    return [_payment_view(p) for p in rows]


async def payment_events(session: AsyncSession, *, payment_id: int) -> list[EventView]:
    return [
        EventView(
            event_id=e.id,
            payment_id=e.payment_id,
            refund_id=e.refund_id,
            kind=e.kind,
            from_state=e.from_state,
            to_state=e.to_state,
            source=e.source,
            actor=e.actor,
            detail=dict(e.detail or {}),
            at=e.at,
        )
        for e in await repo.events_of(session, payment_id)
    ]


# --------------------------------------------------------------------------- notify and query


_TRADE_TO_STATE = {
    TradeState.SUCCESS: m.PAY_PAID,
    TradeState.REFUND: m.PAY_PAID,
    TradeState.CLOSED: m.PAY_CLOSED,
    TradeState.REVOKED: m.PAY_FAILED,
    TradeState.PAYERROR: m.PAY_FAILED,
}


async def _flag(
    session: AsyncSession,
    row: m.BillingPayment,
    *,
    reason: str,
    source: str,
    key: str,
    now: datetime,
    detail: dict[str, Any],
) -> None:
    await repo.flag_payment(session, row.id, reason, now)
    await repo.record_event(
        session,
        payment_id=row.id,
        key=key,
        kind="payment.mismatch",
        source=source,
        actor=f"system:{source}",
        at=now,
        detail={"reason": reason, **detail},
    )
    log.warning(
        "payment %s: %s reported %s; no state change",
        row.out_trade_no,
        source,
        reason,
        extra={"operation": "billing.mismatch", "outcome": reason},
    )


async def apply_trade(
    session: AsyncSession,
    *,
    payment_id: int,
    observed: Payment,
    source: str,
    now: datetime,
    observation_key: str | None = None,
    actor: str | None = None,
) -> bool:
    """Apply what WeChat Pay says of a payment (notify, query, codepay): the one transition
    code. True if the payment's state changed. A report that disagrees with our payment
    (merchant number, amount, payer) changes nothing: it is recorded and the payment
    flagged."""
    row = await repo.payment(session, payment_id)
    if row is None:
        raise errors.PaymentNotFound
    before = row.state
    key = observation_key or f"{source}:{row.id}:{observed.state.value}:{now.isoformat()}"
    target = _TRADE_TO_STATE.get(observed.state)
    detail: dict[str, Any] = {
        "trade_state": observed.state.value,
        "transaction_id": observed.transaction_id,
        "amount_fen": observed.amount_fen,
    }
    if observed.out_trade_no != row.out_trade_no:
        await _flag(
            session,
            row,
            reason="out_trade_no_mismatch",
            source=source,
            key=key,
            now=now,
            detail=detail,
        )
        return False
    if target == m.PAY_PAID:
        payer_total = observed.payer_total_fen
        if observed.amount_fen != row.amount_fen or (
            payer_total is not None and payer_total > observed.amount_fen
        ):
            await _flag(
                session,
                row,
                reason="amount_mismatch",
                source=source,
                key=key,
                now=now,
                detail=detail,
            )
            return False
        if (
            row.openid
            and observed.openid
            and observed.openid != row.openid
            and row.channel == m.JSAPI
        ):
            await _flag(
                session,
                row,
                reason="payer_mismatch",
                source=source,
                key=key,
                now=now,
                detail=detail,
            )
            return False
        changed = await repo.move_payment(
            session,
            row.id,
            # A late success after we gave up on it (closed/failed) is still money taken.
            from_states=[m.PAY_PENDING, m.PAY_CLOSED, m.PAY_FAILED],
            values={
                "state": m.PAY_PAID,
                "paid_at": observed.success_at or now,
                "transaction_id": observed.transaction_id,
                "his_state": m.HIS_PENDING,
                "updated_at": now,
            },
        )
        if changed:
            await repo.record_event(
                session,
                payment_id=row.id,
                key=f"payment:{row.id}:paid",
                kind="payment.paid",
                source=source,
                actor=actor or f"system:{source}",
                at=now,
                from_state=before,
                to_state=m.PAY_PAID,
                detail={**detail, "observation": key},
            )
            if row.purpose == m.PURPOSE_REGISTRATION:
                # A registration fee settles no HIS order: booking confirms (or refunds)
                # the booking it pays for, once (``booking.fee_paid``).
                await session.execute(
                    sa_update(m.BillingPayment)
                    .where(m.BillingPayment.id == row.id)
                    .values(his_state=m.HIS_NOT_NEEDED)
                )
                await outbox.enqueue(
                    session,
                    REGISTRATION_PAID_JOB,
                    payment_id=row.id,
                    dedupe_key=f"{REGISTRATION_PAID_JOB}:{row.id}",
                    max_attempts=40,
                )
                return True
            await outbox.enqueue(
                session,
                SETTLE_JOB,
                payment_id=row.id,
                dedupe_key=f"{SETTLE_JOB}:{row.id}",
                max_attempts=40,
            )
            return True
    elif target in (m.PAY_CLOSED, m.PAY_FAILED) and await _finish_unpaid(
        session, row, to_state=target, source=source, now=now, detail=detail, observation=key
    ):
        return True
    await repo.record_event(
        session,
        payment_id=row.id,
        key=key,
        kind="payment.observed",
        source=source,
        actor=actor or f"system:{source}",
        at=now,
        detail=detail,
    )
    return False


async def _finish_unpaid(
    session: AsyncSession,
    row: m.BillingPayment,
    *,
    to_state: str,
    source: str,
    now: datetime,
    detail: dict[str, Any],
    observation: str | None = None,
) -> bool:
    changed = await repo.move_payment(
        session,
        row.id,
        from_states=[m.PAY_PENDING],
        values={"state": to_state, "closed_at": now, "updated_at": now},
    )
    if changed:
        await repo.record_event(
            session,
            payment_id=row.id,
            key=f"payment:{row.id}:{to_state}",
            kind=f"payment.{to_state}",
            source=source,
            actor=f"system:{source}",
            at=now,
            from_state=m.PAY_PENDING,
            to_state=to_state,
            detail={**detail, **({"observation": observation} if observation else {})},
        )
    return changed


async def on_payment_succeeded(session: AsyncSession, event: pay_events.PaymentSucceeded) -> None:
    """WeChat's payment notify (verified by the notify route, stored once in the inbox)."""
    row = await repo.payment_by_trade_no(session, event.out_trade_no)
    if row is None:
        # Not ours: nothing in billing changes (the inbox keeps the notification).
        log.warning(
            "payment notify %s for an unknown merchant number; ignored",
            event.notify_id,
            extra={"operation": "billing.notify", "outcome": "unknown_out_trade_no"},
        )
        return
    observed = Payment(
        out_trade_no=event.out_trade_no,
        state=TradeState.SUCCESS,
        state_desc="notify",
        amount_fen=event.amount_fen,
        transaction_id=event.transaction_id,
        trade_type=event.trade_type,
        payer_total_fen=event.payer_total_fen,
        openid=event.openid,
        success_at=event.success_at,
        attach=event.attach,
        bank_type=event.bank_type,
    )
    if event.trade_type and event.trade_type != row.channel:
        await _flag(
            session,
            row,
            reason="trade_type_mismatch",
            source="notify",
            key=f"notify:{event.notify_id}",
            now=clock_now(),
            detail={"trade_type": event.trade_type},
        )
        return
    await apply_trade(
        session,
        payment_id=row.id,
        observed=observed,
        source="notify",
        now=clock_now(),
        observation_key=f"notify:{event.notify_id}",
    )


async def query_payment(
    session: AsyncSession, *, pay: WeChatPay, payment_id: int, now: datetime, close: bool = False
) -> str:
    """Ask WeChat about a started payment and apply the answer; after its expiry (or with
    ``close``) close the WeChat order so it can never be paid. Returns the payment's state.
    ``PayUnavailable`` propagates (the job retries)."""
    row = await repo.payment(session, payment_id)
    if row is None:
        raise errors.PaymentNotFound
    if row.state in m.PAY_FINAL:
        return row.state
    try:
        observed = await pay.query_order(row.out_trade_no)
    except PayRejected as exc:
        if exc.reason != "order_not_found":
            raise
        # WeChat never had it (the phone never placed it, or it failed before).
        if close or now >= row.expires_at:
            await _finish_unpaid(
                session,
                row,
                to_state=m.PAY_CLOSED,
                source="query",
                now=now,
                detail={"trade_state": "NOT_FOUND"},
            )
        fresh = await repo.payment(session, payment_id)
        assert fresh is not None
        return fresh.state
    await apply_trade(
        session,
        payment_id=row.id,
        observed=observed,
        source="query",
        now=now,
        observation_key=f"query:{row.id}:{observed.state.value}",
    )
    fresh = await repo.payment(session, payment_id)
    assert fresh is not None
    if (
        fresh.state == m.PAY_PENDING
        and (close or now >= row.expires_at)
        and observed.state in (TradeState.NOTPAY, TradeState.USERPAYING, TradeState.ACCEPT)
    ):
        try:
            await pay.close_order(row.out_trade_no)
        except PayRejected as exc:
            if exc.reason != "order_paid":
                raise
        observed = await pay.query_order(row.out_trade_no)
        await apply_trade(
            session,
            payment_id=row.id,
            observed=observed,
            source="query",
            now=now,
            observation_key=f"query:{row.id}:{observed.state.value}:after_close",
        )
        fresh = await repo.payment(session, payment_id)
        assert fresh is not None
    return fresh.state


# --------------------------------------------------------------------------- the saga


async def _tell_card(
    session: AsyncSession, *, card_no: str, kind: str, data: dict[str, str], url: str, now: datetime
) -> None:
    for openid in await accounts.accounts_of_card_no(session, card_no=card_no):
        await queue_template(session, openid=openid, kind=kind, data=data, url=url, now=now)


def _local_time(at: datetime) -> str:
    return at.astimezone(get_clock().tz).strftime("%Y-%m-%d %H:%M")


def _masked(card_no: str) -> str:
    return f"{card_no[:2]}****{card_no[-4:]}" if len(card_no) > 6 else card_no


async def _mark_settled(
    session: AsyncSession,
    row: m.BillingPayment,
    *,
    settlement_id: str,
    order_ids: Sequence[str],
    now: datetime,
    base_url: str,
    detail: dict[str, Any],
) -> bool:
    changed = await repo.move_his_state(
        session,
        row.id,
        from_state=m.HIS_PENDING,
        values={
            "his_state": m.HIS_SETTLED,
            "his_settlement_id": settlement_id,
            "settled_at": now,
            "updated_at": now,
        },
    )
    if not changed:
        return False
    await repo.mark_orders_paid(
        session,
        order_ids,
        channel="wechat",
        payment_id=row.id,
        settlement_id=settlement_id,
        now=now,
    )
    await repo.record_event(
        session,
        payment_id=row.id,
        key=f"saga:{row.id}:settled",
        kind="settle.done",
        source="saga",
        actor="system:billing.settle",
        at=now,
        from_state=m.HIS_PENDING,
        to_state=m.HIS_SETTLED,
        detail={"settlement_id": settlement_id, **detail},
    )
    await _tell_card(
        session,
        card_no=row.card_no,
        kind="payment_received",
        data={
            "thing1": row.description[:20],
            "amount2": format_fen(row.amount_fen),
            "time3": _local_time(row.paid_at or now),
        },
        url=f"{base_url.rstrip('/')}/h5/payments/{row.id}",
        now=now,
    )
    return True


async def settle_payment(
    session: AsyncSession,
    *,
    his: HisGateway,
    payment_id: int,
    now: datetime,
    last_attempt: bool,
    base_url: str = "",
) -> str:
    """One step of the settlement saga. Returns ``settled``, ``failed`` (money going back),
    ``retry`` (the HIS did not answer: run again later) or the state it already had."""
    row = await repo.payment(session, payment_id)
    if row is None:
        raise errors.PaymentNotFound
    if row.state != m.PAY_PAID or row.his_state != m.HIS_PENDING:
        return row.his_state
    if row.refunded_fen >= row.amount_fen:
        # All of the money is going (or went) back before the HIS settled it (finance's
        # "refund through the payments saga" of an unsettled payment): settling now would
        # book the orders as paid although the patient has the money back.
        row.his_state = m.HIS_NOT_NEEDED
        await repo.record_event(
            session,
            payment_id=row.id,
            key=f"saga:{row.id}:refunded_before_settled",
            kind="settle.skipped_refunded",
            source="saga",
            actor="system:billing.settle",
            at=now,
            detail={"refunded_fen": row.refunded_fen},
        )
        return m.HIS_NOT_NEEDED
    order_ids = await repo.order_ids_of_payment(session, row.id)
    refusal: str | None = None
    try:
        done = await his.settle(
            card_no=row.card_no,
            order_ids=order_ids,
            payment_ref=row.out_trade_no,
            self_pay_fen=row.amount_fen,
        )
        await _mark_settled(
            session,
            row,
            settlement_id=done.settlement_id,
            order_ids=order_ids,
            now=now,
            base_url=base_url,
            detail={"by": "settle"},
        )
        return m.HIS_SETTLED
    except HisRejected as exc:
        refusal = exc.code
    except HisUnavailable as exc:
        await repo.record_event(
            session,
            payment_id=row.id,
            key=f"saga:{row.id}:unavailable:{now.isoformat()}",
            kind="settle.unavailable",
            source="saga",
            actor="system:billing.settle",
            at=now,
            detail={"code": exc.code, "last_attempt": last_attempt},
        )
        if not last_attempt:
            return "retry"
    # A refusal, or the retries are spent: did the HIS settle it after all?
    try:
        found = await his.settlement(row.out_trade_no)
    except HisUnavailable:
        return "retry"
    if found is not None:
        await _mark_settled(
            session,
            row,
            settlement_id=found.settlement_id,
            order_ids=order_ids,
            now=now,
            base_url=base_url,
            detail={"by": "settlement_query", "refusal": refusal},
        )
        return m.HIS_SETTLED
    reason = refusal or "settlement_failed"
    moved = await repo.move_his_state(
        session,
        row.id,
        from_state=m.HIS_PENDING,
        values={"his_state": m.HIS_FAILED, "his_failure_code": reason[:64], "updated_at": now},
    )
    if not moved:
        fresh = await repo.payment(session, row.id)
        return fresh.his_state if fresh else m.HIS_FAILED
    await repo.record_event(
        session,
        payment_id=row.id,
        key=f"saga:{row.id}:failed",
        kind="settle.failed",
        source="saga",
        actor="system:billing.settle",
        at=now,
        from_state=m.HIS_PENDING,
        to_state=m.HIS_FAILED,
        detail={"reason": reason},
    )
    left = row.amount_fen - row.refunded_fen
    if left > 0:
        await start_refund(
            session,
            payment_id=row.id,
            amount_fen=left,
            kind=m.KIND_DOUBLE if reason == _DOUBLE else m.KIND_AUTO,
            reason=reason,
            actor="system:billing.settle",
            now=now,
        )
    return m.HIS_FAILED


# --------------------------------------------------------------------------- refunds


async def start_refund(
    session: AsyncSession,
    *,
    payment_id: int,
    amount_fen: int,
    kind: str,
    reason: str,
    actor: str,
    now: datetime,
    item_ids: Sequence[str] = (),
    reason_text: str | None = None,
    his_confirm: bool = False,
) -> int:
    """Start a refund of a paid payment: its number is fixed now
    (``{out_trade_no}R{seq:02d}``) and its amount reserved in one guarded statement
    (``RefundExceedsPayment`` if more than is left). With ``his_confirm`` the HIS refunds
    the items first; then WeChat (outbox, the same number on every retry). Returns its id."""
    try:
        amount = check_fen(amount_fen, allow_zero=False)
    except MoneyError as exc:
        raise errors.AmountInvalid(str(exc)) from exc
    row = await repo.payment(session, payment_id)
    if row is None:
        raise errors.PaymentNotFound
    if row.state != m.PAY_PAID:
        raise errors.PaymentNotPaid
    seq = await repo.reserve_refund(session, row.id, amount, now)
    if seq is None:
        raise errors.RefundExceedsPayment(left_fen=row.amount_fen - row.refunded_fen)
    refund = m.BillingRefund(
        payment_id=row.id,
        seq=seq,
        out_refund_no=f"{row.out_trade_no}R{seq:02d}",
        amount_fen=amount,
        kind=kind[:24],
        reason=reason[:64],
        reason_text=(reason_text or None) and reason_text[:200],
        actor=actor[:64],
        item_ids=list(item_ids),
        state=m.REF_CREATED,
        his_state=m.HIS_PENDING if his_confirm else m.HIS_NOT_NEEDED,
        created_at=now,
        updated_at=now,
    )
    session.add(refund)
    await session.flush()
    await repo.record_event(
        session,
        payment_id=row.id,
        refund_id=refund.id,
        key=f"refund:{refund.id}:created",
        kind="refund.created",
        source="staff" if not actor.startswith(("system:", "patient:")) else actor.split(":", 1)[0],
        actor=actor,
        at=now,
        to_state=m.REF_CREATED,
        detail={
            "out_refund_no": refund.out_refund_no,
            "amount_fen": amount,
            "kind": kind,
            "reason": reason,
            "item_ids": list(item_ids),
        },
    )
    job = HIS_REFUND_JOB if his_confirm else REFUND_JOB
    await outbox.enqueue(
        session, job, refund_id=refund.id, dedupe_key=f"{job}:{refund.id}", max_attempts=40
    )
    return refund.id


async def refundable_items(
    session: AsyncSession, *, his: HisGateway, card_no: str
) -> list[RefundableView]:
    """Items the HIS lists as refundable (paid, not executed) that one of our payments of
    this card paid, and that no refund of ours is already taking back."""
    try:
        items = await his.refundable_items(card_no=card_no)
    except HisUnavailable as exc:
        raise _his_call_failed(exc) from exc
    except HisRejected as exc:
        raise errors.ItemsNotRefundable(exc.code) from exc
    ours = {
        p.out_trade_no: p
        for p in await repo.payments_of_card(session, card_no)
        if p.state == m.PAY_PAID and p.his_state == m.HIS_SETTLED
    }
    busy = {
        i.his_item_id
        for i in await repo.items_by_his_ids(session, [i.item_id for i in items])
        if i.refund_id is not None
    }
    return [
        RefundableView(
            his_item_id=i.item_id,
            his_order_id=i.order_id,
            name=i.name,
            quantity=i.quantity,
            amount_fen=i.amount_fen,
            self_pay_fen=i.self_pay_fen,
            payment_id=ours[i.payment_ref].id,
            out_trade_no=i.payment_ref,
        )
        for i in items
        if i.payment_ref in ours and i.item_id not in busy
    ]


async def request_item_refund(
    session: AsyncSession,
    *,
    his: HisGateway,
    card_no: str,
    item_ids: Sequence[str],
    actor: str,
    now: datetime,
    reason: str = "patient_request",
    reason_text: str | None = None,
) -> int:
    """Refund items of one of our payments that the HIS lists as refundable (not executed):
    the HIS confirms first (``refund_ref`` = our refund number), then WeChat. Returns the
    refund id. ``ItemsNotRefundable`` for anything else (executed, refunded, another card's,
    paid at the window, spread over two payments)."""
    ids = _check_ids(item_ids, limit=MAX_ITEMS)
    offer = {v.his_item_id: v for v in await refundable_items(session, his=his, card_no=card_no)}
    chosen = [offer.get(i) for i in ids]
    if any(v is None for v in chosen):
        raise errors.ItemsNotRefundable
    views = [v for v in chosen if v is not None]
    payments = {v.payment_id for v in views}
    if len(payments) != 1:
        raise errors.ItemsNotRefundable("items of one payment at a time")
    amount = sum(v.self_pay_fen for v in views)
    if amount <= 0:
        raise errors.AmountInvalid("nothing to give back: insurance paid these items")
    refund_id = await start_refund(
        session,
        payment_id=payments.pop(),
        amount_fen=amount,
        kind=m.KIND_ITEMS,
        reason=reason,
        actor=actor,
        now=now,
        item_ids=ids,
        reason_text=reason_text,
        his_confirm=True,
    )
    claimed = await repo.claim_items_for_refund(session, ids, refund_id)
    if claimed != len(ids):
        # Another refund took one of them meanwhile (or the mirror lacks it): refuse all.
        raise errors.ItemsNotRefundable
    return refund_id


async def confirm_his_refund(
    session: AsyncSession, *, his: HisGateway, refund_id: int, now: datetime
) -> str:
    """The HIS step of an item refund. Returns the refund's HIS state, or ``retry``."""
    refund = await repo.refund(session, refund_id)
    if refund is None:
        raise errors.RefundNotFound
    if refund.his_state != m.HIS_PENDING:
        return refund.his_state
    row = await repo.payment(session, refund.payment_id)
    assert row is not None
    try:
        done = await his.refund(
            card_no=row.card_no, item_ids=list(refund.item_ids), refund_ref=refund.out_refund_no
        )
    except HisUnavailable:
        return "retry"
    except HisRejected as exc:
        if exc.code == "refund_ref_used":
            # The HIS already refunded under our number (its answer was lost): go on.
            done = HisRefund(
                refund_id="",
                refund_ref=refund.out_refund_no,
                card_no=row.card_no,
                item_ids=tuple(refund.item_ids),
                amount_fen=refund.amount_fen,
                channel=SettlementChannel.wechat,
                refunded_at=now,
            )
            return await _his_refunded(session, refund, row, done, now)
        if await repo.move_refund(
            session,
            refund.id,
            from_states=[m.REF_CREATED],
            values={
                "state": m.REF_REFUSED,
                "his_state": m.HIS_FAILED,
                "failure_code": exc.code[:64],
                "updated_at": now,
            },
        ):
            await repo.release_refund(session, row.id, refund.amount_fen, now)
            await repo.release_items(session, refund.id)
            await repo.record_event(
                session,
                payment_id=row.id,
                refund_id=refund.id,
                key=f"refund:{refund.id}:refused",
                kind="refund.refused",
                source="saga",
                actor="system:billing.his_refund",
                at=now,
                from_state=m.REF_CREATED,
                to_state=m.REF_REFUSED,
                detail={"his_code": exc.code},
            )
        return m.HIS_FAILED
    return await _his_refunded(session, refund, row, done, now)


async def _his_refunded(
    session: AsyncSession,
    refund: m.BillingRefund,
    row: m.BillingPayment,
    done: HisRefund,
    now: datetime,
) -> str:
    if done.amount_fen != refund.amount_fen:
        # The HIS decides what the items were worth: give back exactly that.
        delta = refund.amount_fen - done.amount_fen
        if delta > 0:
            await repo.release_refund(session, row.id, delta, now)
            refund.amount_fen = done.amount_fen
    if not await repo.move_refund_his(
        session,
        refund.id,
        from_state=m.HIS_PENDING,
        values={
            "his_state": m.HIS_REFUNDED,
            "his_refund_id": done.refund_id,
            "amount_fen": refund.amount_fen,
            "updated_at": now,
        },
    ):
        return m.HIS_REFUNDED
    refunded_orders = await repo.mark_items_refunded(session, list(refund.item_ids), refund.id, now)
    await repo.record_event(
        session,
        payment_id=row.id,
        refund_id=refund.id,
        key=f"refund:{refund.id}:his_refunded",
        kind="refund.his_refunded",
        source="saga",
        actor="system:billing.his_refund",
        at=now,
        detail={
            "his_refund_id": done.refund_id,
            "amount_fen": done.amount_fen,
            "orders_refunded": refunded_orders,
        },
    )
    order_ids = await repo.order_ids_of_payment(session, row.id)
    orders = await repo.orders_by_his_ids(session, order_ids)
    if orders and all(o.status == m.ORDER_REFUNDED for o in orders):
        await repo.move_his_state(
            session,
            row.id,
            from_state=m.HIS_SETTLED,
            values={"his_state": m.HIS_REFUNDED, "updated_at": now},
        )
    await outbox.enqueue(
        session,
        REFUND_JOB,
        refund_id=refund.id,
        dedupe_key=f"{REFUND_JOB}:{refund.id}",
        max_attempts=40,
    )
    return m.HIS_REFUNDED


async def send_refund(
    session: AsyncSession, *, pay: WeChatPay, refund_id: int, now: datetime
) -> str:
    """Ask WeChat for the refund (the same ``out_refund_no`` every time). Returns the
    refund's state; ``PayUnavailable`` propagates for a retry."""
    refund = await repo.refund(session, refund_id)
    if refund is None:
        raise errors.RefundNotFound
    if refund.state != m.REF_CREATED or refund.his_state == m.HIS_PENDING:
        return refund.state
    row = await repo.payment(session, refund.payment_id)
    assert row is not None
    try:
        answer = await pay.refund(
            RefundRequest(
                out_trade_no=row.out_trade_no,
                out_refund_no=refund.out_refund_no,
                refund_fen=refund.amount_fen,
                total_fen=row.amount_fen,
                reason=translate(f"billing_reason_{refund.reason}")[:80] if refund.reason else None,
            )
        )
    except PayRejected as exc:
        await repo.record_event(
            session,
            payment_id=row.id,
            refund_id=refund.id,
            key=f"refund:{refund.id}:rejected:{exc.vendor_code}",
            kind="refund.rejected",
            source="saga",
            actor="system:billing.refund",
            at=now,
            detail={"reason": exc.reason, "vendor_code": exc.vendor_code},
        )
        await repo.move_refund(
            session,
            refund.id,
            from_states=[m.REF_CREATED],
            values={
                "state": m.REF_ABNORMAL,
                "failure_code": (exc.vendor_code or exc.reason)[:64],
                "requested_at": now,
                "updated_at": now,
            },
        )
        return m.REF_ABNORMAL
    await repo.move_refund(
        session,
        refund.id,
        from_states=[m.REF_CREATED],
        values={"requested_at": now, "updated_at": now},
    )
    await apply_refund(
        session,
        refund_id=refund.id,
        observed=answer,
        source="request",
        now=now,
        observation_key=f"request:{refund.id}",
    )
    await outbox.enqueue(
        session,
        QUERY_REFUND_JOB,
        refund_id=refund.id,
        run_after=now + timedelta(seconds=5),
        dedupe_key=f"{QUERY_REFUND_JOB}:{refund.id}",
        max_attempts=60,
    )
    fresh = await repo.refund(session, refund.id)
    assert fresh is not None
    return fresh.state


_REFUND_TO_STATE = {
    RefundStatus.PROCESSING: m.REF_PROCESSING,
    RefundStatus.SUCCESS: m.REF_SUCCESS,
    RefundStatus.CLOSED: m.REF_CLOSED,
    RefundStatus.ABNORMAL: m.REF_ABNORMAL,
}
_REFUND_FROM = {
    m.REF_PROCESSING: [m.REF_CREATED],
    m.REF_SUCCESS: [m.REF_CREATED, m.REF_PROCESSING, m.REF_ABNORMAL],
    m.REF_CLOSED: [m.REF_CREATED, m.REF_PROCESSING, m.REF_ABNORMAL],
    m.REF_ABNORMAL: [m.REF_CREATED, m.REF_PROCESSING],
}


async def apply_refund(
    session: AsyncSession,
    *,
    refund_id: int,
    observed: Refund,
    source: str,
    now: datetime,
    observation_key: str | None = None,
    base_url: str = "",
) -> bool:
    """Apply what WeChat says of a refund (answer, notify, query): the one transition code.
    True if the refund's state changed."""
    refund = await repo.refund(session, refund_id)
    if refund is None:
        raise errors.RefundNotFound
    before = refund.state
    row = await repo.payment(session, refund.payment_id)
    assert row is not None
    key = (
        observation_key or f"{source}:refund:{refund.id}:{observed.status.value}:{now.isoformat()}"
    )
    detail = {
        "status": observed.status.value,
        "refund_id": observed.refund_id,
        "refund_fen": observed.refund_fen,
    }
    if (
        observed.out_refund_no != refund.out_refund_no
        or observed.out_trade_no != row.out_trade_no
        or observed.refund_fen != refund.amount_fen
    ):
        await _flag(
            session, row, reason="refund_mismatch", source=source, key=key, now=now, detail=detail
        )
        return False
    target = _REFUND_TO_STATE.get(observed.status)
    changed = False
    if target is not None and refund.state != target:
        values: dict[str, Any] = {
            "state": target,
            "refund_id": observed.refund_id,
            "updated_at": now,
        }
        if target == m.REF_SUCCESS:
            values["succeeded_at"] = observed.success_at or now
        changed = await repo.move_refund(
            session, refund.id, from_states=_REFUND_FROM[target], values=values
        )
    if not changed:
        await repo.record_event(
            session,
            payment_id=row.id,
            refund_id=refund.id,
            key=key,
            kind="refund.observed",
            source=source,
            actor=f"system:{source}",
            at=now,
            detail=detail,
        )
        return False
    await repo.record_event(
        session,
        payment_id=row.id,
        refund_id=refund.id,
        key=f"refund:{refund.id}:{target}",
        kind=f"refund.{target}",
        source=source,
        actor=f"system:{source}",
        at=now,
        from_state=before,
        to_state=target,
        detail={**detail, "observation": key},
    )
    if target == m.REF_CLOSED:
        await repo.release_refund(session, row.id, refund.amount_fen, now)
    if target == m.REF_SUCCESS:
        await _tell_card(
            session,
            card_no=row.card_no,
            kind="refund_made",
            data={
                # The reason first: WeChat shows 20 characters of each keyword.
                "thing1": translate(f"billing_reason_{refund.reason}")[:20],
                "amount2": format_fen(refund.amount_fen),
                "time3": _local_time(observed.success_at or now),
            },
            url=f"{base_url.rstrip('/')}/h5/payments/{row.id}",
            now=now,
        )
    return True


async def on_refund_settled(session: AsyncSession, event: pay_events.RefundSettled) -> None:
    """WeChat's refund notify (success, closed, abnormal)."""
    refund = await repo.refund_by_number(session, event.out_refund_no)
    if refund is None:
        log.warning(
            "refund notify %s for an unknown refund number; ignored",
            event.notify_id,
            extra={"operation": "billing.notify", "outcome": "unknown_out_refund_no"},
        )
        return
    observed = Refund(
        out_refund_no=event.out_refund_no,
        refund_id=event.refund_id,
        out_trade_no=event.out_trade_no,
        transaction_id=event.transaction_id,
        status=RefundStatus(event.status),
        refund_fen=event.refund_fen,
        total_fen=event.total_fen,
        payer_refund_fen=event.payer_refund_fen,
        user_received_account=event.user_received_account,
        success_at=event.success_at,
    )
    await apply_refund(
        session,
        refund_id=refund.id,
        observed=observed,
        source="notify",
        now=clock_now(),
        observation_key=f"notify:{event.notify_id}",
    )


async def query_refund(
    session: AsyncSession, *, pay: WeChatPay, refund_id: int, now: datetime
) -> str:
    refund = await repo.refund(session, refund_id)
    if refund is None:
        raise errors.RefundNotFound
    if refund.state in m.REF_FINAL or refund.state == m.REF_CREATED:
        return refund.state
    observed = await pay.query_refund(refund.out_refund_no)
    await apply_refund(
        session,
        refund_id=refund.id,
        observed=observed,
        source="query",
        now=now,
        observation_key=f"query:refund:{refund.id}:{observed.status.value}",
    )
    fresh = await repo.refund(session, refund.id)
    assert fresh is not None
    return fresh.state


# --------------------------------------------------------------------------- HIS events


async def announce_due(
    session: AsyncSession, *, his_order_id: str, now: datetime, base_url: str = ""
) -> bool:
    """Queue "payment due" for an unpaid order to the card's accounts, once per order."""
    row = await repo.order_by_his_id(session, his_order_id)
    if row is None or not await repo.claim_due_notice(session, his_order_id, now):
        return False
    await _tell_card(
        session,
        card_no=row.card_no,
        kind="payment_due",
        data={
            "thing1": f"{row.title} {_masked(row.card_no)}"[:20],
            "amount2": format_fen(row.total_fen),
            "time3": _local_time(row.ordered_at),
        },
        url=f"{base_url.rstrip('/')}/h5/payments",
        now=now,
    )
    return True


async def refresh_execution(
    session: AsyncSession, *, his: HisGateway, his_order_id: str, now: datetime
) -> str | None:
    try:
        state = await his.execution_status(his_order_id)
    except HisUnavailable as exc:
        raise _his_call_failed(exc) from exc
    except HisRejected:
        return None
    await repo.set_execution(session, his_order_id, state.state.value, state.executed_at)
    return state.state.value


async def window_paid(
    session: AsyncSession,
    *,
    card_no: str,
    order_ids: Sequence[str],
    settlement_id: str,
    now: datetime,
) -> None:
    """Orders paid at the window. Our payments of them that are still open are closed; a
    paid one that the HIS did not settle will be refused (order_not_unpaid) by the saga and
    refunded as a double payment."""
    ids = [i for i in order_ids if HIS_ID.fullmatch(i)]
    mine = [
        o.his_order_id for o in await repo.orders_by_his_ids(session, ids) if o.card_no == card_no
    ]
    await repo.mark_orders_paid(
        session, mine, channel="window", payment_id=None, settlement_id=settlement_id, now=now
    )
    for p in await repo.payments_of_orders(session, ids):
        if p.state == m.PAY_PENDING:
            await outbox.enqueue(
                session,
                QUERY_PAYMENT_JOB,
                payment_id=p.id,
                close=True,
                dedupe_key=f"{QUERY_PAYMENT_JOB}:{p.id}:close",
            )
        await repo.record_event(
            session,
            payment_id=p.id,
            key=f"window_paid:{p.id}:{settlement_id}",
            kind="orders.paid_at_window",
            source="his_event",
            actor="system:his",
            at=now,
            detail={"settlement_id": settlement_id, "order_ids": ids},
        )


async def window_refunded(session: AsyncSession, *, item_ids: Sequence[str], now: datetime) -> None:
    ids = [i for i in item_ids if HIS_ID.fullmatch(i)]
    await repo.mark_items_refunded(session, ids, None, now)


# --------------------------------------------------------------------------- the ledger contract


def _payment_entry(p: m.BillingPayment, refunds: Sequence[m.BillingRefund]) -> LedgerEntry:
    back = sum(r.amount_fen for r in refunds if r.state == m.REF_SUCCESS)
    if p.state != m.PAY_PAID:
        state = "pending"
    elif back >= p.amount_fen:
        state = "refunded"
    elif back > 0:
        state = "partially_refunded"
    else:
        state = "paid"
    return LedgerEntry(
        kind="payment",
        out_trade_no=p.out_trade_no,
        out_refund_no=None,
        transaction_id=p.transaction_id,
        refund_id=None,
        trade_type=p.channel,
        amount_fen=p.amount_fen,
        state=state,
        at=p.paid_at if p.state == m.PAY_PAID else None,
        card_no=p.card_no,
        his_ref=p.out_trade_no,
        his_state=p.his_state,
        ledger_id=p.id,
    )


_LEDGER_REFUND_STATE = {
    m.REF_CREATED: "processing",
    m.REF_PROCESSING: "processing",
    m.REF_SUCCESS: "success",
    m.REF_CLOSED: "closed",
    m.REF_ABNORMAL: "abnormal",
}


def _refund_his_state(r: m.BillingRefund, p: m.BillingPayment) -> str:
    """A refund made without the HIS (money only: finance, the window's amount refund) of a
    payment the HIS settled leaves the HIS booking the whole income: for reconciliation it
    is a refund the HIS still has to book ("pending"), not one it never needed."""
    if r.his_state == m.HIS_NOT_NEEDED and p.his_state in (m.HIS_SETTLED, m.HIS_REFUNDED):
        return m.HIS_PENDING
    return r.his_state


def _refund_entry(r: m.BillingRefund, p: m.BillingPayment) -> LedgerEntry:
    return LedgerEntry(
        kind="refund",
        out_trade_no=p.out_trade_no,
        out_refund_no=r.out_refund_no,
        transaction_id=p.transaction_id,
        refund_id=r.refund_id,
        trade_type=p.channel,
        amount_fen=r.amount_fen,
        state=_LEDGER_REFUND_STATE.get(r.state, r.state),
        at=r.succeeded_at if r.state == m.REF_SUCCESS else None,
        card_no=p.card_no,
        his_ref=r.out_refund_no,
        his_state=_refund_his_state(r, p),
        ledger_id=r.id,
    )


async def ledger_entries(
    session: AsyncSession, *, start_at: datetime, end_at: datetime
) -> list[LedgerEntry]:
    """Payments whose success time (paid_at) and refunds whose success time fall in
    [start_at, end_at), plus payments/refunds started in that window that are not final
    (at=None, state "pending"/"processing"), ordered by (at, kind, ledger id)."""
    payments = await repo.ledger_payments(session, start_at, end_at)
    refunds = [
        r for r in await repo.ledger_refunds(session, start_at, end_at) if r.state != m.REF_REFUSED
    ]
    by_id = await repo.payments_by_ids(session, [r.payment_id for r in refunds])
    refunds_of = await repo.refunds_of_payments(session, [p.id for p in payments])
    grouped: dict[int, list[m.BillingRefund]] = {}
    for r in refunds_of:
        grouped.setdefault(r.payment_id, []).append(r)
    entries = [_payment_entry(p, grouped.get(p.id, [])) for p in payments]
    entries += [_refund_entry(r, by_id[r.payment_id]) for r in refunds]
    floor = datetime.min.replace(tzinfo=start_at.tzinfo)
    return sorted(entries, key=lambda e: (e.at or floor, e.kind, e.ledger_id))


async def find_ledger_entry(
    session: AsyncSession, *, out_trade_no: str, out_refund_no: str | None = None
) -> LedgerEntry | None:
    p = await repo.payment_by_trade_no(session, out_trade_no)
    if p is None:
        return None
    refunds = await repo.refunds_of_payments(session, [p.id])
    if out_refund_no is None:
        return _payment_entry(p, refunds)
    r = next((r for r in refunds if r.out_refund_no == out_refund_no), None)
    if r is None or r.state == m.REF_REFUSED:
        return None
    return _refund_entry(r, p)


async def requery_payment(session: AsyncSession, *, out_trade_no: str, actor: str) -> None:
    """Enqueue a WeChat query of the payment and of its refunds; a confirmed late success
    is then applied exactly as a notify would be."""
    p = await repo.payment_by_trade_no(session, out_trade_no)
    if p is None:
        raise errors.PaymentNotFound
    now = clock_now()
    stamp = now.strftime("%Y%m%d%H%M%S%f")
    await outbox.enqueue(
        session,
        QUERY_PAYMENT_JOB,
        payment_id=p.id,
        force=True,
        dedupe_key=f"{QUERY_PAYMENT_JOB}:{p.id}:requery:{stamp}",
        max_attempts=8,
    )
    for r in await repo.refunds_of_payments(session, [p.id]):
        if r.state not in (m.REF_CREATED, m.REF_REFUSED):
            await outbox.enqueue(
                session,
                QUERY_REFUND_JOB,
                refund_id=r.id,
                force=True,
                dedupe_key=f"{QUERY_REFUND_JOB}:{r.id}:requery:{stamp}",
                max_attempts=8,
            )
    await repo.record_event(
        session,
        payment_id=p.id,
        key=f"requery:{p.id}:{stamp}",
        kind="payment.requery",
        source="staff" if not actor.startswith("system:") else "system",
        actor=actor,
        at=now,
    )


async def retry_settlement(session: AsyncSession, *, out_trade_no: str, actor: str) -> None:
    """Enqueue settlement in the HIS again (the saga) for a paid, unsettled payment. A
    payment already settled or refunded is left as it is (the call is recorded)."""
    p = await repo.payment_by_trade_no(session, out_trade_no)
    if p is None:
        raise errors.PaymentNotFound
    if p.state != m.PAY_PAID:
        raise errors.PaymentNotPaid
    now = clock_now()
    stamp = now.strftime("%Y%m%d%H%M%S%f")
    if p.his_state == m.HIS_PENDING:
        await outbox.enqueue(
            session,
            SETTLE_JOB,
            payment_id=p.id,
            dedupe_key=f"{SETTLE_JOB}:{p.id}:retry:{stamp}",
            max_attempts=40,
        )
    await repo.record_event(
        session,
        payment_id=p.id,
        key=f"retry_settlement:{p.id}:{stamp}",
        kind="settle.retry_requested",
        source="staff" if not actor.startswith("system:") else "system",
        actor=actor,
        at=now,
        detail={"his_state": p.his_state, "queued": p.his_state == m.HIS_PENDING},
    )


async def refund_payment(
    session: AsyncSession, *, out_trade_no: str, amount_fen: int, reason: str, actor: str
) -> int:
    """Start a refund through the saga (deterministic refund number); returns the refund
    id. Refuses (``RefundExceedsPayment``) when ``amount_fen`` exceeds what is left."""
    p = await repo.payment_by_trade_no(session, out_trade_no)
    if p is None:
        raise errors.PaymentNotFound
    return await start_refund(
        session,
        payment_id=p.id,
        amount_fen=amount_fen,
        kind=m.KIND_STAFF,
        reason="staff",
        reason_text=reason,
        actor=actor,
        now=clock_now(),
    )


# Subscribe to WeChat Pay's notifications (run in the notify request's transaction).
pay_events.register(pay_events.PaymentSucceeded, on_payment_succeeded)
pay_events.register(pay_events.RefundSettled, on_refund_settled)


async def day_totals(session: AsyncSession, *, day: date) -> DayTotals:
    """Counts and fen sums of the hospital date ``day``: payments paid (by ``paid_at``,
    whatever was refunded since) and refunds that succeeded (by ``succeeded_at``)."""
    start, end = get_clock().day_bounds(day)
    payments, paid_fen = await repo.paid_between(session, start, end)
    refunds, refunded_fen = await repo.refunded_between(session, start, end)
    return DayTotals(
        day=day, payments=payments, paid_fen=paid_fen, refunds=refunds, refunded_fen=refunded_fen
    )
